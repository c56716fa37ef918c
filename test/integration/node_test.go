package integration

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	osexec "os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/imagespec/imagespec-controller/test/framework/hostaddr"
	"github.com/imagespec/imagespec-controller/test/framework/images"
	"github.com/imagespec/imagespec-controller/test/framework/node"
	"github.com/imagespec/imagespec-controller/test/framework/registry"
)

// nodeEnv is a registry with busybox and a node pulling from it. The
// apiserver of the shared control plane already presents a kubelet client
// certificate, so logs and exec work without another control plane.
type nodeEnv struct {
	reg     *registry.Registry
	node    *node.Node
	kube    kubernetes.Interface
	busybox string
}

func startNodeEnv(t testing.TB, nodeCredentials bool) *nodeEnv {
	return startNodeEnvWith(t, node.Options{NodeCredentials: nodeCredentials})
}

func startNodeEnvWith(t testing.TB, opts node.Options) *nodeEnv {
	t.Helper()
	cp := SharedControlPlane(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	reg, err := registry.Start(ctx, registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Stop() })
	busybox, _, err := images.Push(ctx, images.Busybox, reg, "imagespec/busybox")
	if err != nil {
		t.Fatal(err)
	}
	opts.ControlPlane, opts.Registry, opts.Logf = cp, reg, t.Logf
	n, err := node.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Stop(); err != nil {
			t.Errorf("node Stop: %v", err)
		}
	})
	kube, err := kubernetes.NewForConfig(cp.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	return &nodeEnv{reg: reg, node: n, kube: kube, busybox: busybox}
}

// pullSecret stores the registry's credentials as a dockerconfigjson Secret.
func (e *nodeEnv) pullSecret(t testing.TB, ns string) string {
	t.Helper()
	auth, err := os.ReadFile(e.reg.AuthFile)
	if err != nil {
		t.Fatal(err)
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "registry-pull", Namespace: ns},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: auth},
	}
	if _, err := e.kube.CoreV1().Secrets(ns).Create(context.Background(), s, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	return s.Name
}

func nodePod(ns, name, image string, command ...string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{
			NodeName:                      node.Name,
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: new(int64),
			Containers:                    []corev1.Container{{Name: "main", Image: image, Command: command}},
		},
	}
}

