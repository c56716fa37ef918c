package integration

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/backend"
	"github.com/imagespec/imagespec-controller/pkg/backend/backendtest"
	"github.com/imagespec/imagespec-controller/pkg/controller"
)

// A backend whose view lags (a kubelet reporting a terminated container
// while the pod is still Running used to read as Pending) never moves a
// job back: the watch sees Pending, Running, Succeeded and nothing else.
func TestJobPhaseOnlyMovesForward(t *testing.T) {
	ns := NewTestNamespace(t)
	c, _ := clients(t)
	phases := watchPhases(t, c, ns)
	be := backendtest.NewScripted()
	be.Initial = backend.Status{Phase: v1alpha1.JobPending, Message: "Waiting for a node"}
	startController(t, be, defaultControllerOptions(ns))

	createSpec(t, c, newImageSpec(ns, "fwd", v1alpha1.Packages{Pip: []string{"requests>=2.31"}}))
	name := currentJobName(t, c, ns, "fwd", 1)
	key := ns + "/" + name
	waitForJobPhase(t, c, ns, name, v1alpha1.JobPending)
	now := metav1.Now()
	be.Set(key, backend.Status{Phase: v1alpha1.JobRunning, StartTime: &now, Message: "Building"})
	waitForJobPhase(t, c, ns, name, v1alpha1.JobRunning)
	be.Set(key, backend.Status{Phase: v1alpha1.JobPending, Message: "Starting build pod (late kubelet report)"})
	// The controller has seen the lagging report once it has synced the
	// job again; give it that sync before the build finishes.
	time.Sleep(500 * time.Millisecond)
	if j := waitForJobPhase(t, c, ns, name, v1alpha1.JobRunning); strings.Contains(j.Status.Message, "late kubelet") {
		t.Fatalf("a Running job took a Pending report's message: %+v", j.Status)
	}
	be.Succeed(key, digestA)
	waitForJobPhase(t, c, ns, name, v1alpha1.JobSucceeded)
	waitFor(t, "the watch to see Succeeded", func() (bool, string) {
		seq := phases.of(name)
		return len(seq) > 0 && seq[len(seq)-1] == v1alpha1.JobSucceeded, fmt.Sprint(seq)
	})
	want := []v1alpha1.ImageSpecJobPhase{v1alpha1.JobPending, v1alpha1.JobRunning, v1alpha1.JobSucceeded}
	if got := phases.of(name); !reflect.DeepEqual(got, want) {
		t.Fatalf("phases %v, want %v", got, want)
	}
}

