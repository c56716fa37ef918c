package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/app"
	"github.com/imagespec/imagespec-controller/pkg/backend/inprocess"
)

// aptPackage is small and not in the base image.
const aptPackage = "jq"

func baseSpec(env *Env) v1alpha1.ImageSpecSpec {
	return v1alpha1.ImageSpecSpec{
		BaseImage: env.BaseImage,
		Packages:  v1alpha1.Packages{Apt: []string{aptPackage}, Pip: []string{"e2e-hello==1.0"}},
	}
}

// An apt package from the Debian mirror and a pip package from the local
// index on a base image with a non-root user: the image is pushed under
// the repo prefix with the reported digest, has both packages, and runs as
// the base image's user again.
func TestInprocessBuildAptAndPip(t *testing.T) {
	env := SharedEnv(t)
	ns := NewNamespace(t)
	c, be := StartInprocessController(t, ns, ControllerConfig{})
	createSpec(t, c, ns, "tools", baseSpec(env))
	job := WaitJob(t, c, ns, "tools", "", buildTimeout)
	requirePhase(t, job, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)

	prefix := env.Settings.Registry.RepoPrefix + "/tools:"
	if !strings.HasPrefix(job.Status.Image, prefix) || job.Status.Image != job.Spec.TargetImage {
		t.Errorf("status.image %q, want %s<tag> = spec.targetImage %q", job.Status.Image, prefix, job.Spec.TargetImage)
	}
	if job.Status.BaseImageDigest != env.BaseDigest {
		t.Errorf("status.baseImageDigest %q, want the pushed base %q", job.Status.BaseImageDigest, env.BaseDigest)
	}
	info := env.Inspect(t, env.Registry, job.Status.Image)
	if info.Digest != job.Status.Digest || !strings.HasPrefix(info.Digest, "sha256:") {
		t.Errorf("registry has digest %s, status says %s", info.Digest, job.Status.Digest)
	}
	if info.User != "app" {
		t.Errorf("config user %q, want the base image's user app", info.User)
	}
	logPath := be.LogPath(ns, job.Name)
	if !strings.Contains(job.Status.Message, logPath) || !strings.Contains(job.Status.Message, "steps from cache") {
		t.Errorf("message %q should name the log %s and the cache use", job.Status.Message, logPath)
	}
	if !strings.Contains(job.Status.LogTail, "pushed ") {
		t.Errorf("log tail does not end with the push:\n%s", job.Status.LogTail)
	}

	out := env.RunInImage(t, env.Registry, job.Status.Image,
		`id -un; jq --version; python3 -c 'import e2e_hello; print(e2e_hello.greet(), e2e_hello.__version__)'`)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 3 || lines[len(lines)-3] != "app" || !strings.HasPrefix(lines[len(lines)-2], "jq-") ||
		lines[len(lines)-1] != "hello from e2e 1.0" {
		t.Errorf("running the image printed:\n%s\nwant app, jq-<version>, hello from e2e 1.0", out)
	}
}

