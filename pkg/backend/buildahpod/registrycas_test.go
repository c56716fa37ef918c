package buildahpod

import (
	"os"
	"path/filepath"
	"testing"
)

// TestLoadRegistryCAsFromAVolume lays a certs.d tree out the way the kubelet
// mounts a ConfigMap with items: every top-level entry is a symlink into a
// timestamped directory behind "..data".
func TestLoadRegistryCAsFromAVolume(t *testing.T) {
	dir := t.TempDir()
	ts := filepath.Join(dir, "..2026_11_30_17_00_00.000000001")
	for host, pem := range map[string]string{"registry.example.com:5000": "CA-ONE\n", "mirror.example.com": "CA-TWO"} {
		if err := os.MkdirAll(filepath.Join(ts, host), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(ts, host, "ca.crt"), []byte(pem), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Base(ts), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"registry.example.com:5000", "mirror.example.com"} {
		if err := os.Symlink(filepath.Join("..data", host), filepath.Join(dir, host)); err != nil {
			t.Fatal(err)
		}
	}
	// A plain directory next to them still counts.
	if err := os.MkdirAll(filepath.Join(dir, "plain.example.com"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "plain.example.com", "ca.crt"), []byte("CA-THREE\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	cas, err := LoadRegistryCAs(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"registry.example.com:5000": "CA-ONE\n",
		"mirror.example.com":        "CA-TWO\n",
		"plain.example.com":         "CA-THREE\n",
	}
	if len(cas) != len(want) {
		t.Fatalf("got hosts %v, want %v", keys(cas), want)
	}
	for host, pem := range want {
		if string(cas[host]) != pem {
			t.Errorf("%s: %q, want %q", host, cas[host], pem)
		}
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
