// Package proc starts child processes that die with the program that
// started them, however it ends (panic, test -timeout, SIGKILL).
package proc

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

// Pdeathsig fires when the OS thread that forked the child exits, not when
// the process does. All children are therefore forked from one goroutine
// that locks its thread and never returns.
var (
	spawnOnce sync.Once
	spawnReqs chan spawnReq
)

type spawnReq struct {
	cmd  *exec.Cmd
	errc chan error
}

// Start starts cmd in a process group of its own (so the whole tree it
// forks can be signalled at once) with a parent-death signal: SIGKILL
// unless cmd.SysProcAttr already names one (a process that must clean up,
// such as the controller releasing its store, asks for SIGTERM).
func Start(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnReqs = make(chan spawnReq)
		go func() {
			runtime.LockOSThread()
			for r := range spawnReqs {
				r.errc <- r.cmd.Start()
			}
		}()
	})
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if cmd.SysProcAttr.Pdeathsig == 0 {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	}
	errc := make(chan error, 1)
	spawnReqs <- spawnReq{cmd: cmd, errc: errc}
	return <-errc
}
