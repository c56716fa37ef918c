// Package node runs a real Kubernetes node on this machine for pod tests:
// the pinned containerd 2.x (CRI plugin) and runc that
// hack/install-container-runtime.sh builds, which run user-namespaced pods
// (hostUsers: false), and the pinned kubelet, registered
// as node "localhost" with a control plane from test/framework/controlplane,
// pulling from a local registry from test/framework/registry.
//
// Pod network: a bridge CNI network (Debian's containernetworking-plugins)
// on a private /24 whose host side is the pods' gateway, with IPv4
// forwarding and a masquerade rule for traffic leaving it, and the pinned
// kube-proxy (iptables mode) serving the Service range. Pods reach the
// test servers on test/framework/hostaddr's address, Services (the
// kubernetes Service too, when the apiserver listens there) and, through
// the host, what the host reaches. Services on the host's 127.0.0.1 are
// reachable only from hostNetwork pods. Image pulls are done by
// containerd on the host. See network.go.
//
// Schedule pods by setting spec.nodeName to Node.Name, or start the node
// with Options.Scheduler to run the pinned kube-scheduler. Only one node runs per machine at a time (a host-wide lock):
// the kubelet changes global sysctls that Stop restores.
package node

import (
	"context"
	"crypto/x509"
	"embed"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"

	"github.com/imagespec/imagespec-controller/test/framework/controlplane"
	"github.com/imagespec/imagespec-controller/test/framework/images"
	"github.com/imagespec/imagespec-controller/test/framework/proc"
	"github.com/imagespec/imagespec-controller/test/framework/registry"
)

// Name is the node's name: the apiserver reaches a kubelet on 127.0.0.1
// through it for logs and exec.
const Name = "localhost"

// KeepWorkDirEnv, set to 1, keeps the work dir after Stop for its logs.
const KeepWorkDirEnv = "IMAGESPEC_KEEP_WORKDIR"

// SandboxRepo is where Start pushes the pause image in the registry.
const SandboxRepo = "imagespec/pause:node"

const cniBinDir = "/usr/lib/cni"

//go:embed containerd.toml.tmpl kubelet.yaml.tmpl cni.conflist.tmpl kube-proxy.yaml.tmpl
var templates embed.FS

// Options configure Start.
type Options struct {
	// ControlPlane the kubelet registers with; required. Its BinDir must
	// hold the kubelet (controlplane.EnsureBinaries builds it).
	ControlPlane *controlplane.ControlPlane
	// Registry holds the sandbox (pause) image; containerd trusts its CA.
	// Required.
	Registry *registry.Registry
	// NodeCredentials gives containerd the registry's credentials for every
	// pull. Off, a pod pulling from the registry needs an imagePullSecret.
	NodeCredentials bool
	// Scheduler runs the pinned kube-scheduler too, so pods without
	// spec.nodeName land on the node.
	Scheduler bool
	// WorkDir is the parent of the node's own directory; os.TempDir() if empty.
	WorkDir string
	// Logf receives progress messages; nil discards them.
	Logf func(format string, args ...any)
}

// Timings of one Start, each measured from the call.
type Timings struct {
	Prepared        time.Duration // lock taken, pause image pushed, configs written
	ContainerdReady time.Duration // containerd answers and has the sandbox image
	NodeReady       time.Duration // the Node object is Ready
	KubeProxyReady  time.Duration // kube-proxy wrote the Service rules
}

// Node is a running containerd and kubelet.
type Node struct {
	Name             string
	WorkDir          string // removed by Stop unless IMAGESPEC_KEEP_WORKDIR=1
	ContainerdSocket string
	SandboxImage     string
	PodSubnet        string
	Bridge           string
	// CgroupRoot holds every pod's cgroup, in each hierarchy.
	CgroupRoot  string
	KubeletPort int
	Timings     Timings

	// RuntimeBinDir holds containerd, its shim, ctr and runc.
	RuntimeBinDir string

	cp         *controlplane.ControlPlane
	client     kubernetes.Interface
	logf       func(string, ...any)
	state      *hostState
	lock       *os.File
	containerd *process
	kubelet    *process
	scheduler  *process
	kubeProxy  *process
	stopOnce   sync.Once
	stopErr    error
}

