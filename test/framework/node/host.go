package node

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Sysctls the kubelet sets at start (setupKernelTunables), IPv4
// forwarding for the pod network, and what kube-proxy may set despite its
// configuration; Stop writes back what was there before.
var trackedSysctls = []string{
	"vm/overcommit_memory",
	"vm/panic_on_oom",
	"kernel/panic",
	"kernel/panic_on_oops",
	"kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes",
	"net/ipv4/ip_forward",
	"net/ipv4/conf/all/route_localnet",
	"net/bridge/bridge-nf-call-iptables",
}

// Host paths outside the work dir that the kubelet, containerd or its shims
// create whatever their configuration says (the device-plugin socket dir,
// legacy log symlinks, shim sockets). Removed on Stop only if they did not
// exist before Start; deepest first.
var hostPaths = []string{
	"/var/lib/kubelet/device-plugins",
	"/var/lib/kubelet/plugins_registry",
	"/var/lib/kubelet",
	"/var/log/containers",
	"/var/log/pods",
	"/run/containerd/s",
	"/run/containerd",
}

// SysctlValues reads the tracked sysctls (the ones a node changes).
func SysctlValues() map[string]string {
	m := map[string]string{}
	for _, k := range trackedSysctls {
		if b, err := os.ReadFile(filepath.Join("/proc/sys", k)); err == nil {
			m[k] = strings.TrimSpace(string(b))
		}
	}
	return m
}

func restoreSysctls(saved map[string]string) error {
	var errs []error
	now := SysctlValues()
	for k, v := range saved {
		if now[k] == v {
			continue
		}
		if err := os.WriteFile(filepath.Join("/proc/sys", k), []byte(v), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore sysctl %s=%s: %w", k, v, err))
		}
	}
	return errors.Join(errs...)
}

// hostState is what Stop, or a later Start after a killed run, needs to undo
// this node's host changes. It is saved as JSON next to the host lock.
type hostState struct {
	OwnerPID     int               `json:"ownerPID"`
	WorkDir      string            `json:"workDir"`
	CgroupRoot   string            `json:"cgroupRoot"` // e.g. /imagespec-node-1a2b3c
	Bridge       string            `json:"bridge"`
	Sysctls      map[string]string `json:"sysctls"`
	CreatedPaths []string          `json:"createdPaths"` // hostPaths absent before Start
	// Masquerade is the pod subnet of the masquerade rule, once added.
	Masquerade string `json:"masquerade,omitempty"`
	// KubeProxyBin is set once kube-proxy may have written rules.
	KubeProxyBin string `json:"kubeProxyBin,omitempty"`
}

func stateDir() string { return filepath.Join(os.TempDir(), "imagespec-node-state") }

func (s *hostState) file() string {
	return filepath.Join(stateDir(), filepath.Base(s.WorkDir)+".json")
}

