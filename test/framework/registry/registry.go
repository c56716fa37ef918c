// Package registry runs a real container registry (Debian's docker-registry,
// distribution 2.8) on 127.0.0.1 with htpasswd auth and TLS from a CA made at
// start, for tests and for local development.
package registry

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/imagespec/imagespec-controller/test/framework/proc"
)

// Options configure Start. Zero values are fine.
type Options struct {
	// WorkDir is where the registry's directory is created; a temp dir if empty.
	WorkDir string
	// Username and Password are random when empty.
	Username, Password string
	// Port is picked free when 0.
	Port int
	// Logf receives the registry's own log lines; discarded when nil.
	Logf func(format string, args ...any)
	// AccessLog records every request the registry answers (Requests).
	AccessLog bool
	// Address is the IP the registry listens on and is named by (Host);
	// 127.0.0.1 when empty. Pods on a node's bridge network reach it at
	// test/framework/hostaddr's address, not at 127.0.0.1.
	Address string
}

// Request is one line of the registry's access log, stamped when it was
// read (the log's own time has one-second resolution).
type Request struct {
	Time      time.Time
	Method    string
	Path      string
	Status    int
	UserAgent string
}

// Registry is a running registry.
type Registry struct {
	Host       string // "ADDRESS:PORT", ADDRESS 127.0.0.1 by default
	CACertPath string // PEM of the CA that signed the serving certificate
	CertsDir   string // holds only ca.crt: a cert dir for containers/image, buildah, skopeo
	Username   string
	Password   string
	AuthFile   string // containers auth.json (also a valid .dockerconfigjson) for Host

	accessLog bool
	reqMu     sync.Mutex
	requests  []Request

	dir      string
	ownDir   bool
	caPool   *x509.CertPool
	pid      int
	done     chan struct{}
	waitErr  error
	stopOnce sync.Once
	stopErr  error
}

// Start runs a registry and returns once it answers an authenticated
// GET /v2/. Stop it with Stop.
func Start(ctx context.Context, opts Options) (*Registry, error) {
	if err := EnsureTools(ctx, "docker-registry"); err != nil {
		return nil, err
	}
	var err error
	r := &Registry{Username: opts.Username, Password: opts.Password, accessLog: opts.AccessLog}
	if r.Username == "" {
		r.Username = "user-" + randomHex(4)
	}
	if r.Password == "" {
		r.Password = randomHex(16)
	}
	if opts.WorkDir != "" {
		if err := os.MkdirAll(opts.WorkDir, 0o755); err != nil {
			return nil, err
		}
	}
	addr := opts.Address
	if addr == "" {
		addr = "127.0.0.1"
	}
	if net.ParseIP(addr) == nil {
		return nil, fmt.Errorf("registry: Address %q is not an IP address", addr)
	}
	r.dir, err = os.MkdirTemp(opts.WorkDir, "registry-")
	if err != nil {
		return nil, err
	}
	r.ownDir = true
	ok := false
	defer func() {
		if !ok {
			r.Stop()
		}
	}()
	if err := r.writeFiles(addr); err != nil {
		return nil, err
	}

	// A free port found by binding :0 can be taken before the registry binds
	// it; try again with another one in that case.
	for attempt := 0; ; attempt++ {
		port := opts.Port
		if port == 0 {
			if port, err = freePort(addr); err != nil {
				return nil, err
			}
		}
		r.Host = net.JoinHostPort(addr, strconv.Itoa(port))
		if err := r.writeConfig(); err != nil {
			return nil, err
		}
		err = r.run(ctx, opts.Logf)
		if err == nil {
			break
		}
		if opts.Port != 0 || attempt >= 2 || ctx.Err() != nil {
			return nil, err
		}
	}
	ok = true
	return r, nil
}

func (r *Registry) writeFiles(addr string) error {
	caPEM, err := writeTLS(r.dir, net.ParseIP(addr))
	if err != nil {
		return fmt.Errorf("making TLS certificates: %w", err)
	}
	r.caPool = x509.NewCertPool()
	r.caPool.AppendCertsFromPEM(caPEM)
	r.CACertPath = filepath.Join(r.dir, "ca.crt")
	r.CertsDir = filepath.Join(r.dir, "certs.d")
	if err := os.MkdirAll(r.CertsDir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(r.CertsDir, "ca.crt"), caPEM, 0o644); err != nil {
		return err
	}
	// The lowest bcrypt cost: the registry checks the hash on every request.
	hash, err := bcrypt.GenerateFromPassword([]byte(r.Password), bcrypt.MinCost)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(r.dir, "htpasswd"), []byte(r.Username+":"+string(hash)+"\n"), 0o600); err != nil {
		return err
	}
	return os.MkdirAll(filepath.Join(r.dir, "storage"), 0o755)
}