func (e *nodeEnv) create(t testing.TB, pod *corev1.Pod) {
	t.Helper()
	if _, err := e.kube.CoreV1().Pods(pod.Namespace).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// waitPod polls the pod until cond holds; on timeout it reports the last
// status seen.
func (e *nodeEnv) waitPod(t testing.TB, ns, name string, limit time.Duration, cond func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		p, err := e.kube.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err == nil && cond(p) {
			return p
		}
		if time.Now().After(deadline) {
			if p != nil {
				t.Fatalf("pod %s/%s: condition not met in %v; phase %s, container statuses %+v", ns, name, limit, p.Status.Phase, p.Status.ContainerStatuses)
			}
			t.Fatalf("pod %s/%s: %v", ns, name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func podDone(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

func waitingReason(p *corev1.Pod) (reason, message string) {
	for _, cs := range p.Status.ContainerStatuses {
		if cs.State.Waiting != nil {
			return cs.State.Waiting.Reason, cs.State.Waiting.Message
		}
	}
	return "", ""
}

func pullFailed(p *corev1.Pod) bool {
	r, _ := waitingReason(p)
	return r == "ErrImagePull" || r == "ImagePullBackOff"
}

func (e *nodeEnv) logs(t testing.TB, ns, name string) string {
	t.Helper()
	b, err := e.kube.CoreV1().Pods(ns).GetLogs(name, &corev1.PodLogOptions{}).DoRaw(context.Background())
	if err != nil {
		t.Fatalf("GetLogs %s/%s: %v", ns, name, err)
	}
	return string(b)
}

func TestNode(t *testing.T) {
	e := startNodeEnvWith(t, node.Options{Scheduler: true})
	cp := SharedControlPlane(t)
	t.Logf("node Ready %v after Start (containerd %v)", e.node.Timings.NodeReady, e.node.Timings.ContainerdReady)

	t.Run("PodFromRegistryWithPullSecret", func(t *testing.T) {
		ns := NewTestNamespace(t)
		pod := nodePod(ns, "hello", e.busybox, "sh", "-c", "echo hello from the node")
		pod.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: e.pullSecret(t, ns)}}
		e.create(t, pod)
		p := e.waitPod(t, ns, "hello", 2*time.Minute, podDone)
		if p.Status.Phase != corev1.PodSucceeded {
			t.Fatalf("phase %s: %+v", p.Status.Phase, p.Status.ContainerStatuses)
		}
		if got := e.logs(t, ns, "hello"); got != "hello from the node\n" {
			t.Errorf("client-go logs = %q", got)
		}
		out, err := cp.Kubectl(testContext(t, time.Minute), "logs", "-n", ns, "hello")
		if err != nil {
			t.Fatal(err)
		}
		if string(out) != "hello from the node\n" {
			t.Errorf("kubectl logs = %q", out)
		}
	})

	t.Run("SchedulerPlacesPod", func(t *testing.T) {
		ns := NewTestNamespace(t)
		pod := nodePod(ns, "scheduled", e.busybox, "true")
		pod.Spec.NodeName = ""
		pod.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: e.pullSecret(t, ns)}}
		e.create(t, pod)
		p := e.waitPod(t, ns, "scheduled", time.Minute, podDone)
		if p.Status.Phase != corev1.PodSucceeded || p.Spec.NodeName != node.Name {
			t.Fatalf("phase %s on node %q", p.Status.Phase, p.Spec.NodeName)
		}
	})

	t.Run("PullWithoutSecretIsRefused", func(t *testing.T) {
		ns := NewTestNamespace(t)
		e.create(t, nodePod(ns, "nosecret", e.busybox, "true"))
		p := e.waitPod(t, ns, "nosecret", time.Minute, pullFailed)
		// containerd 2 says "pull access denied ... authorization failed".
		if _, msg := waitingReason(p); !strings.Contains(msg, "401") && !strings.Contains(strings.ToLower(msg), "unauthorized") && !strings.Contains(msg, "pull access denied") {
			t.Errorf("pull without credentials failed for another reason: %s", msg)
		}
	})

	t.Run("MissingImageFailsPull", func(t *testing.T) {
		ns := NewTestNamespace(t)
		pod := nodePod(ns, "missing", e.reg.Ref("imagespec/no-such-image", "v0"), "true")
		pod.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: e.pullSecret(t, ns)}}
		e.create(t, pod)
		p := e.waitPod(t, ns, "missing", time.Minute, pullFailed)
		reason, msg := waitingReason(p)
		t.Logf("waiting reason %s: %s", reason, msg)
		if !strings.Contains(msg, "not found") {
			t.Errorf("message does not say the image is not found: %s", msg)
		}
	})

	// The pinned containerd and runc run pods in user namespaces of their
	// own, and the node says so where the controller looks.
	t.Run("UserNamespacedPod", func(t *testing.T) {
		n, err := e.kube.CoreV1().Nodes().Get(context.Background(), node.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		supported := false
		for _, h := range n.Status.RuntimeHandlers {
			t.Logf("runtime handler %q: %+v", h.Name, h.Features)
			if h.Name == "" && h.Features != nil && h.Features.UserNamespaces != nil && *h.Features.UserNamespaces {
				supported = true
			}
		}
		if !supported {
			t.Errorf("node status does not report user namespace support for the default runtime handler: %+v", n.Status.RuntimeHandlers)
		}
		ns := NewTestNamespace(t)
		pod := nodePod(ns, "userns", e.busybox, "sh", "-c", "cat /proc/self/uid_map; id -u; touch /data/file; stat -c %u /data/file")
		pod.Spec.HostUsers = ptr.To(false)
		pod.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
		pod.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: e.pullSecret(t, ns)}}
		e.create(t, pod)
		p := e.waitPod(t, ns, "userns", 2*time.Minute, podDone)
		out := e.logs(t, ns, "userns")
		if p.Status.Phase != corev1.PodSucceeded {
			t.Fatalf("phase %s: %+v\n%s", p.Status.Phase, p.Status.ContainerStatuses, out)
		}
		// uid_map "0 <host ID> 65536": root inside, someone else outside;
		// the file root makes in the emptyDir is root's inside the pod.
		t.Logf("uid_map, id -u, file owner: %q", out)
		f := strings.Fields(out)
		if len(f) != 5 || f[0] != "0" || f[1] == "0" || f[2] != "65536" || f[3] != "0" || f[4] != "0" {
			t.Errorf("in a user-namespaced pod: %q, want uid_map 0 <non-zero> 65536, uid 0, file owner 0", out)
		}
	})

	t.Run("Exec", func(t *testing.T) {
		ns := NewTestNamespace(t)
		pod := nodePod(ns, "sleeper", e.busybox, "sleep", "3600")
		pod.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: e.pullSecret(t, ns)}}
		e.create(t, pod)
		p := e.waitPod(t, ns, "sleeper", time.Minute, func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning || podDone(p) })
		if p.Status.Phase != corev1.PodRunning {
			t.Fatalf("phase %s", p.Status.Phase)
		}
		if p.Status.PodIP == "" {
			t.Error("pod has no IP on the bridge network")
		}
		out, err := cp.Kubectl(testContext(t, time.Minute), "exec", "-n", ns, "sleeper", "--", "sh", "-c", "echo exec works; ip addr show eth0 2>/dev/null | grep -c inet")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(out), "exec works\n") {
			t.Errorf("kubectl exec = %q", out)
		}
	})

	// A pod on the pod network (no hostNetwork) reaches a server on the
	// framework's host address directly and through a Service that
	// kube-proxy serves, and the Debian mirror the host uses, masqueraded.
	t.Run("PodNetwork", func(t *testing.T) {
		ctx := testContext(t, 3*time.Minute)
		lease, err := hostaddr.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = lease.Release() })
		l, err := net.Listen("tcp", net.JoinHostPort(lease.IP(), "0"))
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "host server saw %s\n", strings.Split(r.RemoteAddr, ":")[0])
		})}
		go srv.Serve(l)
		t.Cleanup(func() { srv.Close() })
		port := l.Addr().(*net.TCPAddr).Port

		ns := NewTestNamespace(t)
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "host-server", Namespace: ns},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(int32(port))}}},
		}
		svc, err = e.kube.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ready, port32 := true, int32(port)
		slice := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: "host-server", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: svc.Name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{lease.IP()}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
			Ports:       []discoveryv1.EndpointPort{{Port: &port32}},
		}
		if _, err := e.kube.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		mirror, err := url.Parse(images.Mirror())
		if err != nil {
			t.Fatal(err)
		}
		// Debian's image, for bash's /dev/tcp: busybox's static wget
		// crashes resolving names.
		debian, _, err := images.Push(ctx, images.Debian, e.reg, "imagespec/debian")
		if err != nil {
			t.Fatal(err)
		}
		// kube-proxy writes the Service's rules within its sync period; retry.
		script := fmt.Sprintf(`set -e
get() { exec 3<>/dev/tcp/$1/$2; printf 'GET %%s HTTP/1.1\r\nHost: %%s\r\nConnection: close\r\n\r\n' "$3" "$1" >&3; cat <&3; exec 3<&-; }
get %s %d /
for i in $(seq 1 60); do get %s 80 / 2>/dev/null && break; sleep 1; done
get %s %s %s | grep -m1 '^Origin: Debian'`, lease.IP(), port, svc.Spec.ClusterIP, mirror.Hostname(), cmp.Or(mirror.Port(), "80"), strings.TrimSuffix(mirror.Path, "/")+"/dists/bookworm/Release")
		pod := nodePod(ns, "pod-network", debian, "bash", "-c", script)
		pod.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: e.pullSecret(t, ns)}}
		e.create(t, pod)
		p := e.waitPod(t, ns, pod.Name, 2*time.Minute, podDone)
		logs := e.logs(t, ns, pod.Name)
		if p.Status.Phase != corev1.PodSucceeded {
			t.Fatalf("phase %s, log:\n%s", p.Status.Phase, logs)
		}
		// The server sees the pod's own address both ways: no hostNetwork,
		// no masquerade for traffic that stays on the machine.
		want := "host server saw " + p.Status.PodIP + "\n"
		if p.Status.PodIP == "" || p.Spec.HostNetwork || strings.Count(logs, want) != 2 || !strings.Contains(logs, "Origin: Debian") {
			t.Errorf("pod %s (hostNetwork %v) logged:\n%s\nwant %q twice and the mirror's Release file", p.Status.PodIP, p.Spec.HostNetwork, logs, want)
		}
	})

	t.Run("BuilderWithLeastPrivilege", func(t *testing.T) {
		ctx := testContext(t, 10*time.Minute)
		builder, _, err := images.Push(ctx, images.Builder, e.reg, "imagespec/builder")
		if err != nil {
			t.Fatal(err)
		}
		ns := NewTestNamespace(t)
		pod := nodePod(ns, "buildah-version", builder, "buildah", "--version")
		pod.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: e.pullSecret(t, ns)}}
		pod.Spec.Containers[0].SecurityContext = leastPrivilege()
		e.create(t, pod)
		p := e.waitPod(t, ns, pod.Name, 5*time.Minute, podDone)
		logs := e.logs(t, ns, pod.Name)
		if p.Status.Phase != corev1.PodSucceeded || !strings.HasPrefix(logs, "buildah version ") {
			t.Fatalf("phase %s, logs %q", p.Status.Phase, logs)
		}

		t.Run("BudAndPush", func(t *testing.T) { buildInPod(t, e, ns, builder) })
	})
}

