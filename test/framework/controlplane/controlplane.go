// Package controlplane runs a real etcd and kube-apiserver (on 127.0.0.1 or
// Options.Address) for tests and for the local development environment,
// with the project's CRDs
// installed, and optionally kube-controller-manager (garbage collection,
// namespace deletion, Deployments, ServiceAccounts). There is no
// scheduler: pods need spec.nodeName. CreateNamespace also does what the
// controller-manager does for a new namespace, so it works without one.
package controlplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// KeepWorkDirEnv, set to 1, keeps a work dir Start created after Stop, for
// reading the process logs.
const KeepWorkDirEnv = "IMAGESPEC_KEEP_WORKDIR"

const (
	workDirPrefix = "imagespec-controlplane-"
	// ServiceCIDR is the Service IP range; a node's kube-proxy serves it.
	ServiceCIDR = "10.96.0.0/16"
	// KubernetesServiceIP is the kubernetes Service's ClusterIP, which the
	// serving certificate holds for in-cluster clients.
	KubernetesServiceIP = "10.96.0.1"
	// AdminUser is the client certificate's CN; its group is system:masters.
	AdminUser = "imagespec-admin"
)

// Options configure Start. Zero values pick defaults.
type Options struct {
	// BinDir holds etcd, kube-apiserver and kubectl; default EnsureBinaries.
	BinDir string
	// CRDDir holds CRD manifests to install; default <repo>/artifacts/crds.
	// A missing or empty directory installs nothing.
	CRDDir string
	// WorkDir receives PKI, kubeconfig, etcd data and process logs. Default: a
	// new temporary directory, removed by Stop. A given WorkDir is kept.
	WorkDir string
	// Logf receives progress messages; nil discards them.
	Logf func(format string, args ...any)
	// ExtraAPIServerArgs are appended to kube-apiserver's flags.
	ExtraAPIServerArgs []string
	// ControllerManager runs kube-controller-manager with
	// ControllerManagerControllers (BinDir must hold it).
	ControllerManager bool
	// Address is the IP kube-apiserver listens on and advertises;
	// 127.0.0.1 when empty. Pods reach the apiserver through the
	// kubernetes Service (a node's kube-proxy) only when it is not a
	// loopback address: then the apiserver keeps the Service's endpoints
	// itself. test/framework/hostaddr has one.
	Address string
}

// Timings of one Start, each measured from the call to Start.
type Timings struct {
	Binaries        time.Duration // binaries located (or built)
	EtcdReady       time.Duration // etcd answers /health
	APIServerReady  time.Duration // kube-apiserver answers /readyz
	CRDsEstablished time.Duration // every CRD Established and in OpenAPI v3
	// ControllerManagerReady: kube-controller-manager made a
	// ServiceAccount (zero without Options.ControllerManager).
	ControllerManagerReady time.Duration
}

// ControlPlane is a running etcd and kube-apiserver.
type ControlPlane struct {
	// RESTConfig authenticates as AdminUser (system:masters). Copy it
	// (rest.CopyConfig) before changing it.
	RESTConfig     *rest.Config
	KubeconfigPath string
	BinDir         string
	WorkDir        string
	APIServerURL   string
	EtcdURL        string
	// CA signs every certificate; use it to issue more (e.g. for a kubelet).
	CA      *CA
	PKI     PKIPaths
	Timings Timings
	// CRDs lists the names of the CRDs installed.
	CRDs []string

	logf        func(string, ...any)
	address     string
	ownsWorkDir bool
	etcd        *process
	apiserver   *process
	// controllerManager is nil without Options.ControllerManager.
	controllerManager *process
	// mu guards the process fields and restarting, which Restart changes.
	mu sync.Mutex
	// restarting is closed when a Restart in progress ends.
	restarting chan struct{}
	stopOnce   sync.Once
	stopErr    error
	done       chan struct{}
}

