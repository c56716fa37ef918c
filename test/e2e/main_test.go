// Package e2e builds real images end to end: a real kube-apiserver, a real
// registry with htpasswd auth and TLS, the controller run through app.Run,
// and real builds (apt from the Debian mirror, pip from a local index).
//
// TestMain starts what every test shares and tests reach it through
// SharedEnv: the control plane, the registry holding the debian-python base
// image, the package index, a certs.d tree and the PRIMEHUB_* settings. Each
// test works in its own namespace (NewNamespace) and runs a controller
// scoped to it (StartInprocessController, or a controller with another
// backend), so tests of different backends can share this package.
//
// Run: go test -tags 'containers_image_openpgp exclude_graphdriver_btrfs
// exclude_graphdriver_devicemapper' ./test/e2e (as root; see
// hack/install-test-deps.sh for the tools).
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containers/buildah"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/app"
	"github.com/imagespec/imagespec-controller/pkg/backend"
	"github.com/imagespec/imagespec-controller/pkg/config"
	"github.com/imagespec/imagespec-controller/pkg/controller"
	"github.com/imagespec/imagespec-controller/pkg/dockerfile"
	"github.com/imagespec/imagespec-controller/test/framework/controlplane"
	"github.com/imagespec/imagespec-controller/test/framework/hostaddr"
	"github.com/imagespec/imagespec-controller/test/framework/images"
	"github.com/imagespec/imagespec-controller/test/framework/pypi"
	"github.com/imagespec/imagespec-controller/test/framework/registry"
	"github.com/imagespec/imagespec-controller/test/framework/secretscan"
)

// Env is what the tests of this package share.
type Env struct {
	// HostIP is test/framework/hostaddr's address: the apiserver, the
	// registry, the package index and every test server listen there, so
	// pods on the pod network reach them as the host does.
	HostIP       string
	ControlPlane *controlplane.ControlPlane
	// Registry requires its credentials for pulls and pushes.
	Registry *registry.Registry
	// BaseImage is debian-python (user app) in Registry, BaseDigest its
	// manifest digest.
	BaseImage, BaseDigest string
	// NotebookImage is the notebook image (laid out like jupyter/docker-stacks:
	// /opt/conda owned by jovyan, USER 1000, the conda stand-in) in Registry.
	NotebookImage string
	// PyPI serves the test's Python packages (PEP 503) on HostIP.
	PyPI *pypi.Index
	// CertsDir is a certs.d tree: <host:port>/ca.crt for every registry
	// started for the tests (AddRegistryCA adds more).
	CertsDir string
	// EnvFile holds the PRIMEHUB_* settings for Registry and Settings is
	// what config.Load made of it, as the controller reads them.
	EnvFile  string
	Settings config.Settings
	// WorkDir is removed when the tests end.
	WorkDir string
	// StorageDir is the inprocess backend's store, shared by every
	// inprocess controller of the run so layers are cached across tests.
	StorageDir string
	// Logs receives klog's output and the backends' lines; ScanSecrets
	// reads it.
	Logs *LogCapture
}

var shared *Env

// SharedEnv returns the environment TestMain started.
func SharedEnv(tb testing.TB) *Env {
	tb.Helper()
	if shared == nil {
		tb.Fatal("no shared environment: TestMain did not start one")
	}
	return shared
}

// Python packages the index serves.
var indexPackages = []pypi.Package{
	{Name: "e2e-hello", Version: "1.0", Files: map[string]string{
		"e2e_hello/__init__.py": "__version__ = '1.0'\ndef greet():\n    return 'hello from e2e'\n",
	}},
	{Name: "e2e-extra", Version: "2.1"},
	{Name: "e2e-third", Version: "0.3"},
	// What PrimeHub's sample conda spec tensorflow=1.13* must pick, and a
	// newer release it must not.
	{Name: "tensorflow", Version: "1.13.1"},
	{Name: "tensorflow", Version: "1.14.0"},
}

func TestMain(m *testing.M) {
	// RUN steps re-execute the test binary; those children stop here.
	if buildah.InitReexec() {
		return
	}
	flag.Parse()
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	env, stop, err := startEnv(context.Background())
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e environment: %v\n", err)
		if stop != nil {
			stop()
		}
		return 1
	}
	shared = env
	// An interrupted run still stops the servers and removes the store.
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, os.Interrupt, syscall.SIGTERM)
	go func() {
		if _, ok := <-sigc; ok {
			stop()
			os.Exit(130)
		}
	}()
	code := m.Run()
	signal.Stop(sigc)
	stop()
	return code
}