// Start runs containerd and the kubelet and returns when the Node is Ready.
// It waits for another node on this machine to stop first. On error what
// was started is stopped and the host restored.
func Start(ctx context.Context, opts Options) (_ *Node, err error) {
	begin := time.Now()
	if opts.ControlPlane == nil || opts.Registry == nil {
		return nil, errors.New("node: ControlPlane and Registry are required")
	}
	n := &Node{Name: Name, cp: opts.ControlPlane, logf: opts.Logf}
	if n.logf == nil {
		n.logf = func(string, ...any) {}
	}
	if n.client, err = kubernetes.NewForConfig(n.cp.RESTConfig); err != nil {
		return nil, err
	}
	kubelet := filepath.Join(n.cp.BinDir, "kubelet")
	if _, err := os.Stat(kubelet); err != nil {
		return nil, fmt.Errorf("kubelet binary: %w", err)
	}
	if err := EnsureTools(ctx); err != nil {
		return nil, err
	}
	if n.RuntimeBinDir, err = EnsureRuntime(ctx); err != nil {
		return nil, err
	}

	if n.lock, err = lockHost(ctx, n.logf); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			if stopErr := n.Stop(); stopErr != nil {
				n.logf("stop after failed start: %v", stopErr)
			}
		}
	}()
	cleanStaleStates(n.logf)

	if n.WorkDir, err = os.MkdirTemp(opts.WorkDir, "imagespec-node-"); err != nil {
		return nil, err
	}
	// Traversable by others, as /run and /var/lib are: runc sets up a
	// user-namespaced container's root file system (under run/) as the
	// pod's own root, an unprivileged host user.
	if err := os.Chmod(n.WorkDir, 0o711); err != nil {
		return nil, err
	}
	if err := traversableByOthers(filepath.Dir(n.WorkDir)); err != nil {
		return nil, err
	}
	id := strings.TrimPrefix(filepath.Base(n.WorkDir), "imagespec-node-")
	n.CgroupRoot = "/imagespec-node-" + id
	// Interface names are at most 15 bytes.
	n.Bridge = "isn" + id
	if len(n.Bridge) > 15 {
		n.Bridge = n.Bridge[:15]
	}
	n.state = &hostState{
		OwnerPID:     os.Getpid(),
		WorkDir:      n.WorkDir,
		CgroupRoot:   n.CgroupRoot,
		Bridge:       n.Bridge,
		Sysctls:      SysctlValues(),
		CreatedPaths: missingHostPaths(),
	}
	if err := n.state.save(); err != nil {
		return nil, err
	}
	n.logf("node work dir %s", n.WorkDir)

	reg := opts.Registry
	if n.SandboxImage, _, err = images.Push(ctx, images.Pause, reg, SandboxRepo); err != nil {
		return nil, fmt.Errorf("push sandbox image: %w", err)
	}
	if err := n.writeConfigs(reg, opts.NodeCredentials); err != nil {
		return nil, err
	}
	if err := createCgroupRoot(n.CgroupRoot); err != nil {
		return nil, err
	}
	if err := n.enableForwarding(); err != nil {
		return nil, err
	}
	n.Timings.Prepared = time.Since(begin)

	if err := n.startContainerd(ctx, reg); err != nil {
		return nil, err
	}
	n.Timings.ContainerdReady = time.Since(begin)
	n.logf("containerd ready after %v", n.Timings.ContainerdReady.Round(time.Millisecond))

	if err := n.prepareAPI(ctx); err != nil {
		return nil, err
	}
	if err := n.startKubelet(ctx, kubelet); err != nil {
		return nil, err
	}
	n.Timings.NodeReady = time.Since(begin)
	n.logf("node %s Ready after %v", n.Name, n.Timings.NodeReady.Round(time.Millisecond))
	if err := n.untaint(ctx); err != nil {
		return nil, err
	}
	if err := n.startKubeProxy(ctx); err != nil {
		return nil, err
	}
	n.Timings.KubeProxyReady = time.Since(begin)
	n.logf("kube-proxy ready after %v", n.Timings.KubeProxyReady.Round(time.Millisecond))
	if opts.Scheduler {
		if err := n.startScheduler(); err != nil {
			return nil, err
		}
	}
	return n, nil
}

