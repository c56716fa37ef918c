package buildahpod

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagespec/imagespec-controller/pkg/names"
)

// TestStoreWarmPod: once a maker pod reports its base store, a pod on the
// maker's node mounts the store (pulled with the push Secret, in the
// maker's user namespace mode) and runs nothing, with no privilege; the
// worker creates it once, and deletes it when it has ended. A maker on no
// node, and one that ended long ago (read again after a restart), warm
// nothing.
func TestStoreWarmPod(t *testing.T) {
	b := storeBackend(t, Options{}, versionedNode("node-a", "v1.37.2", "containerd://2.4.2"))
	kube := b.kube
	job := storeJob("one-abc123", "team")
	plan := b.baseStorePlan(job, true, true)
	maker, err := b.pod(job, true, plan)
	if err != nil {
		t.Fatal(err)
	}
	store := "registry.example.com/imagespec_cache/team@sha256:" + strings.Repeat("ab", 32)

	onNoNode := storeReported(maker, "baseStore="+store+"\n")
	onNoNode.Status.ContainerStatuses[1].State.Terminated.FinishedAt = metav1.Now()
	b.learnBaseStore(onNoNode)
	if len(b.warmTasks) != 0 {
		t.Fatalf("a maker on no node queued %d warm tasks", len(b.warmTasks))
	}
	delete(b.baseStores, b.baseStoreKey(job, true))

	maker.Spec.NodeName = "node-a"
	reported := storeReported(maker, "baseStore="+store+"\n")
	reported.UID = "maker-on-node-a-long-ago"
	reported.Status.ContainerStatuses[1].State.Terminated.FinishedAt = metav1.NewTime(time.Now().Add(-time.Hour))
	b.learnBaseStore(reported)
	if len(b.warmTasks) != 0 || b.baseStores[b.baseStoreKey(job, true)] != store {
		t.Fatalf("a maker that ended an hour ago: %d warm tasks queued, store %q learned", len(b.warmTasks), b.baseStores[b.baseStoreKey(job, true)])
	}
	delete(b.baseStores, b.baseStoreKey(job, true))

	reported = storeReported(maker, "baseStore="+store+"\n")
	reported.UID = "maker-on-node-a"
	reported.Status.ContainerStatuses[1].State.Terminated.FinishedAt = metav1.Now()
	b.learnBaseStore(reported)
	b.learnBaseStore(reported)
	if len(b.warmTasks) != 1 {
		t.Fatalf("%d warm tasks queued, want 1", len(b.warmTasks))
	}
	task := <-b.warmTasks
	warm := task.pod
	ctr := warm.Spec.Containers[0]
	sc := ctr.SecurityContext
	switch {
	case !task.create || warm.Namespace != "builds" || warm.Spec.NodeName != "node-a":
		t.Errorf("task create %t, pod %s/%s on node %q", task.create, warm.Namespace, warm.Name, warm.Spec.NodeName)
	case podBaseStore(warm) != store || warm.Spec.HostUsers == nil || *warm.Spec.HostUsers:
		t.Errorf("mounts %q, host users %v; want %s in a user namespace", podBaseStore(warm), warm.Spec.HostUsers, store)
	case !slices.Contains(warm.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: job.Spec.PushSecret}):
		t.Errorf("pull secrets %v, want the push Secret %s", warm.Spec.ImagePullSecrets, job.Spec.PushSecret)
	case warm.Labels[StoreWarmLabel] == "" || warm.Labels[names.ManagedByLabel] != names.ComponentName || warm.Labels[JobNamespaceLabel] != "team":
		t.Errorf("labels %v", warm.Labels)
	case len(warm.Spec.Containers) != 1 || len(ctr.Env) != 0 || sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot ||
		len(sc.Capabilities.Add) != 0 || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Errorf("container %+v", ctr)
	case len(warm.Spec.Volumes) != 1 || *warm.Spec.AutomountServiceAccountToken:
		t.Errorf("volumes %v, service account token %v", warm.Spec.Volumes, *warm.Spec.AutomountServiceAccountToken)
	}
	if _, ok := jobKeyOf(warm); ok {
		t.Error("a warm pod names a job")
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.warmNodes(ctx)
	b.warmTasks <- task
	created := waitFor(t, func() *corev1.Pod {
		pod, err := kube.CoreV1().Pods("builds").Get(ctx, warm.Name, metav1.GetOptions{})
		if err != nil {
			return nil
		}
		return pod
	})
	running := created.DeepCopy()
	running.Status.Phase = corev1.PodRunning
	b.podChanged(running)
	time.Sleep(100 * time.Millisecond)
	if _, err := kube.CoreV1().Pods("builds").Get(ctx, warm.Name, metav1.GetOptions{}); err != nil {
		t.Fatalf("a running warm pod: %v", err)
	}
	ended := created.DeepCopy()
	ended.Status.Phase = corev1.PodSucceeded
	b.podChanged(ended)
	waitFor(t, func() *corev1.Pod {
		if _, err := kube.CoreV1().Pods("builds").Get(ctx, warm.Name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return ended
		}
		return nil
	})
}

func waitFor(t *testing.T, get func() *corev1.Pod) *corev1.Pod {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if pod := get(); pod != nil {
			return pod
		}
	}
	t.Fatal("timed out")
	return nil
}
