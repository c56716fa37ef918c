package e2e

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/app"
	"github.com/imagespec/imagespec-controller/test/framework/secretscan"
)

// A wrong registry password fails the push, and the password (nor the
// right one of the pull Secret) shows up in no log, event or status.
func TestInprocessWrongPassword(t *testing.T) {
	env := SharedEnv(t)
	ns := NewNamespace(t)
	wrong := "wrong-" + randomHex(12)
	settings, err := WriteSettings(env.WorkDir+"/wrong-"+ns+".env", env.Registry.Host, env.Registry.Username, wrong, env.Registry.Host+"/e2e")
	if err != nil {
		t.Fatal(err)
	}
	c, be := StartInprocessController(t, ns, ControllerConfig{Settings: &settings})
	// The base lives in the same registry: its pull Secret has the right
	// credentials, which take precedence over the push ones for pulls.
	createDockerSecret(t, c, ns, "base-pull", env.Registry.AuthFile)
	spec := baseSpec(env)
	spec.PullSecret = "base-pull"
	createSpec(t, c, ns, "denied", spec)
	job := WaitJob(t, c, ns, "denied", "", buildTimeout)
	requirePhase(t, job, v1alpha1.JobFailed, v1alpha1.ReasonPushFailed)
	if msg := strings.ToLower(job.Status.Message); !strings.Contains(msg, "unauthorized") && !strings.Contains(msg, "authentication required") {
		t.Errorf("message %q does not say the registry refused the credentials", job.Status.Message)
	}
	if TagExists(t, env.Registry, job.Spec.TargetImage) {
		t.Errorf("%s exists after a refused push", job.Spec.TargetImage)
	}
	env.ScanSecrets(t, c, ns, []string{be.LogPath(ns, job.Name)},
		secretscan.Credential{User: env.Registry.Username, Password: wrong}, RegistryCredential(env.Registry))
}

// hangingIndex is a package index that answers no request until Release:
// a pip step against it runs until it is stopped. Released, it passes
// requests on to the env's index.
type hangingIndex struct {
	srv         *http.Server
	addr        string
	hit         chan struct{}
	once        sync.Once
	quit        chan struct{}
	release     chan struct{}
	releaseOnce sync.Once
}

// Release makes the index answer from then on.
func (h *hangingIndex) Release() { h.releaseOnce.Do(func() { close(h.release) }) }

func newHangingIndex(t *testing.T) *hangingIndex {
	l, err := net.Listen("tcp", net.JoinHostPort(SharedEnv(t).HostIP, "0"))
	if err != nil {
		t.Fatal(err)
	}
	target, err := url.Parse("http://" + SharedEnv(t).PyPI.Addr())
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	h := &hangingIndex{addr: l.Addr().String(), hit: make(chan struct{}), quit: make(chan struct{}), release: make(chan struct{})}
	h.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.once.Do(func() { close(h.hit) })
		select {
		case <-r.Context().Done():
		case <-h.quit:
		case <-h.release:
			proxy.ServeHTTP(w, r)
		}
	})}
	go func() { _ = h.srv.Serve(l) }()
	t.Cleanup(func() {
		close(h.quit)
		_ = h.srv.Close()
	})
	return h
}

// Cancelling a job mid-build stops the running step, pushes nothing, and
// leaves no build container or mount behind. The package the cancelled
// step waits for is served once the cancel is done, so a build that
// survived its cancel would go on to push: the same inputs, rebuilt, do.
func TestInprocessCancelMidBuild(t *testing.T) {
	env := SharedEnv(t)
	ns := NewNamespace(t)
	index := newHangingIndex(t)
	c, be := StartInprocessController(t, ns, ControllerConfig{Tweak: func(o *app.Options) {
		o.Controller.Sources.PipIndexURL = "http://" + index.addr + "/simple/"
		o.Controller.Sources.PipTrustedHosts = []string{index.addr}
	}})
	createSpec(t, c, ns, "slow", v1alpha1.ImageSpecSpec{
		BaseImage: env.BaseImage,
		Packages:  v1alpha1.Packages{Pip: []string{"e2e-hello"}},
	})
	select {
	case <-index.hit:
	case <-time.After(buildTimeout):
		t.Fatal("the pip step never reached the index")
	}

	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	is, err := c.Clients.Client.PrimehubV1alpha1().ImageSpecs(ns).Get(ctx, "slow", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	jobs := c.Clients.Client.PrimehubV1alpha1().ImageSpecJobs(ns)
	job, err := jobs.Get(ctx, is.Status.JobName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if job.Status.Phase != v1alpha1.JobRunning {
		t.Fatalf("job %s is %s while its pip step runs", job.Name, job.Status.Phase)
	}
	start := time.Now()
	cancelJob(t, jobs, job.Name)
	job = WaitJob(t, c, ns, "slow", "", buildTimeout)
	t.Logf("cancel took %s from spec.cancel to phase %s", time.Since(start).Round(time.Millisecond), job.Status.Phase)
	if job.Status.Phase != v1alpha1.JobCancelled || job.Status.Reason != v1alpha1.ReasonCancelled {
		t.Fatalf("job %s: %s/%s, want Cancelled: %s", job.Name, job.Status.Phase, job.Status.Reason, job.Status.Message)
	}
	cancelled := job
	log, err := os.ReadFile(be.LogPath(ns, job.Name))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("build log:\n%s", log)
	if !strings.Contains(string(log), "build cancelled") {
		t.Errorf("the build log does not record the cancel:\n%s", log)
	}

	// Cancel returned only after cleanup: nothing of the build is left.
	containers, err := be.Store().Containers()
	if err != nil {
		t.Fatal(err)
	}
	for _, ctr := range containers {
		t.Errorf("build container left behind: %s %v", ctr.ID, ctr.Names)
	}
	if os.Getenv("E2E_ISOLATION") == "oci" {
		out, err := exec.Command("runc", "list", "--quiet").Output()
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range strings.Fields(string(out)) {
			if strings.HasPrefix(id, "buildah-") {
				t.Errorf("runc container left behind: %s", id)
			}
		}
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], env.StorageDir) && strings.HasSuffix(fields[4], "/merged") {
			t.Errorf("still mounted: %s", fields[4])
		}
	}

	// Served from now on: the rebuild of the same packages succeeds and
	// pushes, while the cancelled build's image never appears.
	index.Release()
	updateSpec(t, c, ns, "slow", func(s *v1alpha1.ImageSpecSpec) { s.UpdateTime = "2026-12-01T00:00:00Z" })
	rebuilt := WaitJob(t, c, ns, "slow", cancelled.Name, buildTimeout)
	requirePhase(t, rebuilt, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
	if !TagExists(t, env.Registry, rebuilt.Spec.TargetImage) {
		t.Errorf("%s was not pushed by the rebuild", rebuilt.Spec.TargetImage)
	}
	if TagExists(t, env.Registry, cancelled.Spec.TargetImage) {
		t.Errorf("%s was pushed by a cancelled build", cancelled.Spec.TargetImage)
	}
}
