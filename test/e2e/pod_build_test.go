package e2e

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/app"
	"github.com/imagespec/imagespec-controller/pkg/backend/buildahpod"
	"github.com/imagespec/imagespec-controller/pkg/controller"
	"github.com/imagespec/imagespec-controller/test/framework/secretscan"
)

// TestBuildahPod runs the buildahpod backend against a real node: the
// subtests share one node, since starting one changes host-wide settings
// that only one node at a time may hold.
func TestBuildahPod(t *testing.T) {
	p := StartPodEnv(t)
	t.Run("BuildAptAndPip", func(t *testing.T) { testPodBuildAptAndPip(t, p) })
	t.Run("UnknownAptPackage", func(t *testing.T) { testPodUnknownAptPackage(t, p) })
	t.Run("WrongPushPassword", func(t *testing.T) { testPodWrongPushPassword(t, p) })
	t.Run("CancelMidBuild", func(t *testing.T) { testPodCancelMidBuild(t, p) })
	t.Run("SpecUpdateSupersedes", func(t *testing.T) { testPodSpecUpdateSupersedes(t, p) })
	t.Run("BuilderImageMissing", func(t *testing.T) { testPodBuilderImageMissing(t, p) })
	t.Run("NoSchedulableNode", func(t *testing.T) { testPodNoSchedulableNode(t, p) })
	t.Run("HostNetwork", func(t *testing.T) { testPodHostNetwork(t, p) })
	t.Run("UserNamespace", func(t *testing.T) { testPodUserNamespace(t, p) })
}

