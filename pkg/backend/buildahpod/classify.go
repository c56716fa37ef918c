package buildahpod

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/backend"
)

// terminationMessage is what the script writes to /dev/termination-log.
type terminationMessage struct {
	digest, baseDigest string
	// baseStore is the base store a base-store container pushed, as a
	// digest reference (its message has baseStore= and error= only).
	baseStore        string
	stage, exit, err string
}

func parseTermination(msg string) terminationMessage {
	var t terminationMessage
	for _, line := range strings.Split(msg, "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		switch k {
		case "digest":
			t.digest = strings.TrimSpace(v)
		case "baseDigest":
			t.baseDigest = strings.TrimSpace(v)
		case "baseStore":
			t.baseStore = strings.TrimSpace(v)
		case "stage":
			t.stage = strings.TrimSpace(v)
		case "exit":
			t.exit = strings.TrimSpace(v)
		case "error":
			t.err = strings.TrimSpace(v)
		}
	}
	if !strings.HasPrefix(t.digest, "sha256:") {
		t.digest = ""
	}
	if !strings.HasPrefix(t.baseDigest, "sha256:") {
		t.baseDigest = ""
	}
	return t
}

// Waiting reasons that mean the builder image will not come. ErrImagePull
// alone may be a blip (the kubelet retries), so it fails the build only
// when its message says the image or access to it is missing.
var fatalWaiting = map[string]bool{
	"ImagePullBackOff":  true,
	"InvalidImageName":  true,
	"ErrImageNeverPull": true,
}

var definitivePullErrors = []string{"not found", "unauthorized", "forbidden", "denied", "manifest unknown", "no such host"}

// classify maps a build pod to a backend status. It never reads the log;
// the caller adds the tail to final states.
func classify(pod *corev1.Pod) backend.Status {
	st := backend.Status{PodName: pod.Name, Phase: v1alpha1.JobPending}
	_, ctr := podContainer(pod, ContainerName)
	if ctr != nil && ctr.State.Running != nil {
		t := ctr.State.Running.StartedAt
		st.StartTime = &t
	} else if ctr != nil && ctr.State.Terminated != nil && !ctr.State.Terminated.StartedAt.IsZero() {
		t := ctr.State.Terminated.StartedAt
		st.StartTime = &t
	}

	// The kubelet reports the builder container terminated about a second
	// before the pod's phase. A builder that exited 0 with the pushed
	// digest in its termination message has succeeded whatever the pod
	// does next (restartPolicy Never; a base-store container may still run,
	// or fail, after it), so that report ends the job. Failures wait for the
	// pod's phase, which tells an eviction or a deadline from a failed step.
	var t terminationMessage
	if ctr != nil && ctr.State.Terminated != nil {
		t = parseTermination(ctr.State.Terminated.Message)
	}
	exitedWithDigest := ctr != nil && ctr.State.Terminated != nil && ctr.State.Terminated.ExitCode == 0 && t.digest != ""
	switch {
	case pod.Status.Phase == corev1.PodSucceeded || exitedWithDigest:
		if t.digest == "" {
			return failed(st, v1alpha1.ReasonBackendError, fmt.Sprintf("Build pod %s succeeded but reported no image digest in its termination message", pod.Name))
		}
		st.Phase = v1alpha1.JobSucceeded
		st.Reason = v1alpha1.ReasonSucceeded
		st.Digest = t.digest
		st.BaseImageDigest = t.baseDigest
		return st
	case pod.Status.Phase == corev1.PodFailed:
		return classifyFailed(pod, ctr, st)
	case ctr != nil && ctr.State.Terminated != nil && t.stage != "" &&
		ctr.State.Terminated.ExitCode >= exitSetup && ctr.State.Terminated.ExitCode <= exitPush:
		// The script said which stage failed: no eviction or deadline
		// (they kill the container), so the pod's phase adds nothing, and a
		// base-store container may keep the pod running a while.
		return classifyFailed(pod, ctr, st)
	}

	if pod.DeletionTimestamp != nil {
		// Deleted by someone else than Cancel (which ends the job first):
		// a drain, an eviction or a user. The build will not finish.
		if c := podCondition(pod, corev1.DisruptionTarget); c != nil && c.Status == corev1.ConditionTrue {
			return failed(st, v1alpha1.ReasonEvicted, fmt.Sprintf("Build pod %s was evicted (%s): %s", pod.Name, c.Reason, c.Message))
		}
		return failed(st, v1alpha1.ReasonBackendError, fmt.Sprintf("Build pod %s is being deleted before the build finished", pod.Name))
	}

	if ctr != nil && ctr.State.Waiting != nil {
		w := ctr.State.Waiting
		if fatalWaiting[w.Reason] || (w.Reason == "ErrImagePull" && containsAny(strings.ToLower(w.Message), definitivePullErrors)) {
			what := "the builder image " + pod.Spec.Containers[0].Image
			if ref := podBaseStore(pod); ref != "" && strings.Contains(w.Message, ref) {
				what = "the base store " + ref + " (the next build of this base makes a new one)"
			}
			return failed(st, v1alpha1.ReasonBuilderImagePullFailed, fmt.Sprintf("Cannot pull %s (%s): %s", what, w.Reason, w.Message))
		}
		if w.Reason == "CreateContainerConfigError" {
			return failed(st, v1alpha1.ReasonBackendError, fmt.Sprintf("Cannot start build pod %s (%s): %s", pod.Name, w.Reason, w.Message))
		}
	}

	switch {
	case ctr != nil && ctr.State.Running != nil:
		st.Phase = v1alpha1.JobRunning
		st.Reason = v1alpha1.ReasonBuilding
		st.Message = fmt.Sprintf("Building in pod %s on node %s; log: kubectl logs -n %s %s", pod.Name, pod.Spec.NodeName, pod.Namespace, pod.Name)
	case ctr != nil && ctr.State.Terminated != nil:
		// The kubelet reports the container terminated a moment before
		// the pod's phase: the build ran and is finishing, so the job
		// stays Running until the pod is final (never back to Pending).
		st.Phase = v1alpha1.JobRunning
		st.Reason = v1alpha1.ReasonBuilding
		st.Message = fmt.Sprintf("Build container in pod %s exited (code %d); waiting for the pod's final phase", pod.Name, ctr.State.Terminated.ExitCode)
	case pod.Spec.NodeName == "":
		msg := "Waiting for a node to run build pod " + pod.Name
		if c := podCondition(pod, corev1.PodScheduled); c != nil && c.Status == corev1.ConditionFalse && c.Message != "" {
			msg += ": " + c.Message
		}
		st.Message = msg
	default:
		msg := fmt.Sprintf("Starting build pod %s on node %s", pod.Name, pod.Spec.NodeName)
		if ctr != nil && ctr.State.Waiting != nil && ctr.State.Waiting.Reason != "" {
			msg += " (" + ctr.State.Waiting.Reason
			if ctr.State.Waiting.Message != "" {
				msg += ": " + ctr.State.Waiting.Message
			}
			msg += ")"
		}
		st.Message = msg
	}
	return st
}

