package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/app"
	"github.com/imagespec/imagespec-controller/pkg/backend"
	"github.com/imagespec/imagespec-controller/pkg/backend/buildahpod"
	"github.com/imagespec/imagespec-controller/test/framework/images"
	"github.com/imagespec/imagespec-controller/test/framework/node"
)

// builderPullSecret is the Secret each pod test namespace gets for pulling
// the builder image: the node has no registry credentials of its own, so
// the backend's imagePullSecrets setting is exercised.
const builderPullSecret = "builder-pull"

// PodEnv is a real node (containerd, runc, the pinned kubelet and
// kube-scheduler) registered with the shared control plane, and the
// builder image (Debian buildah) in the shared registry.
type PodEnv struct {
	Node *node.Node
	// BuildNamespace holds the build pods, the push Secret and the
	// builder's pull Secret, as --build-namespace in artifacts/deploy.
	BuildNamespace string
	// Builder is the builder image's reference in SharedEnv().Registry.
	Builder string
	Kube    kubernetes.Interface
}

// StartPodEnv starts a node for the test and stops it (restoring the host)
// when the test ends. Only one node runs per machine at a time.
func StartPodEnv(tb testing.TB) *PodEnv {
	tb.Helper()
	return startPodEnv(tb, false)
}

// startPodEnv with nodeCredentials gives the node's containerd the
// registry's credentials, as a cluster whose nodes may pull from a private
// registry has them: pods need no imagePullSecret.
func startPodEnv(tb testing.TB, nodeCredentials bool) *PodEnv {
	tb.Helper()
	env := SharedEnv(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	builder, _, err := images.Push(ctx, images.Builder, env.Registry, "imagespec/builder:e2e")
	if err != nil {
		tb.Fatal(err)
	}
	n, err := node.Start(ctx, node.Options{
		ControlPlane:    env.ControlPlane,
		Registry:        env.Registry,
		NodeCredentials: nodeCredentials,
		Scheduler:       true,
		WorkDir:         env.WorkDir,
		Logf:            env.Logs.Printf,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := n.Stop(); err != nil {
			tb.Errorf("node Stop: %v", err)
		}
	})
	kube, err := kubernetes.NewForConfig(env.ControlPlane.RESTConfig)
	if err != nil {
		tb.Fatal(err)
	}
	p := &PodEnv{Node: n, Builder: builder, Kube: kube}
	// As shipped: the builds' namespace enforces Pod Security baseline.
	return p.withBuildNamespace(tb, podBuildNamespace, "baseline")
}

// podBuildNamespace is the shipped build namespace.
const podBuildNamespace = "imagespec-builds"

// withBuildNamespace is p building in namespace name, which enforces the
// Pod Security level and holds the builder's pull Secret.
func (p *PodEnv) withBuildNamespace(tb testing.TB, name, level string) *PodEnv {
	tb.Helper()
	env := SharedEnv(tb)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := env.ControlPlane.CreateNamespace(ctx, name); err != nil {
		tb.Fatal(err)
	}
	patch := fmt.Appendf(nil, `{"metadata":{"labels":{"pod-security.kubernetes.io/enforce":%q}}}`, level)
	if _, err := p.Kube.CoreV1().Namespaces().Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		tb.Fatal(err)
	}
	if _, err := p.Kube.CoreV1().Secrets(name).Get(ctx, builderPullSecret, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		p.createDockerSecret(tb, name, builderPullSecret, env.Registry.AuthFile)
	}
	c := *p
	c.BuildNamespace = name
	return &c
}

// privileged is p building in a namespace that admits host namespaces and
// hostPath volumes (--builder-host-network, --builder-cache-host-path),
// which baseline refuses.
func (p *PodEnv) privileged(tb testing.TB) *PodEnv {
	return p.withBuildNamespace(tb, podBuildNamespace+"-privileged", "privileged")
}

// BuildPod is the namespace and name of the build pod (and ConfigMap) of
// job in namespace ns.
func (p *PodEnv) BuildPod(ns, job string) (podNS, podName string) {
	return buildahpod.PodRef(p.BuildNamespace, ns, job)
}

// PodOptions are the backend options the tests use: the test builder
// image pulled with an imagePullSecret, the registries' CAs from the env's
// certs.d tree, and the pod network (as shipped), over which the build
// reaches the registry and the package index on Env.HostIP.
func (p *PodEnv) PodOptions(tb testing.TB, timeout time.Duration) buildahpod.Options {
	tb.Helper()
	env := SharedEnv(tb)
	cas, err := buildahpod.LoadRegistryCAs(env.CertsDir)
	if err != nil {
		tb.Fatal(err)
	}
	return buildahpod.Options{
		BuilderImage: p.Builder,
		RegistryCAs:  cas,
		BuildTimeout: timeout,
		Pod:          buildahpod.PodConfig{ImagePullSecrets: []corev1.LocalObjectReference{{Name: builderPullSecret}}},
		Logf:         env.Logs.Printf,
	}
}

// StartPodController runs the controller with the buildahpod backend on
// namespace until the test ends; tweak adjusts the backend's options.
func (p *PodEnv) StartPodController(tb testing.TB, namespace string, cfg ControllerConfig, tweak func(*buildahpod.Options)) (*Controller, *buildahpod.Backend) {
	tb.Helper()
	env := SharedEnv(tb)
	settings := env.Settings
	if cfg.Settings != nil {
		settings = *cfg.Settings
	}
	opts := env.DefaultOptions(namespace, settings)
	opts.Controller.PushSecretNamespace = p.BuildNamespace
	if cfg.Tweak != nil {
		cfg.Tweak(&opts)
	}
	bopts := p.PodOptions(tb, opts.Controller.BuildTimeout)
	bopts.BuildNamespace, bopts.WatchNamespace = p.BuildNamespace, namespace
	bopts.Pulls = opts.Controller.PullScope()
	if tweak != nil {
		tweak(&bopts)
	}
	var be *buildahpod.Backend
	c := StartController(tb, opts, func(clients *app.Clients) (backend.Backend, func(), error) {
		var err error
		be, err = buildahpod.New(bopts, clients.Kube, clients.Managed)
		return be, nil, err
	})
	return c, be
}

func (p *PodEnv) createDockerSecret(tb testing.TB, namespace, name, authFile string) {
	tb.Helper()
	storeDockerSecret(tb, p.Kube, namespace, name, authFile)
}

// requirePodPhase fails unless the job ended in phase with reason and was
// built by the buildahpod backend.
func requirePodPhase(tb testing.TB, job *v1alpha1.ImageSpecJob, phase v1alpha1.ImageSpecJobPhase, reason string) {
	tb.Helper()
	requireBuiltBy(tb, job, buildahpod.Name, phase, reason)
}
