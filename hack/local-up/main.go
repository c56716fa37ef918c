// Command local-up is the local development environment behind `make dev`:
// a real kube-apiserver and etcd, a registry with authentication and TLS,
// base images built without internet access, a local PyPI index, and the
// controller binary in dev mode (the inprocess backend) against them. It
// applies artifacts/examples/dev, waits until the image is pushed, prints
// where it is and how to look around, and runs until interrupted; then it
// stops everything it started.
//
// With --kubeconfig (or KUBECONFIG set) it uses that cluster instead of
// starting a control plane.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/config"
	clientset "github.com/imagespec/imagespec-controller/pkg/generated/clientset/versioned"
	"github.com/imagespec/imagespec-controller/test/framework/controlplane"
	"github.com/imagespec/imagespec-controller/test/framework/images"
	"github.com/imagespec/imagespec-controller/test/framework/proc"
	"github.com/imagespec/imagespec-controller/test/framework/pypi"
	"github.com/imagespec/imagespec-controller/test/framework/registry"
)

type options struct {
	kubeconfig     string
	workDir        string
	registryPort   int
	exitAfterBuild bool
	buildTimeout   time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "Use this cluster instead of starting a local control plane.")
	flag.StringVar(&o.workDir, "work-dir", "_output/dev", "Where the kubeconfig, settings, logs and the controller binary go.")
	flag.IntVar(&o.registryPort, "registry-port", 5000, "Port of the local registry on 127.0.0.1 (the dev example's base image names it); 0 picks a free one.")
	flag.BoolVar(&o.exitAfterBuild, "exit-after-build", false, "Stop everything once the example is built, instead of waiting for Ctrl-C.")
	flag.DurationVar(&o.buildTimeout, "build-timeout", 20*time.Minute, "How long to wait for the example to build.")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := run(ctx, o); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(os.Stderr, "local-up: %v\n", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "local-up: "+format+"\n", args...)
}