// Start runs etcd and kube-apiserver, waits until the apiserver is ready and
// the CRDs are established, and returns. On error everything started is
// stopped again. Call Stop when done.
func Start(ctx context.Context, opts Options) (_ *ControlPlane, err error) {
	begin := time.Now()
	cp := &ControlPlane{logf: opts.Logf, BinDir: opts.BinDir, address: opts.Address, done: make(chan struct{})}
	if cp.address == "" {
		cp.address = "127.0.0.1"
	}
	if net.ParseIP(cp.address) == nil {
		return nil, fmt.Errorf("controlplane: Address %q is not an IP address", cp.address)
	}
	if cp.logf == nil {
		cp.logf = func(string, ...any) {}
	}
	defer func() {
		if err != nil {
			_ = cp.Stop()
		}
	}()

	if cp.BinDir == "" {
		if cp.BinDir, err = EnsureBinaries(ctx); err != nil {
			return nil, err
		}
	}
	for _, b := range RequiredBinaries {
		if _, err := os.Stat(filepath.Join(cp.BinDir, b)); err != nil {
			return nil, fmt.Errorf("binary %s: %w", b, err)
		}
	}
	cp.Timings.Binaries = time.Since(begin)

	crdDir := opts.CRDDir
	if crdDir == "" {
		if root, err := RepoRoot(); err == nil {
			crdDir = filepath.Join(root, "artifacts", "crds")
		}
	}

	if opts.WorkDir != "" {
		cp.WorkDir = opts.WorkDir
		if err := os.MkdirAll(cp.WorkDir, 0o700); err != nil {
			return nil, err
		}
	} else {
		RemoveStaleWorkDirs(cp.logf)
		if cp.WorkDir, err = os.MkdirTemp("", workDirPrefix); err != nil {
			return nil, err
		}
		cp.ownsWorkDir = true
		// Lets a later Start remove this dir if this process dies unclean.
		if err := os.WriteFile(filepath.Join(cp.WorkDir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
			return nil, err
		}
	}
	cp.logf("control plane work dir %s", cp.WorkDir)

	if cp.CA, cp.PKI, err = writePKI(filepath.Join(cp.WorkDir, "pki"), cp.address); err != nil {
		return nil, err
	}

	if err := cp.startEtcd(ctx); err != nil {
		return nil, err
	}
	cp.Timings.EtcdReady = time.Since(begin)
	cp.logf("etcd ready at %s after %v", cp.EtcdURL, cp.Timings.EtcdReady.Round(time.Millisecond))

	if err := cp.startAPIServer(ctx, opts.ExtraAPIServerArgs); err != nil {
		return nil, err
	}
	cp.Timings.APIServerReady = time.Since(begin)
	cp.logf("kube-apiserver ready at %s after %v", cp.APIServerURL, cp.Timings.APIServerReady.Round(time.Millisecond))

	if err := cp.installCRDs(ctx, crdDir); err != nil {
		return nil, err
	}
	cp.Timings.CRDsEstablished = time.Since(begin)
	if len(cp.CRDs) > 0 {
		cp.logf("%d CRDs established after %v", len(cp.CRDs), cp.Timings.CRDsEstablished.Round(time.Millisecond))
	}
	if opts.ControllerManager {
		if err := cp.startControllerManager(ctx); err != nil {
			return nil, err
		}
		cp.Timings.ControllerManagerReady = time.Since(begin)
		cp.logf("kube-controller-manager ready after %v", cp.Timings.ControllerManagerReady.Round(time.Millisecond))
	}
	go cp.watch()
	return cp, nil
}

// Address is the IP the apiserver listens on and advertises.
func (cp *ControlPlane) Address() string { return cp.address }

// Done is closed when etcd, kube-apiserver or kube-controller-manager
// exits, through Stop or not (not through Restart); a long-lived user (the
// dev environment) watches it to notice a crash.
func (cp *ControlPlane) Done() <-chan struct{} { return cp.done }

// watch closes done once a process exits, unless Restart is replacing it.
func (cp *ControlPlane) watch() {
	for {
		cp.mu.Lock()
		etcd, apiserver, kcm := cp.etcd, cp.apiserver, cp.controllerManager
		cp.mu.Unlock()
		var kcmDone <-chan struct{}
		if kcm != nil {
			kcmDone = kcm.Done()
		}
		select {
		case <-etcd.Done():
		case <-apiserver.Done():
		case <-kcmDone:
		}
		cp.mu.Lock()
		restarting := cp.restarting
		cp.mu.Unlock()
		if restarting == nil {
			close(cp.done)
			return
		}
		<-restarting
	}
}

// Restart stops kube-apiserver (and etcd, withEtcd) and starts them again
// on the same ports and data, as a control plane upgrade or a crash would;
// it returns once the apiserver is ready again. Clients see connection
// errors meanwhile and must ride them out.
func (cp *ControlPlane) Restart(ctx context.Context, withEtcd bool) error {
	restarting := make(chan struct{})
	cp.mu.Lock()
	cp.restarting = restarting
	cp.mu.Unlock()
	defer func() {
		cp.mu.Lock()
		cp.restarting = nil
		cp.mu.Unlock()
		close(restarting)
	}()
	if err := cp.apiserver.Stop(5 * time.Second); err != nil {
		return err
	}
	if withEtcd {
		etcd, err := cp.etcd.Restart(5 * time.Second)
		if err != nil {
			return err
		}
		cp.mu.Lock()
		cp.etcd = etcd
		cp.mu.Unlock()
		if err := etcd.WaitHTTP(ctx, &http.Client{Timeout: 2 * time.Second}, cp.EtcdURL+"/health", 60*time.Second); err != nil {
			return err
		}
	}
	apiserver, err := cp.apiserver.Restart(0)
	if err != nil {
		return err
	}
	cp.mu.Lock()
	cp.apiserver = apiserver
	cp.mu.Unlock()
	client, err := cp.clientWithCert(cp.RESTConfig.CertData, cp.RESTConfig.KeyData)
	if err != nil {
		return err
	}
	defer client.CloseIdleConnections()
	return apiserver.WaitHTTP(ctx, client, cp.APIServerURL+"/readyz", 120*time.Second)
}

// clientWithCert is an HTTP client that trusts the control plane's CA and
// authenticates with a client certificate: it polls the apiserver's
// /readyz, at start and after Restart.
func (cp *ControlPlane) clientWithCert(certPEM, keyPEM []byte) (*http.Client, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cp.CA.Cert)
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12,
		}},
	}, nil
}