// leastPrivilege is what the pod backend gives a build container: enough
// for buildah's user namespace (uid/gid maps) and nothing more.
func leastPrivilege() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		RunAsUser:                new(int64),
		AllowPrivilegeEscalation: new(bool),
		Capabilities: &corev1.Capabilities{
			Drop: []corev1.Capability{"ALL"},
			Add:  []corev1.Capability{"SETUID", "SETGID", "SETFCAP"},
		},
	}
}

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// buildInPod builds FROM the registry's busybox in a pod and pushes the
// result, reading the digest from the termination message.
func buildInPod(t *testing.T, e *nodeEnv, ns, builder string) {
	ca, err := os.ReadFile(e.reg.CACertPath)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := os.ReadFile(e.reg.AuthFile)
	if err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "build-files", Namespace: ns},
		Data: map[string][]byte{
			"ca.crt":     ca,
			"auth.json":  auth,
			"Dockerfile": fmt.Appendf(nil, "FROM %s\nRUN echo built in a pod > /built\n", e.busybox),
		},
	}
	if _, err := e.kube.CoreV1().Secrets(ns).Create(context.Background(), secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	target := e.reg.Ref("imagespec/built-on-node", "v1")
	script := strings.Join([]string{
		"set -e",
		"mkdir -p /tmp/certs /tmp/ctx && cp /in/ca.crt /tmp/certs/ && cp /in/Dockerfile /tmp/ctx/",
		"buildah bud --isolation chroot --authfile /in/auth.json --cert-dir /tmp/certs -t " + target + " /tmp/ctx",
		"buildah push --authfile /in/auth.json --cert-dir /tmp/certs --digestfile /dev/termination-log " + target,
	}, "\n")
	pod := nodePod(ns, "build", builder, "sh", "-c", script)
	pod.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: e.pullSecret(t, ns)}}
	// The registry listens on the host's 127.0.0.1 only.
	pod.Spec.HostNetwork = true
	c := &pod.Spec.Containers[0]
	c.SecurityContext = leastPrivilege()
	c.TerminationMessagePolicy = corev1.TerminationMessageFallbackToLogsOnError
	c.VolumeMounts = []corev1.VolumeMount{{Name: "in", MountPath: "/in"}, {Name: "storage", MountPath: "/var/lib/containers"}}
	pod.Spec.Volumes = []corev1.Volume{
		{Name: "in", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: secret.Name}}},
		{Name: "storage", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}
	e.create(t, pod)
	p := e.waitPod(t, ns, "build", 5*time.Minute, podDone)
	logs := e.logs(t, ns, "build")
	if p.Status.Phase != corev1.PodSucceeded {
		t.Fatalf("build pod %s; logs:\n%s", p.Status.Phase, logs)
	}
	term := p.Status.ContainerStatuses[0].State.Terminated
	if term == nil || !digestRE.MatchString(term.Message) {
		t.Fatalf("termination message is not a digest: %+v", term)
	}
	// The registry serves the manifest under that digest.
	req, _ := http.NewRequest(http.MethodHead, "https://"+e.reg.Host+"/v2/imagespec/built-on-node/manifests/"+term.Message, nil)
	req.SetBasicAuth(e.reg.Username, e.reg.Password)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	resp, err := e.reg.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("registry answers %s for the pushed digest %s", resp.Status, term.Message)
	}
	t.Logf("built and pushed %s@%s in a pod", target, term.Message)
}

