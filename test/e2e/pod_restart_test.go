package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/backend/buildahpod"
	"github.com/imagespec/imagespec-controller/pkg/controller"
)

// TestBuildahPodLifecycle covers what outlives one build: a controller
// restart mid-build, the pod's own deadline, and a layer cache kept on the
// node between builds. Its subtests share one node.
func TestBuildahPodLifecycle(t *testing.T) {
	p := StartPodEnv(t)
	t.Run("RestartKeepsThePod", func(t *testing.T) { testPodRestartKeepsThePod(t, p) })
	t.Run("ActiveDeadline", func(t *testing.T) { testPodActiveDeadline(t, p) })
	t.Run("HostPathCache", func(t *testing.T) { testPodHostPathCache(t, p) })
	t.Run("RegistryCache", func(t *testing.T) { testPodRegistryCache(t, p) })
	t.Run("BaseStore", func(t *testing.T) { testPodBaseStore(t, p) })
	t.Run("OutOfMemory", func(t *testing.T) { testPodOutOfMemory(t, p) })
}

// A controller that restarts while the pod builds picks the same pod up
// (its name comes from the job) instead of starting a second build.
func testPodRestartKeepsThePod(t *testing.T, p *PodEnv) {
	env := SharedEnv(t)
	ns := NewNamespace(t)
	index := newHangingIndex(t)
	cfg := ControllerConfig{Tweak: hangingIndexOptions(index)}
	first, _ := p.StartPodController(t, ns, cfg, nil)
	createSpec(t, first, ns, "restart", v1alpha1.ImageSpecSpec{
		BaseImage: env.BaseImage,
		Packages:  v1alpha1.Packages{Pip: []string{"e2e-hello"}},
	})
	job := runningJob(t, first, ns, "restart", "", index)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	podNS, podName := p.BuildPod(ns, job.Name)
	pod, err := p.Kube.CoreV1().Pods(podNS).Get(ctx, podName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	uid := pod.UID
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}

	second, _ := p.StartPodController(t, ns, cfg, nil)
	index.Release()
	done := WaitJob(t, second, ns, "restart", "", buildTimeout)
	requirePodPhase(t, done, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
	if done.Name != job.Name {
		t.Errorf("the restart made job %s; want %s finished", done.Name, job.Name)
	}
	pods, err := p.Kube.CoreV1().Pods(podNS).List(ctx, metav1.ListOptions{
		LabelSelector: controller.ManagedSelector() + "," + buildahpod.JobNamespaceLabel + "=" + ns + ",!" + buildahpod.StoreWarmLabel})
	if err != nil {
		t.Fatal(err)
	}
	var uids []types.UID
	for _, p := range pods.Items {
		uids = append(uids, p.UID)
	}
	if len(uids) != 1 || uids[0] != uid {
		t.Errorf("pods after the restart: %v, want only %s", uids, uid)
	}
	if !TagExists(t, env.Registry, done.Spec.TargetImage) {
		t.Errorf("%s was not pushed", done.Spec.TargetImage)
	}
}

// The pod's activeDeadlineSeconds (the backend's build timeout) stops a
// build the kubelet runs too long, and the job says Timeout.
func testPodActiveDeadline(t *testing.T, p *PodEnv) {
	env := SharedEnv(t)
	ns := NewNamespace(t)
	index := newHangingIndex(t)
	c, _ := p.StartPodController(t, ns, ControllerConfig{Tweak: hangingIndexOptions(index)}, func(o *buildahpod.Options) {
		o.BuildTimeout = 10 * time.Second
	})
	createSpec(t, c, ns, "deadline", v1alpha1.ImageSpecSpec{
		BaseImage: env.BaseImage,
		Packages:  v1alpha1.Packages{Pip: []string{"e2e-hello"}},
	})
	job := WaitJob(t, c, ns, "deadline", "", buildTimeout)
	requirePodPhase(t, job, v1alpha1.JobFailed, v1alpha1.ReasonTimeout)
	if !strings.Contains(job.Status.Message, "activeDeadlineSeconds 10") {
		t.Errorf("message %q does not come from the pod's deadline", job.Status.Message)
	}
	if TagExists(t, env.Registry, job.Spec.TargetImage) {
		t.Errorf("%s was pushed by a build past its deadline", job.Spec.TargetImage)
	}
}

// With a host path cache, the base image and the apt layer of one build
// are there for the next: adding a pip package reuses the apt step.
func testPodHostPathCache(t *testing.T, p *PodEnv) {
	// Pod Security baseline, as shipped, refuses hostPath volumes.
	p = p.privileged(t)
	env := SharedEnv(t)
	ns := NewNamespace(t)
	dir := t.TempDir()
	c, _ := p.StartPodController(t, ns, ControllerConfig{}, func(o *buildahpod.Options) {
		o.Cache = &buildahpod.CacheVolume{HostPath: dir}
	})
	createSpec(t, c, ns, "cached", baseSpec(env))
	first := WaitJob(t, c, ns, "cached", "", buildTimeout)
	requirePodPhase(t, first, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
	updateSpec(t, c, ns, "cached", func(s *v1alpha1.ImageSpecSpec) { s.Packages.Pip = append(s.Packages.Pip, "e2e-extra") })
	second := WaitJob(t, c, ns, "cached", first.Name, buildTimeout)
	requirePodPhase(t, second, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	secondNS, secondPod := p.BuildPod(ns, second.Name)
	logs, err := env.ControlPlane.Kubectl(ctx, "logs", "-n", secondNS, secondPod)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(string(logs), "Using cache") < 2 {
		t.Errorf("the second build took fewer than 2 steps (USER, apt) from the cache:\n%s", logs)
	}
	a := env.Inspect(t, env.Registry, first.Status.Image)
	b := env.Inspect(t, env.Registry, second.Status.Image)
	base := env.Inspect(t, env.Registry, env.BaseImage)
	n := len(base.Layers)
	if len(a.Layers) != n+2 || len(b.Layers) != n+2 || a.Layers[n] != b.Layers[n] {
		t.Errorf("apt layer not reused: first %v, second %v (base has %d)", a.Layers, b.Layers, n)
	}
}

// The layer cache in the registry, as shipped: a second revision built in
// a fresh pod (an empty store) pulls the apt step's layer from its
// namespace's cache repository instead of running apt again; another
// namespace building the same spec has a cache of its own and runs every
// step.
func testPodRegistryCache(t *testing.T, p *PodEnv) {
	env := SharedEnv(t)
	buildLog := func(job *v1alpha1.ImageSpecJob) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		podNS, pod := p.BuildPod(job.Namespace, job.Name)
		logs, err := env.ControlPlane.Kubectl(ctx, "logs", "-n", podNS, pod)
		if err != nil {
			t.Fatal(err)
		}
		return string(logs)
	}
	const pulled = "Cache pulled from remote"

	ns := NewNamespace(t)
	c, be := p.StartPodController(t, ns, ControllerConfig{}, nil)
	start := time.Now()
	createSpec(t, c, ns, "layered", baseSpec(env))
	first := WaitJob(t, c, ns, "layered", "", buildTimeout)
	cold := time.Since(start)
	requirePodPhase(t, first, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
	repo := be.CacheRepository(first)
	if want := env.Settings.Registry.RepoPrefix + "/" + buildahpod.CacheRepositoryComponent + "/" + ns; repo != want {
		t.Fatalf("cache repository %q, want %q", repo, want)
	}
	if strings.Contains(buildLog(first), pulled) {
		t.Errorf("the first build of a new namespace found a cache")
	}

	start = time.Now()
	updateSpec(t, c, ns, "layered", func(s *v1alpha1.ImageSpecSpec) { s.Packages.Pip = append(s.Packages.Pip, "e2e-extra") })
	second := WaitJob(t, c, ns, "layered", first.Name, buildTimeout)
	warm := time.Since(start)
	requirePodPhase(t, second, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
	if logs := buildLog(second); !strings.Contains(logs, pulled+" "+repo) {
		t.Errorf("the second build pulled no step from %s:\n%s", repo, logs)
	}
	a := env.Inspect(t, env.Registry, first.Status.Image)
	b := env.Inspect(t, env.Registry, second.Status.Image)
	n := len(env.Inspect(t, env.Registry, env.BaseImage).Layers)
	if len(a.Layers) <= n || len(b.Layers) <= n || a.Layers[n] != b.Layers[n] {
		t.Errorf("apt layer not reused: first %v, second %v (base has %d)", a.Layers, b.Layers, n)
	}
	t.Logf("cold build %.1f s, rebuild after one pip change in a fresh pod %.1f s (%.2fx), spec write to final status", cold.Seconds(), warm.Seconds(), warm.Seconds()/cold.Seconds())

	// Another tenant, the same spec: its own cache, empty.
	other := NewNamespace(t)
	c2, _ := p.StartPodController(t, other, ControllerConfig{}, nil)
	createSpec(t, c2, other, "layered", baseSpec(env))
	third := WaitJob(t, c2, other, "layered", "", buildTimeout)
	requirePodPhase(t, third, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
	if logs := buildLog(third); strings.Contains(logs, pulled) {
		t.Errorf("namespace %s's build used a cache of another namespace:\n%s", other, logs)
	}
}

// A memory limit the build cannot live with: the job fails with OOMKilled,
// whichever process of the pod the kernel killed.
func testPodOutOfMemory(t *testing.T, p *PodEnv) {
	env := SharedEnv(t)
	ns := NewNamespace(t)
	c, _ := p.StartPodController(t, ns, ControllerConfig{}, func(o *buildahpod.Options) {
		o.Pod.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("12Mi")}
	})
	createSpec(t, c, ns, "small", baseSpec(env))
	job := WaitJob(t, c, ns, "small", "", buildTimeout)
	requirePodPhase(t, job, v1alpha1.JobFailed, v1alpha1.ReasonOOMKilled)
	if !strings.Contains(job.Status.Message, "12Mi") {
		t.Errorf("message %q does not name the limit", job.Status.Message)
	}
}
