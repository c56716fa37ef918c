// Package hostaddr gives the test servers (kube-apiserver, the registry,
// the package index) an address of this machine that pods on a node's
// bridge network reach the same way the host does: 10.230.0.1 on a
// port-less bridge interface named imagespec0. 127.0.0.1 would be each
// pod's own loopback, and the VM's own interface address is not the
// framework's to use.
//
// The interface is shared by every test process on the machine: each holds
// a shared lock on a file while it uses the address, and the last one to
// let go removes the interface, so the host is left as it was.
package hostaddr

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const (
	// Interface carries the address. A bridge without ports: this kernel
	// has no dummy interfaces, and a bridge needs no module beyond the one
	// the CNI bridge plugin uses.
	Interface = "imagespec0"
	// IP is the address; outside the node's pod subnets (10.231.0.0/16)
	// and the Service range (10.96.0.0/16).
	IP = "10.230.0.1"
)

// Lease keeps the address up until Release.
type Lease struct {
	f *os.File
}

func lockPath() string { return filepath.Join(os.TempDir(), "imagespec-hostaddr.lock") }

// Acquire brings the address up if it is not and holds it for the caller.
func Acquire(ctx context.Context) (*Lease, error) {
	f, err := os.OpenFile(lockPath(), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	for attempt := 0; attempt < 20; attempt++ {
		// Shared while the interface is there. Otherwise it is created
		// under the exclusive lock, which then turns shared. That is not
		// atomic: a last holder may remove the interface in between, so
		// check again once the shared lock is held.
		if err := flock(ctx, f, syscall.LOCK_SH); err != nil {
			f.Close()
			return nil, err
		}
		if present() {
			return &Lease{f: f}, nil
		}
		if err := flock(ctx, f, syscall.LOCK_EX); err != nil {
			f.Close()
			return nil, err
		}
		if err := ensure(); err != nil {
			f.Close()
			return nil, err
		}
		if err := flock(ctx, f, syscall.LOCK_SH); err != nil {
			f.Close()
			return nil, err
		}
		if present() {
			return &Lease{f: f}, nil
		}
	}
	f.Close()
	return nil, fmt.Errorf("hostaddr: %s kept disappearing", Interface)
}

// IP is the leased address.
func (l *Lease) IP() string { return IP }

// Release lets go of the address; the last holder on the machine removes
// the interface.
func (l *Lease) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	defer func() { l.f.Close(); l.f = nil }()
	if err := syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN); err != nil {
		return err
	}
	if err := syscall.Flock(int(l.f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil // someone else still uses it
		}
		return err
	}
	return remove()
}

// Cleanup removes the interface if no process holds the address, e.g.
// after a run that was killed.
func Cleanup() error {
	f, err := os.OpenFile(lockPath(), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil
		}
		return err
	}
	return remove()
}

func flock(ctx context.Context, f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("hostaddr: waiting for %s: %w", lockPath(), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func present() bool {
	out, err := exec.Command("ip", "-o", "-4", "addr", "show", "dev", Interface).Output()
	return err == nil && strings.Contains(string(out), " "+IP+"/32 ")
}

func ensure() error {
	if present() {
		return nil
	}
	if _, err := os.Stat(filepath.Join("/sys/class/net", Interface)); err != nil {
		if err := ip("link", "add", Interface, "type", "bridge"); err != nil {
			return err
		}
	}
	if err := ip("addr", "replace", IP+"/32", "dev", Interface); err != nil {
		return err
	}
	return ip("link", "set", Interface, "up")
}

func remove() error {
	if _, err := os.Stat(filepath.Join("/sys/class/net", Interface)); err != nil {
		return nil
	}
	return ip("link", "delete", Interface)
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("hostaddr: ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