// An apt package and a pip package on a base with a non-root user, built
// in a pod: pushed with the reported digest, the base's digest recorded,
// the user restored, the log readable with kubectl logs, and no credential
// in the pod, its ConfigMap, events, status or logs.
func testPodBuildAptAndPip(t *testing.T, p *PodEnv) {
	env := SharedEnv(t)
	ns := NewNamespace(t)
	c, _ := p.StartPodController(t, ns, ControllerConfig{}, nil)
	createSpec(t, c, ns, "tools", baseSpec(env))
	job := WaitJob(t, c, ns, "tools", "", buildTimeout)
	requirePodPhase(t, job, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)

	info := env.Inspect(t, env.Registry, job.Status.Image)
	if info.Digest != job.Status.Digest || !strings.HasPrefix(info.Digest, "sha256:") {
		t.Errorf("registry has digest %s, status says %s", info.Digest, job.Status.Digest)
	}
	if job.Status.BaseImageDigest != env.BaseDigest {
		t.Errorf("status.baseImageDigest %q, want the pushed base %q", job.Status.BaseImageDigest, env.BaseDigest)
	}
	if info.User != "app" {
		t.Errorf("config user %q, want the base image's user app", info.User)
	}
	podNS, podName := p.BuildPod(ns, job.Name)
	if job.Status.PodName != podName {
		t.Errorf("status.podName %q, want %q", job.Status.PodName, podName)
	}
	if !strings.Contains(job.Status.LogTail, "imagespec: pushed "+job.Spec.TargetImage+"@"+job.Status.Digest) {
		t.Errorf("log tail does not end with the push:\n%s", job.Status.LogTail)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	logs, err := env.ControlPlane.Kubectl(ctx, "logs", "-n", podNS, podName)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"imagespec: pulling base image", "STEP", "e2e-hello", "imagespec: pushed"} {
		if !strings.Contains(string(logs), want) {
			t.Errorf("kubectl logs lacks %q:\n%s", want, logs)
		}
	}
	pod, err := p.Kube.CoreV1().Pods(podNS).Get(ctx, podName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	requireUserNamespace(t, pod)
	// In the build namespace the job cannot own its pod: labels name it.
	if ref := metav1.GetControllerOf(pod); ref != nil || pod.Labels[buildahpod.JobUIDLabel] != string(job.UID) ||
		pod.Labels[buildahpod.JobNamespaceLabel] != ns || pod.Annotations[buildahpod.JobNameAnnotation] != job.Name || podNS != p.BuildNamespace {
		t.Errorf("pod %s/%s: controller %+v, labels %v, annotations %v; want no owner, job %s/%s (uid %s) named by labels and annotation", podNS, pod.Name, ref, pod.Labels, pod.Annotations, ns, job.Name, job.UID)
	}
	// apt, pip and the push went over the pod network, as shipped.
	if _, subnet, _ := net.ParseCIDR(p.Node.PodSubnet); pod.Spec.HostNetwork || subnet == nil || !subnet.Contains(net.ParseIP(pod.Status.PodIP)) {
		t.Errorf("build pod hostNetwork %v, IP %q; want an address of the pod network %s", pod.Spec.HostNetwork, pod.Status.PodIP, p.Node.PodSubnet)
	}
	if pod.Labels[controller.ManagedByLabel] != controller.ComponentName || pod.Labels[controller.ImageSpecLabel] != "tools" {
		t.Errorf("pod labels %v", pod.Labels)
	}
	cm, err := p.Kube.CoreV1().ConfigMaps(podNS).Get(ctx, podName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(cm.Data["Dockerfile.user"], `"e2e-hello==1.0"`) {
		t.Errorf("ConfigMap Dockerfile.user:\n%s", cm.Data["Dockerfile.user"])
	}
	objects := map[string]string{}
	for name, obj := range map[string]any{"pod": pod, "configmap": cm} {
		if objects[name], err = secretscan.JSON(obj); err != nil {
			t.Fatal(err)
		}
	}
	for _, where := range secretscan.Find(objects, RegistryCredential(env.Registry)) {
		t.Errorf("the registry credentials appear in the %s", where)
	}
	env.ScanSecrets(t, c, ns, nil, RegistryCredential(env.Registry))

	out := env.RunInImage(t, env.Registry, job.Status.Image,
		`id -un; jq --version; python3 -c 'import e2e_hello; print(e2e_hello.greet(), e2e_hello.__version__)'`)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 3 || lines[len(lines)-3] != "app" || !strings.HasPrefix(lines[len(lines)-2], "jq-") ||
		lines[len(lines)-1] != "hello from e2e 1.0" {
		t.Errorf("running the image printed:\n%s\nwant app, jq-<version>, hello from e2e 1.0", out)
	}
}

// apt refuses an unknown package: the build stage fails, and the log tail
// says which package.
func testPodUnknownAptPackage(t *testing.T, p *PodEnv) {
	env := SharedEnv(t)
	ns := NewNamespace(t)
	c, _ := p.StartPodController(t, ns, ControllerConfig{}, nil)
	const missing = "imagespec-no-such-package"
	createSpec(t, c, ns, "broken", v1alpha1.ImageSpecSpec{
		BaseImage: env.BaseImage,
		Packages:  v1alpha1.Packages{Apt: []string{missing}},
	})
	job := WaitJob(t, c, ns, "broken", "", buildTimeout)
	requirePodPhase(t, job, v1alpha1.JobFailed, v1alpha1.ReasonBuildFailed)
	if !strings.Contains(job.Status.LogTail, "Unable to locate package "+missing) {
		t.Errorf("log tail does not name the package:\n%s", job.Status.LogTail)
	}
	if TagExists(t, env.Registry, job.Spec.TargetImage) {
		t.Errorf("%s was pushed by a failed build", job.Spec.TargetImage)
	}
}

// The base is pulled with the ImageSpec's pull Secret, the push uses the
// controller's push Secret with a wrong password: the push stage fails
// with the registry's refusal, and neither password shows anywhere.
func testPodWrongPushPassword(t *testing.T, p *PodEnv) {
	env := SharedEnv(t)
	ns := NewNamespace(t)
	const wrong = "wrong-password-0123456789"
	settings, err := WriteSettings(filepath.Join(env.WorkDir, ns+".env"), env.Registry.Host, env.Registry.Username, wrong, env.Registry.Host+"/e2e")
	if err != nil {
		t.Fatal(err)
	}
	c, _ := p.StartPodController(t, ns, ControllerConfig{Settings: &settings}, nil)
	p.createDockerSecret(t, ns, "base-pull", env.Registry.AuthFile)
	spec := v1alpha1.ImageSpecSpec{BaseImage: env.BaseImage, PullSecret: "base-pull"}
	createSpec(t, c, ns, "denied", spec)
	job := WaitJob(t, c, ns, "denied", "", buildTimeout)
	requirePodPhase(t, job, v1alpha1.JobFailed, v1alpha1.ReasonPushFailed)
	if msg := strings.ToLower(job.Status.Message); !strings.Contains(msg, "unauthorized") && !strings.Contains(msg, "authentication required") {
		t.Errorf("message %q does not say the registry refused the credentials", job.Status.Message)
	}
	if TagExists(t, env.Registry, job.Spec.TargetImage) {
		t.Errorf("%s exists after a refused push", job.Spec.TargetImage)
	}
	env.ScanSecrets(t, c, ns, nil, secretscan.Credential{User: env.Registry.Username, Password: wrong}, RegistryCredential(env.Registry))
}

// runningJob waits for the ImageSpec's job (other than notJob) to run
// while index holds its pip step.
func runningJob(t *testing.T, c *Controller, ns, spec, notJob string, index *hangingIndex) *v1alpha1.ImageSpecJob {
	t.Helper()
	select {
	case <-index.hit:
	case <-time.After(buildTimeout):
		t.Fatal("the pip step never reached the index")
	}
	var job *v1alpha1.ImageSpecJob
	WaitFor(t, time.Minute, func(ctx context.Context) (bool, string) {
		is, err := c.Clients.Client.PrimehubV1alpha1().ImageSpecs(ns).Get(ctx, spec, metav1.GetOptions{})
		if err != nil || is.Status.JobName == "" || is.Status.JobName == notJob {
			return false, "no job yet"
		}
		job, err = c.Clients.Client.PrimehubV1alpha1().ImageSpecJobs(ns).Get(ctx, is.Status.JobName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return job.Status.Phase == v1alpha1.JobRunning, string(job.Status.Phase) + " " + job.Status.Message
	})
	return job
}

func hangingIndexOptions(index *hangingIndex) func(*app.Options) {
	return func(o *app.Options) {
		o.Controller.Sources.PipIndexURL = "http://" + index.addr + "/simple/"
		o.Controller.Sources.PipTrustedHosts = []string{index.addr}
	}
}

func requirePodGone(t *testing.T, p *PodEnv, ns, job string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	podNS, name := p.BuildPod(ns, job)
	if _, err := p.Kube.CoreV1().Pods(podNS).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("pod %s/%s after its job stopped: %v", podNS, name, err)
	}
	if _, err := p.Kube.CoreV1().ConfigMaps(podNS).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("ConfigMap %s/%s after its job stopped: %v", podNS, name, err)
	}
}

// waitPodGone waits up to a minute for the build pod and its ConfigMap to
// be gone.
func waitPodGone(t *testing.T, p *PodEnv, ns, job string) {
	t.Helper()
	podNS, name := p.BuildPod(ns, job)
	WaitFor(t, time.Minute, func(ctx context.Context) (bool, string) {
		_, errPod := p.Kube.CoreV1().Pods(podNS).Get(ctx, name, metav1.GetOptions{})
		_, errCM := p.Kube.CoreV1().ConfigMaps(podNS).Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(errPod) && apierrors.IsNotFound(errCM), fmt.Sprintf("pod %s: %v; ConfigMap: %v", name, errPod, errCM)
	})
}

// spec.cancel while pip runs in the pod: the job is Cancelled only once the
// pod is gone, and nothing is pushed, even after the index answers.
func testPodCancelMidBuild(t *testing.T, p *PodEnv) {
	env := SharedEnv(t)
	ns := NewNamespace(t)
	index := newHangingIndex(t)
	c, _ := p.StartPodController(t, ns, ControllerConfig{Tweak: hangingIndexOptions(index)}, nil)
	createSpec(t, c, ns, "slow", v1alpha1.ImageSpecSpec{
		BaseImage: env.BaseImage,
		Packages:  v1alpha1.Packages{Pip: []string{"e2e-hello"}},
	})
	job := runningJob(t, c, ns, "slow", "", index)
	jobs := c.Clients.Client.PrimehubV1alpha1().ImageSpecJobs(ns)
	start := time.Now()
	cancelJob(t, jobs, job.Name)
	job = WaitJob(t, c, ns, "slow", "", buildTimeout)
	t.Logf("cancel took %s from spec.cancel to phase %s", time.Since(start).Round(time.Millisecond), job.Status.Phase)
	if job.Status.Phase != v1alpha1.JobCancelled || job.Status.Reason != v1alpha1.ReasonCancelled {
		t.Fatalf("job %s: %s/%s, want Cancelled: %s", job.Name, job.Status.Phase, job.Status.Reason, job.Status.Message)
	}
	requirePodGone(t, p, ns, job.Name)
	// Had the build survived, the released index would let it finish.
	index.Release()
	time.Sleep(3 * time.Second)
	if TagExists(t, env.Registry, job.Spec.TargetImage) {
		t.Errorf("%s was pushed by a cancelled build", job.Spec.TargetImage)
	}
}

// Editing the ImageSpec while its pod builds stops that pod (Superseded)
// and builds the new spec in a new pod.
func testPodSpecUpdateSupersedes(t *testing.T, p *PodEnv) {
	env := SharedEnv(t)
	ns := NewNamespace(t)
	index := newHangingIndex(t)
	c, _ := p.StartPodController(t, ns, ControllerConfig{Tweak: hangingIndexOptions(index)}, nil)
	createSpec(t, c, ns, "edit", v1alpha1.ImageSpecSpec{
		BaseImage: env.BaseImage,
		Packages:  v1alpha1.Packages{Pip: []string{"e2e-hello"}},
	})
	first := runningJob(t, c, ns, "edit", "", index)
	updateSpec(t, c, ns, "edit", func(s *v1alpha1.ImageSpecSpec) { s.Packages = v1alpha1.Packages{Apt: []string{aptPackage}} })
	second := WaitJob(t, c, ns, "edit", first.Name, buildTimeout)
	requirePodPhase(t, second, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	old, err := c.Clients.Client.PrimehubV1alpha1().ImageSpecJobs(ns).Get(ctx, first.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if old.Status.Phase != v1alpha1.JobCancelled || old.Status.Reason != v1alpha1.ReasonSuperseded {
		t.Errorf("first job %s: %s/%s, want Cancelled/Superseded", old.Name, old.Status.Phase, old.Status.Reason)
	}
	requirePodGone(t, p, ns, first.Name)
	if TagExists(t, env.Registry, first.Spec.TargetImage) {
		t.Errorf("%s was pushed by a superseded build", first.Spec.TargetImage)
	}
}

// A builder image the registry does not have fails the job with
// BuilderImagePullFailed long before the build timeout.
func testPodBuilderImageMissing(t *testing.T, p *PodEnv) {
	env := SharedEnv(t)
	ns := NewNamespace(t)
	c, _ := p.StartPodController(t, ns, ControllerConfig{Tweak: func(o *app.Options) {
		o.Controller.BuildTimeout = 30 * time.Minute
	}}, func(o *buildahpod.Options) {
		o.BuilderImage = env.Registry.Host + "/imagespec/no-such-builder:1"
	})
	createSpec(t, c, ns, "nobuilder", v1alpha1.ImageSpecSpec{BaseImage: env.BaseImage})
	// Well under the 30-minute timeout: a Timeout reason would mean the
	// backend waited for it.
	job := WaitJob(t, c, ns, "nobuilder", "", 5*time.Minute)
	requirePodPhase(t, job, v1alpha1.JobFailed, v1alpha1.ReasonBuilderImagePullFailed)
	t.Logf("failed %s after creation: %s", job.Status.FinishTime.Sub(job.CreationTimestamp.Time), job.Status.Message)
	if !strings.Contains(job.Status.Message, "no-such-builder") {
		t.Errorf("message %q does not name the builder image", job.Status.Message)
	}
}

// No node matches the builder's nodeSelector: the pod stays Pending, the
// job says why, and it times out counting the time Pending.
func testPodNoSchedulableNode(t *testing.T, p *PodEnv) {
	env := SharedEnv(t)
	ns := NewNamespace(t)
	c, _ := p.StartPodController(t, ns, ControllerConfig{Tweak: func(o *app.Options) {
		o.Controller.BuildTimeout = 20 * time.Second
	}}, func(o *buildahpod.Options) {
		o.Pod.NodeSelector = map[string]string{"imagespec.test/pool": "none"}
	})
	createSpec(t, c, ns, "nowhere", v1alpha1.ImageSpecSpec{BaseImage: env.BaseImage})
	sawWaiting := false
	WaitFor(t, 2*time.Minute, func(ctx context.Context) (bool, string) {
		is, err := c.Clients.Client.PrimehubV1alpha1().ImageSpecs(ns).Get(ctx, "nowhere", metav1.GetOptions{})
		if err != nil || is.Status.JobName == "" {
			return false, "no job yet"
		}
		j, err := c.Clients.Client.PrimehubV1alpha1().ImageSpecJobs(ns).Get(ctx, is.Status.JobName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if j.Status.Phase == v1alpha1.JobPending && strings.Contains(j.Status.Message, "Waiting for a node") {
			sawWaiting = true
		}
		return j.Status.Phase.IsFinal(), string(j.Status.Phase) + " " + j.Status.Message
	})
	job := WaitJob(t, c, ns, "nowhere", "", time.Minute)
	requirePodPhase(t, job, v1alpha1.JobFailed, v1alpha1.ReasonTimeout)
	if !sawWaiting {
		t.Error("the job never said it was waiting for a node")
	}
	if job.Status.StartTime != nil || !strings.Contains(job.Status.Message, "never started running") {
		t.Errorf("start time %v, message %q: the time Pending must count", job.Status.StartTime, job.Status.Message)
	}
	requirePodGone(t, p, ns, job.Name)
}

// --builder-host-network stays a working option: the build pod runs in
// the node's network namespace and builds and pushes the same (in a build
// namespace at Pod Security privileged).
func testPodHostNetwork(t *testing.T, p *PodEnv) {
	env := SharedEnv(t)
	ns := NewNamespace(t)
	// Pod Security baseline, as shipped, refuses host namespaces.
	p = p.privileged(t)
	c, _ := p.StartPodController(t, ns, ControllerConfig{}, func(o *buildahpod.Options) { o.HostNetwork = true })
	createSpec(t, c, ns, "hostnet", v1alpha1.ImageSpecSpec{
		BaseImage: env.BaseImage,
		Packages:  v1alpha1.Packages{Pip: []string{"e2e-hello==1.0"}},
	})
	job := WaitJob(t, c, ns, "hostnet", "", buildTimeout)
	requirePodPhase(t, job, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
	if info := env.Inspect(t, env.Registry, job.Status.Image); info.Digest != job.Status.Digest {
		t.Errorf("registry has digest %s, status says %s", info.Digest, job.Status.Digest)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	podNS, podName := p.BuildPod(ns, job.Name)
	pod, err := p.Kube.CoreV1().Pods(podNS).Get(ctx, podName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !pod.Spec.HostNetwork {
		t.Errorf("build pod hostNetwork false, want true")
	}
}

// requireUserNamespace fails unless the pod runs in a user namespace of its
// own: on the test node, which supports them, the default does.
func requireUserNamespace(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	if hu := pod.Spec.HostUsers; hu == nil || *hu {
		t.Errorf("build pod %s/%s: hostUsers %v, want false (the node supports user namespaces)", pod.Namespace, pod.Name, hu)
	}
}
