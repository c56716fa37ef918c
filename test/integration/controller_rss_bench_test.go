package integration

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/backend"
	"github.com/imagespec/imagespec-controller/pkg/controller"
	"github.com/imagespec/imagespec-controller/pkg/revision"
	"github.com/imagespec/imagespec-controller/test/framework/controlplane"
)

// BenchmarkControllerRSS reports the controller binary's resident memory
// with N finished ImageSpecs (each with its succeeded job) in its
// namespace, and the cost per spec against an empty namespace.
// Run: go test ./test/integration -run '^$' -bench ControllerRSS -benchtime 1x -timeout 30m
func BenchmarkControllerRSS(b *testing.B) {
	bin := buildController(b)
	empty := NewTestNamespace(b)
	baseline := controllerRSS(b, bin, empty, 0)
	b.Logf("empty namespace: %d KiB", baseline)
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("specs=%d", n), func(b *testing.B) {
			ns := NewTestNamespace(b)
			seedFinishedSpecs(b, ns, n)
			for i := 0; i < b.N; i++ {
				rss := controllerRSS(b, bin, ns, n)
				b.ReportMetric(float64(rss), "RSS-KiB")
				b.ReportMetric(float64(rss-baseline)*1024/float64(n), "bytes/spec")
			}
		})
	}
}

var (
	controllerBinOnce sync.Once
	controllerBin     string
	controllerBinErr  error
)

// buildController builds cmd/controller once per test binary, into the
// shared control plane's work dir (removed with it).
func buildController(tb testing.TB) string {
	tb.Helper()
	cp := SharedControlPlane(tb)
	controllerBinOnce.Do(func() {
		root, err := controlplane.RepoRoot()
		if err != nil {
			controllerBinErr = err
			return
		}
		bin := filepath.Join(cp.WorkDir, "controller")
		cmd := exec.Command("go", "build", "-tags", "containers_image_openpgp exclude_graphdriver_btrfs exclude_graphdriver_devicemapper", "-o", bin, "./cmd/controller")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			controllerBinErr = fmt.Errorf("building the controller: %v\n%s", err, out)
			return
		}
		controllerBin = bin
	})
	if controllerBinErr != nil {
		tb.Fatal(controllerBinErr)
	}
	return controllerBin
}

// seedFinishedSpecs creates n ImageSpecs and, for each, the succeeded job
// the controller would have made, so the controller finds nothing to build.
func seedFinishedSpecs(b *testing.B, ns string, n int) {
	c := benchClient(b)
	ctx := context.Background()
	if err := parallel(n, 16, func(i int) error {
		spec, err := c.PrimehubV1alpha1().ImageSpecs(ns).Create(ctx,
			newImageSpec(ns, fmt.Sprintf("done-%d", i), v1alpha1.Packages{Apt: []string{"curl"}, Pip: []string{fmt.Sprintf("pkg%d>=1", i)}}),
			metav1.CreateOptions{})
		if err != nil {
			return err
		}
		tag := revision.Tag(backend.Inputs(spec.Spec.BaseImage, spec.Spec.Packages, nil), "")
		target, err := revision.TargetImage(testRepoPrefix, spec.Name, tag)
		if err != nil {
			return err
		}
		job := &v1alpha1.ImageSpecJob{
			ObjectMeta: metav1.ObjectMeta{
				Name: controller.JobName(spec.Name, tag), Namespace: ns,
				OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(spec, v1alpha1.SchemeGroupVersion.WithKind("ImageSpec"))},
				Annotations:     map[string]string{controller.SpecGenerationAnnotation: "1"},
			},
			Spec: v1alpha1.ImageSpecJobSpec{BaseImage: spec.Spec.BaseImage, Packages: spec.Spec.Packages, TargetImage: target},
		}
		job, err = c.PrimehubV1alpha1().ImageSpecJobs(ns).Create(ctx, job, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		job.Status = v1alpha1.ImageSpecJobStatus{
			Phase: v1alpha1.JobSucceeded, Reason: v1alpha1.ReasonSucceeded, Backend: "inprocess",
			Image: target, Digest: digestA, StartTime: &now, FinishTime: &now,
			Message: "Pushed " + target + "@" + digestA,
		}
		_, err = c.PrimehubV1alpha1().ImageSpecJobs(ns).UpdateStatus(ctx, job, metav1.UpdateOptions{})
		return err
	}); err != nil {
		b.Fatal(err)
	}
}

// controllerRSS runs the controller binary on ns until every ImageSpec shows
// its image (n of them), then reads its VmRSS in KiB.
func controllerRSS(b *testing.B, bin, ns string, n int) int64 {
	cp := SharedControlPlane(b)
	dir := b.TempDir()
	env := filepath.Join(dir, "primehub.env")
	if err := os.WriteFile(env, []byte("PRIMEHUB_FEATURE_CUSTOM_IMAGE=true\nPRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX="+testRepoPrefix+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "--kubeconfig", cp.KubeconfigPath, "--namespace", ns, "--env-file", env,
		"--backend", "inprocess", "--inprocess-storage-dir", filepath.Join(dir, "storage"), "-v", "0",
		"--metrics-bind-address=", "--health-probe-bind-address=")
	logFile, err := os.Create(filepath.Join(dir, "controller.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	defer func() {
		// SIGTERM lets the inprocess backend unmount its store.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
			b.Error("the controller ignored SIGTERM for a minute")
		}
	}()

	c := benchClient(b)
	err = wait.PollUntilContextTimeout(context.Background(), time.Second, 10*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := c.PrimehubV1alpha1().ImageSpecs(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		done := 0
		for _, s := range list.Items {
			if s.Status.Image != "" {
				done++
			}
		}
		return done == n, nil
	})
	if err != nil {
		log, _ := os.ReadFile(logFile.Name())
		b.Fatalf("controller did not settle: %v\n%s", err, tail(string(log), 3000))
	}
	time.Sleep(3 * time.Second)
	return vmRSS(b, cmd.Process.Pid)
}

func vmRSS(b *testing.B, pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kib
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
