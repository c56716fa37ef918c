// Package metrics holds the controller's Prometheus metrics: client-go
// workqueue metrics, build outcomes and durations, and leadership. They live
// in one registry served on /metrics in the Prometheus text format.
package metrics

import (
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/util/workqueue"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
)

const namespace = "imagespec"

// Registry holds every metric of this process. A registry of our own, not
// prometheus.DefaultRegisterer, so libraries cannot add metrics unnoticed.
var Registry = prometheus.NewRegistry()

var (
	// Builds counts jobs entering a phase; reason tells queued from
	// running Pending jobs and failures apart (Timeout, BuildFailed, ...).
	Builds = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "builds_total",
		Help:      "ImageSpecJobs that entered a phase, by phase and reason.",
	}, []string{"phase", "reason"})

	// BuildDuration is observed once per finished job, twice when it ran:
	// since creation (what users wait, queueing included) and since start.
	BuildDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace,
		Name:      "build_duration_seconds",
		Help:      "Time from a job's creation (since=created) or start (since=started) to its final phase, by phase.",
		// 1 s to about 4.5 h: from a cached rebuild to a large conda image.
		Buckets: prometheus.ExponentialBuckets(1, 2, 15),
	}, []string{"phase", "since"})

	// BaseImageChecks counts base image tag checks by result: first,
	// unchanged, changed (a new revision follows) or error.
	BaseImageChecks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace,
		Name:      "base_image_checks_total",
		Help:      "Base image tag checks of base image tracking, by result (first, unchanged, changed, error).",
	}, []string{"result"})

	// Leader is 1 while this process holds the lease (or runs without
	// leader election).
	Leader = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace,
		Name:      "leader",
		Help:      "1 while this replica is the acting controller, 0 while it is a standby.",
	})
)

// Workqueue metrics, named as Kubernetes components name them so existing
// dashboards work.
var (
	wqDepth = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Subsystem: "workqueue", Name: "depth",
		Help: "Current depth of the workqueue.",
	}, []string{"name"})
	wqAdds = prometheus.NewCounterVec(prometheus.CounterOpts{
		Subsystem: "workqueue", Name: "adds_total",
		Help: "Total number of adds handled by the workqueue.",
	}, []string{"name"})
	wqLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Subsystem: "workqueue", Name: "queue_duration_seconds",
		Help:    "How long in seconds an item stays in the workqueue before being requested.",
		Buckets: prometheus.ExponentialBuckets(1e-6, 10, 10),
	}, []string{"name"})
	wqWork = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Subsystem: "workqueue", Name: "work_duration_seconds",
		Help:    "How long in seconds processing an item from the workqueue takes.",
		Buckets: prometheus.ExponentialBuckets(1e-6, 10, 10),
	}, []string{"name"})
	wqUnfinished = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Subsystem: "workqueue", Name: "unfinished_work_seconds",
		Help: "Seconds of work in progress not yet observed by work_duration; large values mean stuck workers.",
	}, []string{"name"})
	wqLongest = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Subsystem: "workqueue", Name: "longest_running_processor_seconds",
		Help: "How many seconds the longest running processor has been running.",
	}, []string{"name"})
	wqRetries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Subsystem: "workqueue", Name: "retries_total",
		Help: "Total number of retries handled by the workqueue.",
	}, []string{"name"})
)

var registerOnce sync.Once

// Register adds all metrics to Registry and makes every workqueue created
// afterwards report to it. Call it before building the controller; later
// calls do nothing.
func Register() {
	registerOnce.Do(func() {
		Registry.MustRegister(
			collectors.NewGoCollector(),
			collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
			Builds, BuildDuration, BaseImageChecks, Leader,
			wqDepth, wqAdds, wqLatency, wqWork, wqUnfinished, wqLongest, wqRetries,
		)
		workqueue.SetProvider(queueProvider{})
	})
}

// Handler serves Registry in the Prometheus exposition format.
func Handler() http.Handler {
	return promhttp.HandlerFor(Registry, promhttp.HandlerOpts{})
}

// BuildTransition records a job's move from its stored status to next.
// Called once per phase change, after the status was written.
func BuildTransition(job *v1alpha1.ImageSpecJob, next *v1alpha1.ImageSpecJobStatus) {
	if job.Status.Phase == next.Phase && job.Status.Reason == next.Reason {
		return
	}
	Builds.WithLabelValues(string(next.Phase), next.Reason).Inc()
	if !next.Phase.IsFinal() || job.Status.Phase.IsFinal() || next.FinishTime == nil {
		return
	}
	end := next.FinishTime.Time
	if d := end.Sub(job.CreationTimestamp.Time); !job.CreationTimestamp.IsZero() && d >= 0 {
		BuildDuration.WithLabelValues(string(next.Phase), "created").Observe(d.Seconds())
	}
	if next.StartTime != nil {
		if d := end.Sub(next.StartTime.Time); d >= 0 {
			BuildDuration.WithLabelValues(string(next.Phase), "started").Observe(d.Seconds())
		}
	}
}

// queueProvider implements workqueue.MetricsProvider.
type queueProvider struct{}

func (queueProvider) NewDepthMetric(name string) workqueue.GaugeMetric {
	return wqDepth.WithLabelValues(name)
}

func (queueProvider) NewAddsMetric(name string) workqueue.CounterMetric {
	return wqAdds.WithLabelValues(name)
}

func (queueProvider) NewLatencyMetric(name string) workqueue.HistogramMetric {
	return wqLatency.WithLabelValues(name)
}

func (queueProvider) NewWorkDurationMetric(name string) workqueue.HistogramMetric {
	return wqWork.WithLabelValues(name)
}

func (queueProvider) NewUnfinishedWorkSecondsMetric(name string) workqueue.SettableGaugeMetric {
	return wqUnfinished.WithLabelValues(name)
}

func (queueProvider) NewLongestRunningProcessorSecondsMetric(name string) workqueue.SettableGaugeMetric {
	return wqLongest.WithLabelValues(name)
}

func (queueProvider) NewRetriesMetric(name string) workqueue.CounterMetric {
	return wqRetries.WithLabelValues(name)
}
