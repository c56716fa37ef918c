package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"

	"github.com/imagespec/imagespec-controller/pkg/app"
	"github.com/imagespec/imagespec-controller/pkg/backend"
	"github.com/imagespec/imagespec-controller/test/framework/controlplane"
)

const (
	deployNamespace = "imagespec-system"
	deployUser      = "system:serviceaccount:" + deployNamespace + ":imagespec-controller"
	// buildNamespace is the Deployment's --build-namespace.
	buildNamespace = "imagespec-builds"
)

// deployDir is artifacts/deploy of this checkout.
func deployDir(tb testing.TB) string {
	tb.Helper()
	root, err := controlplane.RepoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	return filepath.Join(root, "artifacts", "deploy")
}

var applyDeployOnce struct {
	sync.Once
	err error
}

// applyDeploy applies artifacts/deploy (namespace, RBAC, Deployment) to the
// shared control plane once, as an administrator would; the CRDs come from
// artifacts/crds, installed when the control plane started.
func applyDeploy(tb testing.TB) {
	tb.Helper()
	cp := SharedControlPlane(tb)
	applyDeployOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, applyDeployOnce.err = cp.Kubectl(ctx, "apply", "-k", deployDir(tb)); applyDeployOnce.err != nil {
			return
		}
		// What kube-controller-manager, which this control plane lacks,
		// adds to the namespaces: the default ServiceAccount build pods
		// run as.
		for _, ns := range []string{deployNamespace, buildNamespace} {
			if applyDeployOnce.err = cp.CreateNamespace(ctx, ns); applyDeployOnce.err != nil {
				return
			}
		}
	})
	if applyDeployOnce.err != nil {
		tb.Fatal(applyDeployOnce.err)
	}
}

// readManifests decodes every object of a multi-document YAML file.
func readManifests(tb testing.TB, path string) []*unstructured.Unstructured {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return decodeManifests(tb, b)
}

func decodeManifests(tb testing.TB, b []byte) []*unstructured.Unstructured {
	tb.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	var out []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return out
			}
			tb.Fatal(err)
		}
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
}

// userConfig is a client config that authenticates as user, in the groups
// the API server gives a service account of that name.
func userConfig(tb testing.TB, user string) *rest.Config {
	tb.Helper()
	cp := SharedControlPlane(tb)
	groups := []string{"system:authenticated"}
	if parts := strings.Split(user, ":"); len(parts) == 4 && parts[1] == "serviceaccount" {
		groups = append(groups, "system:serviceaccounts", "system:serviceaccounts:"+parts[2])
	}
	path := filepath.Join(tb.TempDir(), "kubeconfig")
	if err := cp.WriteKubeconfig(path, user, groups); err != nil {
		tb.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// freeAddr returns a loopback address with a port nobody listens on.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// request is one API request an instance made, with its response code.
type request struct {
	at     time.Time
	method string
	path   string
	code   int
}

// instance is a controller started through app.Run, whose API traffic is
// recorded and can be cut off as if the process had died.
type instance struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
	cut    atomic.Bool

	mu       sync.Mutex
	requests []request
}

func (in *instance) roundTrip(rt http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		if in.cut.Load() {
			return nil, fmt.Errorf("connection cut by the test")
		}
		resp, err := rt.RoundTrip(req)
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		in.mu.Lock()
		in.requests = append(in.requests, request{at: time.Now(), method: req.Method, path: req.URL.Path, code: code})
		in.mu.Unlock()
		return resp, err
	})
}

// find returns the recorded requests that match.
func (in *instance) find(match func(request) bool) []request {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []request
	for _, r := range in.requests {
		if match(r) {
			out = append(out, r)
		}
	}
	return out
}

func (in *instance) forbidden() []string {
	var out []string
	for _, r := range in.find(func(r request) bool { return r.code == http.StatusForbidden }) {
		out = append(out, r.method+" "+r.path)
	}
	return out
}

// kill makes the instance vanish as a crashed process would: no request
// reaches the API server any more (so the lease is not released) and its
// goroutines stop.
func (in *instance) kill(tb testing.TB) {
	tb.Helper()
	in.cut.Store(true)
	in.cancel()
	in.wait(tb)
}

// wait waits for app.Run to return.
func (in *instance) wait(tb testing.TB) {
	tb.Helper()
	select {
	case <-in.done:
	case <-time.After(60 * time.Second):
		tb.Fatal("controller did not stop")
	}
}

// startInstance runs app.Run with cfg's identity until the test ends.
func startInstance(tb testing.TB, cfg *rest.Config, be backend.Backend, opts app.Options) *instance {
	tb.Helper()
	return startInstanceWith(tb, cfg, opts, func(*app.Clients) (backend.Backend, error) { return be, nil })
}

// startInstanceWith is startInstance with a backend built from the
// instance's clients, as cmd/controller builds it.
func startInstanceWith(tb testing.TB, cfg *rest.Config, opts app.Options, newBackend func(*app.Clients) (backend.Backend, error)) *instance {
	tb.Helper()
	in := &instance{done: make(chan struct{})}
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(in.roundTrip)
	clients, err := app.NewClients(cfg, opts)
	if err != nil {
		tb.Fatal(err)
	}
	be, err := newBackend(clients)
	if err != nil {
		tb.Fatal(err)
	}
	logger, _ := ktesting.NewTestContext(tb)
	ctx, cancel := context.WithCancel(klog.NewContext(context.Background(), logger))
	in.cancel = cancel
	go func() {
		in.err = app.Run(ctx, clients, be, opts)
		close(in.done)
	}()
	tb.Cleanup(func() { cancel(); <-in.done })
	return in
}

// httpGet returns the status code and body of url, or 0 when nothing
// answers.
func httpGet(url string) (int, string) {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