// Adding one pip package builds a new revision that reuses the earlier
// layers: the apt layer is the same blob in both images.
func TestInprocessRebuildReusesLayers(t *testing.T) {
	env := SharedEnv(t)
	ns := NewNamespace(t)
	c, _ := StartInprocessController(t, ns, ControllerConfig{})
	createSpec(t, c, ns, "grow", baseSpec(env))
	first := WaitJob(t, c, ns, "grow", "", buildTimeout)
	requirePhase(t, first, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)

	updateSpec(t, c, ns, "grow", func(s *v1alpha1.ImageSpecSpec) {
		s.Packages.Pip = append(s.Packages.Pip, "e2e-extra")
	})
	second := WaitJob(t, c, ns, "grow", first.Name, buildTimeout)
	requirePhase(t, second, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
	if second.Spec.TargetImage == first.Spec.TargetImage {
		t.Fatalf("same target %s for a changed spec", second.Spec.TargetImage)
	}

	a := env.Inspect(t, env.Registry, first.Status.Image)
	b := env.Inspect(t, env.Registry, second.Status.Image)
	base := env.Inspect(t, env.Registry, env.BaseImage)
	n := len(base.Layers)
	// base layers, then the apt layer, then the pip layer.
	if len(a.Layers) != n+2 || len(b.Layers) != n+2 {
		t.Fatalf("layers: base %d, first %d, second %d; want base+2", n, len(a.Layers), len(b.Layers))
	}
	if a.Layers[n] != b.Layers[n] {
		t.Errorf("apt layer rebuilt: %s then %s", a.Layers[n], b.Layers[n])
	}
	if a.Layers[n+1] == b.Layers[n+1] {
		t.Errorf("pip layer unchanged after adding a package")
	}
	// USER 0:0 and the apt RUN come from the cache.
	if !strings.Contains(second.Status.Message, "2 of 5 steps from cache") {
		t.Errorf("message %q: want 2 of 5 steps from cache (USER and apt; then pip, USER, the revision label)", second.Status.Message)
	}
}

// A package apt does not know fails the build, and the log tail says which.
func TestInprocessUnknownAptPackage(t *testing.T) {
	env := SharedEnv(t)
	ns := NewNamespace(t)
	c, _ := StartInprocessController(t, ns, ControllerConfig{})
	const missing = "imagespec-no-such-package"
	createSpec(t, c, ns, "broken", v1alpha1.ImageSpecSpec{
		BaseImage: env.BaseImage,
		Packages:  v1alpha1.Packages{Apt: []string{missing}},
	})
	job := WaitJob(t, c, ns, "broken", "", buildTimeout)
	requirePhase(t, job, v1alpha1.JobFailed, v1alpha1.ReasonBuildFailed)
	if !strings.Contains(job.Status.LogTail, "Unable to locate package "+missing) {
		t.Errorf("log tail does not name the package:\n%s", job.Status.LogTail)
	}
	if TagExists(t, env.Registry, job.Spec.TargetImage) {
		t.Errorf("%s was pushed by a failed build", job.Spec.TargetImage)
	}
}

// A controller that stops mid-build leaves the job Running with
// status.backend set; the next controller process has no build in memory
// and builds it again, to the same target.
func TestInprocessRestartRebuilds(t *testing.T) {
	env := SharedEnv(t)
	ns := NewNamespace(t)
	// The pip step waits on this index until the first controller is gone.
	index := newHangingIndex(t)
	sources := func(o *app.Options) {
		o.Controller.Sources.PipIndexURL = "http://" + index.addr + "/simple/"
		o.Controller.Sources.PipTrustedHosts = []string{index.addr}
	}
	c, _ := StartInprocessController(t, ns, ControllerConfig{Tweak: sources})
	spec := baseSpec(env)
	spec.Packages.Pip = []string{"e2e-hello", "e2e-third"}
	createSpec(t, c, ns, "restart", spec)
	select {
	case <-index.hit:
	case <-time.After(buildTimeout):
		t.Fatal("the pip step never reached the index")
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	is, err := c.Clients.Client.PrimehubV1alpha1().ImageSpecs(ns).Get(ctx, "restart", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	running, err := c.Clients.Client.PrimehubV1alpha1().ImageSpecJobs(ns).Get(ctx, is.Status.JobName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if running.Status.Phase != v1alpha1.JobRunning || running.Status.Backend != inprocess.Name {
		t.Fatalf("after the controller stopped, job %s is %s with backend %q; want Running, inprocess",
			running.Name, running.Status.Phase, running.Status.Backend)
	}

	index.Release()
	c2, _ := StartInprocessController(t, ns, ControllerConfig{Tweak: sources})
	job := WaitJob(t, c2, ns, "restart", "", buildTimeout)
	requirePhase(t, job, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
	if job.Name != running.Name || job.Status.Image != running.Spec.TargetImage {
		t.Errorf("after the restart: job %s image %s, want job %s image %s", job.Name, job.Status.Image, running.Name, running.Spec.TargetImage)
	}
	if info := env.Inspect(t, env.Registry, job.Status.Image); info.Digest != job.Status.Digest {
		t.Errorf("registry has %s, status says %s", info.Digest, job.Status.Digest)
	}
}
