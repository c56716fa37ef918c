package buildahpod

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	utilversion "k8s.io/apimachinery/pkg/util/version"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/backend"
	"github.com/imagespec/imagespec-controller/pkg/dockerfile"
)

// A base store is a read-only containers/storage store that holds one base
// image, packed as a one-layer image in the namespace's cache repository
// (<prefix>/imagespec_cache/<namespace>:base-<hash of the base reference>).
// The first build of a base in a namespace makes it, in a second container
// of its pod (baseStoreScript): once the build container is done (or ten
// minutes into the build), it pulls the base into a store of its own,
// packs it and pushes it, at the lowest CPU priority; the job does not
// wait for it. Later builds of that namespace and base mount it by digest
// as an image volume and list it in storage.conf's additionalimagestores:
// the kubelet pulls it once per node and keeps it, and buildah's pull of
// the base then copies no layer. The pull still asks the registry
// (--policy always), with the build's own credentials: a base tag that
// moved pulls its new layers as before, and a private base stays private
// to the specs that may pull it, so the store only ever saves work, never
// changes what is built or who may build it.
//
// Poisoning: a store is a namespace's own, like the layer cache (the
// repository is named by the controller and written only by that
// namespace's builds; tenants hold no registry credentials), it is mounted
// by the digest its maker reported, and only into builds of the same
// namespace. Its maker pulls the base into a store no build step uses and
// runs no build step itself; only pods in the build namespace, which
// tenants cannot touch, are believed.

// baseStoreDir is where a build pod mounts its namespace's base store.
const baseStoreDir = "/imagespec/base-store"

// baseStoreKey names one base store: a namespace's base image, as pods of
// one user namespace mode see it (idmapped volumes differ in ownership).
type baseStoreKey struct {
	namespace, base string
	userns          bool
}

func (b *Backend) baseStoreKey(job *v1alpha1.ImageSpecJob, userns bool) baseStoreKey {
	return baseStoreKey{namespace: job.Namespace, base: dockerfile.Normalize(backend.JobInputs(job)).BaseImage, userns: userns}
}

// baseStorePlan is what a new build pod does with its base store: mount
// one (mount, a digest reference), or make one (produce, the tag to push
// to), or neither.
type baseStorePlan struct {
	mount, produce string
}

// baseStorePlan decides for a new pod of job.
func (b *Backend) baseStorePlan(job *v1alpha1.ImageSpecJob, userns, imageVolumes bool) baseStorePlan {
	repo := b.CacheRepository(job)
	if b.opts.NoBaseStore || repo == "" || b.opts.BuildNamespace == "" || !userns || !imageVolumes || b.opts.StorageDriver != "overlay" || b.opts.Cache != nil {
		return baseStorePlan{}
	}
	key := b.baseStoreKey(job, userns)
	b.mu.Lock()
	defer b.mu.Unlock()
	if ref := b.baseStores[key]; ref != "" {
		return baseStorePlan{mount: ref}
	}
	// One build at a time makes it.
	if at, ok := b.storesMaking[key]; ok && time.Since(at) < baseStoreRetry {
		return baseStorePlan{}
	}
	b.storesMaking[key] = time.Now()
	sum := sha256.Sum256([]byte(key.base))
	return baseStorePlan{produce: repo + ":base-" + hex.EncodeToString(sum[:])[:20]}
}

// baseStoreRetry is how long a base store being made keeps other builds of
// its base from making one too; after it, one that never reported is
// taken for lost.
const baseStoreRetry = 10 * time.Minute

// learnBaseStore records the base store a pod's base-store container
// pushed (its digest reference, in the container's termination message),
// for the builds of the same namespace and base that follow. Only pods in
// the build namespace count, where the controller alone creates pods, and
// only a digest in the repository the pod was told to push to.
func (b *Backend) learnBaseStore(pod *corev1.Pod) {
	if b.opts.BuildNamespace == "" || pod.Namespace != b.opts.BuildNamespace {
		return
	}
	ctr, st := podContainer(pod, BaseStoreContainerName)
	if ctr == nil || st == nil || st.State.Terminated == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.storesSeen[pod.UID] {
		return
	}
	b.storesSeen[pod.UID] = true
	key := podStoreKey(pod)
	delete(b.storesMaking, key)
	t := parseTermination(st.State.Terminated.Message)
	push := envOf(ctr, "IMAGESPEC_BASE_STORE_PUSH")
	repo := push
	if i := strings.LastIndex(push, ":"); i > strings.LastIndex(push, "/") {
		repo = push[:i]
	}
	name, digest, ok := strings.Cut(t.baseStore, "@")
	switch {
	case t.baseStore == "":
		b.logf("Build pod %s/%s made no base store of %s: %s", pod.Namespace, pod.Name, key.base, t.err)
	case !ok || name != repo || !isDigest(digest) || key.namespace == "":
		b.logf("Ignoring base store %q reported by build pod %s/%s: not a digest in %s", t.baseStore, pod.Namespace, pod.Name, repo)
	case b.baseStores[key] != t.baseStore:
		b.baseStores[key] = t.baseStore
		b.logf("Base store of %s for namespace %s: %s", key.base, key.namespace, t.baseStore)
		// Not for the history's makers a restarted controller reads
		// again: their nodes have had their chance, and a burst of warm
		// pods at every restart would cost more than it saves.
		if time.Since(st.State.Terminated.FinishedAt.Time) < storeWarmWindow {
			if warm := b.storeWarmPod(pod, t.baseStore); warm != nil {
				b.queueWarm(warmTask{pod: warm, create: true})
			}
		}
	}
}

