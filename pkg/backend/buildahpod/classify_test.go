package buildahpod

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
)

func mustQuantity(s string) resource.Quantity { return resource.MustParse(s) }

func podIn(phase corev1.PodPhase, node string, state corev1.ContainerState) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "spec-1-build", Namespace: "team"},
		Spec: corev1.PodSpec{NodeName: node, ActiveDeadlineSeconds: ptrInt64(600),
			Containers: []corev1.Container{{Name: ContainerName, Image: "reg.local/builder:1"}}},
		Status: corev1.PodStatus{Phase: phase, ContainerStatuses: []corev1.ContainerStatus{{Name: ContainerName, State: state}}},
	}
}

func ptrInt64(v int64) *int64 { return &v }

func waiting(reason, msg string) corev1.ContainerState {
	return corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}
}

func terminated(code int32, reason, msg string) corev1.ContainerState {
	return corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Reason: reason, Message: msg,
		StartedAt: metav1.Now()}}
}

func TestClassify(t *testing.T) {
	running := corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}
	unschedulable := podIn(corev1.PodPending, "", corev1.ContainerState{})
	unschedulable.Status.ContainerStatuses = nil
	unschedulable.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
		Reason: "Unschedulable", Message: "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."}}
	evicted := podIn(corev1.PodFailed, "n1", terminated(137, "Error", ""))
	evicted.Status.Reason, evicted.Status.Message = "Evicted", "The node was low on resource: ephemeral-storage."
	deadline := podIn(corev1.PodFailed, "n1", terminated(137, "Error", ""))
	deadline.Status.Reason, deadline.Status.Message = "DeadlineExceeded", "Pod was active on the node longer than the specified deadline"
	draining := podIn(corev1.PodRunning, "n1", running)
	draining.DeletionTimestamp = &metav1.Time{}
	draining.Status.Conditions = []corev1.PodCondition{{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue,
		Reason: "EvictionByEvictionAPI", Message: "Eviction API: evicting"}}
	deletedByUser := podIn(corev1.PodRunning, "n1", running)
	deletedByUser.DeletionTimestamp = &metav1.Time{}
	rejected := podIn(corev1.PodFailed, "n1", corev1.ContainerState{})
	rejected.Status.ContainerStatuses = nil
	rejected.Status.Reason, rejected.Status.Message = "OutOfmemory", "Node didn't have enough resource: memory"
	oom := podIn(corev1.PodFailed, "n1", terminated(137, "OOMKilled", ""))
	oom.Spec.Containers[0].Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: mustQuantity("512Mi")}

	for _, c := range []struct {
		name      string
		pod       *corev1.Pod
		phase     v1alpha1.ImageSpecJobPhase
		reason    string
		msg       string // substring of the message; empty: no message at all
		digest    string
		baseDigst string
	}{
		{"created", podIn(corev1.PodPending, "", corev1.ContainerState{}), v1alpha1.JobPending, "", "Waiting for a node", "", ""},
		{"unschedulable", unschedulable, v1alpha1.JobPending, "", "didn't match Pod's node affinity", "", ""},
		{"container creating", podIn(corev1.PodPending, "n1", waiting("ContainerCreating", "")), v1alpha1.JobPending, "", "on node n1 (ContainerCreating)", "", ""},
		{"builder pull blip", podIn(corev1.PodPending, "n1", waiting("ErrImagePull", "dial tcp: i/o timeout")), v1alpha1.JobPending, "", "ErrImagePull", "", ""},
		{"builder not found", podIn(corev1.PodPending, "n1", waiting("ErrImagePull", `failed to pull "reg.local/builder:1": not found`)),
			v1alpha1.JobFailed, v1alpha1.ReasonBuilderImagePullFailed, "reg.local/builder:1", "", ""},
		{"builder unauthorized", podIn(corev1.PodPending, "n1", waiting("ErrImagePull", "401 Unauthorized")),
			v1alpha1.JobFailed, v1alpha1.ReasonBuilderImagePullFailed, "401", "", ""},
		{"builder backoff", podIn(corev1.PodPending, "n1", waiting("ImagePullBackOff", "Back-off pulling image")),
			v1alpha1.JobFailed, v1alpha1.ReasonBuilderImagePullFailed, "Back-off", "", ""},
		{"builder invalid name", podIn(corev1.PodPending, "n1", waiting("InvalidImageName", `couldn't parse image name "reg.local/Builder:1"`)),
			v1alpha1.JobFailed, v1alpha1.ReasonBuilderImagePullFailed, `couldn't parse image name "reg.local/Builder:1"`, "", ""},
		{"config error", podIn(corev1.PodPending, "n1", waiting("CreateContainerConfigError", "configmap not found")),
			v1alpha1.JobFailed, v1alpha1.ReasonBackendError, "configmap not found", "", ""},
		{"running", podIn(corev1.PodRunning, "n1", running), v1alpha1.JobRunning, v1alpha1.ReasonBuilding, "log: kubectl logs -n team spec-1-build", "", ""},
		// The kubelet reports the container terminated while the pod is
		// still Running: exit 0 with the pushed digest has succeeded;
		// anything else stays Running (never back to Pending) until the
		// pod's phase says what happened.
		{"pushed, pod not final yet", podIn(corev1.PodRunning, "n1", terminated(0, "Completed", "digest=sha256:aaa\nbaseDigest=sha256:bbb\n")),
			v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded, "", "sha256:aaa", "sha256:bbb"},
		{"exited 0 without digest, pod not final yet", podIn(corev1.PodRunning, "n1", terminated(0, "Completed", "")),
			v1alpha1.JobRunning, v1alpha1.ReasonBuilding, "exited (code 0)", "", ""},
		// The script named the stage: final without the pod's phase (a
		// base-store container may still run).
		{"stage failed, pod not final yet", podIn(corev1.PodRunning, "n1", terminated(exitBuild, "Error", "stage=build\nexit=1\nerror=E: boom\n")),
			v1alpha1.JobFailed, v1alpha1.ReasonBuildFailed, "Build failed (exit 1): E: boom", "", ""},
		// Killed or failed outside the script's stages: the pod's phase
		// tells an eviction or a deadline.
		{"failed, pod not final yet", podIn(corev1.PodRunning, "n1", terminated(137, "Error", "")),
			v1alpha1.JobRunning, v1alpha1.ReasonBuilding, "exited (code 137)", "", ""},
		{"succeeded", podIn(corev1.PodSucceeded, "n1", terminated(0, "Completed", "digest=sha256:aaa\nbaseDigest=sha256:bbb\n")),
			v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded, "", "sha256:aaa", "sha256:bbb"},
		{"succeeded without digest", podIn(corev1.PodSucceeded, "n1", terminated(0, "Completed", "")),
			v1alpha1.JobFailed, v1alpha1.ReasonBackendError, "no image digest", "", ""},
		{"base pull failed", podIn(corev1.PodFailed, "n1", terminated(exitPull, "Error",
			"stage=pull\nexit=125\nerror=Error: initializing source docker://reg.local/base:1: reading manifest 1 in reg.local/base: manifest unknown\n")),
			v1alpha1.JobFailed, v1alpha1.ReasonBaseImagePullFailed, "(exit 125): Error: initializing source", "", ""},
		{"build failed", podIn(corev1.PodFailed, "n1", terminated(exitBuild, "Error",
			"stage=build\nexit=1\nerror=error building at STEP \"RUN ...\": exit status 100\n")),
			v1alpha1.JobFailed, v1alpha1.ReasonBuildFailed, "exit status 100", "", ""},
		{"push unauthorized", podIn(corev1.PodFailed, "n1", terminated(exitPush, "Error",
			"stage=push\nexit=125\nerror=Error: pushing image: unauthorized: authentication required\n")),
			v1alpha1.JobFailed, v1alpha1.ReasonPushFailed, "unauthorized: authentication required", "", ""},
		{"push exit code, log as message", podIn(corev1.PodFailed, "n1", terminated(exitPush, "Error", "Copying blob\nError: writing blob: EOF")),
			v1alpha1.JobFailed, v1alpha1.ReasonPushFailed, "Error: writing blob: EOF", "", ""},
		{"build exit code only", podIn(corev1.PodFailed, "n1", terminated(exitBuild, "Error", "")),
			v1alpha1.JobFailed, v1alpha1.ReasonBuildFailed, "exit 12", "", ""},
		{"oom", oom, v1alpha1.JobFailed, v1alpha1.ReasonOOMKilled, "512Mi", "", ""},
		{"evicted", evicted, v1alpha1.JobFailed, v1alpha1.ReasonEvicted, "ephemeral-storage", "", ""},
		{"drained", draining, v1alpha1.JobFailed, v1alpha1.ReasonEvicted, "EvictionByEvictionAPI", "", ""},
		{"deleted outside", deletedByUser, v1alpha1.JobFailed, v1alpha1.ReasonBackendError, "being deleted", "", ""},
		{"deadline", deadline, v1alpha1.JobFailed, v1alpha1.ReasonTimeout, "activeDeadlineSeconds 600", "", ""},
		{"rejected by kubelet", rejected, v1alpha1.JobFailed, v1alpha1.ReasonBackendError, "OutOfmemory", "", ""},
		{"killed", podIn(corev1.PodFailed, "n1", terminated(137, "Error", "")), v1alpha1.JobFailed, v1alpha1.ReasonBackendError, "killed", "", ""},
		{"script setup", podIn(corev1.PodFailed, "n1", terminated(exitSetup, "Error", "stage=setup\nexit=2\nerror=IMAGESPEC_BASE_IMAGE is not set\n")),
			v1alpha1.JobFailed, v1alpha1.ReasonBackendError, "IMAGESPEC_BASE_IMAGE is not set", "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := classify(c.pod)
			msgOK := strings.Contains(st.Message, c.msg)
			if c.msg == "" {
				// The controller writes a succeeded job's message itself.
				msgOK = st.Message == ""
			}
			if st.Phase != c.phase || st.Reason != c.reason || !msgOK ||
				st.Digest != c.digest || st.BaseImageDigest != c.baseDigst || st.PodName != "spec-1-build" {
				t.Errorf("classify = %+v\nwant phase %s reason %q message containing %q digest %q base %q",
					st, c.phase, c.reason, c.msg, c.digest, c.baseDigst)
			}
			if (c.phase == v1alpha1.JobRunning || c.phase == v1alpha1.JobSucceeded) && st.StartTime == nil {
				t.Error("no start time")
			}
		})
	}
}