func startEnv(ctx context.Context) (_ *Env, stop func(), err error) {
	env := &Env{Logs: &LogCapture{}}
	var stops []func()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			stopControllers()
			for i := len(stops) - 1; i >= 0; i-- {
				stops[i]()
			}
		})
	}
	captureKlog(env.Logs)

	if env.WorkDir, err = os.MkdirTemp("", "imagespec-e2e-"); err != nil {
		return nil, nil, err
	}
	// The node's work dir lies below: user-namespaced pods' root file
	// systems are set up as an unprivileged host user, who must get through.
	if err := os.Chmod(env.WorkDir, 0o711); err != nil {
		return nil, nil, err
	}
	stops = append(stops, func() {
		// E2E_KEEP_WORKDIR=1 keeps build logs and stores for a look after the run.
		if os.Getenv("E2E_KEEP_WORKDIR") == "" {
			os.RemoveAll(env.WorkDir)
		} else {
			fmt.Fprintf(os.Stderr, "e2e work dir kept: %s\n", env.WorkDir)
		}
	})
	env.CertsDir = filepath.Join(env.WorkDir, "certs.d")
	env.StorageDir = filepath.Join(env.WorkDir, "storage")

	binDir, err := controlplane.EnsureBinaries(ctx)
	if err != nil {
		return nil, stop, fmt.Errorf("kube binaries: %w", err)
	}
	startCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	lease, err := hostaddr.Acquire(startCtx)
	if err != nil {
		return nil, stop, err
	}
	stops = append(stops, func() { _ = lease.Release() })
	env.HostIP = lease.IP()
	// With kube-controller-manager: garbage collection and namespace
	// deletion run as in a real cluster.
	if env.ControlPlane, err = controlplane.Start(startCtx, controlplane.Options{BinDir: binDir, Logf: log.Printf, ControllerManager: true, Address: env.HostIP}); err != nil {
		return nil, stop, fmt.Errorf("control plane: %w", err)
	}
	stops = append(stops, func() { _ = env.ControlPlane.Stop() })

	if env.Registry, err = registry.Start(startCtx, registry.Options{WorkDir: env.WorkDir, Address: env.HostIP, AccessLog: true}); err != nil {
		return nil, stop, fmt.Errorf("registry: %w", err)
	}
	stops = append(stops, func() { _ = env.Registry.Stop() })
	if err := env.AddRegistryCA(env.Registry); err != nil {
		return nil, stop, err
	}
	// A cold cache makes the base image here (a few minutes), so tests
	// never skip for want of it.
	if env.BaseImage, env.BaseDigest, err = images.Push(ctx, images.DebianPython, env.Registry, "base/debian-python:latest"); err != nil {
		return nil, stop, fmt.Errorf("base image: %w", err)
	}
	if env.NotebookImage, _, err = images.Push(ctx, images.Notebook, env.Registry, "base/notebook:latest"); err != nil {
		return nil, stop, fmt.Errorf("notebook base image: %w", err)
	}
	if env.PyPI, err = pypi.Listen(net.JoinHostPort(env.HostIP, "0"), indexPackages...); err != nil {
		return nil, stop, fmt.Errorf("package index: %w", err)
	}
	stops = append(stops, func() { _ = env.PyPI.Close() })

	env.EnvFile = filepath.Join(env.WorkDir, "primehub.env")
	if env.Settings, err = WriteSettings(env.EnvFile, env.Registry.Host, env.Registry.Username, env.Registry.Password, env.Registry.Host+"/e2e"); err != nil {
		return nil, stop, err
	}
	return env, stop, nil
}

// AddRegistryCA makes builds and the CLI tools trust r.
func (e *Env) AddRegistryCA(r *registry.Registry) error {
	dir := filepath.Join(e.CertsDir, r.Host)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ca, err := os.ReadFile(filepath.Join(r.CertsDir, "ca.crt"))
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "ca.crt"), ca, 0o644)
}

// WriteSettings writes a PrimeHub .env for a registry and loads it the way
// the controller does (config.ReadEnvFile, config.Load). The password goes
// in single quotes, as PrimeHub's GCR example writes a JSON keyfile.
func WriteSettings(path, host, user, password, prefix string) (config.Settings, error) {
	if strings.Contains(password, "'") {
		return config.Settings{}, fmt.Errorf("a password for a dotenv file cannot hold a single quote")
	}
	content := fmt.Sprintf("# written by the e2e tests\n%s=true\n%s=https://%s\n%s=%s\n%s='%s'\n%s=%s\n",
		config.EnvFeatureCustomImage,
		config.EnvRegistryEndpoint, host,
		config.EnvRegistryUsername, user,
		config.EnvRegistryPassword, password,
		config.EnvRepoPrefix, prefix)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return config.Settings{}, err
	}
	vars, err := config.ReadEnvFile(path)
	if err != nil {
		return config.Settings{}, err
	}
	return config.Load(config.MapLookup(vars))
}

