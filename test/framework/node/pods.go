package node

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/types"
)

// PodDir is the kubelet's directory of a pod on this node (its volumes are
// under volumes/<plugin>/<name>).
func (n *Node) PodDir(uid types.UID) string {
	return n.path("kubelet", "pods", string(uid))
}

// HostProcess is one process of a pod as the host sees it.
type HostProcess struct {
	PID     int
	Command string
	// UIDs and GIDs: real, effective, saved and file system IDs on the
	// host, from /proc/<pid>/status.
	UIDs, GIDs [4]uint32
	// UIDMap is /proc/<pid>/uid_map as read from the host.
	UIDMap string
}

// PodProcesses lists the host's processes in the pod's cgroup (the
// kubelet's cgroupfs layout names it pod<uid>, below the node's cgroup
// root): its containers' and its sandbox's.
func (n *Node) PodProcesses(uid types.UID) ([]HostProcess, error) {
	var podDirs []string
	for _, d := range cgroupDirs(n.CgroupRoot) {
		if strings.Contains(d+"/", "/pod"+string(uid)+"/") {
			podDirs = append(podDirs, d)
		}
	}
	var out []HostProcess
	for _, pid := range pidsIn(podDirs) {
		p, err := readHostProcess(pid)
		if err != nil {
			continue // exited meanwhile
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no process of pod %s under cgroup %s", uid, n.CgroupRoot)
	}
	return out, nil
}

func readHostProcess(pid int) (HostProcess, error) {
	p := HostProcess{PID: pid}
	dir := filepath.Join("/proc", strconv.Itoa(pid))
	cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline"))
	if err != nil {
		return p, err
	}
	p.Command = strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " "))
	m, err := os.ReadFile(filepath.Join(dir, "uid_map"))
	if err != nil {
		return p, err
	}
	p.UIDMap = strings.TrimSpace(string(m))
	f, err := os.Open(filepath.Join(dir, "status"))
	if err != nil {
		return p, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || (key != "Uid" && key != "Gid") {
			continue
		}
		ids := &p.UIDs
		if key == "Gid" {
			ids = &p.GIDs
		}
		for i, field := range strings.Fields(val) {
			if i >= 4 {
				break
			}
			v, err := strconv.ParseUint(field, 10, 32)
			if err != nil {
				return p, fmt.Errorf("%s: %s: %w", dir, sc.Text(), err)
			}
			ids[i] = uint32(v)
		}
	}
	return p, sc.Err()
}
