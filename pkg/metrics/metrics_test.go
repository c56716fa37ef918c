package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
)

func counter(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func observations(t *testing.T, phase, since string) uint64 {
	t.Helper()
	var m dto.Metric
	if err := BuildDuration.WithLabelValues(phase, since).(prometheus.Metric).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

func TestBuildTransition(t *testing.T) {
	created := metav1.NewTime(time.Now().Add(-time.Minute))
	started := metav1.NewTime(created.Add(10 * time.Second))
	finished := metav1.NewTime(created.Add(50 * time.Second))
	job := &v1alpha1.ImageSpecJob{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: created}}
	running := &v1alpha1.ImageSpecJobStatus{Phase: v1alpha1.JobRunning, Reason: v1alpha1.ReasonBuilding, StartTime: &started}
	done := &v1alpha1.ImageSpecJobStatus{Phase: v1alpha1.JobSucceeded, Reason: v1alpha1.ReasonSucceeded, StartTime: &started, FinishTime: &finished}

	runningBefore := counter(t, Builds.WithLabelValues("Running", "Building"))
	succeededBefore := counter(t, Builds.WithLabelValues("Succeeded", "Succeeded"))
	createdBefore, startedBefore := observations(t, "Succeeded", "created"), observations(t, "Succeeded", "started")

	BuildTransition(job, running)
	job.Status = *running
	BuildTransition(job, running) // no change: not counted again
	BuildTransition(job, done)
	job.Status = *done
	BuildTransition(job, done)

	if got := counter(t, Builds.WithLabelValues("Running", "Building")) - runningBefore; got != 1 {
		t.Errorf("Running counted %v times", got)
	}
	if got := counter(t, Builds.WithLabelValues("Succeeded", "Succeeded")) - succeededBefore; got != 1 {
		t.Errorf("Succeeded counted %v times", got)
	}
	if got := observations(t, "Succeeded", "created") - createdBefore; got != 1 {
		t.Errorf("%d durations since creation", got)
	}
	if got := observations(t, "Succeeded", "started") - startedBefore; got != 1 {
		t.Errorf("%d durations since start", got)
	}
}
