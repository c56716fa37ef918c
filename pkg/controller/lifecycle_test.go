package controller

import (
	"testing"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/backend"
)

// A backend that reports Pending for a Running job (a kubelet reporting
// the container terminated while the pod still runs) does not move the
// job back.
func TestBackendLagNeverMovesPhaseBack(t *testing.T) {
	spec := newSpec("lag", v1alpha1.Packages{Apt: []string{"curl"}})
	base := newFixture(t, defaultOptions(), spec)
	job := base.jobFor(spec, v1alpha1.JobRunning)
	job.Status.Reason = v1alpha1.ReasonBuilding
	job.Status.Message = "Building in pod"
	f := newFixture(t, defaultOptions(), spec, job)
	f.backend.Set(keyOf(job).String(), backend.Status{Phase: v1alpha1.JobPending, Message: "Starting build pod"})
	f.syncJob(job)
	for _, a := range f.writes() {
		if a.GetSubresource() == "status" {
			st := statusUpdate[*v1alpha1.ImageSpecJob](t, f.writes(), "imagespecjobs").Status
			if st.Phase != v1alpha1.JobRunning || st.Message != "Building in pod" {
				t.Fatalf("running job rewritten to %+v", st)
			}
		}
	}
}

// A job whose ImageSpec is gone is cancelled at once, before garbage
// collection deletes it.
func TestOwnerDeletedCancelsBuild(t *testing.T) {
	spec := newSpec("gone", v1alpha1.Packages{Apt: []string{"curl"}})
	base := newFixture(t, defaultOptions(), spec)
	job := base.jobFor(spec, v1alpha1.JobRunning)
	f := newFixture(t, defaultOptions(), job) // the spec is not in the cache
	f.backend.Set(keyOf(job).String(), backend.Status{Phase: v1alpha1.JobRunning})
	f.syncJob(job)
	st := statusUpdate[*v1alpha1.ImageSpecJob](t, f.writes(), "imagespecjobs").Status
	if st.Phase != v1alpha1.JobCancelled || st.Reason != v1alpha1.ReasonImageSpecDeleted || !f.backend.Cancelled(keyOf(job).String()) {
		t.Fatalf("status %+v, cancelled %v", st, f.backend.Cancelled(keyOf(job).String()))
	}
}
