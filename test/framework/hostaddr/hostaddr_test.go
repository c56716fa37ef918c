package hostaddr

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Two leases share the interface; it goes away with the last one, and a
// server bound to the address answers while it is held.
func TestLeases(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(a.IP(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", l.Addr().String(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	l.Close()
	if err := a.Release(); err != nil {
		t.Fatal(err)
	}
	if !present() {
		t.Fatalf("%s gone while a lease still holds it", Interface)
	}
	if err := b.Release(); err != nil {
		t.Fatal(err)
	}
	// Another test binary may hold a lease of its own meanwhile: only
	// when nobody does must the interface be gone.
	f, err := os.OpenFile(lockPath(), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		t.Logf("another process holds the address; not checking its removal")
		return
	}
	if _, err := os.Stat(filepath.Join("/sys/class/net", Interface)); err == nil {
		t.Errorf("%s left after the last lease was released", Interface)
	}
}
