package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	clientset "github.com/imagespec/imagespec-controller/pkg/generated/clientset/versioned"
	"github.com/imagespec/imagespec-controller/test/framework/controlplane"
	"github.com/imagespec/imagespec-controller/test/framework/secretscan"
)

// TestTenantIsolation acts as a tenant of the threat model: a
// ServiceAccount with the built-in edit role in its own namespace (with the
// shipped ImageSpec roles aggregated into it and the shipped job policy),
// while the controller builds in the build namespace as shipped. The
// tenant's build succeeds; it cannot get the push credentials by any path
// (its Secrets, the build namespace's Secrets, ConfigMaps and pods, exec
// into the build pod, events, status); a job it makes by hand to push
// over another repository is refused and nothing is pushed there; and a
// pull Secret named by its spec is read from its own namespace only.
func TestTenantIsolation(t *testing.T) {
	env := SharedEnv(t)
	p := StartPodEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cp := env.ControlPlane
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"user-roles.yaml", "job-policy.yaml"} {
		if out, err := cp.Kubectl(ctx, "apply", "--server-side", "-f", filepath.Join(root, "artifacts", "deploy", "base", f)); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	ns := NewNamespace(t)
	victim := NewNamespace(t)
	c, _ := p.StartPodController(t, ns, ControllerConfig{}, nil)

	// The tenant: a ServiceAccount bound to edit in its namespace only.
	user := "system:serviceaccount:" + ns + ":tenant"
	if _, err := p.Kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "tenant"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Kube.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "tenant-edit"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "edit"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "tenant", Namespace: ns}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := rest.CopyConfig(cp.RESTConfig)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"}}
	tenantKube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tenant, err := clientset.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}

	// edit gets the ImageSpec rules once kube-controller-manager has
	// aggregated them.
	spec := &v1alpha1.ImageSpec{
		ObjectMeta: metav1.ObjectMeta{Name: "mine", Namespace: ns},
		Spec:       v1alpha1.ImageSpecSpec{BaseImage: env.BaseImage, Packages: v1alpha1.Packages{Pip: []string{"e2e-hello==1.0"}}},
	}
	WaitFor(t, time.Minute, func(ctx context.Context) (bool, string) {
		_, err := tenant.PrimehubV1alpha1().ImageSpecs(ns).Create(ctx, spec, metav1.CreateOptions{})
		return err == nil, "the tenant creates an ImageSpec: " + errString(err)
	})
	job := WaitJob(t, c, ns, "mine", "", buildTimeout)
	requirePodPhase(t, job, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
	podNS, podName := p.BuildPod(ns, job.Name)
	cred := RegistryCredential(env.Registry)

	// Everything the tenant can read in its namespace, scanned for every
	// form of the password.
	sources := map[string]string{}
	for what, list := range map[string]func() (any, error){
		"its Secrets":    func() (any, error) { return tenantKube.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}) },
		"its ConfigMaps": func() (any, error) { return tenantKube.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{}) },
		"its events":     func() (any, error) { return tenantKube.CoreV1().Events(ns).List(ctx, metav1.ListOptions{}) },
		"its pods":       func() (any, error) { return tenantKube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}) },
		"its jobs": func() (any, error) {
			return tenant.PrimehubV1alpha1().ImageSpecJobs(ns).List(ctx, metav1.ListOptions{})
		},
		"its ImageSpecs": func() (any, error) { return tenant.PrimehubV1alpha1().ImageSpecs(ns).List(ctx, metav1.ListOptions{}) },
	} {
		obj, err := list()
		if err != nil {
			t.Fatalf("the tenant lists %s: %v", what, err)
		}
		if sources[what], err = secretscan.JSON(obj); err != nil {
			t.Fatal(err)
		}
	}
	for _, where := range secretscan.Find(sources, cred) {
		t.Errorf("the tenant reads the registry credentials in %s", where)
	}
	if s, err := tenantKube.CoreV1().Secrets(ns).Get(ctx, job.Spec.PushSecret, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the tenant gets %s/%s: %v, %v; want not found", ns, job.Spec.PushSecret, s != nil, err)
	}

	// The build namespace is out of reach.
	for what, try := range map[string]func() error{
		"the push Secret": func() error {
			_, err := tenantKube.CoreV1().Secrets(podNS).Get(ctx, job.Spec.PushSecret, metav1.GetOptions{})
			return err
		},
		"the build pod": func() error {
			_, err := tenantKube.CoreV1().Pods(podNS).Get(ctx, podName, metav1.GetOptions{})
			return err
		},
		"the build ConfigMaps": func() error {
			_, err := tenantKube.CoreV1().ConfigMaps(podNS).List(ctx, metav1.ListOptions{})
			return err
		},
		"a pod of its own there": func() error {
			_, err := tenantKube.CoreV1().Pods(podNS).Create(ctx, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "steal"},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: p.Builder}}},
			}, metav1.CreateOptions{})
			return err
		},
	} {
		if err := try(); !apierrors.IsForbidden(err) {
			t.Errorf("the tenant reaches %s in %s: %v, want forbidden", what, podNS, err)
		}
	}
	if out, err := cp.Kubectl(ctx, "--as", user, "exec", "-n", podNS, podName, "--", "cat", "/imagespec/push/auth.json"); err == nil || !strings.Contains(err.Error()+string(out), "(Forbidden)") {
		t.Errorf("kubectl exec into the build pod as the tenant: %v\n%s", err, redact(string(out), cred.Password))
	}

	// A job made by hand to push over another tenant's repository.
	victimImage := env.Settings.Registry.RepoPrefix + "/victim:latest"
	handMade := &v1alpha1.ImageSpecJob{
		ObjectMeta: metav1.ObjectMeta{Name: "hand-made", Namespace: ns},
		Spec: v1alpha1.ImageSpecJobSpec{BaseImage: env.BaseImage, TargetImage: victimImage,
			PushSecret: job.Spec.PushSecret, RepoPrefix: job.Spec.RepoPrefix},
	}
	if _, err := tenant.PrimehubV1alpha1().ImageSpecJobs(ns).Create(ctx, handMade, metav1.CreateOptions{}); err == nil || !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) {
		t.Errorf("the tenant creates a job targeting %s: %v, want refused by the job policy", victimImage, err)
	}
	// Nor can it turn its own job into one.
	if _, err := tenant.PrimehubV1alpha1().ImageSpecJobs(ns).Patch(ctx, job.Name, "application/merge-patch+json",
		[]byte(`{"spec":{"targetImage":"`+victimImage+`"}}`), metav1.PatchOptions{}); err == nil {
		t.Errorf("the tenant retargeted its job to %s", victimImage)
	}

	// A pull Secret of that name exists only in another namespace: the
	// build reads its own namespace and fails there, naming it.
	p.createDockerSecret(t, victim, "stolen", env.Registry.AuthFile)
	steal := &v1alpha1.ImageSpec{
		ObjectMeta: metav1.ObjectMeta{Name: "steal", Namespace: ns},
		Spec: v1alpha1.ImageSpecSpec{BaseImage: env.BaseImage, PullSecret: "stolen",
			Packages: v1alpha1.Packages{Pip: []string{"e2e-hello==1.0"}}},
	}
	if _, err := tenant.PrimehubV1alpha1().ImageSpecs(ns).Create(ctx, steal, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	stolen := WaitJob(t, c, ns, "steal", "", buildTimeout)
	requirePodPhase(t, stolen, v1alpha1.JobFailed, v1alpha1.ReasonBaseImagePullFailed)
	if !strings.Contains(stolen.Status.Message, ns+"/stolen") {
		t.Errorf("message %q, want the Secret in the ImageSpec's own namespace %s/stolen", stolen.Status.Message, ns)
	}
	if TagExists(t, env.Registry, victimImage) {
		t.Errorf("%s was pushed", victimImage)
	}
	env.ScanSecrets(t, c, ns, nil, cred)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
