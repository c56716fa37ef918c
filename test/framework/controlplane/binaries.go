package controlplane

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
)

const modulePath = "github.com/imagespec/imagespec-controller"

// BinDirEnv names a directory of prebuilt binaries that overrides the
// project's build (for a developer who has them elsewhere).
const BinDirEnv = "IMAGESPEC_KUBE_BIN_DIR"

// RequiredBinaries are what Start runs or hands out.
var RequiredBinaries = []string{"etcd", "kube-apiserver", "kubectl"}

// RepoRoot finds the repository root: the directory whose go.mod declares
// the project's module, searched upwards from the working directory and then
// from this source file.
func RepoRoot() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		starts = append(starts, filepath.Dir(file))
	}
	for _, dir := range starts {
		for {
			if isProjectRoot(dir) {
				return dir, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", errors.New("cannot find the repository root (go.mod of " + modulePath + ")")
}

func isProjectRoot(dir string) bool {
	f, err := os.Open(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) == 2 && fields[0] == "module" {
			return fields[1] == modulePath
		}
	}
	return false
}

// EnsureBinaries returns the directory holding the pinned etcd,
// kube-apiserver, kube-controller-manager, kube-proxy, kubectl,
// kube-scheduler and kubelet, building them with
// hack/install-kube-binaries.sh when the cache lacks them (minutes when cold,
// milliseconds when warm). Build progress goes to stderr.
func EnsureBinaries(ctx context.Context) (string, error) {
	if dir := os.Getenv(BinDirEnv); dir != "" {
		for _, b := range RequiredBinaries {
			if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
				return "", fmt.Errorf("%s=%s: %w", BinDirEnv, dir, err)
			}
		}
		return dir, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	dir, err := RunHackScript(ctx, root, "install-kube-binaries.sh")
	if err != nil {
		return "", err
	}
	if !filepath.IsAbs(dir) {
		return "", fmt.Errorf("install-kube-binaries.sh printed no bin directory")
	}
	return dir, nil
}

// RunHackScript runs hack/<script> of the repository at root, with its
// progress on stderr, and returns the last line it printed to stdout (the
// install scripts print what they installed there).
func RunHackScript(ctx context.Context, root, script string, args ...string) (string, error) {
	path := filepath.Join(root, "hack", script)
	cmd := exec.CommandContext(ctx, "bash", append([]string{path}, args...)...)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = os.Stderr
	// A cancelled build must stop go build too, not only the shell.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	return strings.TrimSpace(lines[len(lines)-1]), nil
}
