package images

import (
	"context"
	"testing"

	"github.com/imagespec/imagespec-controller/test/framework/registry"
)

// BenchmarkEnsureCached: the cost of a cache hit (hashing the recipe).
func BenchmarkEnsureCached(b *testing.B) {
	ctx := context.Background()
	if _, err := Ensure(ctx, DebianPython); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := Ensure(ctx, DebianPython); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPushToEmptyRegistry: pushing a cached image where none of its
// blobs are yet; the registry start is not timed.
func BenchmarkPushToEmptyRegistry(b *testing.B) {
	for _, name := range []string{Busybox, DebianPython} {
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			if _, err := Ensure(ctx, name); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				b.StopTimer()
				reg, err := registry.Start(ctx, registry.Options{})
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if _, _, err := Push(ctx, name, reg, "bench/"+name); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				reg.Stop()
				b.StartTimer()
			}
		})
	}
}