func classifyFailed(pod *corev1.Pod, ctr *corev1.ContainerStatus, st backend.Status) backend.Status {
	switch pod.Status.Reason {
	case "Evicted":
		return failed(st, v1alpha1.ReasonEvicted, fmt.Sprintf("Build pod %s was evicted: %s", pod.Name, pod.Status.Message))
	case "DeadlineExceeded":
		return failed(st, v1alpha1.ReasonTimeout, fmt.Sprintf("Build pod %s ran past its deadline (activeDeadlineSeconds %d): %s",
			pod.Name, valueOr(pod.Spec.ActiveDeadlineSeconds), pod.Status.Message))
	}
	if ctr == nil || ctr.State.Terminated == nil {
		// Rejected by the kubelet before the container ran (node
		// affinity, resources, admission).
		return failed(st, v1alpha1.ReasonBackendError, fmt.Sprintf("Build pod %s failed before the build ran: %s %s",
			pod.Name, pod.Status.Reason, pod.Status.Message))
	}
	term := ctr.State.Terminated
	if term.Reason == "OOMKilled" {
		return failed(st, v1alpha1.ReasonOOMKilled, fmt.Sprintf("Build pod %s ran out of memory (limit %s)",
			pod.Name, memoryLimit(pod)))
	}
	t := parseTermination(term.Message)
	stage := t.stage
	if stage == "" {
		stage = stageOfExit(term.ExitCode)
	}
	detail := t.err
	if detail == "" {
		detail = lastLine(term.Message)
	}
	exit := t.exit
	if exit == "" {
		exit = fmt.Sprint(term.ExitCode)
	}
	switch stage {
	case "pull":
		return failed(st, v1alpha1.ReasonBaseImagePullFailed, fmt.Sprintf("Pulling the base image failed (exit %s): %s", exit, detail))
	case "build":
		return failed(st, v1alpha1.ReasonBuildFailed, fmt.Sprintf("Build failed (exit %s): %s", exit, detail))
	case "push":
		return failed(st, v1alpha1.ReasonPushFailed, fmt.Sprintf("Pushing the image failed (exit %s): %s", exit, detail))
	}
	if term.ExitCode == 137 || term.Signal != 0 {
		return failed(st, v1alpha1.ReasonBackendError, fmt.Sprintf("Build pod %s was killed (exit %d, %s)", pod.Name, term.ExitCode, term.Reason))
	}
	return failed(st, v1alpha1.ReasonBackendError, fmt.Sprintf("Build pod %s failed (exit %d, %s): %s", pod.Name, term.ExitCode, term.Reason, detail))
}

func stageOfExit(code int32) string {
	switch code {
	case exitSetup:
		return "setup"
	case exitPull:
		return "pull"
	case exitBuild:
		return "build"
	case exitPush:
		return "push"
	}
	return ""
}

func failed(st backend.Status, reason, msg string) backend.Status {
	st.Phase = v1alpha1.JobFailed
	st.Reason = reason
	st.Message = msg
	return st
}

func podCondition(pod *corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == t {
			return &pod.Status.Conditions[i]
		}
	}
	return nil
}

func memoryLimit(pod *corev1.Pod) string {
	if len(pod.Spec.Containers) > 0 {
		if q, ok := pod.Spec.Containers[0].Resources.Limits[corev1.ResourceMemory]; ok {
			return q.String()
		}
	}
	return "none set: the node ran out"
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	l := strings.TrimSpace(lines[len(lines)-1])
	if len(l) > 1000 {
		l = l[:1000] + "..."
	}
	return l
}

func valueOr(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}
