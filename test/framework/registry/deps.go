package registry

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
)

var depsMu sync.Mutex

// EnsureTools makes sure every named command is on PATH, running the
// project's hack/install-test-deps.sh when one is missing: tests use the
// real tools and never skip for lack of them.
func EnsureTools(ctx context.Context, cmds ...string) error {
	depsMu.Lock()
	defer depsMu.Unlock()
	var missing []string
	for _, c := range cmds {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, c)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	root, err := RepoRoot()
	if err != nil {
		return fmt.Errorf("%v missing and %w", missing, err)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "install-test-deps.sh"))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("installing test dependencies for %v: %w", missing, err)
	}
	for _, c := range missing {
		if _, err := exec.LookPath(c); err != nil {
			return fmt.Errorf("%s still missing after hack/install-test-deps.sh", c)
		}
	}
	return nil
}

// RepoRoot returns the checkout this package was built from; the hack/
// scripts live there. IMAGESPEC_REPO_ROOT overrides it for binaries run
// away from their sources.
func RepoRoot() (string, error) {
	if r := os.Getenv("IMAGESPEC_REPO_ROOT"); r != "" {
		return r, nil
	}
	_, file, _, ok := runtime.Caller(0)
	if ok {
		root := filepath.Join(filepath.Dir(file), "..", "..", "..")
		if _, err := os.Stat(filepath.Join(root, "hack", "install-test-deps.sh")); err == nil {
			return filepath.Clean(root), nil
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "hack", "install-test-deps.sh")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("repository root not found (set IMAGESPEC_REPO_ROOT)")
		}
		dir = parent
	}
}