// hostSnapshot is the host state a node may change.
type hostSnapshot struct {
	sysctls   map[string]string
	mounts    []string // in node work dirs
	links     []string
	iptables  string
	cgroups   []string
	processes []int
	paths     map[string]bool
}

func snapshotHost(t *testing.T) hostSnapshot {
	t.Helper()
	s := hostSnapshot{sysctls: node.SysctlValues(), paths: map[string]bool{}}
	var err error
	all, err := node.MountsUnder("/")
	if err != nil {
		t.Fatal(err)
	}
	// Other test binaries mount under the temp dir too (buildah, runc).
	for _, m := range all {
		if strings.Contains(m, "/imagespec-node-") {
			s.mounts = append(s.mounts, m)
		}
	}
	entries, _ := os.ReadDir("/sys/class/net")
	for _, e := range entries {
		s.links = append(s.links, e.Name())
	}
	s.iptables = iptablesRules(t)
	s.cgroups, _ = filepath.Glob("/sys/fs/cgroup/*/imagespec-node-*")
	s.processes = node.ProcessesMentioning("imagespec-node-")
	for _, p := range []string{"/var/lib/kubelet", "/var/log/containers", "/var/log/pods", "/run/containerd", "/var/run/netns", "/var/lib/cni"} {
		_, err := os.Lstat(p)
		s.paths[p] = err == nil
	}
	return s
}

