package inprocess

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// interruptRun kills the processes of a RUN step the build is in. buildah
// 1.40 does not watch the context while a RUN step runs, so without this a
// cancelled apt-get would run to its end. The step's processes are the
// descendants of this process whose root is not ours (chroot isolation,
// and runc's container processes). They carry nothing that says which
// build they belong to, so they are killed only when this build is the
// only one in a RUN step; otherwise the step finishes and the build stops
// right after it, before any push.
func (b *Backend) interruptRun(bd *build) {
	bd.mu.Lock()
	log := bd.log
	bd.mu.Unlock()
	if log == nil || !log.running() {
		return
	}
	b.mu.Lock()
	others := 0
	for _, o := range b.builds {
		if o == bd {
			continue
		}
		o.mu.Lock()
		if o.log != nil && o.log.running() {
			others++
		}
		o.mu.Unlock()
	}
	b.mu.Unlock()
	if others > 0 {
		log.Printf("cancel: another build is in a RUN step too; letting this step finish")
		return
	}
	n := killRunProcesses()
	log.Printf("cancel: stopped the running step (%d processes)", n)
}

// killRunProcesses SIGKILLs descendants of this process that run in
// another mount namespace.
func killRunProcesses() int {
	self := os.Getpid()
	myNS, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return 0
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	parent := map[int]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The command name may hold spaces and parentheses; fields
		// after the last ')' are fixed: state, ppid, ...
		s := string(stat)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil {
			parent[pid] = ppid
		}
	}
	isDescendant := func(pid int) bool {
		for n := 0; n < 64 && pid > 1; n++ {
			pid = parent[pid]
			if pid == self {
				return true
			}
		}
		return false
	}
	killed := 0
	for pid := range parent {
		if pid == self || !isDescendant(pid) {
			continue
		}
		ns, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/mnt")
		if err != nil || ns == myNS {
			continue
		}
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			killed++
		}
	}
	return killed
}

// deleteStoppedRuntimeContainers removes the runtime's state of buildah RUN
// containers that stopped and whose bundle is gone. A RUN step killed by a
// cancel leaves such state behind with oci isolation, since buildah never
// gets to delete it; a container in that state belongs to no build.
func (b *Backend) deleteStoppedRuntimeContainers(ctx context.Context, log *buildLog) {
	out, err := exec.CommandContext(ctx, b.opts.Runtime, "list", "--format", "json").Output()
	if err != nil {
		log.Printf("cancel: listing %s containers: %v", b.opts.Runtime, err)
		return
	}
	var list []struct {
		ID     string `json:"id"`
		Status string `json:"status"`
		Bundle string `json:"bundle"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return
	}
	for _, c := range list {
		if !strings.HasPrefix(c.ID, "buildah-") || c.Status != "stopped" {
			continue
		}
		if _, err := os.Stat(c.Bundle); !os.IsNotExist(err) {
			continue
		}
		if out, err := exec.CommandContext(ctx, b.opts.Runtime, "delete", c.ID).CombinedOutput(); err != nil {
			log.Printf("cancel: deleting %s container %s: %v: %s", b.opts.Runtime, c.ID, err, strings.TrimSpace(string(out)))
		}
	}
}
