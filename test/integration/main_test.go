// Package integration tests the controller against a real kube-apiserver and
// etcd. TestMain starts one control plane for the whole package; tests get it
// from SharedControlPlane and isolate themselves with NewTestNamespace.
package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagespec/imagespec-controller/test/framework/controlplane"
)

var sharedCP *controlplane.ControlPlane

func TestMain(m *testing.M) {
	flag.Parse()
	if os.Getenv(orphanHelperEnv) == "1" {
		os.Exit(orphanHelper())
	}
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	ctx := context.Background()
	// A cold cache builds the binaries here (about ten minutes), so the
	// tests never skip for want of them.
	binDir, err := controlplane.EnsureBinaries(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kube binaries: %v\n", err)
		return 1
	}
	startCtx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	cp, err := controlplane.Start(startCtx, controlplane.Options{BinDir: binDir, Logf: log.Printf})
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "start control plane: %v\n", err)
		return 1
	}
	sharedCP = cp
	defer func() {
		if err := cp.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stop control plane: %v\n", err)
		}
	}()

	// An interrupted run still stops the control plane and removes its
	// work dir; a killed one relies on Pdeathsig and stale-dir cleanup.
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigc)
	go func() {
		if _, ok := <-sigc; ok {
			_ = cp.Stop()
			os.Exit(130)
		}
	}()

	return m.Run()
}

// SharedControlPlane returns the control plane TestMain started for this
// package. Tests share it: put objects in a namespace of their own.
func SharedControlPlane(tb testing.TB) *controlplane.ControlPlane {
	tb.Helper()
	if sharedCP == nil {
		tb.Fatal("no shared control plane: TestMain did not start one")
	}
	return sharedCP
}

var nonDNS = regexp.MustCompile(`[^a-z0-9-]+`)

// NewTestNamespace creates a namespace named after the test, with
// serviceaccount/default and kube-root-ca.crt. It is not deleted: without
// kube-controller-manager a deleted namespace stays Terminating anyway, and
// the random suffix keeps reruns apart.
func NewTestNamespace(tb testing.TB) string {
	tb.Helper()
	cp := SharedControlPlane(tb)
	base := strings.Trim(nonDNS.ReplaceAllString(strings.ToLower(tb.Name()), "-"), "-")
	if len(base) > 50 {
		base = strings.TrimRight(base[:50], "-")
	}
	suffix := make([]byte, 3)
	if _, err := rand.Read(suffix); err != nil {
		tb.Fatal(err)
	}
	name := base + "-" + hex.EncodeToString(suffix)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cp.CreateNamespace(ctx, name); err != nil {
		tb.Fatal(err)
	}
	return name
}