// run brings the environment up and returns the built ImageSpec once
// everything it started has stopped again.
func run(ctx context.Context, o options) (built *v1alpha1.ImageSpec, err error) {
	root, err := controlplane.RepoRoot()
	if err != nil {
		return nil, err
	}
	workDir := o.workDir
	if !filepath.IsAbs(workDir) {
		workDir = filepath.Join(root, workDir)
	}
	if err := os.MkdirAll(workDir, 0o700); err != nil {
		return nil, err
	}
	var cleanups []func()
	defer func() {
		logf("stopping")
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}()

	logf("installing what the environment needs (Debian packages, pinned Kubernetes binaries)")
	if err := runCmd(ctx, root, nil, filepath.Join(root, "hack/install-test-deps.sh")); err != nil {
		return nil, err
	}
	binDir, err := controlplane.EnsureBinaries(ctx)
	if err != nil {
		return nil, err
	}
	kubectl := filepath.Join(binDir, "kubectl")

	kubeconfig := o.kubeconfig
	if kubeconfig == "" {
		logf("starting etcd and kube-apiserver")
		cp, err := controlplane.Start(ctx, controlplane.Options{BinDir: binDir, Logf: logf})
		if err != nil {
			return nil, err
		}
		cleanups = append(cleanups, func() { _ = cp.Stop() })
		kubeconfig = filepath.Join(workDir, "kubeconfig")
		data, err := os.ReadFile(cp.KubeconfigPath)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(kubeconfig, data, 0o600); err != nil {
			return nil, err
		}
	} else {
		logf("using the cluster of %s; installing the CRDs", kubeconfig)
		if err := runCmd(ctx, root, nil, kubectl, "--kubeconfig", kubeconfig, "apply", "--server-side", "-f", filepath.Join(root, "artifacts/crds")); err != nil {
			return nil, err
		}
		if err := runCmd(ctx, root, nil, kubectl, "--kubeconfig", kubeconfig, "wait", "--for=condition=Established", "--timeout=60s",
			"crd/imagespecs.primehub.io", "crd/imagespecjobs.primehub.io"); err != nil {
			return nil, err
		}
	}

	logf("building base images (cached after the first run) and starting a registry on 127.0.0.1:%d", o.registryPort)
	// The registry's own log stays in its work dir: a push logs a
	// harmless 404 per blob it checks.
	reg, err := registry.Start(ctx, registry.Options{Port: o.registryPort})
	if err != nil {
		return nil, err
	}
	cleanups = append(cleanups, func() { _ = reg.Stop() })
	if _, _, err := images.Push(ctx, images.DebianPython, reg, "base/"+images.DebianPython); err != nil {
		return nil, err
	}
	index, err := pypi.Listen("127.0.0.1:0",
		pypi.Package{Name: "imagespec-hello", Version: "1.0", Files: map[string]string{"imagespec_hello/__init__.py": "GREETING = 'hello from imagespec'\n"}},
		pypi.Package{Name: "imagespec-util", Version: "1.0"},
	)
	if err != nil {
		return nil, err
	}
	cleanups = append(cleanups, func() { _ = index.Close() })

	// The controller reads PrimeHub's settings, exactly as in production.
	envFile := filepath.Join(workDir, "primehub.env")
	env := fmt.Sprintf("%s=true\n%s=https://%s\n%s=%s\n%s='%s'\n%s=%s/dev\n",
		config.EnvFeatureCustomImage, config.EnvRegistryEndpoint, reg.Host,
		config.EnvRegistryUsername, reg.Username, config.EnvRegistryPassword, reg.Password,
		config.EnvRepoPrefix, reg.Host)
	if err := os.WriteFile(envFile, []byte(env), 0o600); err != nil {
		return nil, err
	}

	logf("building the controller")
	controllerBin := filepath.Join(workDir, "controller")
	if err := runCmd(ctx, root, nil, "go", "build", "-tags", "containers_image_openpgp exclude_graphdriver_btrfs exclude_graphdriver_devicemapper",
		"-o", controllerBin, "./cmd/controller"); err != nil {
		return nil, err
	}
	storageDir := filepath.Join(images.CacheDir(), "dev-storage")
	logDir := filepath.Join(workDir, "build-logs")
	controllerLog := filepath.Join(workDir, "controller.log")
	stopController, err := startController(controllerBin, controllerLog,
		"--kubeconfig", kubeconfig,
		"--env-file", envFile,
		"--backend", "inprocess",
		"--inprocess-storage-dir", storageDir,
		"--inprocess-log-dir", logDir,
		"--registry-certs-dir", reg.CertsDir,
		"--pip-index-url", index.URL(),
		"--pip-trusted-host", "127.0.0.1",
		"--max-concurrent-builds", "2",
		// The base images every ImageSpec may build on.
		"--shared-repository", reg.Host+"/base",
		// No fixed metrics or probe ports: they may be taken on a laptop.
		"--metrics-bind-address=", "--health-probe-bind-address=",
	)
	if err != nil {
		return nil, err
	}
	cleanups = append(cleanups, stopController)

	example := filepath.Join(workDir, "example.yaml")
	if err := writeExample(filepath.Join(root, "artifacts/examples/dev/imagespec.yaml"), example, reg.Host); err != nil {
		return nil, err
	}
	logf("applying artifacts/examples/dev/imagespec.yaml")
	if err := runCmd(ctx, root, nil, kubectl, "--kubeconfig", kubeconfig, "apply", "-f", example); err != nil {
		return nil, err
	}
	spec, job, err := waitForBuild(ctx, kubeconfig, "default", "hello-python", o.buildTimeout, controllerLog)
	if err != nil {
		return nil, err
	}
	printSummary(spec, job, kubectl, kubeconfig, logDir, controllerLog)
	if o.exitAfterBuild {
		return spec, nil
	}
	logf("running; press Ctrl-C to stop everything")
	<-ctx.Done()
	return spec, nil
}

// writeExample points the dev example at the local registry's actual
// address (it names 127.0.0.1:5000, the default).
func writeExample(src, dst, registryHost string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	out := strings.ReplaceAll(string(data), "127.0.0.1:5000", registryHost)
	return os.WriteFile(dst, []byte(out), 0o600)
}

func startController(bin, logPath string, args ...string) (func(), error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group, and told to stop (SIGTERM: it releases its
	// store) if local-up dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := proc.Start(cmd); err != nil {
		logFile.Close()
		return nil, err
	}
	logf("controller running (pid %d), log: %s", cmd.Process.Pid, logPath)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	return func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		logFile.Close()
	}, nil
}

