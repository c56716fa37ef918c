package integration

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/backend/backendtest"
)

// Every job says why it exists (spec.cause and causeMessage, a JobCreated
// event on the ImageSpec), and kubectl get shows it; kubectl get
// imagespecs shows the Ready reason.
func TestJobCauses(t *testing.T) {
	ns := NewTestNamespace(t)
	c, k := clients(t)
	be := backendtest.NewScripted()
	startController(t, be, defaultControllerOptions(ns))

	createSpec(t, c, newImageSpec(ns, "why", v1alpha1.Packages{Apt: []string{"vim", "curl"}, Pip: []string{"numpy"}}))
	first := currentJobName(t, c, ns, "why", 1)
	waitForJobPhase(t, c, ns, first, v1alpha1.JobRunning)
	be.Fail(ns+"/"+first, v1alpha1.ReasonBuildFailed, "E: Unable to locate package vim", "")
	waitForJobPhase(t, c, ns, first, v1alpha1.JobFailed)

	updateSpec(t, c, ns, "why", func(s *v1alpha1.ImageSpec) {
		s.Spec.Packages = v1alpha1.Packages{Apt: []string{"curl"}, Pip: []string{"numpy", "requests>=2.31"}}
	})
	second := currentJobName(t, c, ns, "why", 2)
	updateSpec(t, c, ns, "why", func(s *v1alpha1.ImageSpec) { s.Spec.UpdateTime = "2026-12-02T00:00:00Z" })
	third := currentJobName(t, c, ns, "why", 3)
	// Back to the first spec, whose job failed: a retry.
	updateSpec(t, c, ns, "why", func(s *v1alpha1.ImageSpec) {
		s.Spec.Packages = v1alpha1.Packages{Apt: []string{"vim", "curl"}, Pip: []string{"numpy"}}
		s.Spec.UpdateTime = ""
	})
	fourth := currentJobName(t, c, ns, "why", 4)

	want := []struct{ job, cause, msg string }{
		{first, v1alpha1.CauseFirstBuild, "first build of " + testRepoPrefix + "/why:"},
		{second, v1alpha1.CauseSpecChange, "apt: -vim; pip: +requests>=2.31"},
		{third, v1alpha1.CauseRebuild, `updateTime: "" -> "2026-12-02T00:00:00Z"`},
		{fourth, v1alpha1.CauseRetry, "attempt 2; job " + first + " ended Failed (BuildFailed)"},
	}
	for _, w := range want {
		j := getJob(t, ns, w.job)
		if j.Spec.Cause != w.cause || !strings.Contains(j.Spec.CauseMessage, w.msg) {
			t.Errorf("job %s: cause %s %q, want %s %q", w.job, j.Spec.Cause, j.Spec.CauseMessage, w.cause, w.msg)
		}
	}
	events := strings.Join(waitForEvent(t, k, ns, "why", v1alpha1.EventJobCreated), "\n")
	for _, w := range want {
		if !strings.Contains(events, "Created ImageSpecJob "+w.job) || !strings.Contains(events, "("+w.cause+": ") {
			t.Errorf("no JobCreated event with the cause of %s:\n%s", w.job, events)
		}
	}

	cp := SharedControlPlane(t)
	out, err := cp.Kubectl(context.Background(), "get", "imagespecjobs", "-n", ns, "-o", "wide")
	if err != nil {
		t.Fatalf("kubectl get: %v\n%s", err, out)
	}
	for _, s := range []string{"CAUSE", "CHANGE", v1alpha1.CauseRetry, "apt: -vim; pip: +requests>=2.31"} {
		if !strings.Contains(string(out), s) {
			t.Errorf("kubectl get imagespecjobs -o wide lacks %q:\n%s", s, out)
		}
	}
	waitForJobPhase(t, c, ns, fourth, v1alpha1.JobRunning)
	be.Fail(ns+"/"+fourth, v1alpha1.ReasonBuildFailed, "E: Unable to locate package vim", "")
	waitForSpec(t, c, ns, "why", "failed", func(s *v1alpha1.ImageSpec) bool { return s.Status.Phase == v1alpha1.JobFailed })
	// The fully qualified name: "imagespecs" alone is also the category
	// that lists jobs too.
	out, err = cp.Kubectl(context.Background(), "get", "imagespecs.primehub.io", "why", "-n", ns)
	if err != nil {
		t.Fatalf("kubectl get: %v\n%s", err, out)
	}
	if lines := strings.Fields(string(out)); !slices.Contains(lines, "REASON") || !slices.Contains(lines, v1alpha1.ReasonBuildFailed) {
		t.Errorf("kubectl get imagespecs does not show the Ready reason:\n%s", out)
	}
	t.Logf("kubectl get imagespecs:\n%s", out)
}