func (s *hostState) save() error {
	if err := os.MkdirAll(stateDir(), 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(s.file(), b, 0o600)
}

// cleanup undoes everything a node may have left: processes, mounts,
// cgroups, the bridge, host paths, sysctls and the work dir. It is used by
// Stop after the kubelet and containerd stopped, and for stale state.
func (s *hostState) cleanup(keepWorkDir bool) error {
	var errs []error
	// Containers first (they hold mounts), then shims (re-parented to init,
	// found by the work dir in their command line).
	if s.CgroupRoot != "" {
		killCgroupTree(s.CgroupRoot)
	}
	if s.WorkDir != "" {
		killProcessesMentioning(s.WorkDir + "/")
		if err := unmountUnder(s.WorkDir); err != nil {
			errs = append(errs, err)
		}
	}
	if s.CgroupRoot != "" {
		if err := removeCgroupTree(s.CgroupRoot); err != nil {
			errs = append(errs, err)
		}
	}
	if s.Bridge != "" {
		if _, err := os.Stat(filepath.Join("/sys/class/net", s.Bridge)); err == nil {
			if out, err := exec.Command("ip", "link", "delete", s.Bridge).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("delete bridge %s: %v: %s", s.Bridge, err, out))
			}
		}
	}
	if s.KubeProxyBin != "" {
		if err := cleanupKubeProxy(s.KubeProxyBin); err != nil {
			errs = append(errs, err)
		}
	}
	if s.Masquerade != "" {
		if err := removeMasquerade(s.Masquerade, s.WorkDir); err != nil {
			errs = append(errs, err)
		}
	}
	if s.WorkDir != "" {
		removeLogSymlinksInto("/var/log/containers", s.WorkDir)
	}
	for _, p := range hostPaths {
		for _, c := range s.CreatedPaths {
			if c == p {
				if err := os.RemoveAll(p); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	if err := restoreSysctls(s.Sysctls); err != nil {
		errs = append(errs, err)
	}
	if s.WorkDir != "" && !keepWorkDir {
		if err := os.RemoveAll(s.WorkDir); err != nil {
			errs = append(errs, fmt.Errorf("remove work dir: %w", err))
		}
	}
	// A failed cleanup keeps the state, so a later Start retries it once
	// this process is gone.
	if len(errs) == 0 {
		if err := os.Remove(s.file()); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func missingHostPaths() []string {
	var missing []string
	for _, p := range hostPaths {
		if _, err := os.Lstat(p); os.IsNotExist(err) {
			missing = append(missing, p)
		}
	}
	return missing
}

// cleanStaleStates undoes what nodes of dead programs left behind. Callers
// hold the host lock, so no live node is affected.
func cleanStaleStates(logf func(string, ...any)) {
	files, _ := filepath.Glob(filepath.Join(stateDir(), "*.json"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var s hostState
		if json.Unmarshal(b, &s) != nil || s.OwnerPID <= 0 {
			continue
		}
		if err := syscall.Kill(s.OwnerPID, 0); err == nil || !errors.Is(err, syscall.ESRCH) {
			continue
		}
		logf("cleaning up after node of dead process %d (work dir %s)", s.OwnerPID, s.WorkDir)
		if err := s.cleanup(false); err != nil {
			logf("stale node cleanup: %v", err)
		}
	}
}

// mountInfo returns mount points from /proc/self/mountinfo in mount order.
func mountInfo() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 {
			points = append(points, unescapeMount(fields[4]))
		}
	}
	return points, sc.Err()
}

// cgroupMounts lists the mounted cgroup hierarchies (v1 and v2).
func cgroupMounts() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		sep := strings.Index(line, " - ")
		if sep < 0 {
			continue
		}
		fields := strings.Fields(line[:sep])
		after := strings.Fields(line[sep+3:])
		if len(fields) > 4 && len(after) > 0 && (after[0] == "cgroup" || after[0] == "cgroup2") {
			points = append(points, unescapeMount(fields[4]))
		}
	}
	return points, sc.Err()
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// MountsUnder lists mount points at or below dir.
func MountsUnder(dir string) ([]string, error) {
	points, err := mountInfo()
	if err != nil {
		return nil, err
	}
	dir = filepath.Clean(dir)
	var under []string
	for _, p := range points {
		if dir == "/" || p == dir || strings.HasPrefix(p, dir+"/") {
			under = append(under, p)
		}
	}
	return under, nil
}

// unmountUnder unmounts everything below dir, last mounted first, until
// nothing is left (the kubelet's rshared bind mount of its root dir makes
// some mounts appear twice).
func unmountUnder(dir string) error {
	for range 10 {
		points, err := MountsUnder(dir)
		if err != nil {
			return err
		}
		if len(points) == 0 {
			return nil
		}
		for i := len(points) - 1; i >= 0; i-- {
			if err := syscall.Unmount(points[i], 0); err != nil {
				_ = syscall.Unmount(points[i], syscall.MNT_DETACH)
			}
		}
	}
	points, _ := MountsUnder(dir)
	if len(points) > 0 {
		return fmt.Errorf("mounts left under %s: %v", dir, points)
	}
	return nil
}

// createCgroupRoot makes the cgroup the kubelet puts every pod under, in
// each hierarchy; the kubelet refuses a cgroupRoot that does not exist.
func createCgroupRoot(name string) error {
	mounts, err := cgroupMounts()
	if err != nil {
		return err
	}
	for _, m := range mounts {
		dir := filepath.Join(m, name)
		if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
			return fmt.Errorf("create cgroup %s: %w", dir, err)
		}
		// A v1 cpuset cgroup starts with no CPUs or memory nodes and
		// accepts no task until they are set.
		if filepath.Base(m) == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(m, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(dir, f), v, 0o644); err != nil {
					return fmt.Errorf("set %s of %s: %w", f, dir, err)
				}
			}
		}
	}
	return nil
}

// cgroupDirs lists name and its descendants in every hierarchy, deepest first.
func cgroupDirs(name string) []string {
	mounts, _ := cgroupMounts()
	var dirs []string
	for _, m := range mounts {
		root := filepath.Join(m, name)
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
	}
	sort.Slice(dirs, func(i, j int) bool { return strings.Count(dirs[i], "/") > strings.Count(dirs[j], "/") })
	return dirs
}

// CgroupPIDs lists the processes in the cgroup tree name (any hierarchy).
func CgroupPIDs(name string) []int {
	return pidsIn(cgroupDirs(name))
}

// pidsIn lists the processes of the cgroup directories dirs, each once.
func pidsIn(dirs []string) []int {
	seen := map[int]bool{}
	var pids []int
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil && !seen[pid] {
				seen[pid] = true
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

func killCgroupTree(name string) {
	for range 20 {
		pids := CgroupPIDs(name)
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			if pid != os.Getpid() {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func removeCgroupTree(name string) error {
	var last []string
	for range 50 {
		last = last[:0]
		for _, d := range cgroupDirs(name) {
			if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
				last = append(last, d)
			}
		}
		if len(last) == 0 {
			return nil
		}
		killCgroupTree(name)
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("cgroups left: %v", last)
}

// ProcessesMentioning lists the pids whose command line contains s (a
// containerd shim names its containerd's socket in its arguments).
func ProcessesMentioning(s string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), s) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func killProcessesMentioning(s string) {
	for range 20 {
		pids := ProcessesMentioning(s)
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// removeLogSymlinksInto removes the kubelet's legacy /var/log/containers
// links that point into the node's work dir.
func removeLogSymlinksInto(dir, target string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if dest, err := os.Readlink(p); err == nil && strings.HasPrefix(dest, target+"/") {
			_ = os.Remove(p)
		}
	}
}
