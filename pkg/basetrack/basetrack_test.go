package basetrack

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// fakeRegistry answers checks from a table and counts them per key.
type fakeRegistry struct {
	mu      sync.Mutex
	digests map[string]string // image -> digest; missing: error
	checks  map[Key]int
}

func (f *fakeRegistry) check(_ context.Context, k Key) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.checks[k]++
	if d, ok := f.digests[k.Image]; ok {
		return d, nil
	}
	return "", errors.New("manifest unknown")
}

func (f *fakeRegistry) count(k Key) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.checks[k]
}

func (f *fakeRegistry) set(image, digest string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if digest == "" {
		delete(f.digests, image)
	} else {
		f.digests[image] = digest
	}
}

type fixture struct {
	t       *testing.T
	clock   *clocktesting.FakeClock
	reg     *fakeRegistry
	tracker *Tracker
	keys    []Key
	changed []Key
	results map[string]int
}

const interval = time.Hour

func newFixture(t *testing.T, keys ...Key) *fixture {
	f := &fixture{
		t:       t,
		clock:   clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)),
		reg:     &fakeRegistry{digests: map[string]string{}, checks: map[Key]int{}},
		keys:    keys,
		results: map[string]int{},
	}
	f.tracker = New(Options{
		Interval: interval,
		Check:    f.reg.check,
		Keys:     func() []Key { return f.keys },
		Changed:  func(k Key) { f.changed = append(f.changed, k) },
		Checked:  func(r string) { f.results[r]++ },
		Clock:    f.clock,
	})
	return f
}

// advance runs rounds as Run would, until d has passed.
func (f *fixture) advance(d time.Duration) {
	end := f.clock.Now().Add(d)
	for {
		wait := f.tracker.round(context.Background())
		if wait <= 0 {
			f.t.Fatalf("round asks to run again at once")
		}
		next := f.clock.Now().Add(wait)
		if next.After(end) {
			f.clock.SetTime(end)
			return
		}
		f.clock.SetTime(next)
	}
}

var (
	shared  = Key{Image: "reg:5000/base/python:3.11"}
	tenantA = Key{Image: "reg:5000/base/python:3.11", PullSecret: "a/pull"}
	other   = Key{Image: "docker.io/library/debian:bookworm"}
)

func TestOneCheckPerKeyPerInterval(t *testing.T) {
	f := newFixture(t, shared, tenantA, other)
	f.reg.set(shared.Image, "sha256:1")
	f.reg.set(other.Image, "sha256:9")
	f.advance(10*interval - time.Second)
	for _, k := range []Key{shared, tenantA, other} {
		if n := f.reg.count(k); n != 10 {
			t.Errorf("%v: %d checks in 10 intervals, want 10", k, n)
		}
	}
	if d, ok := f.tracker.Digest(shared); !ok || d != "sha256:1" {
		t.Errorf("Digest(shared) = %q %v", d, ok)
	}
	// The same image with a pull Secret is its own key, checked apart.
	if d, ok := f.tracker.Digest(tenantA); !ok || d != "sha256:1" {
		t.Errorf("Digest(tenantA) = %q %v", d, ok)
	}
	if got := f.results[ResultFirst]; got != 3 {
		t.Errorf("%d first results, want 3", got)
	}
	if got := f.results[ResultUnchanged]; got != 27 {
		t.Errorf("%d unchanged results, want 27", got)
	}
	if len(f.changed) != 3 {
		t.Errorf("Changed called for %v, want once per key for its first digest", f.changed)
	}
}

func TestMovedTagIsReportedOnce(t *testing.T) {
	f := newFixture(t, shared)
	f.reg.set(shared.Image, "sha256:1")
	f.advance(interval / 2)
	f.reg.set(shared.Image, "sha256:2")
	f.advance(3 * interval)
	if d, _ := f.tracker.Digest(shared); d != "sha256:2" {
		t.Errorf("digest %s, want sha256:2", d)
	}
	if len(f.changed) != 2 || f.results[ResultChanged] != 1 {
		t.Errorf("changed %v, results %v: want the first digest and one move", f.changed, f.results)
	}
}

