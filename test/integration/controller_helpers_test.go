package integration

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/app"
	"github.com/imagespec/imagespec-controller/pkg/backend/backendtest"
	"github.com/imagespec/imagespec-controller/pkg/config"
	"github.com/imagespec/imagespec-controller/pkg/controller"
	clientset "github.com/imagespec/imagespec-controller/pkg/generated/clientset/versioned"
)

const (
	testRepoPrefix = "registry.test.example/images"
	testUser       = "robot"
	testPassword   = "integration-secret-P4ss"
	waitTimeout    = 60 * time.Second
)

// runningController is a controller started through app.Run, the code path
// cmd/controller uses, against the shared API server.
type runningController struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when app.Run returned, with err set
	err    error
	// writes counts the controller's mutating API requests, conflicts
	// those the API server answered 409 Conflict.
	writes, conflicts *atomic.Int64
	// logger is the controller's; its sink keeps what was logged.
	logger klog.Logger
}

// log is what the controller logged so far.
func (r *runningController) log() string {
	if u, ok := r.logger.GetSink().(ktesting.Underlier); ok {
		return u.GetBuffer().String()
	}
	return ""
}

func (r *runningController) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case <-r.done:
		if r.err != nil {
			t.Errorf("controller returned %v", r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("controller did not stop")
	}
}

func defaultControllerOptions(namespace string) app.Options {
	return app.Options{
		Namespace: namespace,
		Workers:   4,
		QPS:       -1,
		Controller: controller.Options{
			Registry: config.Registry{
				Host: "registry.test.example", Username: testUser, Password: config.NewSecret(testPassword), RepoPrefix: testRepoPrefix,
			},
			BuildTimeout:          10 * time.Minute,
			SucceededHistoryLimit: 5,
			FailedHistoryLimit:    5,
			// No registry here: the scripted backend's jobs build.
			BuildExisting: true,
		},
	}
}

// startController runs a controller with the scripted backend until the
// test ends (or stop is called). writes counts its mutating requests.
func startController(tb testing.TB, be *backendtest.Scripted, opts app.Options) *runningController {
	tb.Helper()
	return startControllerObserved(tb, be, opts, nil)
}

// startControllerObserved is startController with beforeWrite called
// before each of the controller's mutating requests is sent.
func startControllerObserved(tb testing.TB, be *backendtest.Scripted, opts app.Options, beforeWrite func(*http.Request)) *runningController {
	tb.Helper()
	cfg := rest.CopyConfig(SharedControlPlane(tb).RESTConfig)
	writes, conflicts := &atomic.Int64{}, &atomic.Int64{}
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
			if req.Method != http.MethodGet {
				writes.Add(1)
				if beforeWrite != nil {
					beforeWrite(req)
				}
			}
			resp, err := rt.RoundTrip(req)
			if err == nil && resp.StatusCode == http.StatusConflict {
				conflicts.Add(1)
			}
			return resp, err
		})
	})
	r := startControllerWithConfig(tb, cfg, be, opts)
	r.writes, r.conflicts = writes, conflicts
	return r
}

