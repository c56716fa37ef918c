// Package images makes the base images tests need (Debian with python,
// busybox, pause, the buildah builder) without internet or a Docker
// engine, and caches them as OCI archives keyed by the hash of their
// recipe, so a recipe change rebuilds and nothing else does.
//
// Recipes are the scripts in hack/images; this package decides what is
// stale, serialises builds across processes and pushes to a registry.
package images

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/imagespec/imagespec-controller/test/framework/registry"
)

// Image names.
const (
	Debian       = "debian"        // bookworm minbase, root
	DebianPython = "debian-python" // debian + python3, pip; user app (1000)
	Busybox      = "busybox"       // static busybox only, about 1 MB
	Pause        = "pause"         // the kubelet's sandbox image
	Builder      = "builder"       // debian + buildah v1.40.1 (hack/images/buildah), BUILDAH_ISOLATION=chroot
	// DebianConda is debian-python with a conda-style prefix /opt/conda (a
	// venv owned by app, first on PATH) and a stand-in conda command that
	// records its calls and installs from http(s) channels taken as PEP 503
	// indexes: see hack/images/conda/conda.
	DebianConda = "debian-conda"
	// Notebook is laid out like jupyter/docker-stacks' images: the conda
	// prefix /opt/conda (CONDA_DIR; a venv with the stand-in conda) owned
	// by jovyan (uid 1000, gid 100 users), group-writable, USER 1000.
	Notebook = "notebook"
)

type recipe struct {
	base string
	// files are further inputs, relative to hack/images.
	files []string
	// host are files of this machine the image copies or depends on.
	host []string
	// mirror: the recipe runs debootstrap against the Debian mirror.
	mirror bool
}

var recipes = map[string]recipe{
	Debian:       {mirror: true, host: []string{"/etc/apt/sources.list", "/etc/apt/sources.list.d", "/etc/apt/apt.conf.d"}},
	DebianPython: {base: Debian},
	Builder:      {base: Debian, files: []string{"buildah/install.sh", "buildah/go.mod", "buildah/go.sum"}},
	DebianConda:  {base: DebianPython, files: []string{"conda/conda"}},
	Notebook:     {base: Debian, files: []string{"conda/conda"}},
	Busybox:      {host: []string{"/bin/busybox"}},
	Pause:        {files: []string{"pause/main.go"}},
}

// Names lists the images Ensure knows.
func Names() []string {
	var n []string
	for k := range recipes {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// CacheDir is ${IMAGESPEC_CACHE_DIR:-$HOME/.cache/imagespec-controller}.
func CacheDir() string {
	if d := os.Getenv("IMAGESPEC_CACHE_DIR"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "imagespec-controller-cache")
	}
	return filepath.Join(home, ".cache", "imagespec-controller")
}

// ScriptsDir is hack/images of this checkout.
func ScriptsDir() (string, error) {
	root, err := registry.RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "hack", "images"), nil
}

// Mirror is the Debian mirror debootstrap uses: IMAGESPEC_DEBIAN_MIRROR, or
// the first deb.debian.org-style URI of the host's apt sources, so the image
// is made from the same place this machine installs packages from.
func Mirror() string {
	if m := os.Getenv("IMAGESPEC_DEBIAN_MIRROR"); m != "" {
		return m
	}
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if uri, ok := strings.CutPrefix(line, "URIs:"); ok {
				for _, u := range strings.Fields(uri) {
					if strings.HasSuffix(strings.TrimSuffix(u, "/"), "/debian") {
						return u
					}
				}
			}
		}
	}
	if b, err := os.ReadFile("/etc/apt/sources.list"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) >= 3 && f[0] == "deb" && strings.HasSuffix(strings.TrimSuffix(f[1], "/"), "/debian") {
				return f[1]
			}
		}
	}
	return "http://deb.debian.org/debian"
}

// Hash is the content hash of an image's recipe: its script, the shared
// library, its extra files, the host files it copies, the mirror, and its
// base image's hash.
func Hash(scriptsDir, name string) (string, error) {
	r, ok := recipes[name]
	if !ok {
		return "", fmt.Errorf("unknown image %q (known: %v)", name, Names())
	}
	h := sha256.New()
	fmt.Fprintf(h, "image %s\n", name)
	for _, f := range append([]string{"lib.sh", name + ".sh"}, r.files...) {
		if err := hashPath(h, filepath.Join(scriptsDir, f), f); err != nil {
			return "", err
		}
	}
	for _, f := range r.host {
		if err := hashPath(h, f, f); err != nil && !os.IsNotExist(err) {
			return "", err
		}
	}
	if r.mirror {
		fmt.Fprintf(h, "mirror %s\n", Mirror())
	}
	if r.base != "" {
		bh, err := Hash(scriptsDir, r.base)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "base %s\n", bh)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// hashPath hashes a file, or a directory's regular files in name order.
func hashPath(h io.Writer, path, label string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		entries, err := os.ReadDir(path)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.Type().IsRegular() {
				if err := hashPath(h, filepath.Join(path, e.Name()), label+"/"+e.Name()); err != nil {
					return err
				}
			}
		}
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(b)
	fmt.Fprintf(h, "file %s %x\n", label, sum)
	return nil
}

// ArchivePath is where the image's OCI archive is cached for its current
// recipe; it may not exist yet.
func ArchivePath(name string) (string, error) {
	dir, err := ScriptsDir()
	if err != nil {
		return "", err
	}
	hash, err := Hash(dir, name)
	if err != nil {
		return "", err
	}
	return filepath.Join(CacheDir(), "images", name+"-"+hash[:16]+".oci.tar"), nil
}