func TestFailuresBackOffAndKeepTheDigest(t *testing.T) {
	f := newFixture(t, shared)
	f.reg.set(shared.Image, "sha256:1")
	f.advance(time.Second) // first check at t=0
	f.reg.set(shared.Image, "")
	// Checks at 1h (fails), then 2, 4, 8, 8 intervals after each failure.
	want := []time.Duration{1, 3, 7, 15, 23}
	start := f.clock.Now().Add(-time.Second)
	for i, at := range want {
		f.clock.SetTime(start.Add(at*interval - time.Second))
		f.tracker.round(context.Background())
		if n := f.reg.count(shared); n != 1+i {
			t.Fatalf("before %v intervals: %d checks, want %d", at, n, 1+i)
		}
		f.clock.SetTime(start.Add(at * interval))
		f.tracker.round(context.Background())
		if n := f.reg.count(shared); n != 2+i {
			t.Fatalf("at %v intervals: %d checks, want %d", at, n, 2+i)
		}
	}
	if d, ok := f.tracker.Digest(shared); !ok || d != "sha256:1" {
		t.Errorf("after failures Digest = %q %v, want the last digest kept", d, ok)
	}
	if len(f.changed) != 1 {
		t.Errorf("failures reported as changes: %v", f.changed)
	}
	// Recovery: the next check succeeds and the interval is back to one.
	f.reg.set(shared.Image, "sha256:1")
	f.clock.SetTime(start.Add(31 * interval))
	f.tracker.round(context.Background())
	f.clock.SetTime(start.Add(32 * interval))
	f.tracker.round(context.Background())
	if n := f.reg.count(shared); n != 8 {
		t.Errorf("after recovery: %d checks, want 8", n)
	}
}

func TestUnusedKeysAreForgotten(t *testing.T) {
	f := newFixture(t, shared, other)
	f.reg.set(shared.Image, "sha256:1")
	f.reg.set(other.Image, "sha256:9")
	f.advance(interval / 2)
	f.keys = []Key{shared}
	f.advance(3 * interval)
	if n := f.reg.count(other); n != 1 {
		t.Errorf("a key no longer used was checked %d times, want 1", n)
	}
	if _, ok := f.tracker.Digest(other); ok {
		t.Error("a key no longer used still has a digest")
	}
}

// Run checks a new key as soon as it is woken, not an interval later.
func TestRunChecksNewKeysOnWake(t *testing.T) {
	reg := &fakeRegistry{digests: map[string]string{shared.Image: "sha256:1", other.Image: "sha256:9"}, checks: map[Key]int{}}
	var mu sync.Mutex
	keys := []Key{shared}
	changed := make(chan Key, 4)
	tr := New(Options{
		Interval: time.Hour,
		Check:    reg.check,
		Keys: func() []Key {
			mu.Lock()
			defer mu.Unlock()
			return append([]Key(nil), keys...)
		},
		Changed: func(k Key) { changed <- k },
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tr.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	wait := func(want Key) {
		select {
		case k := <-changed:
			if k != want {
				t.Fatalf("changed %v, want %v", k, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%v never checked", want)
		}
	}
	wait(shared)
	mu.Lock()
	keys = append(keys, other)
	mu.Unlock()
	tr.Wake()
	wait(other)
	if n := reg.count(shared); n != 1 {
		t.Errorf("waking checked a key that was not due: %d checks", n)
	}
}

func TestBackoff(t *testing.T) {
	for n, want := range map[int]int{1: 2, 2: 4, 3: 8, 4: 8, 10: 8} {
		if got := backoff(n); got != want {
			t.Errorf("backoff(%d) = %d, want %d", n, got, want)
		}
	}
}
