package registry

import (
	"context"
	"testing"
)

// BenchmarkStartStop: what a test pays for its own registry.
func BenchmarkStartStop(b *testing.B) {
	for b.Loop() {
		r, err := Start(context.Background(), Options{})
		if err != nil {
			b.Fatal(err)
		}
		if err := r.Stop(); err != nil {
			b.Fatal(err)
		}
	}
}