func (n *Node) path(elem ...string) string {
	return filepath.Join(append([]string{n.WorkDir}, elem...)...)
}

func (n *Node) writeConfigs(reg *registry.Registry, nodeCreds bool) error {
	for _, d := range []string{"containerd", "run", "opt", "cni/conf", "cni/ipam", "kubelet", "pod-logs", "pki"} {
		if err := os.MkdirAll(n.path(d), 0o755); err != nil {
			return err
		}
	}
	n.ContainerdSocket = n.path("run", "containerd.sock")

	// containerd reads certs.d/<host>/hosts.toml for the registry.
	hostDir := n.path("certs.d", reg.Host)
	if err := os.MkdirAll(hostDir, 0o755); err != nil {
		return err
	}
	// The CA at the top too: after a [host] entry answers 404 the resolver
	// falls back to the server, which would otherwise report an x509 error
	// instead of "not found". containerd 1.6 required a [host] tree; 2.x reads it the same.
	hosts := fmt.Sprintf("server = %[1]q\nca = %[2]q\n\n[host.%[1]q]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = %[2]q\n",
		"https://"+reg.Host, reg.CACertPath)
	if err := os.WriteFile(filepath.Join(hostDir, "hosts.toml"), []byte(hosts), 0o644); err != nil {
		return err
	}

	runc := filepath.Join(n.RuntimeBinDir, "runc")
	cd := map[string]any{
		"Root": n.path("containerd"), "State": n.path("run", "containerd"),
		"Socket": n.ContainerdSocket, "Opt": n.path("opt"),
		"SandboxImage": n.SandboxImage, "Runc": runc,
		"CNIBinDir": cniBinDir, "CNIConfDir": n.path("cni", "conf"),
		"CertsD": n.path("certs.d"), "RegistryHost": reg.Host,
	}
	if nodeCreds {
		cd["RegistryUser"], cd["RegistryPassword"] = reg.Username, reg.Password
	}
	if err := renderTemplate("containerd.toml.tmpl", n.path("containerd.toml"), cd); err != nil {
		return err
	}

	// A /24 picked from the work dir's random suffix; only pods on this
	// node use it, through the bridge.
	third := 0
	for _, c := range n.WorkDir {
		third = (third*31 + int(c)) % 250
	}
	n.PodSubnet = fmt.Sprintf("10.231.%d.0/24", third+1)
	cni := map[string]any{"Name": "imagespec-node", "Bridge": n.Bridge, "IPAMDir": n.path("cni", "ipam"), "Subnet": n.PodSubnet}
	if err := renderTemplate("cni.conflist.tmpl", n.path("cni", "conf", "10-imagespec.conflist"), cni); err != nil {
		return err
	}

	// The kubelet's serving certificate, from the control plane's CA.
	certPEM, keyPEM, err := n.cp.CA.Issue("system:node:"+Name, []string{"system:nodes"}, []string{"127.0.0.1", "localhost"}, true)
	if err != nil {
		return err
	}
	if err := os.WriteFile(n.path("pki", "kubelet.crt"), certPEM, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(n.path("pki", "kubelet.key"), keyPEM, 0o600); err != nil {
		return err
	}
	if err := n.cp.WriteKubeconfig(n.path("kubelet.kubeconfig"), "system:node:"+Name, []string{"system:nodes"}); err != nil {
		return err
	}
	if n.KubeletPort, err = freePort(); err != nil {
		return err
	}
	healthz, err := freePort()
	if err != nil {
		return err
	}
	resolv := "/etc/resolv.conf"
	if _, err := os.Stat(resolv); err != nil {
		resolv = ""
	}
	kc := map[string]any{
		"ContainerdSocket": n.ContainerdSocket, "CgroupRoot": n.CgroupRoot,
		"PodLogsDir": n.path("pod-logs"), "Port": n.KubeletPort, "HealthzPort": healthz,
		"ServingCert": n.path("pki", "kubelet.crt"), "ServingKey": n.path("pki", "kubelet.key"),
		"ClientCAFile": n.cp.PKI.CACert, "ResolvConf": resolv,
	}
	return renderTemplate("kubelet.yaml.tmpl", n.path("kubelet.yaml"), kc)
}

func renderTemplate(name, out string, data any) error {
	t, err := template.ParseFS(templates, name)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(out, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if err := t.Execute(f, data); err != nil {
		f.Close()
		return fmt.Errorf("render %s: %w", name, err)
	}
	return f.Close()
}

func (n *Node) childEnv() []string {
	// Not the caller's environment: proxies, KUBECONFIG or a HOME with
	// docker credentials must not reach the node.
	// The pinned runtime first: containerd finds its shim on PATH.
	return []string{"PATH=" + n.RuntimeBinDir + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + n.WorkDir}
}

func (n *Node) startContainerd(ctx context.Context, reg *registry.Registry) error {
	p, err := startProcess("containerd", n.path("containerd.log"), n.childEnv(), filepath.Join(n.RuntimeBinDir, "containerd"), "--config", n.path("containerd.toml"))
	if err != nil {
		return err
	}
	n.containerd = p
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("unix", n.ContainerdSocket); err == nil {
			c.Close()
			break
		}
		if p.Exited() {
			return p.ExitError()
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("containerd socket %s not up: %v\n%s", n.ContainerdSocket, ctx.Err(), proc.LogTail(p.LogPath, 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// containerd pulls the sandbox image without the kubelet's credentials:
	// pull it beforehand so pods need none on the node.
	out, err := n.ctr(ctx, "images", "pull", "--hosts-dir", n.path("certs.d"),
		"--user", reg.Username+":"+reg.Password, n.SandboxImage)
	if err != nil {
		return fmt.Errorf("pull sandbox image: %w: %s", err, out)
	}
	return nil
}

// ctr runs the pinned ctr against this node's containerd in the CRI namespace.
func (n *Node) ctr(ctx context.Context, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(n.RuntimeBinDir, "ctr"), append([]string{"--address", n.ContainerdSocket, "--namespace", "k8s.io"}, args...)...)
	cmd.Env = n.childEnv()
	return cmd.CombinedOutput()
}

// prepareAPI lets the apiserver's kubelet client use the kubelet API (logs,
// exec) and removes a Node left by an earlier run, whose Ready condition
// would otherwise be taken for this kubelet's.
func (n *Node) prepareAPI(ctx context.Context) error {
	user, err := certCommonName(n.cp.PKI.KubeletClientCert)
	if err != nil {
		return err
	}
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "imagespec-node:kubelet-api-admin"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:kubelet-api-admin"},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: user}},
	}
	if _, err := n.client.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("bind %s to system:kubelet-api-admin: %w", user, err)
	}
	if err := n.client.CoreV1().Nodes().Delete(ctx, Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete old node object: %w", err)
	}
	return nil
}

func certCommonName(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return "", fmt.Errorf("%s: no PEM certificate", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "", err
	}
	return c.Subject.CommonName, nil
}

func (n *Node) startKubelet(ctx context.Context, bin string) error {
	p, err := startProcess("kubelet", n.path("kubelet.log"), n.childEnv(), bin,
		"--config="+n.path("kubelet.yaml"),
		"--kubeconfig="+n.path("kubelet.kubeconfig"),
		"--root-dir="+n.path("kubelet"),
		"--cert-dir="+n.path("pki"),
		// The apiserver reaches the kubelet by its Hostname address,
		// "localhost"; --node-ip cannot be a loopback address.
		"--hostname-override="+Name,
		"--v=2",
	)
	if err != nil {
		return err
	}
	n.kubelet = p
	return n.waitReady(ctx, p, time.Time{})
}

// RestartKubelet restarts the kubelet in place, as a node upgrade or a
// crash would; pods keep running under containerd. It returns once the new
// kubelet reported the node Ready.
func (n *Node) RestartKubelet(ctx context.Context) error {
	since := time.Now()
	p, err := n.kubelet.Restart(5 * time.Second)
	if err != nil {
		return err
	}
	n.kubelet = p
	return n.waitReady(ctx, p, since)
}

// waitReady waits until the node is Ready with a heartbeat after since.
func (n *Node) waitReady(ctx context.Context, p *process, since time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var last string
	for {
		node, err := n.client.CoreV1().Nodes().Get(ctx, Name, metav1.GetOptions{})
		if err == nil {
			last = "no Ready condition"
			for _, c := range node.Status.Conditions {
				if c.Type == corev1.NodeReady {
					// A heartbeat of the restarted kubelet, not the old one's
					// (they have one-second resolution, so one in since's
					// second is not taken).
					fresh := since.IsZero() || c.LastHeartbeatTime.Time.After(since)
					if c.Status == corev1.ConditionTrue && fresh {
						return nil
					}
					last = fmt.Sprintf("Ready=%s: %s", c.Status, c.Message)
				}
			}
		} else {
			last = err.Error()
		}
		select {
		case <-p.Done():
			return p.ExitError()
		case <-n.containerd.Done():
			return n.containerd.ExitError()
		case <-ctx.Done():
			return fmt.Errorf("node %s not Ready (%s): %w\n--- kubelet log ---\n%s", Name, last, ctx.Err(), proc.LogTail(p.LogPath, 40))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// untaint removes the not-ready taint the apiserver puts on every new Node;
// without kube-controller-manager's node lifecycle controller nobody else
// would, and the scheduler would place nothing.
func (n *Node) untaint(ctx context.Context) error {
	for range 5 {
		node, err := n.client.CoreV1().Nodes().Get(ctx, Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		var keep []corev1.Taint
		for _, t := range node.Spec.Taints {
			if t.Key != corev1.TaintNodeNotReady {
				keep = append(keep, t)
			}
		}
		if len(keep) == len(node.Spec.Taints) {
			return nil
		}
		node.Spec.Taints = keep
		_, err = n.client.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{})
		if err == nil || !apierrors.IsConflict(err) {
			return err
		}
	}
	return errors.New("untaint node: too many conflicts")
}

func (n *Node) startScheduler() error {
	kubeconfig := n.path("scheduler.kubeconfig")
	// The apiserver's RBAC binds system:kube-scheduler to this user.
	if err := n.cp.WriteKubeconfig(kubeconfig, "system:kube-scheduler", nil); err != nil {
		return err
	}
	p, err := startProcess("kube-scheduler", n.path("kube-scheduler.log"), n.childEnv(),
		filepath.Join(n.cp.BinDir, "kube-scheduler"),
		"--kubeconfig="+kubeconfig,
		"--leader-elect=false",
		"--secure-port=0",
	)
	if err != nil {
		return err
	}
	n.scheduler = p
	return nil
}

// Done is closed when containerd or the kubelet exits.
func (n *Node) Done() <-chan struct{} {
	done := make(chan struct{})
	go func() {
		select {
		case <-n.kubelet.Done():
		case <-n.containerd.Done():
		}
		close(done)
	}()
	return done
}

// PIDs of containerd, the kubelet, kube-proxy and kube-scheduler if it runs.
func (n *Node) PIDs() []int {
	var pids []int
	for _, p := range []*process{n.containerd, n.kubelet, n.kubeProxy, n.scheduler} {
		if p != nil {
			pids = append(pids, p.PID())
		}
	}
	return pids
}

// Stop deletes the pods bound to the node (so the kubelet tears down their
// containers, volumes and cgroups), stops the kubelet and containerd with
// its shims, and undoes the host changes: mounts, cgroups, the bridge,
// kube-proxy's and the masquerade iptables rules, sysctls, host paths, the
// work dir. Safe to call more than once.
func (n *Node) Stop() error {
	n.stopOnce.Do(func() {
		var errs []error
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		for _, p := range []*process{n.scheduler, n.kubeProxy} {
			if p != nil {
				if err := p.Stop(5 * time.Second); err != nil {
					errs = append(errs, err)
				}
			}
		}
		if n.kubelet != nil {
			if err := n.drain(ctx); err != nil {
				n.logf("drain: %v", err)
			}
			if err := n.kubelet.Stop(5 * time.Second); err != nil {
				errs = append(errs, err)
			}
			if err := n.client.CoreV1().Nodes().Delete(ctx, Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				n.logf("delete node object: %v", err)
			}
		}
		if n.containerd != nil {
			// Containers before containerd, so their shims can exit cleanly.
			killCgroupTree(n.CgroupRoot)
			if err := n.containerd.Stop(5 * time.Second); err != nil {
				errs = append(errs, err)
			}
		}
		if n.state != nil {
			keep := os.Getenv(KeepWorkDirEnv) == "1"
			if keep {
				n.logf("keeping node work dir %s", n.WorkDir)
			}
			if err := n.state.cleanup(keep); err != nil {
				errs = append(errs, err)
			}
		}
		if n.lock != nil {
			n.lock.Close()
		}
		n.stopErr = errors.Join(errs...)
	})
	return n.stopErr
}

// drain deletes the node's pods and waits until the kubelet has removed
// them and their volumes; force-deletes what is left after a while.
func (n *Node) drain(ctx context.Context) error {
	sel := fields.OneTermEqualSelector("spec.nodeName", Name).String()
	pods, err := n.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		return err
	}
	grace := int64(1)
	for _, p := range pods.Items {
		_ = n.client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &grace})
	}
	wait := time.Now().Add(45 * time.Second)
	for {
		pods, err = n.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: sel})
		if err != nil {
			return err
		}
		podDirs, _ := os.ReadDir(n.path("kubelet", "pods"))
		if len(pods.Items) == 0 && len(podDirs) == 0 {
			return nil
		}
		if time.Now().After(wait) || n.kubelet.Exited() {
			zero := int64(0)
			for _, p := range pods.Items {
				_ = n.client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
			}
			return fmt.Errorf("%d pods, %d pod dirs left after waiting for the kubelet", len(pods.Items), len(podDirs))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// lockHost takes the machine-wide node lock, waiting for another node
// (another test binary) to stop. The kernel drops it if we die.
func lockHost(ctx context.Context, logf func(string, ...any)) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "imagespec-node.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	logged := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, err
		}
		if !logged {
			logf("waiting for another node on this machine to stop")
			logged = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for the node lock: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// EnsureTools installs what the node runs besides the container runtime
// (iptables, the CNI plugins) through hack/install-test-deps.sh when
// something is missing.
func EnsureTools(ctx context.Context) error {
	if err := registry.EnsureTools(ctx, "ip", "iptables", "iptables-restore"); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(cniBinDir, "bridge")); err == nil {
		return nil
	}
	root, err := registry.RepoRoot()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "install-test-deps.sh"))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("installing CNI plugins: %w", err)
	}
	if _, err := os.Stat(filepath.Join(cniBinDir, "bridge")); err != nil {
		return fmt.Errorf("CNI bridge plugin still missing after hack/install-test-deps.sh: %w", err)
	}
	return nil
}