func (r *Registry) writeConfig() error {
	// JSON is YAML: no YAML library needed and every path is quoted safely.
	cfg := map[string]any{
		"version": "0.1",
		"log": map[string]any{
			"level":     "error",
			"formatter": "text",
			"accesslog": map[string]any{"disabled": !r.accessLog},
		},
		"storage": map[string]any{
			"filesystem": map[string]any{"rootdirectory": filepath.Join(r.dir, "storage")},
			"delete":     map[string]any{"enabled": true},
		},
		"http": map[string]any{
			"addr":   r.Host,
			"secret": randomHex(16),
			"tls": map[string]any{
				"certificate": filepath.Join(r.dir, "server.crt"),
				"key":         filepath.Join(r.dir, "server.key"),
			},
		},
		"auth": map[string]any{
			"htpasswd": map[string]any{
				"realm": "imagespec-test",
				"path":  filepath.Join(r.dir, "htpasswd"),
			},
		},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(r.dir, "config.yml"), b, 0o600); err != nil {
		return err
	}
	auth := map[string]any{"auths": map[string]any{
		r.Host: map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(r.Username + ":" + r.Password))},
	}}
	b, err = json.Marshal(auth)
	if err != nil {
		return err
	}
	r.AuthFile = filepath.Join(r.dir, "auth.json")
	return os.WriteFile(r.AuthFile, b, 0o600)
}

// run starts the process and waits until it is ready or has exited.
func (r *Registry) run(ctx context.Context, logf func(string, ...any)) error {
	out, w, err := os.Pipe()
	if err != nil {
		return err
	}
	var tail tailBuffer
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if req, ok := parseAccessLine(sc.Text()); ok {
				req.Time = time.Now()
				r.reqMu.Lock()
				r.requests = append(r.requests, req)
				r.reqMu.Unlock()
				continue
			}
			tail.add(sc.Text())
			if logf != nil {
				logf("registry %s: %s", r.Host, sc.Text())
			}
		}
		out.Close()
	}()

	started := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		cmd := exec.Command("docker-registry", "serve", filepath.Join(r.dir, "config.yml"))
		cmd.Dir = r.dir
		cmd.Stdout, cmd.Stderr = w, w
		// Dies with us and not before, in a process group of its own.
		err := proc.Start(cmd)
		w.Close()
		if err != nil {
			started <- err
			close(done)
			return
		}
		r.pid = cmd.Process.Pid
		started <- nil
		r.waitErr = cmd.Wait()
		close(done)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("starting docker-registry: %w", err)
	}
	r.done = done

	client := r.HTTPClient()
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+r.Host+"/v2/", nil)
		req.SetBasicAuth(r.Username, r.Password)
		resp, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-done:
			return fmt.Errorf("docker-registry exited (%v): %s", r.waitErr, tail.String())
		case <-ctx.Done():
			r.kill()
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			r.kill()
			return fmt.Errorf("docker-registry not ready on %s after 30s: %s", r.Host, tail.String())
		}
	}
}

// Requests returns the requests answered so far (Options.AccessLog).
func (r *Registry) Requests() []Request {
	r.reqMu.Lock()
	defer r.reqMu.Unlock()
	return append([]Request(nil), r.requests...)
}

// accessLine matches the combined log format the registry writes:
// host - user [time] "METHOD path HTTP/x" status size "referer" "agent".
var accessLine = regexp.MustCompile(`^\S+ \S+ \S+ \[[^\]]*\] "(\S+) (\S+) [^"]*" (\d{3}) \S+ "[^"]*" "([^"]*)"`)

func parseAccessLine(line string) (Request, bool) {
	m := accessLine.FindStringSubmatch(line)
	if m == nil {
		return Request{}, false
	}
	status, _ := strconv.Atoi(m[3])
	return Request{Method: m[1], Path: m[2], Status: status, UserAgent: m[4]}, true
}

// HTTPClient trusts the registry's CA and nothing else.
func (r *Registry) HTTPClient() *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: r.caPool, MinVersion: tls.VersionTLS12},
		},
	}
}

// Ref names repo:tag on this registry.
func (r *Registry) Ref(repo, tag string) string {
	return r.Host + "/" + repo + ":" + tag
}

// Dir is the registry's own directory, removed by Stop.
func (r *Registry) Dir() string { return r.dir }

func (r *Registry) kill() {
	if r.done == nil {
		return
	}
	// The process group: nothing the registry started outlives it.
	_ = syscall.Kill(-r.pid, syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-r.pid, syscall.SIGKILL)
		<-r.done
	}
	r.done = nil
}

// Stop kills the registry and removes its directory. Safe to call twice.
func (r *Registry) Stop() error {
	r.stopOnce.Do(func() {
		r.kill()
		if r.ownDir && r.dir != "" {
			r.stopErr = os.RemoveAll(r.dir)
		}
	})
	return r.stopErr
}

// PID of the registry process, for checks that it is gone.
func (r *Registry) PID() int { return r.pid }

func freePort(addr string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// tailBuffer keeps the last lines of output for error messages.
type tailBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (t *tailBuffer) add(s string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, s)
	if len(t.lines) > 20 {
		t.lines = t.lines[1:]
	}
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}
