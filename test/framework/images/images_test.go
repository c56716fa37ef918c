package images

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imagespec/imagespec-controller/test/framework/registry"
)

func TestHashCoversRecipe(t *testing.T) {
	src, err := ScriptsDir()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if out, err := exec.Command("cp", "-a", src+"/.", dir).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	hashes := func() map[string]string {
		m := map[string]string{}
		for _, n := range Names() {
			h, err := Hash(dir, n)
			if err != nil {
				t.Fatal(err)
			}
			m[n] = h
		}
		return m
	}
	appendTo := func(f string) {
		fh, err := os.OpenFile(filepath.Join(dir, f), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		fh.WriteString("\n# changed\n")
		fh.Close()
	}
	h0 := hashes()
	if again := hashes(); again[DebianPython] != h0[DebianPython] {
		t.Fatal("hash is not stable")
	}

	appendTo("busybox.sh")
	h1 := hashes()
	for _, n := range Names() {
		if changed := h1[n] != h0[n]; changed != (n == Busybox) {
			t.Errorf("after editing busybox.sh: %s changed=%v", n, changed)
		}
	}
	// A base image's recipe is part of every image built on it.
	appendTo("debian.sh")
	h2 := hashes()
	for _, n := range Names() {
		want := n == Debian || n == DebianPython || n == Builder || n == DebianConda || n == Notebook
		if changed := h2[n] != h1[n]; changed != want {
			t.Errorf("after editing debian.sh: %s changed=%v, want %v", n, changed, want)
		}
	}
	appendTo("pause/main.go")
	if h3 := hashes(); h3[Pause] == h2[Pause] || h3[Busybox] != h2[Busybox] {
		t.Error("pause/main.go is an input of pause only")
	}
	t.Setenv("IMAGESPEC_DEBIAN_MIRROR", "http://mirror.invalid/debian")
	if h4 := hashes(); h4[Debian] == h2[Debian] || h4[Busybox] != h2[Busybox] {
		t.Error("the mirror is an input of debian only")
	}
}

func TestEnsureBuildsOnceAndCaches(t *testing.T) {
	t.Setenv("IMAGESPEC_CACHE_DIR", t.TempDir())
	ctx := context.Background()
	// Left by a killed build; the next build of that image removes it.
	stale := filepath.Join(CacheDir(), "tmp", Busybox+".killed")
	if err := os.MkdirAll(filepath.Join(stale, "storage"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Archives of older busybox recipes: the long unused one goes, the
	// recent one and other images stay.
	imagesDir := filepath.Join(CacheDir(), "images")
	os.MkdirAll(imagesDir, 0o755)
	old := time.Now().Add(-30 * 24 * time.Hour)
	oldBusybox := filepath.Join(imagesDir, "busybox-0123456789abcdef.oci.tar")
	recentBusybox := filepath.Join(imagesDir, "busybox-fedcba9876543210.oci.tar")
	otherImage := filepath.Join(imagesDir, "busybox-extra-0123456789abcdef.oci.tar")
	for _, f := range []string{oldBusybox, recentBusybox, otherImage} {
		os.WriteFile(f, nil, 0o644)
		if f != recentBusybox {
			os.Chtimes(f, old, old)
		}
	}
	var wg sync.WaitGroup
	paths := make([]string, 3)
	errs := make([]error, 3)
	for i := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			paths[i], errs[i] = Ensure(ctx, Busybox)
		}()
	}
	wg.Wait()
	for i := range paths {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if paths[i] != paths[0] {
			t.Fatalf("different paths %v", paths)
		}
	}
	fi, err := os.Stat(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(paths[0], filepath.Join(CacheDir(), "images", "busybox-")) || !strings.HasSuffix(paths[0], ".oci.tar") {
		t.Errorf("unexpected cache path %s", paths[0])
	}
	again, err := Ensure(ctx, Busybox)
	if err != nil {
		t.Fatal(err)
	}
	fi2, _ := os.Stat(again)
	if again != paths[0] || !fi2.ModTime().Equal(fi.ModTime()) {
		t.Error("second Ensure rebuilt the image")
	}
	if _, err := os.Stat(oldBusybox); !os.IsNotExist(err) {
		t.Error("an archive unused for 30 days was kept")
	}
	for _, f := range []string{recentBusybox, otherImage} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("%s was pruned", f)
		}
	}
	// No leftovers from the builds.
	if entries, _ := os.ReadDir(filepath.Join(CacheDir(), "tmp")); len(entries) != 0 {
		t.Errorf("tmp not cleaned: %v", entries)
	}
	if out := runIn(t, again, "", "sh", "-c", "echo hello from $(busybox | head -n1 | cut -d' ' -f1)"); !strings.Contains(out, "hello from BusyBox") {
		t.Errorf("busybox output %q", out)
	}
}

