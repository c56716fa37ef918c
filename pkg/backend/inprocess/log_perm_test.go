package inprocess

import (
	"os"
	"path/filepath"
	"testing"
)

func TestBuildLogIsPrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "logs", "team-a", "job.log")
	l, err := openBuildLog(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.f.Close()
	for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got != want {
			t.Errorf("%s: mode %o, want %o", p, got, want)
		}
	}
}
