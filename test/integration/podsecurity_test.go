package integration

import (
	"context"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kubeinformers "k8s.io/client-go/informers"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/backend/buildahpod"
	"github.com/imagespec/imagespec-controller/pkg/controller"
)

// TestBuildPodSecurityLevels creates the build pod of each builder
// configuration through the buildahpod backend in namespaces that enforce
// each Pod Security level, and checks it is admitted exactly from the level
// the README's table names: the least a namespace that builds must allow.
func TestBuildPodSecurityLevels(t *testing.T) {
	levels := []string{"restricted", "baseline", "privileged"}
	for _, c := range []struct {
		name  string
		opts  buildahpod.Options
		least string
	}{
		{"default", buildahpod.Options{}, "baseline"},
		// hostUsers: false relaxes restricted's runAsNonRoot and runAsUser
		// checks (Kubernetes 1.33+), not its capabilities or seccomp.
		{"user namespace", buildahpod.Options{UserNamespaces: buildahpod.UserNamespacesOn}, "baseline"},
		{"pvc cache", buildahpod.Options{Cache: &buildahpod.CacheVolume{PVC: "buildah-cache"}}, "baseline"},
		{"localhost seccomp", buildahpod.Options{SeccompProfile: "Localhost/buildah.json"}, "baseline"},
		{"host network", buildahpod.Options{HostNetwork: true}, "privileged"},
		{"host path cache", buildahpod.Options{Cache: &buildahpod.CacheVolume{HostPath: "/var/cache/buildah"}}, "privileged"},
		{"unconfined seccomp", buildahpod.Options{SeccompProfile: "Unconfined"}, "privileged"},
		{"privileged", buildahpod.Options{Privileged: true}, "privileged"},
	} {
		t.Run(c.name, func(t *testing.T) {
			least := -1
			for i, l := range levels {
				if l == c.least {
					least = i
				}
			}
			for i, level := range levels {
				err := ensureBuildPod(t, c.opts, level)
				switch {
				case i < least && err == nil:
					t.Errorf("admitted under %s, the README says it needs %s", level, c.least)
				case i < least && !strings.Contains(err.Error(), "violates PodSecurity"):
					t.Errorf("under %s: %v, want a PodSecurity refusal", level, err)
				case i >= least && err != nil:
					t.Errorf("refused under %s: %v", level, err)
				}
			}
		})
	}
}

// ensureBuildPod runs the backend's Ensure for a new job in a namespace
// that enforces level; the error says why the pod was refused.
func ensureBuildPod(t *testing.T, opts buildahpod.Options, level string) error {
	t.Helper()
	ctx := context.Background()
	c, k := clients(t)
	ns := NewTestNamespace(t)
	nsObj, err := k.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if nsObj.Labels == nil {
		nsObj.Labels = map[string]string{}
	}
	nsObj.Labels["pod-security.kubernetes.io/enforce"] = level
	if _, err := k.CoreV1().Namespaces().Update(ctx, nsObj, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	push := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: controller.DefaultPushSecretName, Namespace: ns},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{}}`)},
	}
	if _, err := k.CoreV1().Secrets(ns).Create(ctx, push, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	job := &v1alpha1.ImageSpecJob{
		ObjectMeta: metav1.ObjectMeta{Name: "psa", Namespace: ns, Labels: map[string]string{controller.ImageSpecLabel: "psa"}},
		Spec: v1alpha1.ImageSpecJobSpec{
			BaseImage:   "registry.test.example/base/python:3",
			TargetImage: testRepoPrefix + "/psa:0123456789ab",
			PushSecret:  controller.DefaultPushSecretName,
			Packages:    v1alpha1.Packages{Apt: []string{"curl"}},
		},
	}
	if job, err = c.PrimehubV1alpha1().ImageSpecJobs(ns).Create(ctx, job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if job.UID == types.UID("") {
		t.Fatal("job without UID")
	}
	factory := kubeinformers.NewSharedInformerFactoryWithOptions(k, 0, kubeinformers.WithNamespace(ns))
	be, err := buildahpod.New(opts, k, factory)
	if err != nil {
		t.Fatal(err)
	}
	// A refused pod fails the job with the API server's message.
	st, err := be.Ensure(ctx, job)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if st.Phase == v1alpha1.JobFailed {
		return errors.New(st.Message)
	}
	if _, err := k.CoreV1().Pods(ns).Get(ctx, buildahpod.PodName(job.Name), metav1.GetOptions{}); err != nil {
		t.Fatalf("Ensure returned %s but the pod is not there: %v", st.Phase, err)
	}
	return nil
}
