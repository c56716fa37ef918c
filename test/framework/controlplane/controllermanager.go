package controlplane

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/imagespec/imagespec-controller/test/framework/proc"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// ControllerManagerControllers are the kube-controller-manager controllers
// the test cluster runs: what a namespace, an owner reference, a
// Deployment and a ServiceAccount need. Cloud, node lifecycle, storage and
// certificate controllers have nothing to do here.
var ControllerManagerControllers = []string{
	"garbage-collector-controller",
	"namespace-controller",
	"deployment-controller",
	"replicaset-controller",
	"serviceaccount-controller",
	"serviceaccount-token-controller",
	"clusterrole-aggregation-controller",
	"root-ca-certificate-publisher-controller",
	"endpoints-controller",
	"endpointslice-controller",
	"pod-garbage-collector-controller",
}

// startControllerManager runs kube-controller-manager against the
// apiserver as system:kube-controller-manager (the bootstrap RBAC user),
// each controller with its own ServiceAccount's token, and returns once
// it works: the ServiceAccount controller made kube-system's default
// ServiceAccount.
func (cp *ControlPlane) startControllerManager(ctx context.Context) error {
	kubeconfig := filepath.Join(cp.WorkDir, "kube-controller-manager.kubeconfig")
	if err := cp.WriteKubeconfig(kubeconfig, "system:kube-controller-manager", nil); err != nil {
		return err
	}
	logPath := filepath.Join(cp.WorkDir, "kube-controller-manager.log")
	_ = os.Remove(logPath)
	p, err := startProcess("kube-controller-manager", logPath, filepath.Join(cp.BinDir, "kube-controller-manager"),
		"--kubeconfig="+kubeconfig,
		"--authentication-kubeconfig="+kubeconfig,
		"--authorization-kubeconfig="+kubeconfig,
		// No serving port: nothing scrapes it, and no port to collide.
		"--secure-port=0",
		"--leader-elect=false",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file="+cp.PKI.ServiceAccountKey,
		"--root-ca-file="+cp.PKI.CACert,
		"--service-cluster-ip-range="+ServiceCIDR,
		"--controllers="+strings.Join(ControllerManagerControllers, ","),
		// Deleted namespaces and owners are collected within seconds.
		"--concurrent-gc-syncs=5",
		"--profiling=false",
	)
	if err != nil {
		return err
	}
	cp.controllerManager = p
	cs, err := kubernetes.NewForConfig(cp.RESTConfig)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		_, err := cs.CoreV1().ServiceAccounts("kube-system").Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return nil
		}
		if !apierrors.IsNotFound(err) && ctx.Err() == nil {
			cp.logf("kube-controller-manager readiness: %v", err)
		}
		select {
		case <-p.Done():
			return p.ExitError()
		case <-ctx.Done():
			return fmt.Errorf("kube-controller-manager made no ServiceAccount in 60s: %w\n--- last lines of %s ---\n%s",
				ctx.Err(), p.LogPath, proc.LogTail(p.LogPath, 40))
		case <-time.After(100 * time.Millisecond):
		}
	}
}