// iptablesRules lists chains and rules without packet counters.
func iptablesRules(t *testing.T) string {
	out, err := osexec.Command("iptables-save").CombinedOutput()
	if err != nil {
		t.Logf("iptables-save: %v: %s (rules not compared)", err, out)
		return ""
	}
	var rules []string
	for _, l := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(l, "-A"), strings.HasPrefix(l, "*"):
			rules = append(rules, l)
		case strings.HasPrefix(l, ":"):
			rules = append(rules, strings.Fields(l)[0])
		}
	}
	return strings.Join(rules, "\n")
}

// The kubelet and the CNI plugin change the host (sysctls, mounts, cgroups,
// a bridge); after Stop it is as before, with pods still running at Stop.
func TestNodeStopRestoresHost(t *testing.T) {
	before := snapshotHost(t)
	e := startNodeEnv(t, true)
	ns := NewTestNamespace(t)

	// Node-wide credentials: no imagePullSecret needed.
	e.create(t, nodePod(ns, "nodecreds", e.busybox, "sh", "-c", "echo pulled with node credentials"))
	p := e.waitPod(t, ns, "nodecreds", 2*time.Minute, podDone)
	if p.Status.Phase != corev1.PodSucceeded {
		t.Fatalf("phase %s: %+v", p.Status.Phase, p.Status.ContainerStatuses)
	}
	// A running pod with a memory-backed emptyDir (a tmpfs mount) at Stop.
	running := nodePod(ns, "running", e.busybox, "sleep", "3600")
	running.Spec.Volumes = []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}}}
	running.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "scratch", MountPath: "/scratch"}}
	e.create(t, running)
	e.waitPod(t, ns, "running", time.Minute, func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })

	during := snapshotHost(t)
	if added := len(during.mounts) - len(before.mounts); added <= 0 {
		t.Errorf("no new mounts while the node runs: the comparison below would prove nothing")
	}
	if slices.Equal(during.links, before.links) {
		t.Errorf("no bridge while the node runs: the comparison below would prove nothing")
	}
	if during.sysctls["vm/overcommit_memory"] == before.sysctls["vm/overcommit_memory"] && before.sysctls["vm/overcommit_memory"] != "1" {
		t.Errorf("the kubelet did not set vm.overcommit_memory")
	}
	pids := e.node.PIDs()
	workDir := e.node.WorkDir

	if err := e.node.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := e.node.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	after := snapshotHost(t)

	compareHost(t, before, after)
	for _, pid := range pids {
		if processAlive(pid) {
			t.Errorf("pid %d (containerd or kubelet) alive after Stop", pid)
		}
	}
	for p, existed := range before.paths {
		if after.paths[p] != existed {
			t.Errorf("%s: existed before %v, after Stop %v", p, existed, after.paths[p])
		}
	}
	if _, err := os.Stat(workDir); !os.IsNotExist(err) {
		t.Errorf("work dir %s still there (stat: %v)", workDir, err)
	}
}

