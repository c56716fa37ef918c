package integration

import (
	"context"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	clientset "github.com/imagespec/imagespec-controller/pkg/generated/clientset/versioned"
)

// phaseLog records, from a watch, every phase each job of a namespace is
// seen in, as anyone running kubectl get -w would.
type phaseLog struct {
	mu     sync.Mutex
	phases map[string][]v1alpha1.ImageSpecJobPhase
}

func watchPhases(t *testing.T, c clientset.Interface, ns string) *phaseLog {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := c.PrimehubV1alpha1().ImageSpecJobs(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	l := &phaseLog{phases: map[string][]v1alpha1.ImageSpecJobPhase{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			job, ok := ev.Object.(*v1alpha1.ImageSpecJob)
			if !ok || ev.Type == watch.Deleted {
				continue
			}
			l.mu.Lock()
			seq := l.phases[job.Name]
			if job.Status.Phase != "" && (len(seq) == 0 || seq[len(seq)-1] != job.Status.Phase) {
				l.phases[job.Name] = append(seq, job.Status.Phase)
			}
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() { w.Stop(); cancel(); <-done })
	return l
}

func (l *phaseLog) of(job string) []v1alpha1.ImageSpecJobPhase {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]v1alpha1.ImageSpecJobPhase(nil), l.phases[job]...)
}
