// Package proc starts child processes that die with the program that
// started them, however it ends (panic, test -timeout, SIGKILL).
package proc

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
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

// Process is a started child whose output goes to a log file.
type Process struct {
	Name    string
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
}

// StartLogged starts cmd (its Env and Dir set by the caller) with Start,
// appending its output to logPath.
func StartLogged(name, logPath string, cmd *exec.Cmd) (*Process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := Start(cmd); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// PID is the child's process id, also its process group id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Done is closed when the child has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the child has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM to the process group and SIGKILL after grace; then
// it kills whatever the child forked into its group.
func (p *Process) Stop(grace time.Duration) error {
	pgid := p.PID()
	if !p.Exited() {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.Name, pgid)
			}
		}
	}
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill %s process group %d: %w", p.Name, pgid, err)
	}
	return nil
}

// Restart stops the process as Stop does and starts the same command line
// again, with the same environment, appending to the same log: a daemon
// restarted in place, as an operator or a crash would.
func (p *Process) Restart(grace time.Duration) (*Process, error) {
	if err := p.Stop(grace); err != nil {
		return nil, err
	}
	cmd := exec.Command(p.cmd.Path, p.cmd.Args[1:]...)
	cmd.Env, cmd.Dir = p.cmd.Env, p.cmd.Dir
	if sa := p.cmd.SysProcAttr; sa != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: sa.Pdeathsig}
	}
	return StartLogged(p.Name, p.LogPath, cmd)
}

// ExitError describes an unexpected exit, with the end of the log.
func (p *Process) ExitError() error {
	return fmt.Errorf("%s exited: %v\n--- last lines of %s ---\n%s", p.Name, p.waitErr, p.LogPath, LogTail(p.LogPath, 40))
}

// WaitHTTP polls url until it answers 200, the process exits, or limit
// passes: how a server started here says it is ready.
func (p *Process) WaitHTTP(ctx context.Context, client *http.Client, url string, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var last string
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			body := make([]byte, 512)
			n, _ := resp.Body.Read(body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body[:n])))
		} else {
			last = err.Error()
		}
		select {
		case <-p.Done():
			return p.ExitError()
		case <-ctx.Done():
			return fmt.Errorf("%s not ready at %s (last: %s): %w\n--- last lines of %s ---\n%s",
				p.Name, url, last, ctx.Err(), p.LogPath, LogTail(p.LogPath, 40))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// LogTail returns the last lines of a log file (at most its last 16 KiB).
func LogTail(path string, lines int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	const maxBytes = 16 << 10
	if len(data) > maxBytes {
		data = data[len(data)-maxBytes:]
	}
	all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}
