package buildahpod

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
)

func versionedNode(name, kubelet, runtime string) *corev1.Node {
	n := node(name, ptr.To(true), nil)
	n.Status.NodeInfo.KubeletVersion = kubelet
	n.Status.NodeInfo.ContainerRuntimeVersion = runtime
	return n
}

func TestImageVolumeRuntime(t *testing.T) {
	for _, c := range []struct {
		kubelet, runtime string
		want             bool
	}{
		{"v1.37.2", "containerd://2.4.2", true},
		{"v1.35.0", "containerd://2.2.9", true},
		{"v1.35.0", "containerd://v2.3.0-rc.1", true},
		{"v1.34.3", "containerd://2.4.2", false},
		{"v1.37.2", "containerd://2.2.8", false},
		{"v1.37.2", "containerd://1.7.28", false},
		{"v1.37.2", "cri-o://1.35.0", false},
		{"v1.37.2", "", false},
	} {
		got, why := imageVolumeRuntime(versionedNode("n", c.kubelet, c.runtime))
		if got != c.want || (got == (why != "")) {
			t.Errorf("kubelet %s, runtime %q: %t (%q), want %t", c.kubelet, c.runtime, got, why, c.want)
		}
	}
}

func storeJob(name, namespace string) *v1alpha1.ImageSpecJob {
	job := testJob(name)
	job.Namespace = namespace
	job.Spec.RepoPrefix = "registry.example.com"
	return job
}

// storeBackend is a backend with opts (builds in "builds" unless they
// say) on a fake API server holding nodes, ready for base stores.
func storeBackend(t *testing.T, opts Options, nodes ...runtime.Object) *Backend {
	t.Helper()
	if opts.BuildNamespace == "" {
		opts.BuildNamespace = "builds"
	}
	if err := opts.setDefaults(); err != nil {
		t.Fatal(err)
	}
	return &Backend{opts: opts, kube: fake.NewClientset(nodes...), baseStores: map[baseStoreKey]string{},
		storesMaking: map[baseStoreKey]time.Time{}, storesSeen: map[types.UID]bool{}, warmTasks: make(chan warmTask, 4)}
}

// storeReported is pod after its base-store container ended with msg.
func storeReported(pod *corev1.Pod, msg string) *corev1.Pod {
	pod = pod.DeepCopy()
	pod.UID = types.UID("pod-" + pod.Name + "-" + msg)
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{
		{Name: ContainerName, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Message: "digest=sha256:1\n"}}},
		{Name: BaseStoreContainerName, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Message: msg}}},
	}
	return pod
}

