package e2e

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/backend/buildahpod"
	"github.com/imagespec/imagespec-controller/test/framework/node"
)

// podIDRange is how many IDs the kubelet maps into each pod's user namespace.
const podIDRange = 65536

// runningBuildPod waits for the ImageSpec "userns" of ns to build while
// index holds its pip step, and returns its build pod and the host's
// processes of that pod.
func runningBuildPod(ctx context.Context, t *testing.T, p *PodEnv, c *Controller, ns string, index *hangingIndex) (*corev1.Pod, []node.HostProcess) {
	t.Helper()
	job := runningJob(t, c, ns, "userns", "", index)
	podNS, podName := p.BuildPod(ns, job.Name)
	pod, err := p.Kube.CoreV1().Pods(podNS).Get(ctx, podName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	procs, err := p.Node.PodProcesses(pod.UID)
	if err != nil {
		t.Fatal(err)
	}
	return pod, procs
}

// processOf is the last of procs whose command line matches; the test
// fails without one.
func processOf(t *testing.T, procs []node.HostProcess, what string, match func(cmd string) bool) node.HostProcess {
	t.Helper()
	found := -1
	for i, pr := range procs {
		if match(pr.Command) {
			found = i
		}
	}
	if found < 0 {
		t.Fatalf("no %s process among the pod's %+v", what, procs)
	}
	return procs[found]
}

// asPodRoot runs the host's busybox with args as root of pid's user
// namespace, holding every capability there (nsenter -U), in the host's
// other namespaces.
func asPodRoot(ctx context.Context, pid int, args ...string) ([]byte, error) {
	return exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(pid), "-U", "--", "/bin/busybox"}, args...)...).CombinedOutput()
}

// ownersUnder counts the files under dir by owner; files removed while it
// walks are skipped.
func ownersUnder(t *testing.T, dir string) map[uint32]int {
	t.Helper()
	owners := map[uint32]int{}
	if err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == dir {
				return err
			}
			return nil
		}
		if info, err := d.Info(); err == nil {
			owners[info.Sys().(*syscall.Stat_t).Uid]++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return owners
}