// Ensure returns the path of the image's OCI archive, building it first
// when the cache has none for the current recipe. Concurrent callers, in
// this or other processes, build once; the archive appears atomically.
func Ensure(ctx context.Context, name string) (string, error) {
	r, ok := recipes[name]
	if !ok {
		return "", fmt.Errorf("unknown image %q (known: %v)", name, Names())
	}
	out, err := ArchivePath(name)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(out); err == nil {
		touch(out)
		return out, nil
	}
	if err := registry.EnsureTools(ctx, "buildah", "debootstrap", "skopeo", "busybox"); err != nil {
		return "", err
	}
	var base string
	if r.base != "" {
		if base, err = Ensure(ctx, r.base); err != nil {
			return "", fmt.Errorf("base of %s: %w", name, err)
		}
	}
	dir := filepath.Dir(out)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	unlock, err := lock(ctx, filepath.Join(dir, "."+name+".lock"))
	if err != nil {
		return "", err
	}
	defer unlock()
	// Another process may have built it while we waited.
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	if err := build(ctx, name, base, out); err != nil {
		return "", err
	}
	prune(name, out)
	return out, nil
}

// Archives of other recipe versions unused this long are removed.
const keepUnused = 7 * 24 * time.Hour

// touch marks an archive as used; prune goes by modification time.
func touch(path string) {
	now := time.Now()
	if fi, err := os.Stat(path); err == nil && now.Sub(fi.ModTime()) > time.Hour {
		_ = os.Chtimes(path, now, now)
	}
}

// prune removes the image's archives of other recipes (an old checkout may
// still use one, so only those unused for keepUnused).
func prune(name, keep string) {
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(keep), name+"-*.oci.tar"))
	for _, m := range matches {
		hash := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(m), name+"-"), ".oci.tar")
		if m == keep || len(hash) != 16 || strings.Contains(hash, "-") {
			continue // another image whose name starts with ours
		}
		if fi, err := os.Stat(m); err == nil && time.Since(fi.ModTime()) > keepUnused {
			_ = os.Remove(m)
		}
	}
}

func build(ctx context.Context, name, base, out string) error {
	scripts, err := ScriptsDir()
	if err != nil {
		return err
	}
	tmpRoot := filepath.Join(CacheDir(), "tmp")
	if err := os.MkdirAll(tmpRoot, 0o755); err != nil {
		return err
	}
	// Work dirs of this image left by killed builds: ours alone while we
	// hold the image's lock.
	if stale, err := filepath.Glob(filepath.Join(tmpRoot, name+".*")); err == nil {
		for _, d := range stale {
			removeAll(d)
		}
	}
	work, err := os.MkdirTemp(tmpRoot, name+".")
	if err != nil {
		return err
	}
	defer removeAll(work)

	fmt.Fprintf(os.Stderr, "images: building %s into %s\n", name, out)
	start := time.Now()
	tmpOut := filepath.Join(work, "image.oci.tar")
	logPath := filepath.Join(work, "build.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.CommandContext(ctx, "sh", filepath.Join(scripts, name+".sh"), tmpOut)
	cmd.Dir = work
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(),
		"WORK="+work,
		"BUILDAH_ROOT="+filepath.Join(work, "storage"),
		"BASE_ARCHIVE="+base,
		"MIRROR="+Mirror(),
		"DEBOOTSTRAP_CACHE="+filepath.Join(CacheDir(), "debootstrap-debs"),
	)
	// Kill the whole recipe (debootstrap, buildah) on cancellation.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building image %s: %w\n%s", name, err, tail(logPath, 40))
	}
	if err := os.Rename(tmpOut, out); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "images: built %s in %s\n", name, time.Since(start).Round(time.Second))
	return nil
}

// lock takes an exclusive flock, polling so that ctx can cancel the wait.
func lock(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if err != syscall.EWOULDBLOCK {
			f.Close()
			return nil, err
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// removeAll unmounts what a failed debootstrap may have left mounted
// (proc, sys) before removing the tree, so it never deletes through a mount.
func removeAll(dir string) {
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		var mounts []string
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
				mounts = append(mounts, f[4])
			}
		}
		// Deepest first.
		sort.Sort(sort.Reverse(sort.StringSlice(mounts)))
		for _, m := range mounts {
			_ = syscall.Unmount(m, syscall.MNT_DETACH)
		}
	}
	_ = os.RemoveAll(dir)
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Push copies the image to reg as repo (a tag defaults to "latest") with
// the registry's CA and credentials, and returns the pushed reference and
// manifest digest.
func Push(ctx context.Context, name string, reg *registry.Registry, repo string) (ref, digest string, err error) {
	archive, err := Ensure(ctx, name)
	if err != nil {
		return "", "", err
	}
	if !strings.Contains(repo[strings.LastIndex(repo, "/")+1:], ":") {
		repo += ":latest"
	}
	ref = reg.Host + "/" + repo
	digestFile, err := os.CreateTemp("", "digest-")
	if err != nil {
		return "", "", err
	}
	digestFile.Close()
	defer os.Remove(digestFile.Name())
	cmd := exec.CommandContext(ctx, "skopeo", "copy", "--quiet",
		"--dest-cert-dir", reg.CertsDir, "--dest-authfile", reg.AuthFile,
		"--digestfile", digestFile.Name(),
		"oci-archive:"+archive, "docker://"+ref)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("pushing %s to %s: %w: %s", name, ref, err, strings.TrimSpace(string(out)))
	}
	d, err := os.ReadFile(digestFile.Name())
	if err != nil {
		return "", "", err
	}
	return ref, strings.TrimSpace(string(d)), nil
}
