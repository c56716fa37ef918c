package controller

import (
	"sync"

	"k8s.io/client-go/tools/cache"
)

// buildSlots bounds concurrent builds. A job holds its slot from the moment
// the backend is asked to build it until the job is final or deleted.
type buildSlots struct {
	mu    sync.Mutex
	limit int // <= 0: unlimited
	held  map[cache.ObjectName]struct{}
}

func newBuildSlots(limit int) *buildSlots {
	return &buildSlots{limit: limit, held: map[cache.ObjectName]struct{}{}}
}

// acquire takes a slot for key, or reports that none is free. A key that
// already holds one keeps it.
func (s *buildSlots) acquire(key cache.ObjectName) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.held[key]; ok {
		return true
	}
	if s.limit > 0 && len(s.held) >= s.limit {
		return false
	}
	s.held[key] = struct{}{}
	return true
}

// hold takes a slot even past the limit: for builds already running when
// the controller starts.
func (s *buildSlots) hold(key cache.ObjectName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held[key] = struct{}{}
}

// release frees key's slot and reports whether it held one.
func (s *buildSlots) release(key cache.ObjectName) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.held[key]
	delete(s.held, key)
	return ok
}

func (s *buildSlots) inUse() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.held)
}
