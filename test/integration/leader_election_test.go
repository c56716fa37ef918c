package integration

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/app"
	"github.com/imagespec/imagespec-controller/pkg/backend"
	"github.com/imagespec/imagespec-controller/pkg/backend/backendtest"
)

// replica starts one leader-elected controller with its own probe address.
func replica(t *testing.T, be backend.Backend, ns, identity string, le app.LeaderElection) (*instance, string) {
	t.Helper()
	le.Namespace, le.Name, le.Identity = ns, "imagespec-controller", identity
	opts := defaultControllerOptions(ns)
	opts.LeaderElection = &le
	addr := freeAddr(t)
	opts.MetricsAddr, opts.HealthAddr = addr, addr
	return startInstance(t, SharedControlPlane(t).RESTConfig, be, opts), "http://" + addr
}

func leaseHolder(t *testing.T, ns string) string {
	t.Helper()
	_, k := clients(t)
	l, err := k.CoordinationV1().Leases(ns).Get(context.Background(), "imagespec-controller", metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

func waitHolder(t *testing.T, ns, identity string) {
	t.Helper()
	waitFor(t, "lease held by "+identity, func() (bool, string) {
		h := leaseHolder(t, ns)
		return h == identity, "holder " + h
	})
}

func waitReady(t *testing.T, base string) {
	t.Helper()
	waitFor(t, base+"/readyz", func() (bool, string) {
		code, body := httpGet(base + "/readyz")
		return code == http.StatusOK, body
	})
}

// writesBesidesLease are the mutating requests an instance made other than
// for its lease: a standby makes none.
func writesBesidesLease(in *instance) []request {
	return in.find(func(r request) bool {
		return r.method != http.MethodGet && !strings.Contains(r.path, "/leases")
	})
}

// TestLeaderTakesOverAfterKill: of two replicas one acts, the other stands
// by (and is ready); when the leader dies without a word, the standby takes
// over within the lease duration and finishes the build the dead leader
// started, without starting it again.
func TestLeaderTakesOverAfterKill(t *testing.T) {
	ns := NewTestNamespace(t)
	c, _ := clients(t)
	be := backendtest.NewScripted()
	le := app.LeaderElection{LeaseDuration: 4 * time.Second, RenewDeadline: 3 * time.Second, RetryPeriod: 500 * time.Millisecond}

	a, aURL := replica(t, be, ns, "replica-a", le)
	waitHolder(t, ns, "replica-a")
	waitReady(t, aURL)
	b, bURL := replica(t, be, ns, "replica-b", le)
	waitReady(t, bURL) // as a standby

	createSpec(t, c, newImageSpec(ns, "first", v1alpha1.Packages{Apt: []string{"curl"}}))
	first := currentJobName(t, c, ns, "first", 1)
	waitForJobPhase(t, c, ns, first, v1alpha1.JobRunning)
	if w := writesBesidesLease(b); len(w) > 0 {
		t.Fatalf("the standby wrote %d times, first %s %s", len(w), w[0].method, w[0].path)
	}
	if code, _ := httpGet(bURL + "/healthz"); code != http.StatusOK {
		t.Fatalf("standby /healthz: %d", code)
	}

	a.kill(t)
	killed := time.Now()
	waitHolder(t, ns, "replica-b")
	takeover := time.Since(killed)
	t.Logf("takeover %v after the leader died (lease %v, retry %v)", takeover.Round(time.Millisecond), le.LeaseDuration, le.RetryPeriod)
	if limit := le.LeaseDuration + 3*time.Second; takeover > limit {
		t.Fatalf("takeover took %v, more than lease duration + slack %v", takeover, limit)
	}

	be.Succeed(ns+"/"+first, digestA)
	waitForJobPhase(t, c, ns, first, v1alpha1.JobSucceeded)
	createSpec(t, c, newImageSpec(ns, "second", v1alpha1.Packages{Apt: []string{"git"}}))
	second := currentJobName(t, c, ns, "second", 1)
	waitForJobPhase(t, c, ns, second, v1alpha1.JobRunning)
	be.Succeed(ns+"/"+second, digestA)
	waitForJobPhase(t, c, ns, second, v1alpha1.JobSucceeded)
	for _, job := range []string{first, second} {
		if n := be.Starts(ns + "/" + job); n != 1 {
			t.Fatalf("build of %s started %d times", job, n)
		}
	}
	if len(writesBesidesLease(b)) == 0 {
		t.Fatal("the new leader wrote nothing")
	}
}

// gatedBackend holds the first Ensure until the test releases it, so a sync
// is in flight when the controller is told to stop.
type gatedBackend struct {
	*backendtest.Scripted
	armed   atomic.Bool
	entered chan string
	release chan struct{}
	ctxErr  chan error
}

func (g *gatedBackend) Ensure(ctx context.Context, job *v1alpha1.ImageSpecJob) (backend.Status, error) {
	if g.armed.CompareAndSwap(true, false) {
		g.entered <- job.Namespace + "/" + job.Name
		<-g.release
		g.ctxErr <- ctx.Err()
	}
	return g.Scripted.Ensure(ctx, job)
}

// TestLeaderGracefulShutdown: SIGTERM (the cancelled context of app.Run)
// lets the sync in flight finish and write its status, keeps the lease
// while it does, then releases it so the standby takes over at once, long
// before the lease would expire.
func TestLeaderGracefulShutdown(t *testing.T) {
	ns := NewTestNamespace(t)
	c, _ := clients(t)
	be := &gatedBackend{Scripted: backendtest.NewScripted(), entered: make(chan string, 1), release: make(chan struct{}), ctxErr: make(chan error, 1)}
	be.armed.Store(true)
	// Without a release the standby would wait 20 s.
	le := app.LeaderElection{LeaseDuration: 20 * time.Second, RenewDeadline: 15 * time.Second, RetryPeriod: 500 * time.Millisecond}

	a, _ := replica(t, be, ns, "replica-a", le)
	waitHolder(t, ns, "replica-a")
	_, bURL := replica(t, be, ns, "replica-b", le)
	waitReady(t, bURL)

	createSpec(t, c, newImageSpec(ns, "graceful", v1alpha1.Packages{Apt: []string{"curl"}}))
	var key string
	select {
	case key = <-be.entered:
	case <-time.After(waitTimeout):
		t.Fatal("no build started")
	}
	job := strings.TrimPrefix(key, ns+"/")

	a.cancel() // SIGTERM
	stopped := time.Now()
	time.Sleep(500 * time.Millisecond)
	select {
	case <-a.done:
		t.Fatal("the leader stopped with a sync in flight")
	default:
	}
	if h := leaseHolder(t, ns); h != "replica-a" {
		t.Fatalf("lease held by %q while the leader still syncs", h)
	}
	close(be.release)
	if err := <-be.ctxErr; err != nil {
		t.Fatalf("the sync in flight lost its context at shutdown: %v", err)
	}
	a.wait(t)
	if a.err != nil {
		t.Fatalf("app.Run returned %v", a.err)
	}
	writes := a.find(func(r request) bool {
		return r.method == http.MethodPut && strings.HasSuffix(r.path, "/imagespecjobs/"+job+"/status") && r.code == http.StatusOK && r.at.After(stopped)
	})
	if len(writes) == 0 {
		t.Fatal("the sync in flight did not write the job's status after SIGTERM")
	}
	j, err := c.PrimehubV1alpha1().ImageSpecJobs(ns).Get(context.Background(), job, metav1.GetOptions{})
	if err != nil || j.Status.Phase != v1alpha1.JobRunning {
		t.Fatalf("job after the leader stopped: %v %+v", err, j.Status)
	}

	released := time.Now()
	waitHolder(t, ns, "replica-b")
	handover := time.Since(released)
	t.Logf("standby took over %v after the leader returned (lease %v)", handover.Round(time.Millisecond), le.LeaseDuration)
	if handover >= le.LeaseDuration/2 {
		t.Fatalf("handover took %v: the lease was not released", handover)
	}
	be.Succeed(key, digestA)
	waitForJobPhase(t, c, ns, job, v1alpha1.JobSucceeded)
	if n := be.Starts(key); n != 1 {
		t.Fatalf("build started %d times", n)
	}
}