// traversableByOthers fails unless every directory from dir up to / lets
// other users through (o+x), as a user-namespaced container's root needs.
func traversableByOthers(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("node: %s (mode %v) must be traversable by other users (o+x): user-namespaced pods' root file systems are set up as an unprivileged host user below it", d, fi.Mode().Perm())
		}
		if d == "/" || d == "." {
			return nil
		}
	}
}

var (
	runtimeOnce sync.Once
	runtimeDir  string
	runtimeErr  error
)

// EnsureRuntime returns the directory of the pinned containerd, its runc
// shim, ctr and runc, building them with hack/install-container-runtime.sh
// when the cache lacks them (a few minutes cold, milliseconds warm).
func EnsureRuntime(ctx context.Context) (string, error) {
	runtimeOnce.Do(func() {
		root, err := registry.RepoRoot()
		if err != nil {
			runtimeErr = err
			return
		}
		runtimeDir, runtimeErr = controlplane.RunHackScript(ctx, root, "install-container-runtime.sh")
		if runtimeErr == nil && !filepath.IsAbs(runtimeDir) {
			runtimeErr = fmt.Errorf("install-container-runtime.sh printed no directory")
		}
	})
	return runtimeDir, runtimeErr
}

// CleanupStale undoes what nodes of programs that died without Stop left
// on this machine (shims, containers, mounts, cgroups, the bridge, sysctls,
// work dirs). Start does it too; a development tool may call it directly.
func CleanupStale(ctx context.Context, logf func(string, ...any)) error {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	lock, err := lockHost(ctx, logf)
	if err != nil {
		return err
	}
	defer lock.Close()
	cleanStaleStates(logf)
	return nil
}
