package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/backend/inprocess"
	"github.com/imagespec/imagespec-controller/pkg/controller"
	"github.com/imagespec/imagespec-controller/test/framework/images"
	"github.com/imagespec/imagespec-controller/test/framework/registry"
	"github.com/imagespec/imagespec-controller/test/framework/secretscan"
)

// startRegistry runs one more registry for a test, trusted through the
// env's certs.d tree.
func startRegistry(t *testing.T, opts registry.Options) *registry.Registry {
	t.Helper()
	env := SharedEnv(t)
	opts.WorkDir = env.WorkDir
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := registry.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Stop() })
	if err := env.AddRegistryCA(r); err != nil {
		t.Fatal(err)
	}
	return r
}

func pushBase(t *testing.T, r *registry.Registry, repo string) (ref, digest string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ref, digest, err := images.Push(ctx, images.DebianPython, r, repo)
	if err != nil {
		t.Fatal(err)
	}
	return ref, digest
}

// GCR-style credentials: user _json_key, a JSON keyfile as password, given
// to the controller through PRIMEHUB_* settings in a dotenv file.
func TestInprocessJSONKeyCredentials(t *testing.T) {
	env := SharedEnv(t)
	ns := NewNamespace(t)
	// A real keyfile is a few KiB; the test registry's htpasswd uses
	// bcrypt, which takes at most 72 bytes, so this one is a short JSON
	// document with the characters that matter (quotes, braces, colons).
	keyfile := `{"type":"service_account","private_key_id":"` + randomHex(8) + `"}`
	r := startRegistry(t, registry.Options{Username: "_json_key", Password: keyfile})
	base, _ := pushBase(t, r, "base/debian-python:latest")

	settings, err := WriteSettings(env.WorkDir+"/gcr-"+ns+".env", r.Host, "_json_key", keyfile, r.Host+"/gcr-style")
	if err != nil {
		t.Fatal(err)
	}
	if settings.Registry.Username != "_json_key" || settings.Registry.Password.Reveal() != keyfile || settings.Registry.Host != r.Host {
		t.Fatalf("settings from the dotenv file: user %q, host %q, password intact %v",
			settings.Registry.Username, settings.Registry.Host, settings.Registry.Password.Reveal() == keyfile)
	}
	c, be := StartInprocessController(t, ns, ControllerConfig{Settings: &settings})
	createSpec(t, c, ns, "gcr", v1alpha1.ImageSpecSpec{
		BaseImage: base,
		Packages:  v1alpha1.Packages{Pip: []string{"e2e-hello"}},
	})
	job := WaitJob(t, c, ns, "gcr", "", buildTimeout)
	requirePhase(t, job, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
	if !strings.HasPrefix(job.Status.Image, r.Host+"/gcr-style/gcr:") {
		t.Errorf("image %s is not under the configured prefix", job.Status.Image)
	}
	if info := env.Inspect(t, r, job.Status.Image); info.Digest != job.Status.Digest {
		t.Errorf("registry has %s, status says %s", info.Digest, job.Status.Digest)
	}

	// The push Secret the controller wrote carries the keyfile unchanged.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := c.Clients.Kube.CoreV1().Secrets(ns).Get(ctx, controller.DefaultPushSecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Auths map[string]struct{ Auth string }
	}
	if err := json.Unmarshal(s.Data[corev1.DockerConfigJsonKey], &cfg); err != nil {
		t.Fatal(err)
	}
	dec, _ := base64.StdEncoding.DecodeString(cfg.Auths[r.Host].Auth)
	if string(dec) != "_json_key:"+keyfile {
		t.Errorf("push Secret does not hold _json_key and the keyfile for %s", r.Host)
	}
	env.ScanSecrets(t, c, ns, []string{be.LogPath(ns, job.Name)}, secretscan.Credential{User: "_json_key", Password: keyfile})
}

// TLS is verified unless a registry is listed as insecure, and nothing
// falls back silently: a registry with a CA the backend does not trust
// fails the pull; listed in InsecureRegistries, the same pull works.
func TestInprocessRegistryTLS(t *testing.T) {
	env := SharedEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Not added to the env's certs.d tree.
	r, err := registry.Start(ctx, registry.Options{WorkDir: env.WorkDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Stop() })
	base, _ := pushBase(t, r, "untrusted/debian-python:latest")
	spec := v1alpha1.ImageSpecSpec{BaseImage: base, PullSecret: "untrusted-pull",
		Packages: v1alpha1.Packages{Pip: []string{"e2e-third"}}}

	ns := NewNamespace(t)
	c, _ := StartInprocessController(t, ns, ControllerConfig{})
	createDockerSecret(t, c, ns, "untrusted-pull", r.AuthFile)
	createSpec(t, c, ns, "verified", spec)
	job := WaitJob(t, c, ns, "verified", "", buildTimeout)
	requirePhase(t, job, v1alpha1.JobFailed, v1alpha1.ReasonBaseImagePullFailed)
	if !strings.Contains(job.Status.Message, "certificate") {
		t.Errorf("message %q does not name the certificate problem", job.Status.Message)
	}

	ns = NewNamespace(t)
	c, _ = startInprocessWith(t, ns, ControllerConfig{}, func(o *inprocess.Options) {
		o.InsecureRegistries = []string{r.Host}
	})
	createDockerSecret(t, c, ns, "untrusted-pull", r.AuthFile)
	createSpec(t, c, ns, "insecure", spec)
	job = WaitJob(t, c, ns, "insecure", "", buildTimeout)
	requirePhase(t, job, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
}