func TestPushedImages(t *testing.T) {
	ctx := context.Background()
	reg, err := registry.Start(ctx, registry.Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Stop()

	cases := []struct {
		name string
		user string
		cmd  []string
		want string
	}{
		{Busybox, "", []string{"sh", "-c", "echo ok"}, "ok"},
		{Pause, "", nil, ""},
		// apt sources and settings copied from the host: apt-get update
		// works in a build.
		{Debian, "", []string{"sh", "-c", "apt-get update -qq && echo apt-ok"}, "apt-ok"},
		{DebianPython, "app", []string{"sh", "-c", "id -un; python3 -m pip --version"}, "app\npip "},
		// The version pinned for the test builder, the shipped default's.
		{Builder, "", []string{"buildah", "--version"}, "buildah version " + pinnedBuildah(t) + " "},
		{DebianConda, "app", []string{"sh", "-c", "conda --version; command -v python"}, "conda 24.1.2 (stand-in)\n/opt/conda/bin/python"},
		// docker-stacks' layout: everything in the prefix and the home is
		// jovyan's, group users, group-writable, setgid directories.
		{Notebook, "1000", []string{"sh", "-c", "conda --version; command -v python; command -v pip; stat -c '%U:%G %A' /opt/conda /opt/conda/conda-meta /home/jovyan; find /opt/conda /home/jovyan ! -type l ! -user jovyan"},
			"conda 24.1.2 (stand-in)\n/opt/conda/bin/python\n/opt/conda/bin/pip\njovyan:users drwsrwsr-x\njovyan:users drwsrwsr-x\njovyan:users drwsrwsr-x\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(ctx, 20*time.Minute)
			defer cancel()
			archive, err := Ensure(ctx, c.name)
			if err != nil {
				t.Fatal(err)
			}
			ref, digest, err := Push(ctx, c.name, reg, "base/"+c.name)
			if err != nil {
				t.Fatal(err)
			}
			if ref != reg.Host+"/base/"+c.name+":latest" || !strings.HasPrefix(digest, "sha256:") {
				t.Fatalf("ref %q digest %q", ref, digest)
			}
			var remote struct {
				Digest string
			}
			inspect(t, &remote, "inspect", "--cert-dir", reg.CertsDir, "--authfile", reg.AuthFile, "docker://"+ref)
			if remote.Digest != digest {
				t.Errorf("registry has %s, Push said %s", remote.Digest, digest)
			}
			// The manifest went up unchanged: same digest as in the cache.
			raw, err := exec.Command("skopeo", "inspect", "--raw", "oci-archive:"+archive).Output()
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(raw)
			if "sha256:"+hex.EncodeToString(sum[:]) != digest {
				t.Errorf("pushed digest %s differs from the archive's manifest", digest)
			}
			var cfg struct {
				Config struct {
					User       string
					Entrypoint []string
				}
			}
			inspect(t, &cfg, "inspect", "--config", "--cert-dir", reg.CertsDir, "--authfile", reg.AuthFile, "docker://"+ref)
			if cfg.Config.User != c.user {
				t.Errorf("config user %q, want %q", cfg.Config.User, c.user)
			}
			if c.name == Pause && strings.Join(cfg.Config.Entrypoint, " ") != "/pause" {
				t.Errorf("pause entrypoint %v", cfg.Config.Entrypoint)
			}
			if c.cmd != nil {
				if out := runIn(t, archive, "", c.cmd...); !strings.Contains(out, c.want) {
					t.Errorf("%v printed %q, want %q", c.cmd, out, c.want)
				}
			}
		})
	}
}