// compareHost reports every difference a node may have caused.
func compareHost(t *testing.T, before, after hostSnapshot) {
	t.Helper()
	for k, v := range before.sysctls {
		if after.sysctls[k] != v {
			t.Errorf("sysctl %s = %s after Stop, was %s", k, after.sysctls[k], v)
		}
	}
	if !slices.Equal(after.mounts, before.mounts) {
		t.Errorf("mounts in node work dirs differ:\nbefore %v\nafter  %v", before.mounts, after.mounts)
	}
	if !slices.Equal(after.links, before.links) {
		t.Errorf("network interfaces differ after Stop:\nbefore %v\nafter  %v", before.links, after.links)
	}
	if after.iptables != before.iptables {
		t.Errorf("iptables rules differ after Stop:\nbefore %s\nafter  %s", before.iptables, after.iptables)
	}
	if !slices.Equal(after.cgroups, before.cgroups) {
		t.Errorf("cgroups differ after Stop: before %v, after %v", before.cgroups, after.cgroups)
	}
	if !slices.Equal(after.processes, before.processes) {
		t.Errorf("processes naming a node work dir after Stop: %v (before %v)", after.processes, before.processes)
	}
}

// BenchmarkNode prints how long a node takes to become Ready and a pod
// from create to Running and to Succeeded; nothing is asserted on time.
func BenchmarkNode(b *testing.B) {
	var ready, containerd, proxy, running, succeeded time.Duration
	for i := 0; i < b.N; i++ {
		e := startNodeEnv(b, true)
		ns := NewTestNamespace(b)
		pod := nodePod(ns, "bench", e.busybox, "sh", "-c", "sleep 1")
		start := time.Now()
		e.create(b, pod)
		e.waitPod(b, ns, "bench", time.Minute, func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning || podDone(p) })
		running += time.Since(start)
		p := e.waitPod(b, ns, "bench", time.Minute, podDone)
		succeeded += time.Since(start)
		if p.Status.Phase != corev1.PodSucceeded {
			b.Fatalf("phase %s", p.Status.Phase)
		}
		ready += e.node.Timings.NodeReady
		containerd += e.node.Timings.ContainerdReady
		proxy += e.node.Timings.KubeProxyReady
		if err := e.node.Stop(); err != nil {
			b.Fatal(err)
		}
	}
	n := float64(b.N)
	b.ReportMetric(ready.Seconds()/n, "node-ready-s")
	b.ReportMetric(containerd.Seconds()/n, "containerd-ready-s")
	// Start returns here: kube-proxy has written the Service rules.
	b.ReportMetric(proxy.Seconds()/n, "kube-proxy-ready-s")
	// The pod runs "sleep 1": Succeeded minus Running minus 1 s is the
	// exit-to-Succeeded delay.
	b.ReportMetric(running.Seconds()/n, "pod-running-s")
	b.ReportMetric(succeeded.Seconds()/n, "pod-succeeded-s")
}

