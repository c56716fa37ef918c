package controller

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	core "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/basetrack"
)

var (
	baseDigest1 = "sha256:" + strings.Repeat("1", 64)
	baseDigest2 = "sha256:" + strings.Repeat("2", 64)
)

const trackedBase = "docker.io/library/python:3.11-slim"

func trackingFixtureWith(t *testing.T, opts Options, specs []*v1alpha1.ImageSpec, more ...*v1alpha1.ImageSpecJob) *fixture {
	t.Helper()
	var objs []runtime.Object
	for _, s := range specs {
		objs = append(objs, s)
	}
	for _, j := range more {
		objs = append(objs, j)
	}
	f := newFixture(t, opts, objs...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.ctrl.baseTracker.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(10 * time.Second)
	for _, s := range specs {
		key, ok := f.ctrl.baseKey(s)
		if !ok {
			continue
		}
		for {
			if _, known := f.ctrl.baseTracker.Digest(key); known {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the tracker never checked %v", key)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return f
}

func trackedSpec(name string, track *bool) *v1alpha1.ImageSpec {
	s := newSpec(name, v1alpha1.Packages{Pip: []string{"requests"}})
	s.Spec.TrackBaseImage = track
	return s
}

func jobCreates(actions []core.Action) []*v1alpha1.ImageSpecJob {
	var out []*v1alpha1.ImageSpecJob
	for _, a := range actions {
		if a.GetVerb() == "create" && a.GetResource().Resource == "imagespecjobs" {
			out = append(out, a.(core.CreateAction).GetObject().(*v1alpha1.ImageSpecJob))
		}
	}
	return out
}

// The first digest seen is recorded with the spec's normal status write and
// builds nothing.
func TestFirstBaseDigestBuildsNothing(t *testing.T) {
	spec := trackedSpec("a", ptr.To(true))
	f0 := newFixture(t, defaultOptions(), spec)
	job := f0.jobFor(spec, v1alpha1.JobSucceeded)
	opts := defaultOptions()
	opts.BaseImages = BaseImageTracking{Interval: time.Hour, Check: func(context.Context, basetrack.Key) (string, error) { return baseDigest1, nil }}
	f := trackingFixtureWith(t, opts, []*v1alpha1.ImageSpec{spec}, job)
	f.syncSpec(spec)
	if c := jobCreates(f.writes()); len(c) != 0 {
		t.Fatalf("the first digest created jobs: %v", c)
	}
	st := statusUpdate[*v1alpha1.ImageSpec](t, f.writes(), "imagespecs").Status
	if tb := st.TrackedBaseImage; tb == nil || tb.Image != trackedBase || tb.Digest != baseDigest1 || tb.RevisionDigest != "" {
		t.Errorf("trackedBaseImage %+v", tb)
	}
	if st.JobName != job.Name {
		t.Errorf("status names job %s, want %s", st.JobName, job.Name)
	}
}

// A moved tag is written to status first, then builds exactly one new
// revision, whose job says why.
func TestMovedBaseBuildsOneRevision(t *testing.T) {
	spec := trackedSpec("a", nil) // the controller's default decides
	spec.Status.TrackedBaseImage = &v1alpha1.TrackedBaseImage{Image: trackedBase, Digest: baseDigest1}
	f0 := newFixture(t, defaultOptions(), spec)
	old := f0.jobFor(spec, v1alpha1.JobSucceeded)
	old.Status.BaseImageDigest = baseDigest1
	spec.Status.JobName = old.Name

	opts := defaultOptions()
	opts.BaseImages = BaseImageTracking{Default: true, Interval: time.Hour, Check: func(context.Context, basetrack.Key) (string, error) { return baseDigest2, nil }}
	f := trackingFixtureWith(t, opts, []*v1alpha1.ImageSpec{spec}, old)
	f.syncSpec(spec)
	if c := jobCreates(f.writes()); len(c) != 0 {
		t.Fatalf("a job was created before the revision digest was stored: %v", c)
	}
	if j := statusUpdate[*v1alpha1.ImageSpec](t, f.writes(), "imagespecs").Status.JobName; j != old.Name {
		t.Errorf("status names job %s before the new revision's job exists, want %s", j, old.Name)
	}
	updated := statusUpdate[*v1alpha1.ImageSpec](t, f.writes(), "imagespecs")
	if tb := updated.Status.TrackedBaseImage; tb == nil || tb.Digest != baseDigest2 || tb.RevisionDigest != baseDigest2 {
		t.Fatalf("trackedBaseImage %+v, want digest and revisionDigest %s", tb, baseDigest2)
	}

	// The status write's event syncs the spec again.
	f = trackingFixtureWith(t, opts, []*v1alpha1.ImageSpec{updated}, old)
	f.syncSpec(updated)
	created := jobCreates(f.writes())
	if len(created) != 1 {
		t.Fatalf("%d jobs created, want 1", len(created))
	}
	j := created[0]
	if j.Spec.Cause != v1alpha1.CauseBaseImageUpdate || !strings.Contains(j.Spec.CauseMessage, baseDigest1+" -> "+baseDigest2) {
		t.Errorf("cause %s %q", j.Spec.Cause, j.Spec.CauseMessage)
	}
	if j.Annotations[BaseImageDigestAnnotation] != baseDigest2 || j.Name == old.Name || j.Spec.TargetImage == old.Spec.TargetImage {
		t.Errorf("new job %s (%s) annotations %v; old job %s", j.Name, j.Spec.TargetImage, j.Annotations, old.Name)
	}

	// With that job in place, syncing again creates nothing more.
	f = trackingFixtureWith(t, opts, []*v1alpha1.ImageSpec{updated}, old, j)
	f.syncSpec(updated)
	if c := jobCreates(f.writes()); len(c) != 0 {
		t.Errorf("a second job for the same move: %v", c)
	}
}

// Untracked specs are never checked; a digest reference is never tracked.
func TestUntrackedSpecs(t *testing.T) {
	off := trackedSpec("off", ptr.To(false))
	pinned := trackedSpec("pinned", ptr.To(true))
	pinned.Spec.BaseImage = "python@" + baseDigest1
	defaultOff := trackedSpec("default-off", nil)
	opts := defaultOptions()
	opts.BaseImages = BaseImageTracking{Interval: time.Hour, Check: func(context.Context, basetrack.Key) (string, error) { return baseDigest1, nil }}
	f := trackingFixtureWith(t, opts, []*v1alpha1.ImageSpec{off, pinned, defaultOff})
	for _, s := range []*v1alpha1.ImageSpec{off, pinned, defaultOff} {
		if k, ok := f.ctrl.baseKey(s); ok {
			t.Errorf("%s is tracked as %v", s.Name, k)
		}
	}
	if keys := f.ctrl.trackedBaseKeys(); len(keys) != 0 {
		t.Errorf("tracked keys %v", keys)
	}
	// Tracking off for the whole controller: no tracker at all.
	f = newFixture(t, defaultOptions(), trackedSpec("on", ptr.To(true)))
	if f.ctrl.baseTracker != nil {
		t.Error("a tracker runs with --base-image-check-interval=0")
	}
}

// Tracking checks a base the way builds pull it: with the controller's
// credentials only for a shared repository or the spec's own images, so no
// tenant learns of another's image through them.
func TestBaseKeyPullScope(t *testing.T) {
	opts := defaultOptions()
	opts.SharedRepositories = []string{"registry.example.com/bases"}
	opts.BaseImages = BaseImageTracking{Interval: time.Hour, Check: func(context.Context, basetrack.Key) (string, error) { return baseDigest1, nil }}
	f := newFixture(t, opts)
	for base, want := range map[string]bool{
		"registry.example.com/bases/python:3":     true,
		testPrefix + "/tracked:0123456789ab":      true, // its own earlier revision
		testPrefix + "/other-tenant:latest":       false,
		"registry.example.com/elsewhere/python:3": false,
		trackedBase: false,
	} {
		s := trackedSpec("tracked", ptr.To(true))
		s.Spec.BaseImage = base
		k, ok := f.ctrl.baseKey(s)
		if !ok || k.PushCredentials != want {
			t.Errorf("%s: key %+v (tracked %v), want PushCredentials %v", base, k, ok, want)
		}
	}
}
