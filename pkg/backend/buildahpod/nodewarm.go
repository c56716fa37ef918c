package buildahpod

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/imagespec/imagespec-controller/pkg/names"
)

// A node that has just made a base store does not hold it: the maker
// pushed it from inside its pod, so the node's runtime has never seen the
// store's image, and the next build of the base on that node would wait
// for the kubelet to pull it (2.4-6.2 s on the test node, most of a
// rebuild). Right after the maker reports the store, a short pod on the
// same node mounts it and runs nothing: the kubelet pulls the store while
// no build waits, and keeps it for the builds that follow (the scheduler's
// ImageLocality also counts image volumes, so they prefer such nodes).
// The pod is deleted once it has ended.

// StoreWarmLabel marks the pods that have a node pull a base store.
const StoreWarmLabel = "primehub.io/base-store-warm"

// storeWarmDeadline bounds a warm pod that cannot pull the store.
const storeWarmDeadline = 10 * 60

// storeWarmWindow is how recently a maker must have ended for its node to
// be warmed.
const storeWarmWindow = 5 * time.Minute

// storeWarmPod is the pod that has maker's node pull the base store it
// made (store, a digest reference), or nil when the maker ran on no node.
func (b *Backend) storeWarmPod(maker *corev1.Pod, store string) *corev1.Pod {
	if maker.Spec.NodeName == "" {
		return nil
	}
	o := &b.opts
	sum := sha256.Sum256([]byte(maker.Spec.NodeName + "\x00" + store))
	// The kubelet pulls the store with the push credentials, as it does
	// for the builds that mount it.
	pullSecrets := append([]corev1.LocalObjectReference(nil), o.Pod.ImagePullSecrets...)
	for _, v := range maker.Spec.Volumes {
		if v.Name == pushAuthVolume && v.Secret != nil {
			pullSecrets = append(pullSecrets, corev1.LocalObjectReference{Name: v.Secret.SecretName})
		}
	}
	var hostUsers *bool
	if maker.Spec.HostUsers != nil {
		hostUsers = ptr.To(*maker.Spec.HostUsers)
	}
	small := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:      "imagespec-base-store-" + hex.EncodeToString(sum[:])[:16],
			Namespace: maker.Namespace,
			Labels: map[string]string{
				names.ManagedByLabel: names.ComponentName,
				StoreWarmLabel:       "true",
				// The label a controller of one namespace selects its pods by.
				JobNamespaceLabel: maker.Labels[JobNamespaceLabel],
			},
		},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			AutomountServiceAccountToken:  ptr.To(false),
			EnableServiceLinks:            ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To[int64](0),
			ActiveDeadlineSeconds:         ptr.To[int64](storeWarmDeadline),
			ServiceAccountName:            o.Pod.ServiceAccountName,
			PriorityClassName:             o.Pod.PriorityClassName,
			Tolerations:                   o.Pod.Tolerations,
			// The maker's node, not the scheduler's pick: that node is the
			// one a store-less build just ran on.
			NodeName:         maker.Spec.NodeName,
			HostUsers:        hostUsers,
			ImagePullSecrets: pullSecrets,
			Containers: []corev1.Container{{
				Name: "warm",
				// On the node already: the maker ran it.
				Image:           o.BuilderImage,
				ImagePullPolicy: corev1.PullIfNotPresent,
				Command:         []string{"/bin/sh", "-c", ":"},
				VolumeMounts:    []corev1.VolumeMount{{Name: baseStoreVolume, MountPath: baseStoreDir, ReadOnly: true}},
				Resources:       corev1.ResourceRequirements{Requests: small, Limits: small},
				SecurityContext: &corev1.SecurityContext{
					RunAsNonRoot:             ptr.To(true),
					RunAsUser:                ptr.To[int64](65534),
					RunAsGroup:               ptr.To[int64](65534),
					AllowPrivilegeEscalation: ptr.To(false),
					ReadOnlyRootFilesystem:   ptr.To(true),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
					SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
				},
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
			}},
			Volumes: []corev1.Volume{{Name: baseStoreVolume, VolumeSource: corev1.VolumeSource{
				Image: &corev1.ImageVolumeSource{Reference: store, PullPolicy: corev1.PullIfNotPresent}}}},
		},
	}
}

// warmTask is one call of the warm worker: create pod, or delete it.
type warmTask struct {
	pod    *corev1.Pod
	create bool
}

// queueWarm hands a task to the warm worker without blocking an informer
// handler; when the worker is far behind, the task is dropped (a warm pod
// only saves time; an ended one left behind is deleted at its next event).
func (b *Backend) queueWarm(t warmTask) {
	select {
	case b.warmTasks <- t:
	default:
		b.logf("Skipping base store warm pod %s/%s: %d tasks queued", t.pod.Namespace, t.pod.Name, cap(b.warmTasks))
	}
}

// warmNodes creates and deletes warm pods until ctx is done.
func (b *Backend) warmNodes(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case t := <-b.warmTasks:
			pods := b.kube.CoreV1().Pods(t.pod.Namespace)
			if t.create {
				_, err := pods.Create(ctx, t.pod, metav1.CreateOptions{})
				switch {
				case err == nil:
					b.logf("Node %s pulls base store %s (pod %s/%s)", t.pod.Spec.NodeName, podBaseStore(t.pod), t.pod.Namespace, t.pod.Name)
				case !apierrors.IsAlreadyExists(err):
					b.logf("Creating base store warm pod %s/%s: %v", t.pod.Namespace, t.pod.Name, err)
				}
				continue
			}
			err := pods.Delete(ctx, t.pod.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &t.pod.UID}})
			if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				b.logf("Deleting base store warm pod %s/%s: %v", t.pod.Namespace, t.pod.Name, err)
			}
		}
	}
}

// warmPodChanged deletes a warm pod that has ended, saying whether its
// node now holds the store.
func (b *Backend) warmPodChanged(pod *corev1.Pod) {
	if pod.DeletionTimestamp != nil || (pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed) {
		return
	}
	if pod.Status.Phase == corev1.PodFailed {
		b.logf("Node %s did not pull base store %s: %s %s", pod.Spec.NodeName, podBaseStore(pod), pod.Status.Reason, pod.Status.Message)
	}
	b.queueWarm(warmTask{pod: pod})
}