const nodeKillHelperEnv = "IMAGESPEC_NODE_KILL_HELPER"

// TestNodeKilledHelper does its work only as the child process of
// TestNodeLeftoversOfAKilledProgram: it starts a node with a running pod,
// says so and waits to be killed.
func TestNodeKilledHelper(t *testing.T) {
	if os.Getenv(nodeKillHelperEnv) != "1" {
		return
	}
	e := startNodeEnv(t, true)
	ns := NewTestNamespace(t)
	pod := nodePod(ns, "running", e.busybox, "sleep", "3600")
	pod.Spec.Volumes = []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "scratch", MountPath: "/scratch"}}
	e.create(t, pod)
	e.waitPod(t, ns, "running", time.Minute, func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	fmt.Printf("NODE-READY %s\n", e.node.WorkDir)
	time.Sleep(10 * time.Minute)
}

// A program killed with its node running (no Stop) leaves shims,
// containers, mounts, cgroups, a bridge and changed sysctls; the next Start,
// or CleanupStale, removes them all.
func TestNodeLeftoversOfAKilledProgram(t *testing.T) {
	before := snapshotHost(t)
	cmd := osexec.Command(os.Args[0], "-test.run=^TestNodeKilledHelper$", "-test.v", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), nodeKillHelperEnv+"=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	// The child's stderr and the scanner below both write to it.
	childLog := newSyncBuffer()
	cmd.Stderr = childLog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			_, _ = childLog.Write([]byte(line + "\n"))
			if dir, ok := strings.CutPrefix(line, "NODE-READY "); ok {
				ready <- dir
			}
		}
		close(ready)
	}()
	var workDir string
	select {
	case dir, ok := <-ready:
		if !ok {
			t.Fatalf("helper exited without a node:\n%s", childLog.String())
		}
		workDir = dir
	case <-time.After(5 * time.Minute):
		t.Fatalf("helper not ready:\n%s", childLog.String())
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	left := snapshotHost(t)
	if len(left.processes) == len(before.processes) {
		t.Errorf("no shim outlived the killed program: the cleanup below proves nothing")
	}
	if maps.Equal(left.sysctls, before.sysctls) && before.sysctls["kernel/panic"] != "10" {
		t.Errorf("the killed node left the sysctls as they were: the cleanup below proves nothing")
	}
	if mounts, _ := node.MountsUnder(workDir); len(mounts) == 0 {
		t.Errorf("no mounts left under %s by the killed program", workDir)
	}
	if left.iptables == before.iptables {
		t.Errorf("the killed node left no iptables rules (kube-proxy's, the masquerade): the cleanup below proves nothing")
	}

	if err := node.CleanupStale(testContext(t, time.Minute), t.Logf); err != nil {
		t.Fatal(err)
	}
	after := snapshotHost(t)
	compareHost(t, before, after)
	if _, err := os.Stat(workDir); !os.IsNotExist(err) {
		t.Errorf("work dir %s still there (stat: %v)", workDir, err)
	}
}