// testPodUserNamespace: with the default --builder-user-namespaces=auto on
// a node that supports them, the build pod gets a user namespace of its
// own. While its pip step runs, every process of the pod is, on the host,
// a non-root user of one range of 65536 IDs above the host's own; what the
// build writes to its emptyDir belongs to that range through the pod's
// (idmapped) mount and keeps the pod's own IDs on disk. Root of the pod's
// user namespace, with every capability there (as after a container escape
// that kept the pod's credentials), cannot load a kernel module, mount
// /proc on the host, set the host's hostname or read a file of the node's
// root. The same build with --builder-user-namespaces=off still works, as
// the node's root, who can read that file.
func testPodUserNamespace(t *testing.T, p *PodEnv) {
	env := SharedEnv(t)
	ns := NewNamespace(t)
	index := newHangingIndex(t)
	c, _ := p.StartPodController(t, ns, ControllerConfig{Tweak: hangingIndexOptions(index)}, nil)
	spec := v1alpha1.ImageSpecSpec{BaseImage: env.BaseImage, Packages: v1alpha1.Packages{Pip: []string{"e2e-hello"}}}
	createSpec(t, c, ns, "userns", spec)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pod, procs := runningBuildPod(ctx, t, p, c, ns, index)
	requireUserNamespace(t, pod)

	// The sandbox's pause process is in the pod's user namespace; its
	// uid_map, read from the host, is "0 <first host ID> 65536".
	pause := processOf(t, procs, "pause", func(cmd string) bool { return strings.HasSuffix(strings.Fields(cmd + " x")[0], "pause") })
	var base uint64
	if f := strings.Fields(pause.UIDMap); len(f) == 3 {
		base, _ = strconv.ParseUint(f[1], 10, 32)
		if f[0] != "0" || f[2] != strconv.Itoa(podIDRange) {
			t.Errorf("sandbox uid_map %q, want 0 <host ID> %d", pause.UIDMap, podIDRange)
		}
	}
	if base < podIDRange {
		t.Fatalf("the pod's user namespace starts at host ID %d, want above the host's own 0-65535 (processes: %+v)", base, procs)
	}
	inRange := func(id uint32) bool { return uint64(id) >= base && uint64(id) < base+podIDRange }
	t.Logf("pod %s maps 0-65535 to host IDs %d-%d", pod.Name, base, base+podIDRange-1)
	// The build is looked at while it runs: its pip step is there.
	isPip := func(cmd string) bool { return strings.Contains(cmd, "pip") }
	pip := processOf(t, procs, "pip", isPip)
	for _, pr := range procs {
		for _, id := range append(pr.UIDs[:], pr.GIDs[:]...) {
			if !inRange(id) {
				t.Errorf("pid %d (%s) runs as host uids %v gids %v, outside the pod's range %d-%d", pr.PID, pr.Command, pr.UIDs, pr.GIDs, base, base+podIDRange-1)
				break
			}
		}
	}

	// The store buildah filled in the emptyDir. The kubelet mounts volumes
	// idmapped: on disk the files keep the IDs the pod sees (root's are
	// 0, as on a node without user namespaces), and through the pod's
	// mount, from the host, they belong to the pod's range.
	buildah := processOf(t, procs, "buildah", func(cmd string) bool { return strings.HasPrefix(cmd, "buildah ") }).PID
	onDisk := ownersUnder(t, filepath.Join(p.Node.PodDir(pod.UID), "volumes", "kubernetes.io~empty-dir", "storage"))
	throughPod := ownersUnder(t, filepath.Join("/proc", strconv.Itoa(buildah), "root", "var", "lib", "containers"))
	t.Logf("emptyDir owners on disk %v; through the pod's mount %v", onDisk, throughPod)
	for uid := range onDisk {
		if uid >= podIDRange {
			t.Errorf("a file of the emptyDir is stored as uid %d, outside the IDs the pod has (0-%d)", uid, podIDRange-1)
		}
	}
	files := 0
	for uid, n := range throughPod {
		files += n
		if !inRange(uid) {
			t.Errorf("through the pod's mount %d files are owned by host uid %d, outside the pod's range %d-%d", n, uid, base, base+podIDRange-1)
		}
	}
	if files < 100 || throughPod[uint32(base)] == 0 {
		t.Errorf("%d files through the pod's mount, %d of them its root's: the build's store is not there", files, throughPod[uint32(base)])
	}

	// Root of the pod's user namespace, with every capability there,
	// tries what only the node's root may do.
	scratch, err := os.MkdirTemp("", "imagespec-userns-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(scratch)
	if err := os.Chmod(scratch, 0o755); err != nil {
		t.Fatal(err)
	}
	bogus := filepath.Join(scratch, "escape.ko")
	if err := os.WriteFile(bogus, []byte("not a module"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Like a Secret the kubelet mounted for another pod: the node's
	// root's alone.
	nodeSecret := filepath.Join(scratch, "node-secret")
	if err := os.WriteFile(nodeSecret, []byte("node only"), 0o600); err != nil {
		t.Fatal(err)
	}
	hostname, _ := os.Hostname()
	// What the node's own root gets for a module that is none: a kernel
	// without module support answers "does not support" to anyone.
	hostOut, _ := exec.CommandContext(ctx, "/bin/busybox", "insmod", bogus).CombinedOutput()
	noModules := strings.Contains(string(hostOut), "does not support")
	for _, attempt := range []struct {
		name string
		args []string
	}{
		{"load a kernel module", []string{"insmod", bogus}},
		{"mount /proc on the host", []string{"mount", "-t", "proc", "proc", scratch}},
		{"set the host's hostname", []string{"hostname", "imagespec-escaped"}},
		{"read a file of the node's root", []string{"cat", nodeSecret}},
	} {
		out, err := asPodRoot(ctx, pip.PID, attempt.args...)
		msg := strings.TrimSpace(string(out))
		switch {
		case err == nil:
			t.Errorf("%s as the pod's root succeeded: %s", attempt.name, msg)
		case attempt.args[0] == "insmod" && noModules:
			t.Logf("%s: this kernel loads no modules for anyone (the node's root got %q), so it proves nothing here; the pod's root got %q", attempt.name, strings.TrimSpace(string(hostOut)), msg)
		case !strings.Contains(strings.ToLower(msg), "not permitted") && !strings.Contains(strings.ToLower(msg), "permission denied"):
			t.Errorf("%s as the pod's root failed for another reason than permission: %v: %s", attempt.name, err, msg)
		default:
			t.Logf("%s as the pod's root: %s", attempt.name, msg)
		}
	}
	if now, _ := os.Hostname(); now != hostname {
		t.Errorf("host hostname changed from %q to %q", hostname, now)
	}

	// Let the build finish: it pushes from the user-namespaced pod.
	index.Release()
	job := WaitJob(t, c, ns, "userns", "", buildTimeout)
	requirePodPhase(t, job, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
	if !TagExists(t, env.Registry, job.Spec.TargetImage) {
		t.Errorf("%s not pushed", job.Spec.TargetImage)
	}

	// Off: the same build in a pod of the host's users, where the same
	// checks see the node's root: what the checks above rule out.
	ns2 := NewNamespace(t)
	index2 := newHangingIndex(t)
	c2, _ := p.StartPodController(t, ns2, ControllerConfig{Tweak: hangingIndexOptions(index2)},
		func(o *buildahpod.Options) { o.UserNamespaces = buildahpod.UserNamespacesOff })
	createSpec(t, c2, ns2, "userns", spec)
	pod, procs = runningBuildPod(ctx, t, p, c2, ns2, index2)
	if hu := pod.Spec.HostUsers; hu != nil && !*hu {
		t.Errorf("--builder-user-namespaces=off made pod %s with hostUsers false", pod.Name)
	}
	pip = processOf(t, procs, "pip", isPip)
	if pip.UIDs[0] != 0 {
		t.Errorf("without a user namespace pip runs as host uid %d, want 0", pip.UIDs[0])
	}
	out, err := asPodRoot(ctx, pip.PID, "cat", nodeSecret)
	if err != nil || string(out) != "node only" {
		t.Errorf("without a user namespace the pod's root could not read the node's file (%v: %s): the check above proves nothing", err, out)
	}
	index2.Release()
	job = WaitJob(t, c2, ns2, "userns", "", buildTimeout)
	requirePodPhase(t, job, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
	t.Logf("without a user namespace pod %s built %s", pod.Name, job.Status.Image)
}