var nonDNS = regexp.MustCompile(`[^a-z0-9-]+`)

// NewNamespace creates a namespace named after the test with a random
// suffix (so reruns never collide) and its default ServiceAccount.
func NewNamespace(tb testing.TB) string {
	tb.Helper()
	base := strings.Trim(nonDNS.ReplaceAllString(strings.ToLower(tb.Name()), "-"), "-")
	if len(base) > 50 {
		base = strings.TrimRight(base[:50], "-")
	}
	name := base + "-" + randomHex(3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := SharedEnv(tb).ControlPlane.CreateNamespace(ctx, name); err != nil {
		tb.Fatal(err)
	}
	// Deleted when the test ends (kube-controller-manager empties it), so
	// a later controller that watches every namespace, as TestInCluster's
	// does, never builds what earlier tests left.
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cs, err := kubernetes.NewForConfig(SharedEnv(tb).ControlPlane.RESTConfig)
		if err == nil {
			err = cs.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{})
		}
		// A test that deleted it itself finds it gone or terminating.
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			tb.Errorf("deleting namespace %s: %v", name, err)
		}
	})
	return name
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// LogCapture keeps everything logged during the run, to prove secrets never
// reach a log.
type LogCapture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *LogCapture) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if os.Getenv("E2E_VERBOSE") != "" {
		_, _ = os.Stderr.Write(p)
	}
	return l.buf.Write(p)
}

// Printf logs a line.
func (l *LogCapture) Printf(format string, args ...any) {
	fmt.Fprintf(l, time.Now().Format("15:04:05.000 ")+format+"\n", args...)
}

// String returns the whole log.
func (l *LogCapture) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Since returns what was logged after mark (a previous Len).
func (l *LogCapture) Since(mark int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if mark > l.buf.Len() {
		return ""
	}
	return string(l.buf.Bytes()[mark:])
}

// Len is a mark for Since.
func (l *LogCapture) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Len()
}

// captureKlog sends klog's output (the controller's and the event
// broadcaster's) to w only; E2E_VERBOSE=1 echoes it to stderr.
func captureKlog(w io.Writer) {
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	_ = fs.Set("logtostderr", "false")
	_ = fs.Set("alsologtostderr", "false")
	_ = fs.Set("stderrthreshold", "FATAL")
	_ = fs.Set("v", "4")
	klog.SetOutput(w)
}

// Controller is a controller run through app.Run, as cmd/controller runs it.
type Controller struct {
	Clients *app.Clients
	cancel  context.CancelFunc
	done    chan error
	onStop  func()
	stopped sync.Once
}

// ControllerConfig adjusts a controller's options (settings, package
// sources, timeouts) before it starts.
type ControllerConfig struct {
	// Settings default to SharedEnv().Settings.
	Settings *config.Settings
	// Tweak edits the options after the defaults are set.
	Tweak func(*app.Options)
}

var (
	controllersMu sync.Mutex
	controllers   = map[*Controller]bool{}
)

// DefaultOptions are the app options tests use: the env's registry
// settings, the local package index, and a controller scoped to namespace.
func (e *Env) DefaultOptions(namespace string, s config.Settings) app.Options {
	return app.Options{
		Namespace: namespace,
		Workers:   2,
		QPS:       -1,
		Controller: controller.Options{
			Registry: s.Registry,
			// Every test's base images are under base/ (of the shared
			// registry, or of the registry s names), shared as an
			// operator shares curated bases.
			SharedRepositories: sharedBases(e.Registry.Host, s.Registry.Host),
			RegistryCertDir:    e.CertsDir,
			// Tests of one run share a registry and often build the same
			// spec name and inputs (so the same target) in namespaces of
			// their own: each build must happen. TestBackends/<backend>/
			// AlreadyBuilt turns the check on.
			BuildExisting: true,
			// As shipped: every pushed image gets its SBOM and provenance.
			SupplyChain: true,
			Sources: dockerfile.Sources{
				PipIndexURL:     e.PyPI.URL(),
				PipTrustedHosts: []string{e.PyPI.Addr()},
			},
			BuildTimeout:          10 * time.Minute,
			SucceededHistoryLimit: 5,
			FailedHistoryLimit:    5,
		},
	}
}

