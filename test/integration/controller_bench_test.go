package integration

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/app"
	"github.com/imagespec/imagespec-controller/pkg/backend/backendtest"
	clientset "github.com/imagespec/imagespec-controller/pkg/generated/clientset/versioned"
)

// benchClient is a client without client-side throttling, so the baseline
// measures the API server, not a token bucket.
func benchClient(b *testing.B) clientset.Interface {
	cfg := rest.CopyConfig(SharedControlPlane(b).RESTConfig)
	cfg.QPS, cfg.Burst = -1, 0
	c, err := clientset.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// parallel runs fn(i) for i in [0,n) on workers goroutines.
func parallel(n, workers int, fn func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// BenchmarkSpecsToBuilds measures how long the controller takes from N
// ImageSpecs created at once until the backend was asked to build each,
// next to a plain client creating the same N jobs directly in the same run.
// Run: go test ./test/integration -run '^$' -bench SpecsToBuilds -benchtime 1x
func BenchmarkSpecsToBuilds(b *testing.B) {
	for _, n := range []int{100, 500, 1000} {
		b.Run(fmt.Sprintf("specs=%d", n), func(b *testing.B) {
			for it := 0; it < b.N; it++ {
				plain, ctrl := specsToBuilds(b, n)
				b.ReportMetric(plain.Seconds(), "plain-client-s")
				b.ReportMetric(ctrl.Seconds(), "controller-s")
				b.ReportMetric(ctrl.Seconds()/plain.Seconds(), "ratio")
			}
		})
	}
}

func specsToBuilds(b *testing.B, n int) (plain, ctrl time.Duration) {
	const creators = 16
	c := benchClient(b)
	ctx := context.Background()
	opts := defaultControllerOptions("")
	job := func(ns string, i int) *v1alpha1.ImageSpecJob {
		return &v1alpha1.ImageSpecJob{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("spec-%d-0123456789ab", i), Namespace: ns},
			Spec: v1alpha1.ImageSpecJobSpec{
				BaseImage: "python:3.11-slim", TargetImage: fmt.Sprintf("%s/spec-%d:0123456789ab", testRepoPrefix, i),
				Packages: v1alpha1.Packages{Pip: []string{fmt.Sprintf("pkg%d>=1", i)}},
			},
		}
	}

	// Warm the API server's paths for these kinds, so neither side pays
	// for the first requests.
	warm := NewTestNamespace(b)
	if err := parallel(50, creators, func(i int) error {
		_, err := c.PrimehubV1alpha1().ImageSpecJobs(warm).Create(ctx, job(warm, i), metav1.CreateOptions{})
		return err
	}); err != nil {
		b.Fatal(err)
	}

	// Baseline: the same number of jobs created directly.
	nsPlain := NewTestNamespace(b)
	start := time.Now()
	if err := parallel(n, creators, func(i int) error {
		_, err := c.PrimehubV1alpha1().ImageSpecJobs(nsPlain).Create(ctx, job(nsPlain, i), metav1.CreateOptions{})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	plain = time.Since(start)

	// The controller, with the client limits cmd/controller uses by default.
	ns := NewTestNamespace(b)
	opts.Namespace = ns
	opts.QPS, opts.Burst = app.DefaultQPS, app.DefaultBurst
	opts.Workers = app.DefaultWorkers
	be := backendtest.NewScripted()
	rc := startController(b, be, opts)
	defer rc.cancel()
	start = time.Now()
	go createBenchSpecs(b, c, ns, n, creators)
	deadline := time.After(5 * time.Minute)
	for got := 0; got < n; got++ {
		select {
		case <-be.Started():
		case <-deadline:
			b.Fatalf("%d of %d builds started after 5 minutes", got, n)
		}
	}
	ctrl = time.Since(start)
	b.Logf("%d specs: plain client %v, controller %v (%.2fx), %d API writes by the controller",
		n, plain.Round(time.Millisecond), ctrl.Round(time.Millisecond), ctrl.Seconds()/plain.Seconds(), rc.writes.Load())
	return plain, ctrl
}

// createBenchSpecs creates n ImageSpecs spec-<i> in namespace with
// workers concurrent clients, one pip package each.
func createBenchSpecs(b *testing.B, c clientset.Interface, namespace string, n, workers int) {
	if err := parallel(n, workers, func(i int) error {
		spec := newImageSpec(namespace, fmt.Sprintf("spec-%d", i), v1alpha1.Packages{Pip: []string{fmt.Sprintf("pkg%d>=1", i)}})
		_, err := c.PrimehubV1alpha1().ImageSpecs(namespace).Create(context.Background(), spec, metav1.CreateOptions{})
		return err
	}); err != nil {
		b.Error(err)
	}
}

// BenchmarkIdleRequests counts the controller's API requests (of any verb)
// over 60 idle seconds with finished ImageSpecs in place.
// Run: go test ./test/integration -run '^$' -bench IdleRequests -benchtime 1x
func BenchmarkIdleRequests(b *testing.B) {
	const n = 50
	c := benchClient(b)
	ns := NewTestNamespace(b)
	opts := defaultControllerOptions(ns)
	be := backendtest.NewScripted()
	var requests atomic.Int64
	rc := startControllerCounting(b, be, opts, &requests)
	defer rc.cancel()
	for i := 0; i < n; i++ {
		if _, err := c.PrimehubV1alpha1().ImageSpecs(ns).Create(context.Background(),
			newImageSpec(ns, fmt.Sprintf("idle-%d", i), v1alpha1.Packages{Apt: []string{"git"}}), metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < n; i++ {
		key := <-be.Started()
		be.Succeed(key, digestA)
	}
	time.Sleep(5 * time.Second) // let the last status writes land
	for it := 0; it < b.N; it++ {
		before := requests.Load()
		time.Sleep(60 * time.Second)
		b.ReportMetric(float64(requests.Load()-before), "requests/60s")
	}
}

// startControllerCounting is startController with a count of every request,
// reads included (watches are long-lived and count once when opened).
func startControllerCounting(tb testing.TB, be *backendtest.Scripted, opts app.Options, count *atomic.Int64) *runningController {
	tb.Helper()
	cfg := rest.CopyConfig(SharedControlPlane(tb).RESTConfig)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
			count.Add(1)
			return rt.RoundTrip(req)
		})
	})
	return startControllerWithConfig(tb, cfg, be, opts)
}
