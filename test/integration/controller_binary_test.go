package integration

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/config"
)

// syncBuffer is a bytes.Buffer safe for a process's writes and the test's
// reads.
type syncBuffer struct {
	mu  chan struct{}
	buf bytes.Buffer
}

func newSyncBuffer() *syncBuffer { b := &syncBuffer{mu: make(chan struct{}, 1)}; return b }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.String()
}

// runBinary starts the controller binary with only env as its settings.
func runBinary(t *testing.T, env []string, args ...string) (*exec.Cmd, *syncBuffer, chan error) {
	t.Helper()
	bin := buildController(t)
	// No metrics or probe listener: the default ports may be taken by
	// another test binary running at the same time.
	cmd := exec.Command(bin, append([]string{"--kubeconfig", SharedControlPlane(t).KubeconfigPath,
		"--metrics-bind-address=", "--health-probe-bind-address="}, args...)...)
	out := newSyncBuffer()
	cmd.Stdout, cmd.Stderr = out, out
	// Only PATH from the test's environment: no PRIMEHUB_* leaks in.
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// done hands the exit to the test; exited tells the cleanup, which
	// must not wait on done when the test already took the value.
	done, exited := make(chan error, 1), make(chan struct{})
	go func() { done <- cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
	})
	return cmd, out, done
}

func TestBinaryFeatureDisabledBuildsNothing(t *testing.T) {
	ns := NewTestNamespace(t)
	c, _ := clients(t)
	createSpec(t, c, newImageSpec(ns, "off", v1alpha1.Packages{Apt: []string{"git"}}))
	_, out, done := runBinary(t, []string{config.EnvFeatureCustomImage + "=false", config.EnvRepoPrefix + "=" + testRepoPrefix},
		"--namespace", ns, "--backend", "inprocess")
	waitFor(t, "the controller to say builds are disabled", func() (bool, string) {
		return strings.Contains(out.String(), "Custom image builds are disabled"), out.String()
	})
	// It stays up (a Deployment must not crash-loop) and touches nothing.
	select {
	case err := <-done:
		t.Fatalf("the controller exited: %v\n%s", err, out.String())
	case <-time.After(3 * time.Second):
	}
	if jobs := listJobs(t, c, ns); len(jobs) != 0 {
		t.Fatalf("a disabled controller created jobs: %v", jobs)
	}
	spec, err := c.PrimehubV1alpha1().ImageSpecs(ns).Get(context.Background(), "off", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if spec.Status.Phase != "" {
		t.Fatalf("a disabled controller wrote status: %+v", spec.Status)
	}
}

func TestBinaryRejectsInvalidSettings(t *testing.T) {
	const password = "never-print-this-P4ss"
	cases := []struct {
		name string
		env  []string
		want string
	}{
		{"no repo prefix", []string{config.EnvFeatureCustomImage + "=true"}, config.EnvRepoPrefix},
		{"feature flag not a boolean", []string{config.EnvFeatureCustomImage + "=maybe"}, config.EnvFeatureCustomImage},
		{"password without user", []string{config.EnvFeatureCustomImage + "=true", config.EnvRepoPrefix + "=" + testRepoPrefix,
			config.EnvRegistryPassword + "=" + password}, config.EnvRegistryUsername},
		{"endpoint with a path", []string{config.EnvFeatureCustomImage + "=true", config.EnvRepoPrefix + "=" + testRepoPrefix,
			config.EnvRegistryEndpoint + "=https://registry.example.com/team"}, config.EnvRegistryEndpoint},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, out, done := runBinary(t, tc.env, "--backend", "inprocess")
			select {
			case err := <-done:
				if err == nil {
					t.Fatalf("exited 0 with invalid settings:\n%s", out.String())
				}
			case <-time.After(60 * time.Second):
				t.Fatalf("still running with invalid settings:\n%s", out.String())
			}
			if !strings.Contains(out.String(), tc.want) {
				t.Fatalf("the error does not name %s:\n%s", tc.want, out.String())
			}
			if strings.Contains(out.String(), password) {
				t.Fatalf("the password was printed:\n%s", out.String())
			}
		})
	}
}

// Inside a cluster the inprocess backend is refused unless the operator
// accepts, by flag, that it is no security boundary between tenants.
func TestBinaryInprocessInCluster(t *testing.T) {
	settings := []string{config.EnvFeatureCustomImage + "=true", config.EnvRepoPrefix + "=" + testRepoPrefix,
		"KUBERNETES_SERVICE_HOST=127.0.0.1", "KUBERNETES_SERVICE_PORT=443"}
	t.Run("refused", func(t *testing.T) {
		_, out, done := runBinary(t, settings, "--backend", "inprocess", "--leader-elect=false")
		select {
		case err := <-done:
			if err == nil {
				t.Fatalf("exited 0:\n%s", out.String())
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("still running:\n%s", out.String())
		}
		if !strings.Contains(out.String(), "--inprocess-allow-in-cluster") {
			t.Fatalf("the error does not name --inprocess-allow-in-cluster:\n%s", out.String())
		}
	})
	t.Run("allowed by flag", func(t *testing.T) {
		ns := NewTestNamespace(t)
		_, out, done := runBinary(t, settings, "--backend", "inprocess", "--leader-elect=false", "--namespace", ns,
			"--inprocess-allow-in-cluster", "--inprocess-storage-dir", t.TempDir())
		waitFor(t, "the controller to start the inprocess backend", func() (bool, string) {
			return strings.Contains(out.String(), `backend="inprocess"`), out.String()
		})
		select {
		case err := <-done:
			t.Fatalf("the controller exited: %v\n%s", err, out.String())
		case <-time.After(3 * time.Second):
		}
	})
}
