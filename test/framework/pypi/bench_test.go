package pypi

import "testing"

// BenchmarkWheel: making one small wheel.
func BenchmarkWheel(b *testing.B) {
	p := testPackages[1]
	for b.Loop() {
		if _, _, err := Wheel(p); err != nil {
			b.Fatal(err)
		}
	}
}
