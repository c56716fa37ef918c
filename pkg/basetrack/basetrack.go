// Package basetrack watches base image tags for new digests. One check (a
// manifest HEAD) per distinct base image and set of credentials per
// interval, however many ImageSpecs use it; failed checks keep the last
// digest and back off.
package basetrack

import (
	"context"
	"sync"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// Key is one thing to check: a base image reference (fully qualified,
// with its tag) and whose credentials check it.
type Key struct {
	Image string
	// PullSecret is "namespace/name" of the pull Secret an ImageSpec names,
	// or "" for the controller's own credentials. ImageSpecs with a pull
	// Secret are checked apart, so no tenant learns of an image through
	// another tenant's credentials.
	PullSecret string
	// PushCredentials: the ImageSpecs may pull this base with the
	// controller's own credentials (credentials.PullScope), as their
	// builds do. Without it only the pull Secret, or nothing, is used.
	PushCredentials bool
}

// Result of one check, as counted by the Checked callback.
const (
	ResultFirst     = "first"     // the key's first digest
	ResultUnchanged = "unchanged" // same digest as before
	ResultChanged   = "changed"   // the tag moved
	ResultError     = "error"     // the check failed; the last digest stays
)

// MaxBackoff is the longest wait after failed checks, in intervals:
// failures wait 2, 4, then 8 intervals.
const MaxBackoff = 8

// Options configure a Tracker.
type Options struct {
	// Interval between two checks of a key.
	Interval time.Duration
	// Check reads the digest key.Image's tag points at now.
	Check func(ctx context.Context, key Key) (string, error)
	// Keys lists the keys in use now. Keys no longer listed are forgotten.
	Keys func() []Key
	// Changed is called when a key's digest is first known or moves.
	Changed func(Key)
	// Checked is called after every check with its result (for metrics).
	Checked func(result string)
	// Timeout bounds one check; 10 s when zero.
	Timeout time.Duration
	// Clock is the real clock when nil.
	Clock clock.Clock
}

type entry struct {
	digest   string
	known    bool
	next     time.Time
	failures int
}

// Tracker checks keys on a schedule. Its methods are safe for concurrent use.
type Tracker struct {
	opts    Options
	wake    chan struct{}
	mu      sync.Mutex
	entries map[Key]*entry
}

// New makes a Tracker; Run starts it.
func New(opts Options) *Tracker {
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Checked == nil {
		opts.Checked = func(string) {}
	}
	return &Tracker{opts: opts, wake: make(chan struct{}, 1), entries: map[Key]*entry{}}
}

// Digest is the digest key's tag pointed at when last checked; false until
// the first check succeeded.
func (t *Tracker) Digest(key Key) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.entries[key]
	if !ok || !e.known {
		return "", false
	}
	return e.digest, true
}

// Wake makes Run look at Keys now: a new key is checked at once instead of
// at the next scheduled check.
func (t *Tracker) Wake() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// Run checks keys until ctx is done.
func (t *Tracker) Run(ctx context.Context) {
	logger := klog.FromContext(ctx).WithName("base-image-tracker")
	for {
		wait := t.round(klog.NewContext(ctx, logger))
		timer := t.opts.Clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-t.wake:
			timer.Stop()
		case <-timer.C():
		}
	}
}

// round checks every key that is due and returns how long to wait for the
// next one.
func (t *Tracker) round(ctx context.Context) time.Duration {
	now := t.opts.Clock.Now()
	var due []Key
	t.mu.Lock()
	inUse := map[Key]bool{}
	for _, k := range t.opts.Keys() {
		inUse[k] = true
		if _, ok := t.entries[k]; !ok {
			t.entries[k] = &entry{next: now}
		}
	}
	for k, e := range t.entries {
		if !inUse[k] {
			delete(t.entries, k)
			continue
		}
		if !e.next.After(now) {
			due = append(due, k)
		}
	}
	t.mu.Unlock()

	for _, k := range due {
		if ctx.Err() != nil {
			return 0
		}
		t.check(ctx, k)
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	wait := t.opts.Interval
	now = t.opts.Clock.Now()
	for _, e := range t.entries {
		if d := e.next.Sub(now); d < wait {
			wait = max(d, 0)
		}
	}
	return wait
}

func (t *Tracker) check(ctx context.Context, k Key) {
	logger := klog.FromContext(ctx)
	cctx, cancel := context.WithTimeout(ctx, t.opts.Timeout)
	digest, err := t.opts.Check(cctx, k)
	cancel()
	now := t.opts.Clock.Now()

	t.mu.Lock()
	e, ok := t.entries[k]
	if !ok {
		// Forgotten while it was checked.
		t.mu.Unlock()
		return
	}
	var result string
	switch {
	case err != nil:
		e.failures++
		e.next = now.Add(t.opts.Interval * time.Duration(backoff(e.failures)))
		result = ResultError
	case !e.known:
		e.failures, e.known, e.digest = 0, true, digest
		e.next = now.Add(t.opts.Interval)
		result = ResultFirst
	case digest != e.digest:
		e.failures, e.digest = 0, digest
		e.next = now.Add(t.opts.Interval)
		result = ResultChanged
	default:
		e.failures = 0
		e.next = now.Add(t.opts.Interval)
		result = ResultUnchanged
	}
	failures, next := e.failures, e.next
	t.mu.Unlock()

	t.opts.Checked(result)
	switch result {
	case ResultError:
		// The error names the image and the registry's answer, never
		// credentials (containers/image does not print them).
		logger.Info("Checking a base image failed; keeping its last digest", "image", k.Image, "failures", failures, "nextCheck", next, "err", err)
	case ResultFirst, ResultChanged:
		logger.V(2).Info("Base image digest", "image", k.Image, "digest", digest, "result", result)
		if t.opts.Changed != nil {
			t.opts.Changed(k)
		}
	}
}

// backoff is how many intervals to wait after n failures in a row.
func backoff(n int) int {
	b := 1 << n
	return min(b, MaxBackoff)
}
