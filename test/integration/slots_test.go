package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/backend/backendtest"
)

// Build slots are what the cluster shows: a restarted controller (no
// memory) counts the build still running, and deleting that job frees its
// slot for the queued one.
func TestSlotsFollowTheCluster(t *testing.T) {
	ns := NewTestNamespace(t)
	c, _ := clients(t)
	be := backendtest.NewScripted()
	opts := defaultControllerOptions(ns)
	opts.Controller.MaxConcurrentBuilds = 1
	first := startController(t, be, opts)

	createSpec(t, c, newImageSpec(ns, "holder", v1alpha1.Packages{Apt: []string{"git"}}))
	holder := currentJobName(t, c, ns, "holder", 1)
	waitForJobPhase(t, c, ns, holder, v1alpha1.JobRunning)
	first.stop(t)

	startController(t, be, opts)
	createSpec(t, c, newImageSpec(ns, "waiter", v1alpha1.Packages{Apt: []string{"curl"}}))
	waiter := currentJobName(t, c, ns, "waiter", 1)
	waitFor(t, "waiter queued behind the build from before the restart", func() (bool, string) {
		j := getJob(t, ns, waiter)
		return j.Status.Reason == v1alpha1.ReasonQueued, fmt.Sprintf("%+v", j.Status)
	})
	time.Sleep(500 * time.Millisecond)
	if be.Starts(ns+"/"+waiter) != 0 {
		t.Fatal("a build started past the limit after a restart")
	}

	// The holder's job is deleted: nothing to release, the cache shows it.
	if err := c.PrimehubV1alpha1().ImageSpecJobs(ns).Delete(context.Background(), holder, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitForJobPhase(t, c, ns, waiter, v1alpha1.JobRunning)
	if !be.Cancelled(ns + "/" + holder) {
		t.Fatal("the deleted job's build still runs")
	}
}
