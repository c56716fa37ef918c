package registry

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imagespec/imagespec-controller/test/framework/hostaddr"
)

func start(t *testing.T) *Registry {
	t.Helper()
	return startWith(t, Options{})
}

func startWith(t *testing.T, opts Options) *Registry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var logs logBuffer
	opts.WorkDir = t.TempDir()
	opts.Logf = func(f string, a ...any) {
		logs.add(fmt.Sprintf(f, a...))
		t.Logf(f, a...)
	}
	r, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.Stop()
		if strings.Contains(logs.String(), r.Password) {
			t.Error("the registry password appears in its log")
		}
	})
	return r
}

func TestAuthAndTLS(t *testing.T) {
	r := start(t)
	get := func(c *http.Client, user, pass string) (int, error) {
		req, _ := http.NewRequest(http.MethodGet, "https://"+r.Host+"/v2/", nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	c := r.HTTPClient()
	if code, err := get(c, "", ""); err != nil || code != http.StatusUnauthorized {
		t.Errorf("without credentials: code %d, err %v; want 401", code, err)
	}
	if code, err := get(c, r.Username, "wrong"); err != nil || code != http.StatusUnauthorized {
		t.Errorf("wrong password: code %d, err %v; want 401", code, err)
	}
	if code, err := get(c, r.Username, r.Password); err != nil || code != http.StatusOK {
		t.Errorf("with credentials: code %d, err %v; want 200", code, err)
	}
	// The system roots do not know the test CA.
	if _, err := get(&http.Client{Timeout: 10 * time.Second}, r.Username, r.Password); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("without the CA: err %v; want a certificate error", err)
	}
	// localhost is in the certificate too.
	host := strings.Replace(r.Host, "127.0.0.1", "localhost", 1)
	req, _ := http.NewRequest(http.MethodGet, "https://"+host+"/v2/", nil)
	req.SetBasicAuth(r.Username, r.Password)
	if resp, err := c.Do(req); err != nil {
		t.Errorf("via localhost: %v", err)
	} else {
		resp.Body.Close()
	}
	if entries, _ := os.ReadDir(r.CertsDir); len(entries) != 1 || entries[0].Name() != "ca.crt" {
		t.Errorf("CertsDir holds %v, want only ca.crt", entries)
	}
}

// On the framework's host address, the registry is named by it and its
// certificate holds it, so pods on a node's bridge network can push.
func TestAddress(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lease, err := hostaddr.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lease.Release() })
	r := startWith(t, Options{Address: lease.IP()})
	if !strings.HasPrefix(r.Host, lease.IP()+":") {
		t.Fatalf("Host %q, want %s:PORT", r.Host, lease.IP())
	}
	req, _ := http.NewRequest(http.MethodGet, "https://"+r.Host+"/v2/", nil)
	req.SetBasicAuth(r.Username, r.Password)
	resp, err := r.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /v2/ on %s: %s", r.Host, resp.Status)
	}
	if _, err := Start(ctx, Options{Address: "registry.example"}); err == nil || !strings.Contains(err.Error(), "not an IP address") {
		t.Errorf("a host name as Address: %v, want an error", err)
	}
}

func TestPushPullWithSkopeo(t *testing.T) {
	ctx := context.Background()
	if err := EnsureTools(ctx, "skopeo"); err != nil {
		t.Fatal(err)
	}
	r := start(t)
	src := filepath.Join(t.TempDir(), "layout")
	writeLayout(t, src, "hello.txt", "hello registry\n")
	ref := "docker://" + r.Ref("test/hello", "v1")

	// Refused without credentials (an empty auth file, so the host's own
	// credentials cannot help either).
	empty := filepath.Join(t.TempDir(), "empty.json")
	os.WriteFile(empty, []byte(`{"auths":{}}`), 0o600)
	out, err := skopeo(ctx, "copy", "--dest-cert-dir", r.CertsDir, "--dest-authfile", empty, "oci:"+src+":latest", ref)
	if err == nil || !strings.Contains(strings.ToLower(out), "unauthorized") {
		t.Fatalf("push without credentials: err %v, output %s", err, out)
	}
	// Refused without the CA.
	out, err = skopeo(ctx, "copy", "--dest-authfile", r.AuthFile, "oci:"+src+":latest", ref)
	if err == nil || !strings.Contains(out, "certificate") {
		t.Fatalf("push without CA: err %v, output %s", err, out)
	}
	if strings.Contains(out, r.Password) {
		t.Fatal("password in skopeo output")
	}

	if out, err := skopeo(ctx, "copy", "--dest-cert-dir", r.CertsDir, "--dest-authfile", r.AuthFile, "oci:"+src+":latest", ref); err != nil {
		t.Fatalf("push: %v: %s", err, out)
	}
	dst := filepath.Join(t.TempDir(), "pulled")
	if out, err := skopeo(ctx, "copy", "--src-cert-dir", r.CertsDir, "--src-authfile", r.AuthFile, ref, "oci:"+dst+":latest"); err != nil {
		t.Fatalf("pull: %v: %s", err, out)
	}
	remote, err := skopeo(ctx, "inspect", "--raw", "--cert-dir", r.CertsDir, "--authfile", r.AuthFile, ref)
	if err != nil {
		t.Fatalf("inspect: %v: %s", err, remote)
	}
	local, err := skopeo(ctx, "inspect", "--raw", "oci:"+dst+":latest")
	if err != nil {
		t.Fatalf("inspect pulled: %v: %s", err, local)
	}
	if remote != local {
		t.Errorf("pulled manifest differs:\n%s\n%s", remote, local)
	}
}

