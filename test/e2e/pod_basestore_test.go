package e2e

import (
	"context"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/backend/buildahpod"
	"github.com/imagespec/imagespec-controller/test/framework/registry"
)

// The base store, on the real node and registry: the first build of the
// base in a namespace pulls the base's layers, and its pod's base-store
// container pushes the namespace's store (a digest in its cache
// repository); the maker's node then pulls the store in a short pod of
// its own, deleted when done. The next build of that namespace mounts the
// store, its node fetches none of the store again, and its pull stage
// fetches no base layer from the registry (the registry's access log over
// the stage's own start and end times; the first build's pull, seen the
// same way, fetched them); it builds an image on the very same base
// layers. Another namespace never mounts it: it makes a store of its own,
// in its own repository.
func testPodBaseStore(t *testing.T, p *PodEnv) {
	env := SharedEnv(t)
	baseLayers := env.Inspect(t, env.Registry, env.BaseImage).Layers
	pipSpec := func(pkg string) v1alpha1.ImageSpecSpec {
		return v1alpha1.ImageSpecSpec{BaseImage: env.BaseImage, Packages: v1alpha1.Packages{Pip: []string{pkg}}}
	}
	// build returns the job, its pod, the base store the pod's base-store
	// container reported (after waiting for it, if the pod has one) and
	// the build script's times.
	build := func(c *Controller, ns, name string, spec v1alpha1.ImageSpecSpec) (*v1alpha1.ImageSpecJob, *corev1.Pod, string, scriptTimes) {
		t.Helper()
		createSpec(t, c, ns, name, spec)
		job := WaitJob(t, c, ns, name, "", buildTimeout)
		requirePodPhase(t, job, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		podNS, podName := p.BuildPod(ns, job.Name)
		pod, msgs := podContainersDone(ctx, t, p, ns, job.Name)
		times, err := parseScriptTimes(msgs[buildahpod.ContainerName])
		if err != nil {
			t.Fatalf("pod %s: %v", podName, err)
		}
		store := ""
		for _, line := range strings.Split(msgs[buildahpod.BaseStoreContainerName], "\n") {
			if v, ok := strings.CutPrefix(line, "baseStore="); ok {
				store = v
			}
		}
		if _, made := msgs[buildahpod.BaseStoreContainerName]; made && store == "" {
			logs, _ := env.ControlPlane.Kubectl(ctx, "logs", "-n", podNS, podName, "-c", buildahpod.BaseStoreContainerName)
			t.Fatalf("pod %s made no base store: %q\n%s", podName, msgs[buildahpod.BaseStoreContainerName], logs)
		}
		return job, pod, store, times
	}
	// blobGets are the registry's GETs of any of layers' blobs between
	// from and to.
	blobGets := func(layers []string, from, to time.Time) (got []registry.Request) {
		for _, r := range env.Registry.Requests() {
			if r.Method != "GET" || r.Time.Before(from) || r.Time.After(to) {
				continue
			}
			for _, l := range layers {
				if strings.HasSuffix(r.Path, "/blobs/"+l) {
					got = append(got, r)
				}
			}
		}
		return got
	}
	// Base layer blobs the registry sent during a pull stage.
	baseFetches := func(times scriptTimes) (got []string) {
		for _, r := range blobGets(baseLayers, times.started.Add(-500*time.Millisecond), times.pulled.Add(500*time.Millisecond)) {
			got = append(got, path.Base(r.Path))
		}
		return got
	}
	mounted := func(pod *corev1.Pod) string {
		for _, v := range pod.Spec.Volumes {
			if v.Image != nil {
				return v.Image.Reference
			}
		}
		return ""
	}

	ns := NewNamespace(t)
	c, be := p.StartPodController(t, ns, ControllerConfig{}, nil)
	first, pod, store, times := build(c, ns, "store-first", pipSpec("e2e-hello==1.0"))
	repo := be.CacheRepository(first)
	if !strings.HasPrefix(store, repo+"@sha256:") || mounted(pod) != "" {
		t.Fatalf("first build: reported base store %q (want a digest in %s), mounted %q", store, repo, mounted(pod))
	}
	firstPull := times.pulled.Sub(times.started)
	if got := baseFetches(times); len(got) == 0 {
		t.Errorf("the first build's pull fetched none of the base layers %v: the check below could not fail", baseLayers)
	}

	// The maker's node pulls the store at once, in a pod of its own that
	// is deleted when done; the next build on the node pulls nothing of
	// it. The node's pulls are containerd's requests for the store's layers.
	storeLayers := env.Inspect(t, env.Registry, store).Layers
	nodePulls := func(from, to time.Time) (pulls []string, agents map[string]bool) {
		agents = map[string]bool{}
		for _, r := range blobGets(storeLayers, from, to) {
			agents[r.UserAgent] = true
			if strings.Contains(r.UserAgent, "containerd") {
				pulls = append(pulls, path.Base(r.Path))
			}
		}
		return pulls, agents
	}
	warmNode := waitStoreWarmPod(t, p, ns)
	if warmNode != pod.Spec.NodeName {
		t.Errorf("the warm pod ran on node %q, the maker on %q", warmNode, pod.Spec.NodeName)
	}
	if pulls, agents := nodePulls(times.started, time.Now()); len(pulls) == 0 {
		t.Errorf("the node did not pull the base store's layers %v after the maker (clients that fetched them: %v)", storeLayers, agents)
	}
	secondStart := time.Now()
	second, pod, again, times := build(c, ns, "store-second", pipSpec("e2e-extra"))
	if pulls, _ := nodePulls(secondStart, time.Now()); len(pulls) > 0 {
		t.Errorf("the node pulled the base store's layers %v again for the second build", pulls)
	}
	if mounted(pod) != store || again != "" {
		t.Fatalf("second build: mounted %q, want %q; reported %q, want none", mounted(pod), store, again)
	}
	if got := baseFetches(times); len(got) > 0 {
		t.Errorf("the second build's pull fetched base layers %v though its base store has them", got)
	}
	layers := env.Inspect(t, env.Registry, second.Status.Image).Layers
	if len(layers) <= len(baseLayers) || !slices.Equal(layers[:len(baseLayers)], baseLayers) {
		t.Errorf("image built on the base store has layers %v, want the base's %v first", layers, baseLayers)
	}
	t.Logf("pull stage: %.2f s with the base store, %.2f s without (the first build)", times.pulled.Sub(times.started).Seconds(), firstPull.Seconds())

	// Another tenant's build of the same base: not A's store.
	other := NewNamespace(t)
	c2, be2 := p.StartPodController(t, other, ControllerConfig{}, nil)
	third, pod, theirs, _ := build(c2, other, "store-first", pipSpec("e2e-hello==1.0"))
	if mounted(pod) != "" || !strings.HasPrefix(theirs, be2.CacheRepository(third)+"@sha256:") || strings.HasPrefix(theirs, repo+"@") {
		t.Errorf("namespace %s: mounted %q, made %q; want no mount and a store of its own", other, mounted(pod), theirs)
	}
	if be2.CacheRepository(third) == repo || !strings.Contains(be2.CacheRepository(third), buildahpod.CacheRepositoryComponent+"/"+other) {
		t.Errorf("namespace %s's cache repository %q", other, be2.CacheRepository(third))
	}
}

// podContainersDone waits until every container of job's build pod has
// terminated (a pod that makes its namespace's base store runs on after
// the job ends) and returns the pod and each container's termination
// message.
func podContainersDone(ctx context.Context, tb testing.TB, p *PodEnv, ns, job string) (*corev1.Pod, map[string]string) {
	tb.Helper()
	podNS, podName := p.BuildPod(ns, job)
	for {
		pod, err := p.Kube.CoreV1().Pods(podNS).Get(ctx, podName, metav1.GetOptions{})
		if err != nil {
			tb.Fatal(err)
		}
		msgs := map[string]string{}
		for _, cs := range pod.Status.ContainerStatuses {
			if cs.State.Terminated != nil {
				msgs[cs.Name] = cs.State.Terminated.Message
			}
		}
		if len(msgs) == len(pod.Spec.Containers) {
			return pod, msgs
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("pod %s/%s: containers %v still running: %v", podNS, podName, pod.Status.ContainerStatuses, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitStoreMade waits for the pod of job in ns to have made the
// namespace's base store, and then for the node's warm pod; it returns how
// long the warm pod took after the maker ended.
func waitStoreMade(tb testing.TB, p *PodEnv, ns, job string) time.Duration {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	podContainersDone(ctx, tb, p, ns, job)
	made := time.Now()
	waitStoreWarmPod(tb, p, ns)
	return time.Since(made)
}

// waitStoreWarmPod waits for the pod that has a node pull namespace ns's
// new base store to appear and then to be deleted, and returns its node.
// It logs the pod's course: created, started running and ended (the
// kubelet's times), and gone (as seen here).
func waitStoreWarmPod(t testing.TB, p *PodEnv, ns string) string {
	t.Helper()
	selector := buildahpod.StoreWarmLabel + "," + buildahpod.JobNamespaceLabel + "=" + ns
	waitFrom := time.Now()
	var last *corev1.Pod
	for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		pods, err := p.Kube.CoreV1().Pods(p.BuildNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case len(pods.Items) > 0:
			last = &pods.Items[0]
		case last != nil:
			var started, ended time.Time
			for _, cs := range last.Status.ContainerStatuses {
				if term := cs.State.Terminated; term != nil {
					started, ended = term.StartedAt.Time, term.FinishedAt.Time
				}
			}
			// The API's times have whole seconds.
			t.Logf("base store warm pod %s on node %s: waited from %s; created %s, container ran %s-%s, gone by %s",
				last.Name, last.Spec.NodeName, waitFrom.Format("15:04:05.000"), last.CreationTimestamp.Format("15:04:05"),
				started.Format("15:04:05"), ended.Format("15:04:05"), time.Now().Format("15:04:05.000"))
			return last.Spec.NodeName
		}
	}
	if last == nil {
		t.Fatalf("no base store warm pod (%s) in %s", selector, p.BuildNamespace)
	}
	t.Fatalf("the base store warm pod %s on node %s was not deleted", last.Name, last.Spec.NodeName)
	return ""
}
