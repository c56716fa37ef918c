// Package backendtest provides Scripted, a backend whose builds a test
// drives by hand. Controller tests use it to reach every state of a build
// (pending, running, failed, slow) on a real API server without building
// images; the real backends have their own end-to-end tests.
package backendtest

import (
	"context"
	"fmt"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/backend"
)

// Scripted is a Backend whose builds change state only when the test says.
// It is safe for concurrent use and survives controller restarts (the same
// value can be handed to a new controller), like a build that outlives the
// controller process.
type Scripted struct {
	// Initial is the state a build starts in; Running when zero.
	Initial backend.Status

	mu        sync.Mutex
	notify    backend.Notify
	builds    map[string]*build
	ensures   map[string]int
	starts    map[string]int
	cancels   map[string]int
	started   chan string
	startedAt map[string]time.Time
	// ensureErrs and hangingCancels make Ensure fail and Cancel never
	// complete for a job, as a broken backend or a node that is down.
	ensureErrs     map[string]error
	hangingCancels map[string]bool
	cancelAttempts map[string]int
}

type build struct {
	status    backend.Status
	cancelled bool
}

// NewScripted returns a Scripted backend.
func NewScripted() *Scripted {
	return &Scripted{
		builds:    map[string]*build{},
		ensures:   map[string]int{},
		starts:    map[string]int{},
		cancels:   map[string]int{},
		started:   make(chan string, 100000),
		startedAt: map[string]time.Time{},

		ensureErrs:     map[string]error{},
		cancelAttempts: map[string]int{},
		hangingCancels: map[string]bool{},
	}
}

func key(job *v1alpha1.ImageSpecJob) string { return job.Namespace + "/" + job.Name }

// Name implements backend.Backend.
func (s *Scripted) Name() string { return "scripted" }

// Run implements backend.Backend.
func (s *Scripted) Run(_ context.Context, notify backend.Notify) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.notify = notify
	return nil
}

// Ensure implements backend.Backend: the first call for a job starts its
// build in the Initial state.
func (s *Scripted) Ensure(_ context.Context, job *v1alpha1.ImageSpecJob) (backend.Status, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := key(job)
	s.ensures[k]++
	if err := s.ensureErrs[k]; err != nil {
		return backend.Status{}, err
	}
	if err := s.ensureErrs[""]; err != nil {
		return backend.Status{}, err
	}
	b, ok := s.builds[k]
	if !ok || b.cancelled {
		st := s.Initial
		if st.Phase == "" {
			st.Phase = v1alpha1.JobRunning
		}
		if st.Phase == v1alpha1.JobRunning && st.StartTime == nil {
			now := metav1.Now()
			st.StartTime = &now
		}
		b = &build{status: st}
		s.builds[k] = b
		s.starts[k]++
		s.startedAt[k] = time.Now()
		s.started <- k
	}
	return b.status, nil
}

// Cancel implements backend.Backend.
func (s *Scripted) Cancel(ctx context.Context, job *v1alpha1.ImageSpecJob) error {
	k := key(job)
	s.mu.Lock()
	if s.hangingCancels[k] {
		s.cancelAttempts[k]++
		s.mu.Unlock()
		<-ctx.Done()
		return fmt.Errorf("build of %s is still stopping: %w", k, ctx.Err())
	}
	defer s.mu.Unlock()
	if b, ok := s.builds[k]; ok && !b.cancelled {
		b.cancelled = true
		s.cancels[k]++
	}
	return nil
}

// Set moves the build of the job with key namespace/name to st and tells
// the controller, as a real backend's watch would.
func (s *Scripted) Set(jobKey string, st backend.Status) {
	s.mu.Lock()
	b, ok := s.builds[jobKey]
	if !ok {
		b = &build{}
		s.builds[jobKey] = b
	}
	b.status = st
	notify := s.notify
	s.mu.Unlock()
	if notify != nil {
		notify(jobKey)
	}
}

// Succeed finishes a build with a digest.
func (s *Scripted) Succeed(jobKey, digest string) {
	s.Set(jobKey, backend.Status{Phase: v1alpha1.JobSucceeded, Digest: digest, StartTime: s.startTime(jobKey)})
}

// Fail finishes a build with a reason.
func (s *Scripted) Fail(jobKey, reason, msg, logTail string) {
	s.Set(jobKey, backend.Status{Phase: v1alpha1.JobFailed, Reason: reason, Message: msg, LogTail: logTail, StartTime: s.startTime(jobKey)})
}

func (s *Scripted) startTime(jobKey string) *metav1.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.builds[jobKey]; ok {
		return b.status.StartTime
	}
	return nil
}

// Started delivers the key of every build as it starts.
func (s *Scripted) Started() <-chan string { return s.started }

// Starts is how many times a build of the job was started.
func (s *Scripted) Starts(jobKey string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.starts[jobKey]
}

// Cancels is how many times a running build of the job was cancelled.
func (s *Scripted) Cancels(jobKey string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cancels[jobKey]
}

// Cancelled reports whether the job's build was cancelled.
func (s *Scripted) Cancelled(jobKey string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.builds[jobKey]
	return ok && b.cancelled
}

// Running is how many builds are started and neither finished nor cancelled.
func (s *Scripted) Running() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, b := range s.builds {
		if !b.cancelled && !b.status.Phase.IsFinal() {
			n++
		}
	}
	return n
}

// StartedAt is when the job's build started; zero when it did not.
func (s *Scripted) StartedAt(jobKey string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.startedAt[jobKey]
}

// FailEnsure makes Ensure of the job return err (nil: work again) and
// tells the controller. An empty key fails every job's Ensure.
func (s *Scripted) FailEnsure(jobKey string, err error) {
	s.mu.Lock()
	s.ensureErrs[jobKey] = err
	notify := s.notify
	s.mu.Unlock()
	if notify != nil && jobKey != "" {
		notify(jobKey)
	}
}

// HangCancels makes Cancel of the job block until its context ends and
// fail, as for a build on a node that is down.
func (s *Scripted) HangCancels(jobKey string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hangingCancels[jobKey] = true
}

// CancelAttempts is how many hanging Cancel calls the job got.
func (s *Scripted) CancelAttempts(jobKey string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cancelAttempts[jobKey]
}