func TestStopLeavesNothing(t *testing.T) {
	r, err := Start(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	pid, dir := r.PID(), r.Dir()
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("registry not running: %v", err)
	}
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process group %d still there: %v", pid, err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s still there: %v", dir, err)
	}
	if err := r.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestFixedCredentialsAndPort(t *testing.T) {
	port, err := freePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	r, err := Start(context.Background(), Options{Username: "alice", Password: "s3cret pass:word", Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	if !strings.HasSuffix(r.Host, ":"+itoa(port)) {
		t.Errorf("host %s, want port %d", r.Host, port)
	}
	req, _ := http.NewRequest(http.MethodGet, "https://"+r.Host+"/v2/", nil)
	req.SetBasicAuth("alice", "s3cret pass:word")
	resp, err := r.HTTPClient().Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("err %v resp %v", err, resp)
	}
	resp.Body.Close()
}

// logBuffer keeps every log line, to look for secrets in them.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.WriteString(s + "\n")
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func skopeo(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	// Fresh registries.conf-free runs; policy from the host package.
	out, err := exec.CommandContext(ctx, "skopeo", args...).CombinedOutput()
	return string(out), err
}

// writeLayout writes a one-layer OCI image layout holding a single file.
func writeLayout(t *testing.T, dir, name, content string) {
	t.Helper()
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), ModTime: time.Unix(0, 0)})
	tw.Write([]byte(content))
	tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tarBuf.Bytes())
	zw.Close()

	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	put := func(b []byte) string {
		sum := sha256.Sum256(b)
		h := hex.EncodeToString(sum[:])
		if err := os.WriteFile(filepath.Join(blobs, h), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return "sha256:" + h
	}
	diffSum := sha256.Sum256(tarBuf.Bytes())
	config, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + hex.EncodeToString(diffSum[:])}},
	})
	layerDigest := put(gz.Bytes())
	configDigest := put(config)
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": configDigest, "size": len(config)},
		"layers":        []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layerDigest, "size": gz.Len()}},
	})
	manifestDigest := put(manifest)
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"manifests": []any{map[string]any{
			"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifestDigest, "size": len(manifest),
			"annotations": map[string]string{"org.opencontainers.image.ref.name": "latest"},
		}},
	})
	os.WriteFile(filepath.Join(dir, "index.json"), index, 0o644)
	os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
}

// A registry must not outlive a test binary that is killed: the child
// process below starts one, prints its PID and is then SIGKILLed.
func TestDiesWithParent(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperStartAndHang$")
	cmd.Env = append(os.Environ(), "REGISTRY_TEST_HELPER=1", "REGISTRY_TEST_DIR="+t.TempDir())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var pid int
	if _, err := fmt.Fscan(stdout, &pid); err != nil {
		t.Fatalf("reading registry pid: %v", err)
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("registry %d not running: %v", pid, err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			syscall.Kill(-pid, syscall.SIGKILL)
			t.Fatalf("registry %d outlived its parent", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestHelperStartAndHang(t *testing.T) {
	if os.Getenv("REGISTRY_TEST_HELPER") != "1" {
		return
	}
	r, err := Start(context.Background(), Options{WorkDir: os.Getenv("REGISTRY_TEST_DIR")})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println(r.PID())
	// Other goroutines keep running while this one sleeps: the thread
	// that started the registry must still be the one that matters.
	time.Sleep(time.Minute)
}

// With AccessLog, every answered request is recorded with its method,
// path, status and user agent; without it nothing is.
func TestAccessLog(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r, err := Start(ctx, Options{WorkDir: t.TempDir(), AccessLog: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	req, _ := http.NewRequest(http.MethodHead, "https://"+r.Host+"/v2/some/repo/manifests/latest", nil)
	req.SetBasicAuth(r.Username, r.Password)
	req.Header.Set("User-Agent", "access-log-test/1")
	resp, err := r.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, got := range r.Requests() {
			if got.UserAgent == "access-log-test/1" {
				if got.Method != http.MethodHead || got.Path != "/v2/some/repo/manifests/latest" || got.Status != http.StatusNotFound || got.Time.IsZero() {
					t.Fatalf("recorded %+v", got)
				}
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the request is not in the access log: %+v", r.Requests())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestParseAccessLine(t *testing.T) {
	line := `127.0.0.1 - - [07/Dec/2026:01:10:00 +0000] "HEAD /v2/base/tracked/manifests/latest HTTP/1.1" 200 0 "" "imagespec-controller/base-image-tracker"`
	got, ok := parseAccessLine(line)
	if !ok || got.Method != "HEAD" || got.Path != "/v2/base/tracked/manifests/latest" || got.Status != 200 || got.UserAgent != "imagespec-controller/base-image-tracker" {
		t.Errorf("parseAccessLine = %+v %v", got, ok)
	}
	if _, ok := parseAccessLine(`time="2026-12-07T01:10:00Z" level=error msg="response completed with error"`); ok {
		t.Error("a registry log line was taken for an access log line")
	}
}
