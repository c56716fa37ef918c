package images

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagespec/imagespec-controller/test/framework/registry"
)

// The builder image under runc, as a pod runs it with least privilege:
// root without any capability but SETUID, SETGID and SETFCAP, no new
// privileges, no seccomp profile, host network. It builds with a RUN step
// and pushes, writing the digest where a pod's termination message would
// be. Overlay storage needs /var/lib/containers on a volume (an emptyDir
// in a pod); STORAGE_DRIVER=vfs works without one.
func TestBuilderLeastPrivilege(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	if err := registry.EnsureTools(ctx, "runc"); err != nil {
		t.Fatal(err)
	}
	builder, err := Ensure(ctx, Builder)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registry.Start(ctx, registry.Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Stop()
	from, _, err := Push(ctx, Busybox, reg, "base/busybox:1")
	if err != nil {
		t.Fatal(err)
	}
	s := NewStorage(t.TempDir())
	defer func() {
		if err := s.Remove(); err != nil {
			t.Error(err)
		}
	}()
	ctr, err := s.From(ctx, builder)
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.Buildah(ctx, "mount", ctr)
	if err != nil {
		t.Fatal(err)
	}
	rootfs := strings.TrimSpace(out)

	for _, c := range []struct {
		name     string
		emptyDir bool
		env      []string
	}{
		{"overlay-on-emptydir", true, nil},
		{"vfs", false, []string{"STORAGE_DRIVER=vfs"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			digestFile := filepath.Join(dir, "termination-log")
			if err := os.WriteFile(digestFile, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			target := reg.Host + "/built/" + c.name + ":1"
			script := `set -e
mkdir -p /tmp/ctx
printf 'FROM ` + from + `\nRUN echo built > /hello\n' >/tmp/ctx/Containerfile
buildah bud --quiet --cert-dir /certs --authfile /auth/auth.json -t result /tmp/ctx >/dev/null
buildah push --quiet --cert-dir /certs --authfile /auth/auth.json --digestfile /dev/termination-log result docker://` + target
			mounts := []mount{
				{reg.CertsDir, "/certs", true},
				{filepath.Dir(reg.AuthFile), "/auth", true},
				{digestFile, "/dev/termination-log", false},
			}
			if c.emptyDir {
				vol := filepath.Join(dir, "emptydir")
				os.MkdirAll(vol, 0o755)
				mounts = append(mounts, mount{vol, "/var/lib/containers", false})
			}
			if out, err := runc(ctx, t, rootfs, c.env, mounts, "sh", "-c", script); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			digest, _ := os.ReadFile(digestFile)
			var remote struct{ Digest string }
			inspect(t, &remote, "inspect", "--cert-dir", reg.CertsDir, "--authfile", reg.AuthFile, "docker://"+target)
			if !strings.HasPrefix(string(digest), "sha256:") || remote.Digest != string(digest) {
				t.Errorf("termination log %q, registry has %q", digest, remote.Digest)
			}
		})
	}
}

type mount struct {
	src, dst string
	ro       bool
}

// runc runs args in rootfs with the pod-like restrictions described above.
func runc(ctx context.Context, t *testing.T, rootfs string, env []string, mounts []mount, args ...string) (string, error) {
	t.Helper()
	bundle := t.TempDir()
	gen := exec.CommandContext(ctx, "runc", "spec", "--bundle", bundle)
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v: %s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var spec map[string]any
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	caps := []string{"CAP_SETUID", "CAP_SETGID", "CAP_SETFCAP"}
	spec["root"] = map[string]any{"path": rootfs, "readonly": false}
	proc := spec["process"].(map[string]any)
	proc["terminal"] = false
	proc["noNewPrivileges"] = true
	proc["args"] = args
	proc["env"] = append([]string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"BUILDAH_ISOLATION=chroot", "HOME=/root",
	}, env...)
	proc["capabilities"] = map[string]any{"bounding": caps, "effective": caps, "permitted": caps}
	linux := spec["linux"].(map[string]any)
	var ns []any
	for _, n := range linux["namespaces"].([]any) {
		if n.(map[string]any)["type"] != "network" {
			ns = append(ns, n)
		}
	}
	linux["namespaces"] = ns
	ms := spec["mounts"].([]any)
	for _, m := range mounts {
		opts := []string{"rbind", "rw"}
		if m.ro {
			opts = []string{"rbind", "ro"}
		}
		ms = append(ms, map[string]any{"destination": m.dst, "type": "bind", "source": m.src, "options": opts})
	}
	spec["mounts"] = ms
	if b, err = json.Marshal(spec); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	id := make([]byte, 6)
	rand.Read(id)
	name := "imagespec-test-" + hex.EncodeToString(id)
	state := filepath.Join(bundle, "state")
	defer exec.Command("runc", "--root", state, "delete", "--force", name).Run()
	out, err := exec.CommandContext(ctx, "runc", "--root", state, "run", "--bundle", bundle, name).CombinedOutput()
	return string(out), err
}