// Err describes why the control plane is down, with the end of the log of
// the process that exited, or is nil while both run.
func (cp *ControlPlane) Err() error {
	for _, p := range cp.processes() {
		if p != nil && p.Exited() {
			return p.ExitError()
		}
	}
	return nil
}

// processes are the running processes, clients of the apiserver first.
func (cp *ControlPlane) processes() []*process {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return []*process{cp.controllerManager, cp.apiserver, cp.etcd}
}

// Stop terminates kube-apiserver and etcd (their whole process groups) and
// removes the work dir Start created, unless IMAGESPEC_KEEP_WORKDIR=1. It is
// safe to call more than once.
func (cp *ControlPlane) Stop() error {
	cp.stopOnce.Do(func() {
		var errs []error
		// Clients of the apiserver first, then the apiserver: without etcd
		// it would only log connection errors.
		for _, p := range cp.processes() {
			if p != nil {
				if err := p.Stop(5 * time.Second); err != nil {
					errs = append(errs, err)
				}
			}
		}
		if cp.ownsWorkDir && cp.WorkDir != "" {
			if os.Getenv(KeepWorkDirEnv) == "1" {
				_ = os.WriteFile(filepath.Join(cp.WorkDir, "keep"), nil, 0o600)
				cp.logf("keeping control plane work dir %s", cp.WorkDir)
			} else if err := os.RemoveAll(cp.WorkDir); err != nil {
				errs = append(errs, err)
			}
		}
		cp.stopErr = errors.Join(errs...)
	})
	return cp.stopErr
}

// PIDs returns the process ids of the processes Start launched.
func (cp *ControlPlane) PIDs() []int {
	var pids []int
	for _, p := range cp.processes() {
		if p != nil {
			pids = append(pids, p.PID())
		}
	}
	return pids
}

