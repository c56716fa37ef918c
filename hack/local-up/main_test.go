package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
)

// TestLocalUpBuildsTheExample runs the main job the way `make dev` does,
// on a free registry port, and checks it built the example and left no
// controller behind.
func TestLocalUpBuildsTheExample(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	workDir := t.TempDir()
	spec, err := run(ctx, options{workDir: workDir, registryPort: 0, exitAfterBuild: true, buildTimeout: 20 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if spec.Status.Phase != v1alpha1.JobSucceeded || !strings.Contains(spec.Status.PinnedImage, "/dev/hello-python@sha256:") {
		t.Fatalf("example not built: %+v", spec.Status)
	}
	log, err := os.ReadFile(filepath.Join(workDir, "build-logs", "default", spec.Status.JobName+".log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"jq", "imagespec-hello"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("build log does not mention %s", want)
		}
	}
	// The settings file holds the registry password; it must not be
	// readable by others.
	if fi, err := os.Stat(filepath.Join(workDir, "primehub.env")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("settings file mode: %v %v", fi.Mode(), err)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		cmd, _ := os.ReadFile(p)
		if strings.Contains(string(cmd), filepath.Join(workDir, "controller")) {
			t.Fatalf("the controller still runs: %s", p)
		}
	}
}