// buildah in the builder image builds with chroot isolation (a RUN step)
// and pushes to a TLS registry with credentials, reporting the digest as
// the pod backend reads it.
func TestBuilderBuildsAndPushes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	builder, err := Ensure(ctx, Builder)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registry.Start(ctx, registry.Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Stop()
	if _, _, err := Push(ctx, Busybox, reg, "base/busybox:1"); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	script := `set -e
mkdir -p /ctx
printf 'FROM ` + reg.Host + `/base/busybox:1\nRUN echo built > /hello\n' >/ctx/Containerfile
# As the pod backend's script does: pass the container's own hard limits,
# or buildah >= 1.40 raises RLIMIT_NPROC/NOFILE, which needs CAP_SYS_RESOURCE.
nproc=$(awk '/^Max processes/ { print $4 }' /proc/self/limits)
nofile=$(awk '/^Max open files/ { print $5 }' /proc/self/limits)
set --
case $nproc in ''|unlimited) ;; *) set -- "$@" --ulimit "nproc=$nproc:$nproc" ;; esac
case $nofile in ''|unlimited) ;; *) set -- "$@" --ulimit "nofile=$nofile:$nofile" ;; esac
buildah bud --quiet "$@" --cert-dir /certs --authfile /auth/auth.json -t result /ctx >/dev/null
buildah push --quiet --cert-dir /certs --authfile /auth/auth.json --digestfile /out/digest result docker://` + reg.Host + `/built/result:1
echo pushed`
	// The outer run stands in for the pod: SYS_ADMIN lets the inner
	// buildah mount its overlay storage.
	got := runWith(t, builder, "", []string{
		"--cap-add", "CAP_SYS_ADMIN",
		"-v", reg.CertsDir + ":/certs:ro",
		"-v", filepath.Dir(reg.AuthFile) + ":/auth:ro",
		"-v", out + ":/out",
	}, "sh", "-c", script)
	if !strings.Contains(got, "pushed") {
		t.Fatalf("output %q", got)
	}
	digest, err := os.ReadFile(filepath.Join(out, "digest"))
	if err != nil {
		t.Fatal(err)
	}
	var remote struct{ Digest string }
	inspect(t, &remote, "inspect", "--cert-dir", reg.CertsDir, "--authfile", reg.AuthFile, "docker://"+reg.Host+"/built/result:1")
	if remote.Digest != strings.TrimSpace(string(digest)) {
		t.Errorf("digest file %q, registry %q", digest, remote.Digest)
	}
}

// The pause program must exit cleanly on SIGTERM, as the kubelet stops it.
func TestPauseStopsOnSIGTERM(t *testing.T) {
	dir, err := ScriptsDir()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "pause")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = filepath.Join(dir, "pause")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	cmd := exec.Command(bin)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		t.Fatalf("pause exited by itself: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("pause exit: %v", err)
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("pause ignored SIGTERM")
	}
}

func inspect(t *testing.T, v any, args ...string) {
	t.Helper()
	out, err := exec.Command("skopeo", args...).Output()
	if err != nil {
		t.Fatalf("skopeo %v: %v", args, err)
	}
	if err := json.Unmarshal(out, v); err != nil {
		t.Fatal(err)
	}
}

// runIn runs a command in a working container of the archive, with a
// private storage and chroot isolation.
func runIn(t *testing.T, archive, user string, cmd ...string) string {
	t.Helper()
	return runWith(t, archive, user, nil, cmd...)
}

func runWith(t *testing.T, archive, user string, runArgs []string, cmd ...string) string {
	t.Helper()
	ctx := context.Background()
	s := NewStorage(t.TempDir())
	defer func() {
		if err := s.Remove(); err != nil {
			t.Error(err)
		}
	}()
	ctr, err := s.From(ctx, archive)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"run", "--isolation", "chroot", "--network", "host"}
	if user != "" {
		args = append(args, "--user", user)
	}
	args = append(args, runArgs...)
	out, err := s.Buildah(ctx, append(append(args, ctr, "--"), cmd...)...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// pinnedBuildah is the buildah version hack/images/buildah/go.mod pins,
// without its leading v.
func pinnedBuildah(t *testing.T) string {
	t.Helper()
	dir, err := ScriptsDir()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "buildah", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^require github\.com/containers/buildah v(\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("hack/images/buildah/go.mod pins no buildah version")
	}
	return string(m[1])
}
