package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/backend/buildahpod"
)

// Every phase of a real build, as a watch (kubectl get -w) sees it, only
// moves forward: the job's and the ImageSpec's.
func testPhasesOnlyMoveForward(t *testing.T, b Backend) {
	env := SharedEnv(t)
	ns := NewNamespace(t)
	c := b.Start(t, ns, ControllerConfig{})
	jobPhases := watchJobPhases(t, c, ns)
	specPhases := watchSpecPhases(t, c, ns)
	createSpec(t, c, ns, "fwd", v1alpha1.ImageSpecSpec{
		BaseImage: env.BaseImage,
		Packages:  v1alpha1.Packages{Pip: []string{"e2e-hello"}},
	})
	job := WaitJob(t, c, ns, "fwd", "", buildTimeout)
	requireBuiltBy(t, job, b.Name, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
	// Give the watches the last events and a moment for any late report
	// that would move a phase back.
	time.Sleep(2 * time.Second)
	seq := jobPhases.of(job.Name)
	if err := forward(seq); err != nil || len(seq) == 0 || seq[len(seq)-1] != v1alpha1.JobSucceeded {
		t.Errorf("job phases %v: %v", seq, err)
	}
	if b.Name == buildahpod.Name && (len(seq) < 2 || seq[len(seq)-2] != v1alpha1.JobRunning) {
		t.Errorf("job phases %v: the pod build never showed Running", seq)
	}
	sseq := specPhases.of("fwd")
	if err := forward(sseq); err != nil || len(sseq) == 0 || sseq[len(sseq)-1] != v1alpha1.JobSucceeded {
		t.Errorf("ImageSpec phases %v: %v", sseq, err)
	}
	t.Logf("%s: job phases %v, ImageSpec phases %v", b.Name, seq, sseq)
}

// Deleting an ImageSpec mid-build stops the build at once, without waiting
// for garbage collection (which runs here, as in a real cluster): the job
// ends Cancelled/ImageSpecDeleted, or is collected first and the controller
// stops its build then. Afterwards nothing of it is left, nothing is
// pushed when the package index answers, and a second controller started
// on the namespace recreates nothing.
func testDeleteSpecStopsBuild(t *testing.T, b Backend) {
	env := SharedEnv(t)
	ns := NewNamespace(t)
	index := newHangingIndex(t)
	cfg := ControllerConfig{Tweak: hangingIndexOptions(index)}
	c := b.Start(t, ns, cfg)
	createSpec(t, c, ns, "doomed", v1alpha1.ImageSpecSpec{
		BaseImage: env.BaseImage,
		Packages:  v1alpha1.Packages{Pip: []string{"e2e-hello"}},
	})
	job := runningJob(t, c, ns, "doomed", "", index)
	start := time.Now()
	if err := c.Clients.Client.PrimehubV1alpha1().ImageSpecs(ns).Delete(context.Background(), "doomed", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	var last *v1alpha1.ImageSpecJob
	WaitFor(t, time.Minute, func(ctx context.Context) (bool, string) {
		j, err := c.Clients.Client.PrimehubV1alpha1().ImageSpecJobs(ns).Get(ctx, job.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, ""
		}
		if err != nil {
			return false, err.Error()
		}
		last = j
		return j.Status.Phase.IsFinal(), fmt.Sprintf("%s/%s %s", j.Status.Phase, j.Status.Reason, j.Status.Message)
	})
	if last != nil && last.Status.Phase.IsFinal() &&
		(last.Status.Phase != v1alpha1.JobCancelled || last.Status.Reason != v1alpha1.ReasonImageSpecDeleted) {
		t.Fatalf("job %s: %s/%s, want Cancelled/ImageSpecDeleted: %s", job.Name, last.Status.Phase, last.Status.Reason, last.Status.Message)
	}
	b.WaitStopped(t, ns, job)
	took := time.Since(start)
	if took > 20*time.Second {
		t.Errorf("the build stopped %s after the ImageSpec was deleted", took)
	}
	t.Logf("%s: build stopped %s after the ImageSpec was deleted", b.Name, took.Round(time.Millisecond))

	// Garbage collection leaves no job behind.
	WaitFor(t, time.Minute, func(ctx context.Context) (bool, string) {
		jobs, err := c.Clients.Client.PrimehubV1alpha1().ImageSpecJobs(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		return len(jobs.Items) == 0, fmt.Sprintf("%d jobs left", len(jobs.Items))
	})
	index.Release()
	time.Sleep(3 * time.Second)
	if TagExists(t, env.Registry, job.Spec.TargetImage) {
		t.Errorf("%s was pushed after its ImageSpec was deleted", job.Spec.TargetImage)
	}

	// Another replica coming up after GC recreates nothing.
	c2 := b.Start(t, ns, cfg)
	time.Sleep(3 * time.Second)
	jobs, err := c2.Clients.Client.PrimehubV1alpha1().ImageSpecJobs(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil || len(jobs.Items) != 0 {
		t.Errorf("after GC a new controller left jobs %v (err %v)", jobs, err)
	}
	b.WaitStopped(t, ns, job)
}

// Deleting a namespace with two running builds stops both and leaves
// nothing: the namespace is gone, and nothing is pushed when the package
// index answers afterwards.
func testDeleteNamespaceStopsBuilds(t *testing.T, b Backend) {
	env := SharedEnv(t)
	ns := NewNamespace(t)
	index := newHangingIndex(t)
	c := b.Start(t, ns, ControllerConfig{Tweak: hangingIndexOptions(index)})
	var jobs []*v1alpha1.ImageSpecJob
	for _, name := range []string{"one", "two"} {
		createSpec(t, c, ns, name, v1alpha1.ImageSpecSpec{
			BaseImage: env.BaseImage,
			Packages:  v1alpha1.Packages{Pip: []string{"e2e-hello"}},
		})
	}
	for _, name := range []string{"one", "two"} {
		jobs = append(jobs, runningJob(t, c, ns, name, "", index))
	}
	start := time.Now()
	if err := c.Clients.Kube.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		b.WaitStopped(t, ns, j)
	}
	stopped := time.Since(start)
	WaitFor(t, 3*time.Minute, func(ctx context.Context) (bool, string) {
		_, err := c.Clients.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprintf("namespace: %v", err)
	})
	t.Logf("%s: builds stopped %s, namespace gone %s after it was deleted", b.Name, stopped.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	index.Release()
	time.Sleep(3 * time.Second)
	for _, j := range jobs {
		if TagExists(t, env.Registry, j.Spec.TargetImage) {
			t.Errorf("%s was pushed after its namespace was deleted", j.Spec.TargetImage)
		}
	}
}

// phaseLog records every phase each object of a namespace is seen in.
type phaseLog struct {
	mu     sync.Mutex
	phases map[string][]v1alpha1.ImageSpecJobPhase
}

func (l *phaseLog) add(name string, p v1alpha1.ImageSpecJobPhase) {
	l.mu.Lock()
	defer l.mu.Unlock()
	seq := l.phases[name]
	if p != "" && (len(seq) == 0 || seq[len(seq)-1] != p) {
		l.phases[name] = append(seq, p)
	}
}

func (l *phaseLog) of(name string) []v1alpha1.ImageSpecJobPhase {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]v1alpha1.ImageSpecJobPhase(nil), l.phases[name]...)
}

func watchJobPhases(t *testing.T, c *Controller, ns string) *phaseLog {
	t.Helper()
	w, err := c.Clients.Client.PrimehubV1alpha1().ImageSpecJobs(ns).Watch(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return recordPhases(t, w, func(obj any) (string, v1alpha1.ImageSpecJobPhase, bool) {
		j, ok := obj.(*v1alpha1.ImageSpecJob)
		if !ok {
			return "", "", false
		}
		return j.Name, j.Status.Phase, true
	})
}

func watchSpecPhases(t *testing.T, c *Controller, ns string) *phaseLog {
	t.Helper()
	w, err := c.Clients.Client.PrimehubV1alpha1().ImageSpecs(ns).Watch(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return recordPhases(t, w, func(obj any) (string, v1alpha1.ImageSpecJobPhase, bool) {
		s, ok := obj.(*v1alpha1.ImageSpec)
		if !ok {
			return "", "", false
		}
		return s.Name, s.Status.Phase, true
	})
}

func recordPhases(t *testing.T, w watch.Interface, phaseOf func(any) (string, v1alpha1.ImageSpecJobPhase, bool)) *phaseLog {
	l := &phaseLog{phases: map[string][]v1alpha1.ImageSpecJobPhase{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			if ev.Type == watch.Deleted {
				continue
			}
			if name, p, ok := phaseOf(ev.Object); ok {
				l.add(name, p)
			}
		}
	}()
	t.Cleanup(func() { w.Stop(); <-done })
	return l
}

var phaseOrder = map[v1alpha1.ImageSpecJobPhase]int{
	v1alpha1.JobPending: 1, v1alpha1.JobRunning: 2,
	v1alpha1.JobSucceeded: 3, v1alpha1.JobFailed: 3, v1alpha1.JobCancelled: 3,
}

// forward reports an error when seq moves back or holds two final phases.
func forward(seq []v1alpha1.ImageSpecJobPhase) error {
	for i := 1; i < len(seq); i++ {
		if phaseOrder[seq[i]] <= phaseOrder[seq[i-1]] {
			return fmt.Errorf("phase went from %s to %s", seq[i-1], seq[i])
		}
	}
	return nil
}
