package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/dockerfile"
	"github.com/imagespec/imagespec-controller/test/framework/pypi"
)

// Small Debian packages absent from the base, one per iteration, so every
// iteration's apt step is a cache miss in both stores. The testing package
// runs a benchmark once with b.N=1 before the measured run, so with
// -benchtime=Nx, N+1 packages are used; beyond a list's length they repeat
// (then apt is cached): keep N at most 5.
var (
	benchAptVsCLI   = []string{"tree", "bc", "lsof", "psmisc", "dos2unix", "ed"}
	benchAptRebuild = []string{"xxd", "pv", "zip", "unzip", "patch", "cpio"}
	// Next package of each list, across the benchmark's runs.
	nextVsCLI, nextRebuild int
)

// waitFinal waits for the ImageSpec's current job (other than notJob) to
// end, polling every 20ms so the measured time is not the poll interval's.
func waitFinal(b *testing.B, c *Controller, ns, spec, notJob string) *v1alpha1.ImageSpecJob {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	for {
		is, err := c.Clients.Client.PrimehubV1alpha1().ImageSpecs(ns).Get(ctx, spec, metav1.GetOptions{})
		if err == nil && is.Status.JobName != "" && is.Status.JobName != notJob {
			j, err := c.Clients.Client.PrimehubV1alpha1().ImageSpecJobs(ns).Get(ctx, is.Status.JobName, metav1.GetOptions{})
			if err == nil && j.Status.Phase.IsFinal() {
				if j.Status.Phase != v1alpha1.JobSucceeded {
					b.Fatalf("job %s: %s %s: %s\n%s", j.Name, j.Status.Phase, j.Status.Reason, j.Status.Message, j.Status.LogTail)
				}
				return j
			}
		}
		select {
		case <-ctx.Done():
			b.Fatalf("%s/%s did not finish", ns, spec)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// addBenchPackage serves a new pip package, so each iteration's pip step
// is new too.
func addBenchPackage(b *testing.B, env *Env, prefix string) string {
	b.Helper()
	name := prefix + "-" + randomHex(4)
	if err := env.PyPI.Add(pypi.Package{Name: name, Version: "1.0"}); err != nil {
		b.Fatal(err)
	}
	return name
}

// cliStore is a store of the Debian buildah CLI with the base image pulled.
type cliStore struct {
	env  *Env
	root string
}

func newCLIStore(b *testing.B, env *Env) *cliStore {
	b.Helper()
	root, err := os.MkdirTemp(env.WorkDir, "bench-cli-")
	if err != nil {
		b.Fatal(err)
	}
	s := &cliStore{env: env, root: root}
	b.Cleanup(func() {
		_ = s.run(context.Background(), "rmi", "--all", "--force")
		os.RemoveAll(root)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := s.run(ctx, "pull", "--quiet", "--cert-dir", filepath.Join(env.CertsDir, env.Registry.Host),
		"--authfile", env.Registry.AuthFile, "docker://"+env.BaseImage); err != nil {
		b.Fatal(err)
	}
	return s
}

func (s *cliStore) run(ctx context.Context, args ...string) error {
	full := append([]string{"--root", filepath.Join(s.root, "root"), "--runroot", filepath.Join(s.root, "run")}, args...)
	out, err := exec.CommandContext(ctx, "buildah", full...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("buildah %s: %w\n%s", args[0], err, tailOf(string(out), 2000))
	}
	return nil
}

func tailOf(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// buildAndPush builds dockerfile with `buildah bud` (chroot isolation,
// layers, as the backend builds) and pushes it with `buildah push`.
func (s *cliStore) buildAndPush(b *testing.B, df []byte, target string) (build, push time.Duration) {
	b.Helper()
	dir, err := os.MkdirTemp(s.root, "ctx-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	dfPath := filepath.Join(s.root, "Dockerfile-"+filepath.Base(dir))
	if err := os.WriteFile(dfPath, df, 0o600); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	start := time.Now()
	if err := s.run(ctx, "bud", "--quiet", "--isolation", "chroot", "--layers", "--pull-never", "-f", dfPath, "-t", target, dir); err != nil {
		b.Fatal(err)
	}
	build = time.Since(start)
	start = time.Now()
	if err := s.run(ctx, "push", "--quiet", "--cert-dir", filepath.Join(s.env.CertsDir, s.env.Registry.Host),
		"--authfile", s.env.Registry.AuthFile, target, "docker://"+target); err != nil {
		b.Fatal(err)
	}
	return build, time.Since(start)
}

// End-to-end time of the controller with the inprocess backend (ImageSpec
// created to job Succeeded) against the Debian buildah CLI building and
// pushing the same Dockerfile. Each iteration is a new apt and a new pip
// package: both sides build every step but FROM. The order alternates so
// neither side always meets a warm mirror.
func BenchmarkInprocessVsBuildahCLI(b *testing.B) {
	env := SharedEnv(b)
	ns := NewNamespace(b)
	c, _ := StartInprocessController(b, ns, ControllerConfig{})
	cli := newCLIStore(b, env)
	opts := env.DefaultOptions(ns, env.Settings)

	var inproc, viaCLI, cliBuild, cliPush time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		apt := benchAptVsCLI[nextVsCLI%len(benchAptVsCLI)]
		nextVsCLI++
		pip := addBenchPackage(b, env, "bench-cmp")
		spec := v1alpha1.ImageSpecSpec{BaseImage: env.BaseImage,
			Packages: v1alpha1.Packages{Apt: []string{apt}, Pip: []string{pip}}}
		df, err := dockerfile.Render(dockerfile.Inputs{BaseImage: env.BaseImage,
			Packages: dockerfile.Packages{Apt: spec.Packages.Apt, Pip: spec.Packages.Pip},
			Sources:  opts.Controller.Sources, User: "app"})
		if err != nil {
			b.Fatal(err)
		}
		runInproc := func() {
			start := time.Now()
			name := fmt.Sprintf("cmp-%d", i)
			createSpec(b, c, ns, name, spec)
			waitFinal(b, c, ns, name, "")
			inproc += time.Since(start)
		}
		runCLI := func() {
			start := time.Now()
			bd, pd := cli.buildAndPush(b, df, fmt.Sprintf("%s/e2e/cli-cmp-%d:%s", env.Registry.Host, i, randomHex(6)))
			viaCLI += time.Since(start)
			cliBuild += bd
			cliPush += pd
		}
		inTurn(i, runInproc, runCLI)
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(inproc.Seconds()/n, "inprocess-s/op")
	b.ReportMetric(viaCLI.Seconds()/n, "buildah-cli-s/op")
	b.ReportMetric(inproc.Seconds()/viaCLI.Seconds(), "inprocess/cli")
	b.ReportMetric(cliBuild.Seconds()/n, "cli-bud-s/op")
	b.ReportMetric(cliPush.Seconds()/n, "cli-push-s/op")
}

// A rebuild after adding one pip package (apt layer from the cache) against
// the cold build of the spec before it.
func BenchmarkInprocessRebuildAddPip(b *testing.B) {
	env := SharedEnv(b)
	ns := NewNamespace(b)
	c, _ := StartInprocessController(b, ns, ControllerConfig{})

	var cold, rebuild time.Duration
	cachedSteps := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("grow-%d", i)
		apt := benchAptRebuild[nextRebuild%len(benchAptRebuild)]
		nextRebuild++
		spec := v1alpha1.ImageSpecSpec{BaseImage: env.BaseImage, Packages: v1alpha1.Packages{
			Apt: []string{apt},
			Pip: []string{addBenchPackage(b, env, "bench-cold")},
		}}
		start := time.Now()
		createSpec(b, c, ns, name, spec)
		first := waitFinal(b, c, ns, name, "")
		cold += time.Since(start)

		extra := addBenchPackage(b, env, "bench-more")
		start = time.Now()
		updateSpec(b, c, ns, name, func(s *v1alpha1.ImageSpecSpec) { s.Packages.Pip = append(s.Packages.Pip, extra) })
		second := waitFinal(b, c, ns, name, first.Name)
		rebuild += time.Since(start)
		if strings.Contains(second.Status.Message, "2 of 5 steps from cache") {
			cachedSteps++
		}
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(cold.Seconds()/n, "cold-s/op")
	b.ReportMetric(rebuild.Seconds()/n, "rebuild-s/op")
	b.ReportMetric(rebuild.Seconds()/cold.Seconds(), "rebuild/cold")
	b.ReportMetric(float64(cachedSteps)/n, "rebuilds-with-apt-cached")
}

// inTurn runs a and b, a first in even iterations i and b first in odd
// ones, so neither arm of a benchmark always runs on what the other warmed.
func inTurn(i int, a, b func()) {
	if i%2 == 0 {
		a()
		b()
		return
	}
	b()
	a()
}