// Kubectl runs the pinned kubectl against this control plane and returns its
// stdout; on failure the error carries stderr.
func (cp *ControlPlane) Kubectl(ctx context.Context, args ...string) ([]byte, error) {
	// A cache dir per control plane: a reused port must not serve another
	// control plane's cached discovery.
	full := append([]string{"--kubeconfig", cp.KubeconfigPath, "--cache-dir", filepath.Join(cp.WorkDir, "kubectl-cache")}, args...)
	cmd := exec.CommandContext(ctx, filepath.Join(cp.BinDir, "kubectl"), full...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + cp.WorkDir}
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			stderr = strings.TrimSpace(string(ee.Stderr))
		}
		return out, fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, stderr)
	}
	return out, nil
}

// CreateNamespace creates a namespace with what kube-controller-manager would
// add to it: serviceaccount/default and the kube-root-ca.crt ConfigMap.
// Existing objects are left as they are.
func (cp *ControlPlane) CreateNamespace(ctx context.Context, name string) error {
	cs, err := kubernetes.NewForConfig(cp.RESTConfig)
	if err != nil {
		return err
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: name}}
	if _, err := cs.CoreV1().ServiceAccounts(name).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create serviceaccount %s/default: %w", name, err)
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-root-ca.crt", Namespace: name},
		Data:       map[string]string{"ca.crt": string(cp.CA.CertPEM)},
	}
	if _, err := cs.CoreV1().ConfigMaps(name).Create(ctx, cm, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create configmap %s/kube-root-ca.crt: %w", name, err)
	}
	return nil
}

// WriteKubeconfig writes a kubeconfig for this control plane that
// authenticates with a new client certificate for user and groups (for
// example system:node:localhost in system:nodes for a kubelet).
func (cp *ControlPlane) WriteKubeconfig(path, user string, groups []string) error {
	certPEM, keyPEM, err := cp.CA.Issue(user, groups, nil, false)
	if err != nil {
		return err
	}
	return writeKubeconfig(path, cp.APIServerURL, cp.CA.CertPEM, certPEM, keyPEM)
}

// endpointReconciler: a loopback address is not a valid Endpoints address,
// so the kubernetes Service gets endpoints only for another address.
func endpointReconciler(address string) string {
	if net.ParseIP(address).IsLoopback() {
		return "none"
	}
	return "lease"
}

func writeKubeconfig(path, server string, caPEM, certPEM, keyPEM []byte) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["imagespec"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: caPEM}
	cfg.AuthInfos["user"] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	cfg.Contexts["imagespec"] = &clientcmdapi.Context{Cluster: "imagespec", AuthInfo: "user"}
	cfg.CurrentContext = "imagespec"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return err
	}
	return os.Chmod(path, 0o600)
}

// ports handed out by this process, so two control planes in one test
// binary never race for the same one.
var (
	portsMu   sync.Mutex
	portsUsed = map[int]bool{}
)

func freePort() (int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !portsUsed[port] {
			portsUsed[port] = true
			return port, nil
		}
	}
	return 0, errors.New("no free port")
}

// Another program may take a port between freePort and the child's bind;
// then the child is started again on new ports.
const bindAttempts = 5

func isBindFailure(p *process) bool {
	return logContains(p.LogPath, "address already in use")
}

func (cp *ControlPlane) startEtcd(ctx context.Context) error {
	bin := filepath.Join(cp.BinDir, "etcd")
	for attempt := 1; ; attempt++ {
		clientPort, err := freePort()
		if err != nil {
			return err
		}
		peerPort, err := freePort()
		if err != nil {
			return err
		}
		clientURL := fmt.Sprintf("http://127.0.0.1:%d", clientPort)
		peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
		logPath := filepath.Join(cp.WorkDir, "etcd.log")
		_ = os.Remove(logPath)
		p, err := startProcess("etcd", logPath, bin,
			"--name=default",
			"--data-dir="+filepath.Join(cp.WorkDir, "etcd"),
			"--listen-client-urls="+clientURL,
			"--advertise-client-urls="+clientURL,
			"--listen-peer-urls="+peerURL,
			"--initial-advertise-peer-urls="+peerURL,
			"--initial-cluster=default="+peerURL,
			// The data is thrown away with the work dir; fsync only costs time.
			"--unsafe-no-fsync=true",
			"--log-level=warn",
		)
		if err != nil {
			return err
		}
		cp.etcd = p
		err = p.WaitHTTP(ctx, &http.Client{Timeout: 2 * time.Second}, clientURL+"/health", 60*time.Second)
		if err == nil {
			cp.EtcdURL = clientURL
			return nil
		}
		if p.Exited() && isBindFailure(p) && attempt < bindAttempts {
			cp.logf("etcd could not bind (attempt %d), retrying on other ports", attempt)
			continue
		}
		return err
	}
}