func startControllerWithConfig(tb testing.TB, cfg *rest.Config, be *backendtest.Scripted, opts app.Options) *runningController {
	tb.Helper()
	clients, err := app.NewClients(cfg, opts)
	if err != nil {
		tb.Fatal(err)
	}
	// Buffered too, so a test can read what the controller logged.
	logger := ktesting.NewLogger(tb, ktesting.NewConfig(ktesting.BufferLogs(true)))
	ctx, cancel := context.WithCancel(klog.NewContext(context.Background(), logger))
	r := &runningController{cancel: cancel, done: make(chan struct{}), writes: &atomic.Int64{}, conflicts: &atomic.Int64{}, logger: logger}
	go func() {
		r.err = app.Run(ctx, clients, be, opts)
		close(r.done)
	}()
	tb.Cleanup(func() { cancel(); <-r.done })
	return r
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func clients(t *testing.T) (clientset.Interface, kubernetes.Interface) {
	t.Helper()
	cp := SharedControlPlane(t)
	c, err := clientset.NewForConfig(cp.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	k, err := kubernetes.NewForConfig(cp.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

func newImageSpec(ns, name string, pkgs v1alpha1.Packages) *v1alpha1.ImageSpec {
	return &v1alpha1.ImageSpec{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       v1alpha1.ImageSpecSpec{BaseImage: "python:3.11-slim", Packages: pkgs},
	}
}

func createSpec(t *testing.T, c clientset.Interface, spec *v1alpha1.ImageSpec) *v1alpha1.ImageSpec {
	t.Helper()
	created, err := c.PrimehubV1alpha1().ImageSpecs(spec.Namespace).Create(context.Background(), spec, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return created
}

// waitFor polls cond until it holds; the failure message comes from the
// last state seen.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, waitTimeout, true, func(context.Context) (bool, error) {
		ok, state := cond()
		last = state
		return ok, nil
	})
	if err != nil {
		t.Fatalf("timed out waiting for %s; last seen: %s", what, last)
	}
}

func waitForJobPhase(t *testing.T, c clientset.Interface, ns, name string, phase v1alpha1.ImageSpecJobPhase) *v1alpha1.ImageSpecJob {
	t.Helper()
	var job *v1alpha1.ImageSpecJob
	waitFor(t, fmt.Sprintf("job %s/%s in phase %s", ns, name, phase), func() (bool, string) {
		j, err := c.PrimehubV1alpha1().ImageSpecJobs(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		job = j
		return j.Status.Phase == phase, fmt.Sprintf("%+v", j.Status)
	})
	return job
}

func waitForSpec(t *testing.T, c clientset.Interface, ns, name, what string, cond func(*v1alpha1.ImageSpec) bool) *v1alpha1.ImageSpec {
	t.Helper()
	var spec *v1alpha1.ImageSpec
	waitFor(t, fmt.Sprintf("ImageSpec %s/%s: %s", ns, name, what), func() (bool, string) {
		s, err := c.PrimehubV1alpha1().ImageSpecs(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		spec = s
		return cond(s), fmt.Sprintf("%+v", s.Status)
	})
	return spec
}

// currentJobName waits until the ImageSpec names the job of its current
// spec and returns it.
func currentJobName(t *testing.T, c clientset.Interface, ns, name string, generation int64) string {
	t.Helper()
	s := waitForSpec(t, c, ns, name, "a job for the current generation", func(s *v1alpha1.ImageSpec) bool {
		return s.Status.ObservedGeneration >= generation && s.Status.JobName != ""
	})
	return s.Status.JobName
}

// updateSpec changes an ImageSpec the way a user would, retrying when the
// controller's status writes got there first.
func updateSpec(t *testing.T, c clientset.Interface, ns, name string, mutate func(*v1alpha1.ImageSpec)) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		s, err := c.PrimehubV1alpha1().ImageSpecs(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		mutate(s)
		_, err = c.PrimehubV1alpha1().ImageSpecs(ns).Update(context.Background(), s, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func readyCondition(s *v1alpha1.ImageSpec) *metav1.Condition {
	return meta.FindStatusCondition(s.Status.Conditions, v1alpha1.ConditionReady)
}

func listJobs(t *testing.T, c clientset.Interface, ns string) []v1alpha1.ImageSpecJob {
	t.Helper()
	list, err := c.PrimehubV1alpha1().ImageSpecJobs(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// eventsFor returns "Type Reason: Message" of the events about an object.
func eventsFor(t *testing.T, k kubernetes.Interface, ns, name string) []string {
	t.Helper()
	list, err := k.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range list.Items {
		out = append(out, fmt.Sprintf("%s %s: %s", e.Type, e.Reason, e.Message))
	}
	return out
}

func waitForEvent(t *testing.T, k kubernetes.Interface, ns, name, reason string) []string {
	t.Helper()
	var events []string
	waitFor(t, fmt.Sprintf("event %s on %s", reason, name), func() (bool, string) {
		events = eventsFor(t, k, ns, name)
		return strings.Contains(strings.Join(events, "\n"), " "+reason+":"), strings.Join(events, "; ")
	})
	return events
}

func pushSecret(t *testing.T, k kubernetes.Interface, ns string) *corev1.Secret {
	t.Helper()
	s, err := k.CoreV1().Secrets(ns).Get(context.Background(), controller.DefaultPushSecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}
