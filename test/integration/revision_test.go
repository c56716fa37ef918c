package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/backend/backendtest"
	"github.com/imagespec/imagespec-controller/pkg/dockerfile"
)

const digestB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

func getJob(t *testing.T, ns, name string) *v1alpha1.ImageSpecJob {
	t.Helper()
	c, _ := clients(t)
	j, err := c.PrimehubV1alpha1().ImageSpecJobs(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func succeededWith(image string) func(*v1alpha1.ImageSpec) bool {
	return func(s *v1alpha1.ImageSpec) bool {
		r := readyCondition(s)
		return s.Status.Image == image && r != nil && r.Status == metav1.ConditionTrue
	}
}

// A controller restarted with another repository prefix builds every
// ImageSpec again under the new name, with the same tag (a new attempt
// of the same revision tag); changing a package source does not.
func TestRevisionPrefixChangeRebuilds(t *testing.T) {
	ns := NewTestNamespace(t)
	c, _ := clients(t)
	be := backendtest.NewScripted()
	opts := defaultControllerOptions(ns)
	first := startController(t, be, opts)

	createSpec(t, c, newImageSpec(ns, "moving", v1alpha1.Packages{Pip: []string{"requests>=2.31"}}))
	name := currentJobName(t, c, ns, "moving", 1)
	waitForJobPhase(t, c, ns, name, v1alpha1.JobRunning)
	be.Succeed(ns+"/"+name, digestA)
	oldImage := getJob(t, ns, name).Spec.TargetImage
	waitForSpec(t, c, ns, "moving", "built", succeededWith(oldImage))
	tag := strings.TrimPrefix(oldImage, testRepoPrefix+"/moving:")
	first.stop(t)

	// Another package source alone: same revision, nothing builds.
	opts.Controller.Sources = dockerfile.Sources{PipIndexURL: "https://pypi.internal.example/simple"}
	second := startController(t, be, opts)
	time.Sleep(time.Second)
	if jobs := listJobs(t, c, ns); len(jobs) != 1 {
		t.Fatalf("a package source change made %d jobs, want 1", len(jobs))
	}
	second.stop(t)

	const newPrefix = "registry2.test.example/team"
	opts.Controller.Registry.RepoPrefix = newPrefix
	opts.Controller.Registry.Host = "registry2.test.example"
	startController(t, be, opts)
	newName := name + "-2"
	waitForJobPhase(t, c, ns, newName, v1alpha1.JobRunning)
	job := getJob(t, ns, newName)
	if want := newPrefix + "/moving:" + tag; job.Spec.TargetImage != want {
		t.Fatalf("new job targets %s, want %s", job.Spec.TargetImage, want)
	}
	// Until it is pushed, the spec keeps the image that works.
	if s := waitForSpec(t, c, ns, "moving", "building the new place", func(s *v1alpha1.ImageSpec) bool {
		return s.Status.JobName == newName
	}); s.Status.Image != oldImage {
		t.Fatalf("spec image %q while the new place builds, want %q", s.Status.Image, oldImage)
	}
	be.Succeed(ns+"/"+newName, digestB)
	waitForSpec(t, c, ns, "moving", "built at the new place", succeededWith(job.Spec.TargetImage))
	if n := be.Starts(ns + "/" + newName); n != 1 {
		t.Fatalf("new place built %d times", n)
	}
}

// An edit that lands on a revision whose job failed (or was cancelled)
// starts a new attempt, <spec>-<tag>-<n>, keeping the earlier ones as
// history; a failure without an edit is not retried.
func TestRevisionRetryAfterFailureOrCancel(t *testing.T) {
	ns := NewTestNamespace(t)
	c, _ := clients(t)
	be := backendtest.NewScripted()
	startController(t, be, defaultControllerOptions(ns))

	a := v1alpha1.Packages{Pip: []string{"not-yet-published>=1"}}
	b := v1alpha1.Packages{Pip: []string{"requests>=2.31"}}
	createSpec(t, c, newImageSpec(ns, "retry", a))
	jobA := currentJobName(t, c, ns, "retry", 1)
	waitForJobPhase(t, c, ns, jobA, v1alpha1.JobRunning)
	be.Fail(ns+"/"+jobA, v1alpha1.ReasonBuildFailed, "No matching distribution found for not-yet-published>=1", "")
	waitForJobPhase(t, c, ns, jobA, v1alpha1.JobFailed)
	time.Sleep(time.Second)
	if jobs := listJobs(t, c, ns); len(jobs) != 1 {
		t.Fatalf("a failure without an edit made %d jobs, want 1", len(jobs))
	}

	// Edit to B, then back to A while B builds: A's second attempt
	// builds, B is superseded.
	updateSpec(t, c, ns, "retry", func(s *v1alpha1.ImageSpec) { s.Spec.Packages = b })
	jobB := currentJobName(t, c, ns, "retry", 2)
	waitForJobPhase(t, c, ns, jobB, v1alpha1.JobRunning)
	updateSpec(t, c, ns, "retry", func(s *v1alpha1.ImageSpec) { s.Spec.Packages = a })
	jobA2 := currentJobName(t, c, ns, "retry", 3)
	if jobA2 != jobA+"-2" {
		t.Fatalf("second attempt of %s is %s, want %s-2", jobA, jobA2, jobA)
	}
	waitForJobPhase(t, c, ns, jobA2, v1alpha1.JobRunning)
	if j := waitForJobPhase(t, c, ns, jobB, v1alpha1.JobCancelled); j.Status.Reason != v1alpha1.ReasonSuperseded ||
		!strings.Contains(j.Status.Message, jobA2) {
		t.Fatalf("B: %+v", j.Status)
	}
	be.Succeed(ns+"/"+jobA2, digestA)
	waitForSpec(t, c, ns, "retry", "A built", succeededWith(getJob(t, ns, jobA2).Spec.TargetImage))

	// Back to B, whose job was cancelled: its second attempt builds.
	updateSpec(t, c, ns, "retry", func(s *v1alpha1.ImageSpec) { s.Spec.Packages = b })
	jobB2 := currentJobName(t, c, ns, "retry", 4)
	if jobB2 != jobB+"-2" {
		t.Fatalf("second attempt of %s is %s", jobB, jobB2)
	}
	waitForJobPhase(t, c, ns, jobB2, v1alpha1.JobRunning)
	// History: every attempt is still there.
	got := map[string]v1alpha1.ImageSpecJobPhase{}
	for _, j := range listJobs(t, c, ns) {
		got[j.Name] = j.Status.Phase
	}
	want := map[string]v1alpha1.ImageSpecJobPhase{jobA: v1alpha1.JobFailed, jobA2: v1alpha1.JobSucceeded,
		jobB: v1alpha1.JobCancelled, jobB2: v1alpha1.JobRunning}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("jobs %v, want %v", got, want)
	}
	for _, n := range []string{jobA, jobA2, jobB, jobB2} {
		if s := be.Starts(ns + "/" + n); s != 1 {
			t.Fatalf("%s started %d times", n, s)
		}
	}
}

// Reverting to a revision that succeeded switches the spec back to its
// image at once, without a build.
func TestRevisionRevertToSucceeded(t *testing.T) {
	ns := NewTestNamespace(t)
	c, _ := clients(t)
	be := backendtest.NewScripted()
	startController(t, be, defaultControllerOptions(ns))

	a := v1alpha1.Packages{Apt: []string{"curl"}}
	createSpec(t, c, newImageSpec(ns, "revert", a))
	jobA := currentJobName(t, c, ns, "revert", 1)
	waitForJobPhase(t, c, ns, jobA, v1alpha1.JobRunning)
	be.Succeed(ns+"/"+jobA, digestA)
	imageA := getJob(t, ns, jobA).Spec.TargetImage
	waitForSpec(t, c, ns, "revert", "A built", succeededWith(imageA))

	updateSpec(t, c, ns, "revert", func(s *v1alpha1.ImageSpec) { s.Spec.Packages.Apt = []string{"vim"} })
	jobB := currentJobName(t, c, ns, "revert", 2)
	waitForJobPhase(t, c, ns, jobB, v1alpha1.JobRunning)
	be.Succeed(ns+"/"+jobB, digestB)
	waitForSpec(t, c, ns, "revert", "B built", succeededWith(getJob(t, ns, jobB).Spec.TargetImage))

	start := time.Now()
	updateSpec(t, c, ns, "revert", func(s *v1alpha1.ImageSpec) { s.Spec.Packages = a })
	s := waitForSpec(t, c, ns, "revert", "back to A", func(s *v1alpha1.ImageSpec) bool {
		return s.Status.ObservedGeneration == 3 && succeededWith(imageA)(s)
	})
	if s.Status.JobName != jobA || be.Starts(ns+"/"+jobA) != 1 || len(listJobs(t, c, ns)) != 2 {
		t.Fatalf("revert built again: status %+v, starts %d, %d jobs", s.Status, be.Starts(ns+"/"+jobA), len(listJobs(t, c, ns)))
	}
	t.Logf("switched back in %s", time.Since(start).Round(time.Millisecond))
}