// waitForBuild waits until the ImageSpec is Ready and returns it with the
// job that built it.
func waitForBuild(ctx context.Context, kubeconfig, ns, name string, timeout time.Duration, controllerLog string) (*v1alpha1.ImageSpec, *v1alpha1.ImageSpecJob, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, nil, err
	}
	client, err := clientset.NewForConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	logf("waiting for ImageSpec %s/%s to build (the first build also pulls the base image)", ns, name)
	var spec *v1alpha1.ImageSpec
	lastPhase := ""
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		s, err := client.PrimehubV1alpha1().ImageSpecs(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		spec = s
		if p := string(s.Status.Phase); p != lastPhase {
			logf("phase %s (job %s)", p, s.Status.JobName)
			lastPhase = p
		}
		switch s.Status.Phase {
		case v1alpha1.JobFailed, v1alpha1.JobCancelled:
			return false, fmt.Errorf("the example did not build: %s", readyMessage(s))
		}
		ready := meta.FindStatusCondition(s.Status.Conditions, v1alpha1.ConditionReady)
		return ready != nil && ready.Status == metav1.ConditionTrue, nil
	})
	if err != nil {
		if spec != nil && spec.Status.JobName != "" {
			if job, jerr := client.PrimehubV1alpha1().ImageSpecJobs(ns).Get(ctx, spec.Status.JobName, metav1.GetOptions{}); jerr == nil && job.Status.LogTail != "" {
				fmt.Fprintf(os.Stderr, "--- end of the build log ---\n%s\n", job.Status.LogTail)
			}
		}
		return nil, nil, fmt.Errorf("%w (controller log: %s)", err, controllerLog)
	}
	job, err := client.PrimehubV1alpha1().ImageSpecJobs(ns).Get(ctx, spec.Status.JobName, metav1.GetOptions{})
	if err != nil {
		return nil, nil, err
	}
	return spec, job, nil
}

func readyMessage(s *v1alpha1.ImageSpec) string {
	if c := meta.FindStatusCondition(s.Status.Conditions, v1alpha1.ConditionReady); c != nil {
		return c.Reason + ": " + c.Message
	}
	return string(s.Status.Phase)
}

func printSummary(spec *v1alpha1.ImageSpec, job *v1alpha1.ImageSpecJob, kubectl, kubeconfig, logDir, controllerLog string) {
	digest := ""
	if i := strings.LastIndex(spec.Status.PinnedImage, "@"); i >= 0 {
		digest = spec.Status.PinnedImage[i+1:]
	}
	sbom, provenance := "none", "none"
	if sc := job.Status.SupplyChain; sc != nil {
		sbom = fmt.Sprintf("%s (%d packages)", sc.SBOM, sc.SBOMPackages)
		provenance = sc.Provenance
	}
	fmt.Printf(`
Built %s
  image:      %s
  digest:     %s
  pinned:     %s
  sbom:       %s
  provenance: %s

Look around:
  export KUBECONFIG=%s
  alias kubectl=%s
  kubectl get imagespecs,imagespecjobs
  kubectl describe imagespec %s
  kubectl describe imagespecjob %s
  kubectl get imagespecjob %s -o jsonpath='{.status.logTail}'
  kubectl get imagespecjob %s -o jsonpath='{.status.supplyChain}'
  less %s/%s/%s.log        # the whole build log (inprocess backend)
  less %s                  # the controller's log

Change the spec and watch the rebuild:
  kubectl patch imagespec %s --type=merge -p '{"spec":{"packages":{"pip":["imagespec-hello==1.0","imagespec-util"]}}}'
  kubectl get imagespecjobs -w
`,
		spec.Name, spec.Status.Image, digest, spec.Status.PinnedImage, sbom, provenance,
		kubeconfig, kubectl,
		spec.Name, spec.Status.JobName, spec.Status.JobName, spec.Status.JobName,
		logDir, spec.Namespace, spec.Status.JobName, controllerLog,
		spec.Name)
}

func runCmd(ctx context.Context, dir string, env []string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w", filepath.Base(name), strings.Join(args, " "), err)
	}
	return nil
}
