package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// usernsHostBase is where the test's user namespace maps its root.
const usernsHostBase = 100000

// TestKernelIDMappedMounts records what user-namespaced build pods need from
// this machine's kernel: idmapped mounts (mount_setattr MOUNT_ATTR_IDMAP) on
// ext4, tmpfs and overlayfs, which the kubelet uses for every volume of a
// pod with hostUsers: false (tmpfs since Linux 6.3). A kernel without them
// fails here, by name, instead of every user-namespaced pod test failing
// for reasons harder to read.
func TestKernelIDMappedMounts(t *testing.T) {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		t.Fatal(err)
	}
	release := unix.ByteSliceToString(uts.Release[:])
	t.Logf("kernel %s", release)
	if major, minor := kernelVersion(t, release); major < 6 || (major == 6 && minor < 3) {
		t.Errorf("kernel %s: user-namespaced pods need Linux >= 6.3 (idmapped tmpfs)", release)
	}
	max, err := os.ReadFile("/proc/sys/user/max_user_namespaces")
	if err != nil || strings.TrimSpace(string(max)) == "0" {
		t.Fatalf("user namespaces are disabled (user.max_user_namespaces %q, %v)", max, err)
	}

	// A process in a user namespace whose root is usernsHostBase on the host.
	holder := exec.Command("sleep", "600")
	holder.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: usernsHostBase, Size: 65536}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: usernsHostBase, Size: 65536}},
	}
	if err := holder.Start(); err != nil {
		t.Fatalf("creating a user namespace: %v", err)
	}
	t.Cleanup(func() { _ = holder.Process.Kill(); _ = holder.Wait() })
	userns, err := os.Open(fmt.Sprintf("/proc/%d/ns/user", holder.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	defer userns.Close()

	base := t.TempDir()
	mount := func(t *testing.T, fstype, dir, data string) {
		t.Helper()
		if err := unix.Mount(fstype, dir, fstype, 0, data); err != nil {
			t.Fatalf("mount %s: %v", fstype, err)
		}
		t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	}
	for _, fs := range []struct {
		name  string
		setup func(t *testing.T) string
	}{
		// The kubelet's pod directories (emptyDir, Secrets' and ConfigMaps'
		// atomic writers sit on tmpfs or the node's disk).
		{"disk", func(t *testing.T) string {
			dir := filepath.Join(base, "disk")
			mustMkdir(t, dir)
			return dir
		}},
		{"tmpfs", func(t *testing.T) string {
			dir := filepath.Join(base, "tmpfs")
			mustMkdir(t, dir)
			mount(t, "tmpfs", dir, "size=1m")
			return dir
		}},
	} {
		t.Run(fs.name, func(t *testing.T) {
			dir := fs.setup(t)
			if err := os.WriteFile(filepath.Join(dir, "owned-by-root"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			var st unix.Stat_t
			if err := unix.Stat(dir, &st); err != nil {
				t.Fatal(err)
			}
			t.Logf("file system magic of %s: %#x", dir, statfsType(t, dir))
			target := filepath.Join(base, "idmapped-"+fs.name)
			if err := idmappedMount(t, dir, target, userns); err != nil {
				t.Fatalf("%s does not support idmapped mounts (%v): user-namespaced pods cannot mount their volumes here", fs.name, err)
			}
			// Root's file on disk is the namespace's root through the mount.
			if err := unix.Stat(filepath.Join(target, "owned-by-root"), &st); err != nil {
				t.Fatal(err)
			}
			if st.Uid != usernsHostBase || st.Gid != usernsHostBase {
				t.Errorf("through the idmapped mount root's file is owned by %d:%d, want %d:%d", st.Uid, st.Gid, usernsHostBase, usernsHostBase)
			}
		})
	}

	// containerd builds a user-namespaced container's root file system as
	// an overlay of idmapped image layers (overlayfs itself cannot be
	// idmapped; its layers can, since Linux 5.19).
	t.Run("overlay of idmapped layers", func(t *testing.T) {
		layer := filepath.Join(base, "layer")
		mustMkdir(t, layer)
		if err := os.WriteFile(filepath.Join(layer, "from-image"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		idmapped := filepath.Join(base, "layer-idmapped")
		if err := idmappedMount(t, layer, idmapped, userns); err != nil {
			t.Fatalf("idmapping the layer: %v", err)
		}
		empty := filepath.Join(base, "layer-empty")
		mustMkdir(t, empty)
		merged := filepath.Join(base, "merged")
		mustMkdir(t, merged)
		// Two lower layers and no upper: a read-only overlay.
		mount(t, "overlay", merged, "lowerdir="+idmapped+":"+empty)
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(merged, "from-image"), &st); err != nil {
			t.Fatalf("overlay of an idmapped layer: %v", err)
		}
		if st.Uid != usernsHostBase {
			t.Errorf("through the overlay the layer's root file is owned by %d, want %d", st.Uid, usernsHostBase)
		}
	})
}

// idmappedMount mounts an idmapped clone of dir (the mapping of userns's
// owner) on target, a new directory, until the test ends.
func idmappedMount(t *testing.T, dir, target string, userns *os.File) error {
	t.Helper()
	mustMkdir(t, target)
	tree, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("open_tree: %w", err)
	}
	defer unix.Close(tree)
	attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(userns.Fd())}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, attr); err != nil {
		return fmt.Errorf("mount_setattr MOUNT_ATTR_IDMAP: %w", err)
	}
	if err := unix.MoveMount(tree, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount: %w", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(target, unix.MNT_DETACH) })
	return nil
}

func kernelVersion(t *testing.T, release string) (int, int) {
	t.Helper()
	parts := strings.SplitN(release, ".", 3)
	if len(parts) < 2 {
		t.Fatalf("kernel release %q", release)
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(strings.TrimLeftFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	if err1 != nil || err2 != nil {
		t.Fatalf("kernel release %q", release)
	}
	return major, minor
}

func statfsType(t *testing.T, dir string) int64 {
	t.Helper()
	var s unix.Statfs_t
	if err := unix.Statfs(dir, &s); err != nil {
		t.Fatal(err)
	}
	return s.Type
}

func mustMkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}