func podContainer(pod *corev1.Pod, name string) (*corev1.Container, *corev1.ContainerStatus) {
	var ctr *corev1.Container
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			ctr = &pod.Spec.Containers[i]
		}
	}
	for i := range pod.Status.ContainerStatuses {
		if pod.Status.ContainerStatuses[i].Name == name {
			return ctr, &pod.Status.ContainerStatuses[i]
		}
	}
	return ctr, nil
}

func envOf(c *corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// podStoreKey is the key of the base store pod mounts or makes: its job's
// namespace, the base image its build container was given (the normalized
// base, as baseStoreKey has it) and its user namespace mode.
func podStoreKey(pod *corev1.Pod) baseStoreKey {
	key := baseStoreKey{namespace: pod.Labels[JobNamespaceLabel], userns: pod.Spec.HostUsers != nil && !*pod.Spec.HostUsers}
	if ctr, _ := podContainer(pod, ContainerName); ctr != nil {
		key.base = envOf(ctr, "IMAGESPEC_BASE_IMAGE")
	}
	return key
}

// forgetBaseStore drops a base store a pod could not mount (removed from
// the registry, say): the next build of its base makes a new one.
func (b *Backend) forgetBaseStore(pod *corev1.Pod) {
	ref := podBaseStore(pod)
	if ref == "" {
		return
	}
	key := podStoreKey(pod)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.baseStores[key] == ref {
		delete(b.baseStores, key)
		b.logf("Base store %s could not be mounted; the next build of %s in namespace %s makes a new one", ref, key.base, key.namespace)
	}
}

// podBaseStore is the base store image pod mounts, or "".
func podBaseStore(pod *corev1.Pod) string {
	for _, v := range pod.Spec.Volumes {
		if v.Name == baseStoreVolume && v.Image != nil {
			return v.Image.Reference
		}
	}
	return ""
}

const baseStoreVolume = "base-store"

func isDigest(s string) bool {
	hexPart, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(hexPart) != 64 {
		return false
	}
	_, err := hex.DecodeString(hexPart)
	return err == nil
}

var (
	minImageVolumeKubelet    = utilversion.MustParseGeneric("1.35")
	minImageVolumeContainerd = utilversion.MustParseGeneric("2.2.9")
)

// versionAtLeast: s (a leading v and anything after the numbers allowed,
// as nodes report them) is min or later; false when s is no version.
func versionAtLeast(s string, min *utilversion.Version) bool {
	v, err := utilversion.ParseGeneric(s)
	return err == nil && v.AtLeast(min)
}

// imageVolumeRuntime says whether a node's kubelet and runtime mount image
// volumes into user-namespaced pods: Kubernetes >= 1.35 (image volumes on
// by default) and containerd >= 2.2.9, whose CRI idmaps them for such pods.
// Other runtimes are not known to, so they are left out.
func imageVolumeRuntime(n *corev1.Node) (bool, string) {
	if !versionAtLeast(n.Status.NodeInfo.KubeletVersion, minImageVolumeKubelet) {
		return false, fmt.Sprintf("node %s runs kubelet %s (image volumes need >= 1.35)", n.Name, n.Status.NodeInfo.KubeletVersion)
	}
	rt, ok := strings.CutPrefix(n.Status.NodeInfo.ContainerRuntimeVersion, "containerd://")
	if !ok || !versionAtLeast(rt, minImageVolumeContainerd) {
		return false, fmt.Sprintf("node %s runs %s (base stores need containerd >= 2.2.9, which idmaps image volumes for user-namespaced pods)", n.Name, n.Status.NodeInfo.ContainerRuntimeVersion)
	}
	return true, ""
}

// String is how the pod creation log line tells the plan.
func (p baseStorePlan) String() string {
	switch {
	case p.mount != "":
		return ", base store " + p.mount
	case p.produce != "":
		return ", makes base store " + p.produce
	}
	return ""
}