// sharedBases is base/ of each registry host, once.
func sharedBases(hosts ...string) []string {
	var out []string
	for _, h := range hosts {
		if h != "" && !slices.Contains(out, h+"/base") {
			out = append(out, h+"/base")
		}
	}
	return out
}

// StartController runs a controller with backend be (made from clients by
// newBackend) on namespace until the test ends. onStop runs after the
// controller has stopped (to close the backend).
func StartController(tb testing.TB, opts app.Options, newBackend func(*app.Clients) (backend.Backend, func(), error)) *Controller {
	tb.Helper()
	env := SharedEnv(tb)
	clients, err := app.NewClients(env.ControlPlane.RESTConfig, opts)
	if err != nil {
		tb.Fatal(err)
	}
	be, onStop, err := newBackend(clients)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Controller{Clients: clients, cancel: cancel, done: make(chan error, 1), onStop: onStop}
	go func() { c.done <- app.Run(ctx, clients, be, opts) }()
	controllersMu.Lock()
	controllers[c] = true
	controllersMu.Unlock()
	tb.Cleanup(func() {
		if err := c.Stop(); err != nil {
			tb.Errorf("controller: %v", err)
		}
	})
	return c
}

// Stop stops the controller and waits for it.
func (c *Controller) Stop() error {
	var err error
	c.stopped.Do(func() {
		c.cancel()
		select {
		case err = <-c.done:
		case <-time.After(2 * time.Minute):
			err = fmt.Errorf("controller did not stop within 2m")
		}
		if c.onStop != nil {
			c.onStop()
		}
		controllersMu.Lock()
		delete(controllers, c)
		controllersMu.Unlock()
	})
	return err
}

func stopControllers() {
	controllersMu.Lock()
	var all []*Controller
	for c := range controllers {
		all = append(all, c)
	}
	controllersMu.Unlock()
	for _, c := range all {
		_ = c.Stop()
	}
}

