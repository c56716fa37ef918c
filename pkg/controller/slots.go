package controller

import (
	"sort"
	"sync"

	"k8s.io/client-go/tools/cache"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
)

// jobsByStateIndex indexes jobs by where they are in their life, so build
// slots are counted from the cache, not kept in memory.
const (
	jobsByStateIndex = "build-state"
	stateActive      = "active"  // a backend was asked to build it, not final
	stateWaiting     = "waiting" // not started, not final
)

func indexJobByState(obj interface{}) ([]string, error) {
	job, ok := obj.(*v1alpha1.ImageSpecJob)
	if !ok || job.Status.Phase.IsFinal() {
		return nil, nil
	}
	if started(job) {
		return []string{stateActive}, nil
	}
	return []string{stateWaiting}, nil
}

// buildSlots bounds concurrent builds. The builds in flight are what the
// cache shows: every job a backend was asked to build (status.backend set)
// that is not final. The only memory is of slots just granted whose
// status write the cache does not show yet; each is dropped once the cache
// shows the job started, final or gone. So a restart, a job finishing, a
// job deleted or cancelled frees its slot with nothing to release.
type buildSlots struct {
	mu       sync.Mutex
	limit    int // <= 0: unlimited
	jobs     cache.Indexer
	reserved map[cache.ObjectName]struct{}
}

func newBuildSlots(limit int, jobs cache.Indexer) *buildSlots {
	return &buildSlots{limit: limit, jobs: jobs, reserved: map[cache.ObjectName]struct{}{}}
}

// inFlightLocked returns the builds that hold a slot.
func (s *buildSlots) inFlightLocked() map[cache.ObjectName]struct{} {
	held := map[cache.ObjectName]struct{}{}
	active, _ := s.jobs.ByIndex(jobsByStateIndex, stateActive)
	for _, o := range active {
		held[keyOf(o.(*v1alpha1.ImageSpecJob))] = struct{}{}
	}
	for k := range s.reserved {
		if _, ok := held[k]; ok {
			delete(s.reserved, k) // the cache caught up
			continue
		}
		obj, exists, _ := s.jobs.GetByKey(k.String())
		if !exists || obj.(*v1alpha1.ImageSpecJob).Status.Phase.IsFinal() {
			delete(s.reserved, k)
			continue
		}
		held[k] = struct{}{}
	}
	return held
}

// acquire grants key a slot, or reports that none is free. A key that
// holds one keeps it.
func (s *buildSlots) acquire(key cache.ObjectName) bool {
	if s.limit <= 0 {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	held := s.inFlightLocked()
	if _, ok := held[key]; ok {
		return true
	}
	if len(held) >= s.limit {
		return false
	}
	s.reserved[key] = struct{}{}
	return true
}

// unreserve gives back a slot granted to a build that did not start.
func (s *buildSlots) unreserve(key cache.ObjectName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.reserved, key)
}

func (s *buildSlots) inUse() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.inFlightLocked())
}

// waiting returns the jobs waiting to start, oldest first.
func (s *buildSlots) waiting() []*v1alpha1.ImageSpecJob {
	objs, _ := s.jobs.ByIndex(jobsByStateIndex, stateWaiting)
	out := make([]*v1alpha1.ImageSpecJob, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.(*v1alpha1.ImageSpecJob))
	}
	sort.Slice(out, func(i, k int) bool {
		ti, tk := out[i].CreationTimestamp, out[k].CreationTimestamp
		if !ti.Equal(&tk) {
			return ti.Before(&tk)
		}
		return out[i].Name < out[k].Name
	})
	return out
}
