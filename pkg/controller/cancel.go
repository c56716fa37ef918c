package controller

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
)

const (
	// DefaultCancelTimeout bounds how long a cancel may stay unconfirmed
	// before the job is finalized anyway.
	DefaultCancelTimeout = 2 * time.Minute
	// cancelAttempt bounds one Cancel call, so a node that is down does
	// not hold a worker: the backend's watch (a pod's deletion) brings the
	// job back as soon as the build is gone.
	cancelAttempt = 5 * time.Second
	// errorStatusInterval rate-limits status writes of repeated errors
	// (push Secret, backend) per job.
	errorStatusInterval = 10 * time.Second
)

// jobMarks remembers a value per job key: when cancelling began, when an
// error was last written to status, which job (by UID) was looked for in
// the registry.
type jobMarks[V any] struct {
	mu sync.Mutex
	m  map[cache.ObjectName]V
}

func (t *jobMarks[V]) get(key cache.ObjectName) (V, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	v, ok := t.m[key]
	return v, ok
}

// firstOr stores v unless a value is stored, and returns the stored one.
func (t *jobMarks[V]) firstOr(key cache.ObjectName, v V) V {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[cache.ObjectName]V{}
	}
	if stored, ok := t.m[key]; ok {
		return stored
	}
	t.m[key] = v
	return v
}

func (t *jobMarks[V]) set(key cache.ObjectName, v V) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[cache.ObjectName]V{}
	}
	t.m[key] = v
}

func (t *jobMarks[V]) forget(key cache.ObjectName) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, key)
}

// boundedCancel asks the backend to cancel the job's build. Each attempt
// is short; once attempts have failed for opts.CancelTimeout, giveUp is
// true and the caller finalizes the job anyway. The clock starts at the
// first attempt this process made (a restarted controller starts it
// again).
func (c *Controller) boundedCancel(ctx context.Context, job *v1alpha1.ImageSpecJob) (giveUp bool, err error) {
	key := keyOf(job)
	first := c.cancelling.firstOr(key, c.now())
	deadline := first.Add(c.opts.CancelTimeout)
	attempt := cancelAttempt
	if left := deadline.Sub(c.now()); left < attempt {
		attempt = max(left, 100*time.Millisecond)
	}
	actx, cancel := context.WithTimeout(ctx, attempt)
	err = c.backend.Cancel(actx, job)
	cancel()
	if err == nil {
		c.cancelling.forget(key)
		return false, nil
	}
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		err = errors.New("the backend did not confirm the build stopped")
	}
	if !c.now().Before(deadline) {
		c.cancelling.forget(key)
		return true, err
	}
	// Try again at the deadline at the latest, without polling.
	c.jobQueue.AddAfter(key, deadline.Sub(c.now())+10*time.Millisecond)
	return false, err
}

// reportPendingError writes an error that keeps a job from building into
// its status (phase Pending, the reason and the message) and an event,
// at most every errorStatusInterval per job unless the reason changes, and
// returns err so the job is retried with backoff. A job that is already
// running keeps its phase; the error is only retried.
func (c *Controller) reportPendingError(ctx context.Context, job *v1alpha1.ImageSpecJob, reason, msg string, err error) error {
	if phaseRank(job.Status.Phase) > phaseRank(v1alpha1.JobPending) {
		return err
	}
	key := keyOf(job)
	now := c.now()
	if last, ok := c.errorWrites.get(key); ok && job.Status.Reason == reason && now.Sub(last) < errorStatusInterval {
		return err
	}
	status := job.Status.DeepCopy()
	status.ObservedGeneration = job.Generation
	status.Phase = v1alpha1.JobPending
	status.Reason = reason
	status.Message = msg
	setCondition(&status.Conditions, v1alpha1.ConditionSucceeded, metav1.ConditionUnknown, reason, msg, job.Generation)
	if job.Status.Reason != reason || job.Status.Message != msg {
		c.recorder.Event(job, corev1.EventTypeWarning, reason, msg)
	}
	c.errorWrites.set(key, now)
	if werr := c.updateJobStatus(ctx, job, status); werr != nil {
		return errors.Join(err, werr)
	}
	return err
}

// redact removes the registry password (and the encodings a registry
// client sends it in) from a message bound for status or events.
func (c *Controller) redact(msg string) string {
	pw := c.opts.Registry.Password.Reveal()
	if pw == "" {
		return msg
	}
	for _, s := range []string{
		pw,
		base64.StdEncoding.EncodeToString([]byte(c.opts.Registry.Username + ":" + pw)),
		base64.StdEncoding.EncodeToString([]byte(pw)),
	} {
		msg = strings.ReplaceAll(msg, s, "[redacted]")
	}
	return msg
}