// TestBaseStorePlan: the first build of a base in a namespace makes its
// store in a second container, the only one with DAC_OVERRIDE, and no
// other build makes it meanwhile; once that container reported the store's
// digest, later builds of that namespace and base mount it by digest,
// pulled with the push Secret; other namespaces, other bases and pods of
// another user namespace mode do not; a report outside the build namespace
// or the namespace's cache repository is ignored; a maker that failed lets
// the next build try; a store a pod could not mount is forgotten.
func TestBaseStorePlan(t *testing.T) {
	b := storeBackend(t, Options{}, versionedNode("a", "v1.37.2", "containerd://2.4.2"))
	userns, imageVolumes, err := b.userNamespace(context.Background())
	if err != nil || !userns || !imageVolumes {
		t.Fatalf("survey: user namespace %t, image volumes %t, %v", userns, imageVolumes, err)
	}
	first := storeJob("one-abc123", "team")
	plan := b.baseStorePlan(first, true, true)
	if plan.mount != "" || !strings.HasPrefix(plan.produce, "registry.example.com/imagespec_cache/team:base-") {
		t.Fatalf("first build: %+v, want to make a store in the namespace's cache repository", plan)
	}
	if p := b.baseStorePlan(storeJob("two-abc123", "team"), true, true); p != (baseStorePlan{}) {
		t.Errorf("a build while the store is being made: %+v, want neither", p)
	}
	maker, err := b.pod(first, true, plan)
	if err != nil {
		t.Fatal(err)
	}
	build, storeCtr := maker.Spec.Containers[0], maker.Spec.Containers[len(maker.Spec.Containers)-1]
	if len(maker.Spec.Containers) != 2 || storeCtr.Name != BaseStoreContainerName ||
		!slices.Contains(storeCtr.SecurityContext.Capabilities.Add, "DAC_OVERRIDE") || envOf(&storeCtr, "IMAGESPEC_BASE_STORE_PUSH") != plan.produce {
		t.Fatalf("making pod: containers %+v", maker.Spec.Containers)
	}
	if slices.Contains(build.SecurityContext.Capabilities.Add, "DAC_OVERRIDE") || envOf(&build, "IMAGESPEC_BASE_STORE_PUSH") != "" {
		t.Errorf("the build container: capabilities %v, env %v", build.SecurityContext.Capabilities.Add, build.Env)
	}
	if envOf(&build, "IMAGESPEC_BUILD_DONE_MARKER") == "" || envOf(&build, "IMAGESPEC_BUILD_DONE_MARKER") != envOf(&storeCtr, "IMAGESPEC_BUILD_DONE_MARKER") {
		t.Errorf("the containers share no build-done marker: %v / %v", build.Env, storeCtr.Env)
	}
	if maker.Annotations["kubectl.kubernetes.io/default-container"] != ContainerName || podBaseStore(maker) != "" {
		t.Errorf("making pod: annotations %v, mounts %q", maker.Annotations, podBaseStore(maker))
	}

	digest := "sha256:" + strings.Repeat("ab", 32)
	store := "registry.example.com/imagespec_cache/team@" + digest
	elsewhere := maker.DeepCopy()
	elsewhere.Namespace = "team"
	for what, pod := range map[string]*corev1.Pod{
		"another namespace's repository":    storeReported(maker, "baseStore=registry.example.com/imagespec_cache/other@"+digest+"\n"),
		"a tag, not a digest":               storeReported(maker, "baseStore=registry.example.com/imagespec_cache/team:base-1\n"),
		"another registry":                  storeReported(maker, "baseStore=evil.example.com/imagespec_cache/team@"+digest+"\n"),
		"a pod outside the build namespace": storeReported(elsewhere, "baseStore="+store+"\n"),
	} {
		b.learnBaseStore(pod)
		b.mu.Lock()
		delete(b.storesMaking, b.baseStoreKey(first, true))
		b.mu.Unlock()
		if p := b.baseStorePlan(storeJob("two-abc123", "team"), true, true); p.mount != "" {
			t.Errorf("%s: a later build mounts %q", what, p.mount)
		}
	}
	// A maker that failed: the next build makes it.
	b.learnBaseStore(storeReported(maker, "baseStore=\nerror=pushing: denied\n"))
	if p := b.baseStorePlan(storeJob("two-abc123", "team"), true, true); p.produce == "" {
		t.Errorf("after a failed maker: %+v, want to make it again", p)
	}
	made := storeReported(maker, "baseStore="+store+"\nerror=\n")
	b.learnBaseStore(made)
	// A deleted pod's entry goes, and its deletion teaches nothing again.
	b.podDeleted(made)
	if b.storesSeen[made.UID] {
		t.Error("a deleted maker pod stays in storesSeen")
	}

	second := storeJob("three-abc123", "team")
	plan = b.baseStorePlan(second, true, true)
	if plan.mount != store || plan.produce != "" {
		t.Fatalf("a later build: %+v, want to mount %s", plan, store)
	}
	pod, err := b.pod(second, true, plan)
	if err != nil {
		t.Fatal(err)
	}
	ctr := pod.Spec.Containers[0]
	if len(pod.Spec.Containers) != 1 || podBaseStore(pod) != store || envOf(&ctr, "IMAGESPEC_BASE_STORE") != baseStoreDir ||
		!slices.Contains(pod.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: second.Spec.PushSecret}) {
		t.Errorf("mounting pod: %d containers, store %q, env %v, pull secrets %v", len(pod.Spec.Containers), podBaseStore(pod), ctr.Env, pod.Spec.ImagePullSecrets)
	}
	if slices.Contains(ctr.SecurityContext.Capabilities.Add, "DAC_OVERRIDE") {
		t.Error("a mounting pod gets DAC_OVERRIDE")
	}
	for _, v := range pod.Spec.Volumes {
		if v.Name == baseStoreVolume && v.Image.PullPolicy != corev1.PullIfNotPresent {
			t.Errorf("store volume pull policy %q", v.Image.PullPolicy)
		}
	}

	otherBase := storeJob("four-abc123", "team")
	otherBase.Spec.BaseImage = "registry.example.com/base/debian:12"
	for what, p := range map[string]baseStorePlan{
		"another namespace": b.baseStorePlan(storeJob("two-abc123", "tenant-b"), true, true),
		"another base":      b.baseStorePlan(otherBase, true, true),
		"host users":        b.baseStorePlan(second, false, true),
		"no image volumes":  b.baseStorePlan(second, true, false),
		"off":               storeBackend(t, Options{NoBaseStore: true}).baseStorePlan(second, true, true),
		"vfs":               storeBackend(t, Options{StorageDriver: "vfs"}).baseStorePlan(second, true, true),
		"no registry cache": storeBackend(t, Options{NoRegistryCache: true}).baseStorePlan(second, true, true),
		"a PVC store":       storeBackend(t, Options{Cache: &CacheVolume{PVC: "c"}}).baseStorePlan(second, true, true),
		"after a restart":   storeBackend(t, Options{}).baseStorePlan(second, true, true),
	} {
		if p.mount != "" {
			t.Errorf("%s: mounts %q", what, p.mount)
		}
	}
	noBuildNS := &Backend{opts: Options{}, baseStores: map[baseStoreKey]string{}, storesMaking: map[baseStoreKey]time.Time{}}
	if err := noBuildNS.opts.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if p := noBuildNS.baseStorePlan(second, true, true); p != (baseStorePlan{}) {
		t.Errorf("without a build namespace: %+v", p)
	}

	// The store went missing: the pod cannot start; the next build makes it anew.
	b.forgetBaseStore(pod)
	if p := b.baseStorePlan(storeJob("five-abc123", "team"), true, true); p.mount != "" || p.produce == "" {
		t.Errorf("after a failed mount: %+v, want to make the store again", p)
	}

	// Nodes without image volume support for user-namespaced pods.
	old := storeBackend(t, Options{}, versionedNode("a", "v1.37.2", "containerd://2.4.2"), versionedNode("b", "v1.34.1", "containerd://2.4.2"))
	if userns, imageVolumes, err := old.userNamespace(context.Background()); err != nil || !userns || imageVolumes {
		t.Errorf("one node on kubelet 1.34: user namespace %t, image volumes %t, %v", userns, imageVolumes, err)
	}
}

// A base store the kubelet cannot pull fails the pod's start; the status
// names the store, not the builder image.
func TestClassifyMissingBaseStore(t *testing.T) {
	ref := "registry.example.com/imagespec_cache/team@sha256:" + strings.Repeat("cd", 32)
	pod := podIn(corev1.PodPending, "node-a", waiting("ImagePullBackOff", `Back-off pulling image "`+ref+`"`))
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: baseStoreVolume,
		VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{Reference: ref}}})
	st := classify(pod)
	if st.Phase != v1alpha1.JobFailed || st.Reason != v1alpha1.ReasonBuilderImagePullFailed ||
		!strings.Contains(st.Message, "the base store "+ref) || strings.Contains(st.Message, "builder image") {
		t.Errorf("classify: %s %s %q", st.Phase, st.Reason, st.Message)
	}
}
