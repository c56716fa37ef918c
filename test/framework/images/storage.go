package images

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Storage is a private containers-storage for running the buildah CLI
// against these images, away from the host's default storage.
type Storage struct {
	Dir    string
	Driver string // "overlay" (default, no layer copies) or "vfs"
}

// NewStorage uses dir, which it owns from now on, with overlay.
func NewStorage(dir string) *Storage {
	return &Storage{Dir: dir, Driver: "overlay"}
}

// Args are the global buildah flags that select this storage.
func (s *Storage) Args() []string {
	return []string{"--root", filepath.Join(s.Dir, "root"), "--runroot", filepath.Join(s.Dir, "run"), "--storage-driver", s.Driver}
}

// Buildah runs a buildah command on this storage and returns its combined
// output.
func (s *Storage) Buildah(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "buildah", append(s.Args(), args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("buildah %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// From makes a working container of an OCI archive and returns its name.
func (s *Storage) From(ctx context.Context, archive string) (string, error) {
	out, err := s.Buildah(ctx, "from", "--quiet", "--pull-never", "oci-archive:"+archive)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(out), nil
}

// Remove deletes containers and images (which unmounts overlay layers),
// then anything still mounted below Dir, then Dir.
func (s *Storage) Remove() error {
	ctx := context.Background()
	_, _ = s.Buildah(ctx, "rm", "--all")
	_, _ = s.Buildah(ctx, "rmi", "--all", "--force")
	removeAll(s.Dir)
	if _, err := os.Stat(s.Dir); !os.IsNotExist(err) {
		return fmt.Errorf("could not remove %s", s.Dir)
	}
	return nil
}
