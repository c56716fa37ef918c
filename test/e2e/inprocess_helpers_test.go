package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/app"
	"github.com/imagespec/imagespec-controller/pkg/backend"
	"github.com/imagespec/imagespec-controller/pkg/backend/inprocess"
	typedv1alpha1 "github.com/imagespec/imagespec-controller/pkg/generated/clientset/versioned/typed/primehub/v1alpha1"
)

// buildTimeout bounds one build in these tests; a cold apt + pip build
// takes well under a minute here.
const buildTimeout = 5 * time.Minute

// InprocessOptions are the backend options the tests use: the run's shared
// store (layers cached across tests), logs under the work dir, and the
// certs.d tree of every registry the tests started. TLS is verified: no
// registry is insecure. E2E_ISOLATION=oci and E2E_REPRODUCIBLE=1 run the
// suite with those options.
func (e *Env) InprocessOptions() inprocess.Options {
	return inprocess.Options{
		StorageDir:      e.StorageDir,
		LogDir:          filepath.Join(e.WorkDir, "build-logs"),
		RegistryCertDir: e.CertsDir,
		Isolation:       os.Getenv("E2E_ISOLATION"),
		Reproducible:    os.Getenv("E2E_REPRODUCIBLE") != "",
		Logf:            e.Logs.Printf,
	}
}

// StartInprocessController runs the controller with the inprocess backend
// on namespace until the test ends.
func StartInprocessController(tb testing.TB, namespace string, cfg ControllerConfig) (*Controller, *inprocess.Backend) {
	tb.Helper()
	return startInprocessWith(tb, namespace, cfg, nil)
}

// startInprocessWith is StartInprocessController with backend options
// edited by tweak.
func startInprocessWith(tb testing.TB, namespace string, cfg ControllerConfig, tweak func(*inprocess.Options)) (*Controller, *inprocess.Backend) {
	tb.Helper()
	env := SharedEnv(tb)
	settings := env.Settings
	if cfg.Settings != nil {
		settings = *cfg.Settings
	}
	opts := env.DefaultOptions(namespace, settings)
	if cfg.Tweak != nil {
		cfg.Tweak(&opts)
	}
	var be *inprocess.Backend
	c := StartController(tb, opts, func(clients *app.Clients) (backend.Backend, func(), error) {
		var err error
		bo := env.InprocessOptions()
		bo.Pulls = opts.Controller.PullScope()
		if tweak != nil {
			tweak(&bo)
		}
		be, err = inprocess.New(bo, clients.Kube)
		if err != nil {
			return nil, nil, err
		}
		return be, func() {
			if err := be.Close(); err != nil {
				tb.Errorf("closing the backend: %v", err)
			}
		}, nil
	})
	return c, be
}

// createSpec creates an ImageSpec.
func createSpec(tb testing.TB, c *Controller, namespace, name string, spec v1alpha1.ImageSpecSpec) *v1alpha1.ImageSpec {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	is, err := c.Clients.Client.PrimehubV1alpha1().ImageSpecs(namespace).Create(ctx, &v1alpha1.ImageSpec{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec:       spec,
	}, metav1.CreateOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	return is
}

// updateSpec changes an ImageSpec's spec, retrying on conflicts.
func updateSpec(tb testing.TB, c *Controller, namespace, name string, edit func(*v1alpha1.ImageSpecSpec)) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		is, err := c.Clients.Client.PrimehubV1alpha1().ImageSpecs(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			tb.Fatal(err)
		}
		edit(&is.Spec)
		_, err = c.Clients.Client.PrimehubV1alpha1().ImageSpecs(namespace).Update(ctx, is, metav1.UpdateOptions{})
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			tb.Fatal(err)
		}
	}
}

// createDockerSecret stores an authfile as a kubernetes.io/dockerconfigjson
// Secret.
func createDockerSecret(tb testing.TB, c *Controller, namespace, name, authFile string) {
	tb.Helper()
	storeDockerSecret(tb, c.Clients.Kube, namespace, name, authFile)
}

// storeDockerSecret stores an authfile as a kubernetes.io/dockerconfigjson
// Secret through kube.
func storeDockerSecret(tb testing.TB, kube kubernetes.Interface, namespace, name, authFile string) {
	tb.Helper()
	data, err := os.ReadFile(authFile)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = kube.CoreV1().Secrets(namespace).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: data},
	}, metav1.CreateOptions{})
	if err != nil {
		tb.Fatal(err)
	}
}

// requirePhase fails unless the job ended in phase with reason and was
// built by the inprocess backend.
func requirePhase(tb testing.TB, job *v1alpha1.ImageSpecJob, phase v1alpha1.ImageSpecJobPhase, reason string) {
	tb.Helper()
	requireBuiltBy(tb, job, inprocess.Name, phase, reason)
}

// requireBuiltBy fails unless the job ended in phase with reason and
// status.backend names backendName.
func requireBuiltBy(tb testing.TB, job *v1alpha1.ImageSpecJob, backendName string, phase v1alpha1.ImageSpecJobPhase, reason string) {
	tb.Helper()
	if job.Status.Phase != phase || job.Status.Reason != reason {
		tb.Fatalf("job %s: %s/%s, want %s/%s: %s\nlog tail:\n%s", job.Name, job.Status.Phase, job.Status.Reason,
			phase, reason, job.Status.Message, job.Status.LogTail)
	}
	if job.Status.Backend != backendName {
		tb.Errorf("status.backend = %q, want %q", job.Status.Backend, backendName)
	}
}

// cancelJob sets spec.cancel with a merge patch, as kubectl patch does: no
// resourceVersion, so the controller's own status writes cannot make it
// conflict.
func cancelJob(tb testing.TB, jobs typedv1alpha1.ImageSpecJobInterface, name string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := jobs.Patch(ctx, name, types.MergePatchType, []byte(`{"spec":{"cancel":true}}`), metav1.PatchOptions{}); err != nil {
		tb.Fatal(err)
	}
}