// A backend that cannot start a build says why in the job's status
// (Pending, BackendError, the message without the registry password), the
// spec's Ready condition says it too, and the build starts once the
// backend works again.
func TestJobBackendErrorInStatus(t *testing.T) {
	ns := NewTestNamespace(t)
	c, k := clients(t)
	be := backendtest.NewScripted()
	startController(t, be, defaultControllerOptions(ns))

	refused := errors.New("dial tcp 10.0.0.1:443: connect: connection refused (token " + testPassword + ")")
	be.FailEnsure("", refused)
	created := createSpec(t, c, newImageSpec(ns, "broken-backend", v1alpha1.Packages{Apt: []string{"git"}}))
	name := currentJobName(t, c, ns, created.Name, 1)
	key := ns + "/" + name

	waitFor(t, "the backend error in the job's status", func() (bool, string) {
		j, err := c.PrimehubV1alpha1().ImageSpecJobs(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return j.Status.Phase == v1alpha1.JobPending && j.Status.Reason == v1alpha1.ReasonBackendError &&
			strings.Contains(j.Status.Message, "connection refused"), fmt.Sprintf("%+v", j.Status)
	})
	j, _ := c.PrimehubV1alpha1().ImageSpecJobs(ns).Get(context.Background(), name, metav1.GetOptions{})
	if strings.Contains(j.Status.Message, testPassword) || !strings.Contains(j.Status.Message, "[redacted]") {
		t.Fatalf("message not redacted: %q", j.Status.Message)
	}
	waitForSpec(t, c, ns, created.Name, "Ready says why", func(s *v1alpha1.ImageSpec) bool {
		r := readyCondition(s)
		return r != nil && r.Reason == v1alpha1.ReasonBackendError && strings.Contains(r.Message, "connection refused")
	})
	waitForEvent(t, k, ns, name, v1alpha1.ReasonBackendError)
	// Rate-limited: retries keep failing, but the status is written again
	// at most every few seconds.
	rv := j.ResourceVersion
	time.Sleep(2 * time.Second)
	j2, _ := c.PrimehubV1alpha1().ImageSpecJobs(ns).Get(context.Background(), name, metav1.GetOptions{})
	if j2.ResourceVersion != rv {
		t.Fatalf("the job was written again within 2 s of an unchanged error: %+v", j2.Status)
	}

	be.FailEnsure("", nil)
	be.FailEnsure(key, nil)
	waitForJobPhase(t, c, ns, name, v1alpha1.JobRunning)
	assertNoPassword(t, ns)
}

// A push Secret the controller cannot write (a Secret of that name that
// is not its own) keeps the job Pending with reason PushSecretFailed, and
// the build starts once the conflict is gone.
func TestJobPushSecretErrorInStatus(t *testing.T) {
	ns := NewTestNamespace(t)
	c, k := clients(t)
	foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: controller.DefaultPushSecretName, Namespace: ns},
		StringData: map[string]string{"note": "made by hand"}}
	if _, err := k.CoreV1().Secrets(ns).Create(context.Background(), foreign, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	be := backendtest.NewScripted()
	startController(t, be, defaultControllerOptions(ns))

	createSpec(t, c, newImageSpec(ns, "nosecret", v1alpha1.Packages{Apt: []string{"git"}}))
	name := currentJobName(t, c, ns, "nosecret", 1)
	waitFor(t, "the push Secret error in the job's status", func() (bool, string) {
		j, err := c.PrimehubV1alpha1().ImageSpecJobs(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return j.Status.Phase == v1alpha1.JobPending && j.Status.Reason == v1alpha1.ReasonPushSecretFailed &&
			strings.Contains(j.Status.Message, "not managed by"), fmt.Sprintf("%+v", j.Status)
	})
	if be.Starts(ns+"/"+name) != 0 {
		t.Fatal("the build started without push credentials")
	}
	waitForEvent(t, k, ns, name, v1alpha1.ReasonPushSecretFailed)
	if err := k.CoreV1().Secrets(ns).Delete(context.Background(), controller.DefaultPushSecretName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitForJobPhase(t, c, ns, name, v1alpha1.JobRunning)
	assertNoPassword(t, ns)
}

// Deleting an ImageSpec stops its build at once. This control plane runs
// no garbage collector, so the job stays: only the controller can have
// stopped the build.
func TestDeleteSpecCancelsBuild(t *testing.T) {
	ns := NewTestNamespace(t)
	c, _ := clients(t)
	be := backendtest.NewScripted()
	startController(t, be, defaultControllerOptions(ns))

	createSpec(t, c, newImageSpec(ns, "gone", v1alpha1.Packages{Apt: []string{"git"}}))
	name := currentJobName(t, c, ns, "gone", 1)
	waitForJobPhase(t, c, ns, name, v1alpha1.JobRunning)
	start := time.Now()
	if err := c.PrimehubV1alpha1().ImageSpecs(ns).Delete(context.Background(), "gone", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the build cancelled", func() (bool, string) { return be.Cancelled(ns + "/" + name), "running" })
	took := time.Since(start)
	job := waitForJobPhase(t, c, ns, name, v1alpha1.JobCancelled)
	if job.Status.Reason != v1alpha1.ReasonImageSpecDeleted {
		t.Fatalf("job status %+v", job.Status)
	}
	if took > 5*time.Second {
		t.Fatalf("the build was cancelled %s after the delete", took)
	}
	t.Logf("build cancelled %s after the ImageSpec was deleted", took.Round(time.Millisecond))
}

// A cancel the backend never confirms (a node that is down) finalizes the
// job after --cancel-timeout with reason CancelIncomplete, frees its
// build slot for the next job, and an event names what may be left.
func TestCancelThatNeverCompletes(t *testing.T) {
	ns := NewTestNamespace(t)
	c, k := clients(t)
	be := backendtest.NewScripted()
	opts := defaultControllerOptions(ns)
	opts.Controller.MaxConcurrentBuilds = 1
	opts.Controller.CancelTimeout = 3 * time.Second
	startController(t, be, opts)

	createSpec(t, c, newImageSpec(ns, "stuck", v1alpha1.Packages{Apt: []string{"git"}}))
	stuck := currentJobName(t, c, ns, "stuck", 1)
	waitForJobPhase(t, c, ns, stuck, v1alpha1.JobRunning)
	createSpec(t, c, newImageSpec(ns, "next", v1alpha1.Packages{Apt: []string{"curl"}}))
	next := currentJobName(t, c, ns, "next", 1)
	waitFor(t, "next queued", func() (bool, string) {
		j, err := c.PrimehubV1alpha1().ImageSpecJobs(ns).Get(context.Background(), next, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return j.Status.Reason == v1alpha1.ReasonQueued, fmt.Sprintf("%+v", j.Status)
	})

	be.HangCancels(ns + "/" + stuck)
	start := time.Now()
	patch := []byte(`{"spec":{"cancel":true}}`)
	if _, err := c.PrimehubV1alpha1().ImageSpecJobs(ns).Patch(context.Background(), stuck, "application/merge-patch+json", patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	job := waitForJobPhase(t, c, ns, stuck, v1alpha1.JobCancelled)
	took := time.Since(start)
	if job.Status.Reason != v1alpha1.ReasonCancelIncomplete || !strings.Contains(job.Status.Message, "may be left") ||
		!strings.Contains(job.Status.Message, "spec.cancel") {
		t.Fatalf("job status %+v", job.Status)
	}
	if took < 3*time.Second || took > 15*time.Second {
		t.Fatalf("finalized %s after the cancel, want about the 3s cancel timeout", took)
	}
	if n := be.CancelAttempts(ns + "/" + stuck); n < 1 {
		t.Fatalf("%d cancel attempts", n)
	}
	events := waitForEvent(t, k, ns, stuck, v1alpha1.ReasonCancelIncomplete)
	if !strings.Contains(strings.Join(events, "\n"), "may be left") {
		t.Fatalf("events %v", events)
	}
	// Its slot is free: the queued job builds.
	waitForJobPhase(t, c, ns, next, v1alpha1.JobRunning)
	t.Logf("finalized %s after the cancel (%d attempts)", took.Round(time.Millisecond), be.CancelAttempts(ns+"/"+stuck))
}