func (cp *ControlPlane) startAPIServer(ctx context.Context, extra []string) error {
	bin := filepath.Join(cp.BinDir, "kube-apiserver")
	adminCert, adminKey, err := cp.CA.Issue(AdminUser, []string{"system:masters"}, nil, false)
	if err != nil {
		return err
	}
	httpClient, err := cp.clientWithCert(adminCert, adminKey)
	if err != nil {
		return err
	}
	defer httpClient.CloseIdleConnections()

	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return err
		}
		url := "https://" + net.JoinHostPort(cp.address, strconv.Itoa(port))
		logPath := filepath.Join(cp.WorkDir, "kube-apiserver.log")
		_ = os.Remove(logPath)
		args := []string{
			"--advertise-address=" + cp.address,
			"--bind-address=" + cp.address,
			"--secure-port=" + strconv.Itoa(port),
			"--etcd-servers=" + cp.EtcdURL,
			"--cert-dir=" + filepath.Join(cp.WorkDir, "apiserver-certs"),
			"--tls-cert-file=" + cp.PKI.ServingCert,
			"--tls-private-key-file=" + cp.PKI.ServingKey,
			"--client-ca-file=" + cp.PKI.CACert,
			"--kubelet-client-certificate=" + cp.PKI.KubeletClientCert,
			"--kubelet-client-key=" + cp.PKI.KubeletClientKey,
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file=" + cp.PKI.ServiceAccountPub,
			"--service-account-signing-key-file=" + cp.PKI.ServiceAccountKey,
			"--service-cluster-ip-range=" + ServiceCIDR,
			"--authorization-mode=Node,RBAC",
			"--endpoint-reconciler-type=" + endpointReconciler(cp.address),
			// Image builds run in privileged pods.
			"--allow-privileged=true",
			"--profiling=false",
		}
		args = append(args, extra...)
		p, err := startProcess("kube-apiserver", logPath, bin, args...)
		if err != nil {
			return err
		}
		cp.apiserver = p
		err = p.WaitHTTP(ctx, httpClient, url+"/readyz", 120*time.Second)
		if err != nil {
			if p.Exited() && isBindFailure(p) && attempt < bindAttempts {
				cp.logf("kube-apiserver could not bind (attempt %d), retrying on another port", attempt)
				continue
			}
			return err
		}
		cp.APIServerURL = url
		break
	}

	cp.KubeconfigPath = filepath.Join(cp.WorkDir, "kubeconfig")
	if err := writeKubeconfig(cp.KubeconfigPath, cp.APIServerURL, cp.CA.CertPEM, adminCert, adminKey); err != nil {
		return err
	}
	cp.RESTConfig = &rest.Config{
		Host: cp.APIServerURL,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   cp.CA.CertPEM,
			CertData: adminCert,
			KeyData:  adminKey,
		},
		QPS:       100,
		Burst:     200,
		UserAgent: "imagespec-controlplane",
	}
	return nil
}

// RemoveStaleWorkDirs deletes work dirs left by processes that died before
// their Stop ran (a test binary killed by -timeout, for instance). Their
// children died with them through Pdeathsig; only the files stay.
func RemoveStaleWorkDirs(logf func(string, ...any)) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), workDirPrefix+"*"))
	for _, dir := range dirs {
		if _, err := os.Stat(filepath.Join(dir, "keep")); err == nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, "owner.pid"))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			logf("removing stale control plane work dir %s", dir)
			_ = os.RemoveAll(dir)
		}
	}
}
