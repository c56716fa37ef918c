package controller

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/builtimage"
)

// A job whose target the registry already has with its revision's label
// ends Succeeded (AlreadyBuilt) with the registry's digest and never
// reaches the backend; a missing image or a failed read builds; each job
// is looked for once; a running build of an image found is stopped.
func TestAlreadyBuilt(t *testing.T) {
	const digest = "sha256:" + "ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12"
	for _, c := range []struct {
		name    string
		found   bool
		err     error
		phase   v1alpha1.ImageSpecJobPhase // of the job before the sync
		builds  bool
		cancels bool
	}{
		{name: "found", found: true},
		{name: "missing", builds: true},
		{name: "read-failed", err: errors.New("connection refused"), builds: true},
		{name: "found-while-running", found: true, phase: v1alpha1.JobRunning, cancels: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := newSpec("app", v1alpha1.Packages{Pip: []string{"requests"}})
			var reads atomic.Int32
			var asked string
			opts := defaultOptions()
			opts.BuildExisting = false
			opts.FindBuilt = func(ctx context.Context, target string) (builtimage.Image, bool, error) {
				if _, bounded := ctx.Deadline(); !bounded {
					t.Error("the registry read has no deadline")
				}
				reads.Add(1)
				asked = target
				return builtimage.Image{Digest: digest, BaseDigest: baseDigest1}, c.found, c.err
			}
			f0 := newFixture(t, opts, spec)
			job := f0.jobFor(spec, c.phase)
			if c.phase != "" {
				job.Status.Backend = f0.backend.Name()
			}
			f := newFixture(t, opts, spec, job)
			key := job.Namespace + "/" + job.Name
			if c.phase == v1alpha1.JobRunning {
				// The build this process's predecessor started.
				if _, err := f.backend.Ensure(context.Background(), job); err != nil {
					t.Fatal(err)
				}
			}
			startsBefore := f.backend.Starts(key)
			f.syncJob(job)
			if reads.Load() != 1 || asked != job.Spec.TargetImage {
				t.Fatalf("%d reads of %q, want 1 of %s", reads.Load(), asked, job.Spec.TargetImage)
			}
			if got := f.backend.Starts(key) > startsBefore; got != c.builds {
				t.Errorf("backend started a build: %v, want %v", got, c.builds)
			}
			if got := f.backend.Cancels(key) > 0; got != c.cancels {
				t.Errorf("backend cancelled: %v, want %v", got, c.cancels)
			}
			st := statusUpdate[*v1alpha1.ImageSpecJob](t, f.writes(), "imagespecjobs").Status
			if !c.found {
				if st.Reason == v1alpha1.ReasonAlreadyBuilt {
					t.Errorf("status %+v", st)
				}
				// Looked for once: later syncs of the same job build on.
				f.syncJob(job)
				if reads.Load() != 1 {
					t.Errorf("%d reads after a second sync, want 1", reads.Load())
				}
				return
			}
			if st.Phase != v1alpha1.JobSucceeded || st.Reason != v1alpha1.ReasonAlreadyBuilt || st.Digest != digest ||
				st.Image != job.Spec.TargetImage || st.BaseImageDigest != baseDigest1 || st.FinishTime == nil ||
				!strings.Contains(st.Message, job.Spec.TargetImage+"@"+digest) {
				t.Errorf("status %+v", st)
			}
			if ev := f.events(); len(ev) != 1 || !strings.Contains(ev[0], v1alpha1.EventBuildSucceeded) {
				t.Errorf("events %v, want one %s", ev, v1alpha1.EventBuildSucceeded)
			}
		})
	}
}
