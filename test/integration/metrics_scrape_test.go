package integration

import (
	"context"
	"net/http"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/app"
	"github.com/imagespec/imagespec-controller/pkg/backend/backendtest"
	"github.com/imagespec/imagespec-controller/test/framework/secretscan"
)

// scrape parses /metrics; the text must be valid Prometheus exposition.
func scrape(t *testing.T, url string) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	code, body := httpGet(url)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, code, body)
	}
	var p expfmt.TextParser
	families, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics is not Prometheus text: %v", err)
	}
	return families, body
}

// sample returns the value of the counter, gauge or histogram count of
// family whose labels include want; ok is false when there is none.
func sample(families map[string]*dto.MetricFamily, family string, want map[string]string) (value float64, ok bool) {
	f := families[family]
	if f == nil {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			if labels[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// TestMetricsAfterBuilds scrapes /metrics of a controller (one address for
// metrics and probes) around a successful and a failed build: the build
// counters move with the right phase and reason, durations are observed
// from creation and from start, and the workqueues report.
func TestMetricsAfterBuilds(t *testing.T) {
	ns := NewTestNamespace(t)
	c, _ := clients(t)
	be := backendtest.NewScripted()
	opts := defaultControllerOptions(ns)
	addr := freeAddr(t)
	opts.MetricsAddr, opts.HealthAddr = addr, addr
	startInstance(t, SharedControlPlane(t).RESTConfig, be, opts)
	base := "http://" + addr
	waitReady(t, base)
	if code, _ := httpGet(base + "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d", code)
	}

	// Other tests of this package run controllers in this process too:
	// compare with a scrape taken before, never with absolute numbers.
	before, _ := scrape(t, base+"/metrics")
	type series struct {
		family string
		labels map[string]string
	}
	watched := []series{
		{"imagespec_builds_total", map[string]string{"phase": "Running", "reason": "Building"}},
		{"imagespec_builds_total", map[string]string{"phase": "Succeeded", "reason": "Succeeded"}},
		{"imagespec_builds_total", map[string]string{"phase": "Failed", "reason": "BuildFailed"}},
		{"imagespec_build_duration_seconds", map[string]string{"phase": "Succeeded", "since": "created"}},
		{"imagespec_build_duration_seconds", map[string]string{"phase": "Succeeded", "since": "started"}},
		{"imagespec_build_duration_seconds", map[string]string{"phase": "Failed", "since": "started"}},
		{"workqueue_adds_total", map[string]string{"name": "ImageSpecJobs"}},
		{"workqueue_adds_total", map[string]string{"name": "ImageSpecs"}},
		{"workqueue_queue_duration_seconds", map[string]string{"name": "ImageSpecJobs"}},
		{"workqueue_work_duration_seconds", map[string]string{"name": "ImageSpecs"}},
	}

	createSpec(t, c, newImageSpec(ns, "good", v1alpha1.Packages{Apt: []string{"curl"}}))
	good := currentJobName(t, c, ns, "good", 1)
	waitForJobPhase(t, c, ns, good, v1alpha1.JobRunning)
	be.Succeed(ns+"/"+good, digestA)
	waitForJobPhase(t, c, ns, good, v1alpha1.JobSucceeded)
	createSpec(t, c, newImageSpec(ns, "bad", v1alpha1.Packages{Apt: []string{"no-such-package"}}))
	bad := currentJobName(t, c, ns, "bad", 1)
	waitForJobPhase(t, c, ns, bad, v1alpha1.JobRunning)
	be.Fail(ns+"/"+bad, v1alpha1.ReasonBuildFailed, "E: Unable to locate package no-such-package", "")
	waitForJobPhase(t, c, ns, bad, v1alpha1.JobFailed)

	after, text := scrape(t, base+"/metrics")
	for _, s := range watched {
		b, _ := sample(before, s.family, s.labels)
		a, ok := sample(after, s.family, s.labels)
		if !ok || a <= b {
			t.Errorf("%s%v: %v before, %v after (present %v)", s.family, s.labels, b, a, ok)
		}
	}
	for _, family := range []string{"workqueue_depth", "workqueue_retries_total", "workqueue_unfinished_work_seconds", "workqueue_longest_running_processor_seconds", "imagespec_leader", "go_goroutines", "process_resident_memory_bytes"} {
		if after[family] == nil {
			t.Errorf("no %s in /metrics", family)
		}
	}
	if v, _ := sample(after, "imagespec_leader", nil); v != 1 {
		t.Errorf("imagespec_leader %v for a controller without leader election", v)
	}
	if found := secretscan.Find(map[string]string{"/metrics": text}, secretscan.Credential{User: testUser, Password: testPassword}); len(found) > 0 {
		t.Fatalf("/metrics shows the registry credentials: %v", found)
	}
}

// TestMetricsIdleServesProbes: with the feature off the controller builds
// nothing but its probes and metrics answer, so its Deployment stays
// healthy; they stop with it.
func TestMetricsIdleServesProbes(t *testing.T) {
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- app.Idle(ctx, addr, addr) }()
	base := "http://" + addr
	waitReady(t, base)
	if code, body := httpGet(base + "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d %s", code, body)
	}
	scrape(t, base+"/metrics")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Idle returned %v", err)
	}
	if code, _ := httpGet(base + "/healthz"); code != 0 {
		t.Fatalf("/healthz still answers %d after stop", code)
	}
}