// WaitJob waits until the ImageSpec's current job, other than notJob (the
// job of a revision before an update), reaches a final phase and returns it.
func WaitJob(tb testing.TB, c *Controller, namespace, spec, notJob string, timeout time.Duration) *v1alpha1.ImageSpecJob {
	tb.Helper()
	var job *v1alpha1.ImageSpecJob
	WaitFor(tb, timeout, func(ctx context.Context) (bool, string) {
		is, err := c.Clients.Client.PrimehubV1alpha1().ImageSpecs(namespace).Get(ctx, spec, metav1.GetOptions{})
		if err != nil || is.Status.JobName == "" || is.Status.JobName == notJob {
			return false, fmt.Sprintf("imagespec: %v, job %q", err, is.Status.JobName)
		}
		j, err := c.Clients.Client.PrimehubV1alpha1().ImageSpecJobs(namespace).Get(ctx, is.Status.JobName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		job = j
		return j.Status.Phase.IsFinal(), fmt.Sprintf("job %s: %s %s %s", j.Name, j.Status.Phase, j.Status.Reason, j.Status.Message)
	})
	return job
}

// WaitFor polls cond every 100ms until it holds or timeout passes.
func WaitFor(tb testing.TB, timeout time.Duration, cond func(ctx context.Context) (bool, string)) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	last := ""
	for {
		ok, state := cond(ctx)
		if ok {
			return
		}
		last = state
		select {
		case <-ctx.Done():
			tb.Fatalf("not done after %s: %s", timeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Skopeo runs skopeo with the env's certs for registry r and its
// credentials (authFile "" uses r's own).
func (e *Env) Skopeo(ctx context.Context, r *registry.Registry, authFile string, args ...string) ([]byte, error) {
	if authFile == "" {
		authFile = r.AuthFile
	}
	full := append([]string{args[0], "--cert-dir", filepath.Join(e.CertsDir, r.Host), "--authfile", authFile}, args[1:]...)
	out, err := exec.CommandContext(ctx, "skopeo", full...).Output()
	if ee, ok := err.(*exec.ExitError); ok {
		err = fmt.Errorf("skopeo %s: %w: %s", args[0], err, strings.TrimSpace(string(ee.Stderr)))
	}
	return out, err
}

// ImageInfo is what skopeo says about an image in a registry.
type ImageInfo struct {
	Digest string
	Layers []string
	User   string
	Labels map[string]string
}

// Inspect reads ref's manifest digest, layers, configured user and labels
// from r.
func (e *Env) Inspect(tb testing.TB, r *registry.Registry, ref string) ImageInfo {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := e.Skopeo(ctx, r, "", "inspect", "docker://"+ref)
	if err != nil {
		tb.Fatal(err)
	}
	var info struct {
		Digest string
		Layers []string
	}
	if err := json.Unmarshal(out, &info); err != nil {
		tb.Fatal(err)
	}
	out, err = e.Skopeo(ctx, r, "", "inspect", "--config", "docker://"+ref)
	if err != nil {
		tb.Fatal(err)
	}
	var cfg struct {
		Config struct {
			User   string
			Labels map[string]string
		}
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		tb.Fatal(err)
	}
	return ImageInfo{Digest: info.Digest, Layers: info.Layers, User: cfg.Config.User, Labels: cfg.Config.Labels}
}

// TagExists asks r whether ref (host/repo:tag) has a manifest.
func TagExists(tb testing.TB, r *registry.Registry, ref string) bool {
	tb.Helper()
	rest := strings.TrimPrefix(ref, r.Host+"/")
	repo, tag, _ := strings.Cut(rest, ":")
	req, err := http.NewRequest(http.MethodHead, "https://"+r.Host+"/v2/"+repo+"/manifests/"+tag, nil)
	if err != nil {
		tb.Fatal(err)
	}
	req.SetBasicAuth(r.Username, r.Password)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	resp, err := r.HTTPClient().Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return true
	case http.StatusNotFound:
		return false
	}
	tb.Fatalf("HEAD %s: %s", ref, resp.Status)
	return false
}

// RunInImage pulls ref from r with the Debian buildah CLI (its own store,
// so nothing touches the stores under test) and runs script in it with
// sh -c, as the image's configured user. It returns the combined output.
func (e *Env) RunInImage(tb testing.TB, r *registry.Registry, ref, script string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	root, err := os.MkdirTemp(e.WorkDir, "cli-")
	if err != nil {
		tb.Fatal(err)
	}
	bah := func(args ...string) (string, error) {
		full := append([]string{"--root", filepath.Join(root, "root"), "--runroot", filepath.Join(root, "run")}, args...)
		out, err := exec.CommandContext(ctx, "buildah", full...).CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("buildah %s: %w: %s", args[0], err, out)
		}
		return string(out), nil
	}
	defer func() {
		_, _ = bah("rm", "--all")
		_, _ = bah("rmi", "--all", "--force")
		os.RemoveAll(root)
	}()
	out, err := bah("from", "--quiet", "--cert-dir", filepath.Join(e.CertsDir, r.Host), "--authfile", r.AuthFile, "docker://"+ref)
	if err != nil {
		tb.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	ctr := lines[len(lines)-1]
	out, err = bah("run", "--isolation", "chroot", ctr, "--", "/bin/sh", "-c", script)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// RegistryCredential is r's login, for ScanSecrets.
func RegistryCredential(r *registry.Registry) secretscan.Credential {
	return secretscan.Credential{User: r.Username, Password: r.Password}
}

// ScanSecrets fails the test when any form of the credentials (see
// secretscan) appears in the captured logs, in the namespace's events,
// ImageSpecs, ImageSpecJobs or ConfigMaps, or in the given files.
func (e *Env) ScanSecrets(tb testing.TB, c *Controller, namespace string, files []string, creds ...secretscan.Credential) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sources := map[string]string{"logs": e.Logs.String()}
	add := func(name string, list any, err error) {
		tb.Helper()
		if err != nil {
			tb.Fatalf("listing %s to scan: %v", name, err)
		}
		text, err := secretscan.JSON(list)
		if err != nil {
			tb.Fatalf("listing %s to scan: %v", name, err)
		}
		sources[name] = text
	}
	events, err := c.Clients.Kube.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{})
	add("events", events, err)
	if err == nil && len(events.Items) == 0 {
		tb.Errorf("no events in %s: the scan would prove nothing", namespace)
	}
	specs, err := c.Clients.Client.PrimehubV1alpha1().ImageSpecs(namespace).List(ctx, metav1.ListOptions{})
	add("imagespecs", specs, err)
	jobs, err := c.Clients.Client.PrimehubV1alpha1().ImageSpecJobs(namespace).List(ctx, metav1.ListOptions{})
	add("imagespecjobs", jobs, err)
	cms, err := c.Clients.Kube.CoreV1().ConfigMaps(namespace).List(ctx, metav1.ListOptions{})
	add("configmaps", cms, err)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		sources[f] = string(b)
	}
	for _, where := range secretscan.Find(sources, creds...) {
		tb.Errorf("a secret appears in %s", where)
	}
}
