package buildahpod

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	klabels "k8s.io/apimachinery/pkg/labels"
)

// UserNamespaceMode says whether build pods run with hostUsers: false, in a
// user namespace of their own whose root is an unprivileged user on the
// node (Kubernetes user namespaces, KEP-127).
type UserNamespaceMode string

const (
	// UserNamespacesAuto (the default) uses a user namespace whenever every
	// node a build pod may land on reports that its container runtime
	// supports one, and the pod's other settings allow it.
	UserNamespacesAuto UserNamespaceMode = "auto"
	// UserNamespacesOn always asks for one: pods on a node without support
	// fail to start.
	UserNamespacesOn UserNamespaceMode = "on"
	// UserNamespacesOff never asks for one: for clusters older than
	// Kubernetes 1.33, containerd 2.0 or Linux 6.3.
	UserNamespacesOff UserNamespaceMode = "off"
)

// ParseUserNamespaceMode reads the flag's value.
func ParseUserNamespaceMode(s string) (UserNamespaceMode, error) {
	switch m := UserNamespaceMode(s); m {
	case UserNamespacesAuto, UserNamespacesOn, UserNamespacesOff:
		return m, nil
	case "":
		return UserNamespacesAuto, nil
	case "true":
		return UserNamespacesOn, nil
	case "false":
		return UserNamespacesOff, nil
	}
	return "", fmt.Errorf("user namespaces %q: use auto, on or off", s)
}

// nodeSurveyTTL bounds how long one look at the nodes decides for auto
// mode: nodes join and upgrade rarely, and builds must not list nodes each.
const nodeSurveyTTL = time.Minute

// nodeSurvey caches the answer of the last look at the nodes.
type nodeSurvey struct {
	mu        sync.Mutex
	at        time.Time
	supported bool
	warned    bool
	// imageVolumes: every node also mounts image volumes into
	// user-namespaced pods (see imageVolumeRuntime), for base stores.
	imageVolumes bool
	ivWarned     bool
}

// userNamespaceConflict is why the pod's other settings exclude a user
// namespace, or "".
func (o *Options) userNamespaceConflict() string {
	switch {
	case o.Privileged:
		return "a privileged builder"
	case o.HostNetwork:
		return "the host network"
	case o.Cache != nil && o.Cache.HostPath != "":
		// Pods of different mappings would share one store: files one
		// pod writes would belong to nobody in the next.
		return "a host path cache"
	}
	return ""
}

// userNamespace says whether the next build pod gets hostUsers: false,
// and, in auto mode, whether its nodes mount image volumes into such pods
// (for a base store).
func (b *Backend) userNamespace(ctx context.Context) (userns, imageVolumes bool, _ error) {
	switch b.opts.UserNamespaces {
	case UserNamespacesOn:
		return true, false, nil
	case UserNamespacesOff:
		return false, false, nil
	}
	if b.opts.userNamespaceConflict() != "" {
		return false, false, nil
	}
	s := &b.survey
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.at.IsZero() && time.Since(s.at) < nodeSurveyTTL {
		return s.supported, s.supported && s.imageVolumes, nil
	}
	supported, why, ivWhy, err := b.nodesSupportUserNamespaces(ctx)
	if apierrors.IsForbidden(err) {
		// Without the right to list nodes, auto means off; say so once.
		supported, why, ivWhy, err = false, "the controller may not list nodes", "", nil
	}
	if err != nil {
		return false, false, fmt.Errorf("checking the nodes for user namespace support: %w", err)
	}
	if supported && ivWhy != "" && !b.opts.NoBaseStore && (!s.ivWarned || s.imageVolumes) {
		b.logf("Build pods pull their base images without a base store: %s", ivWhy)
		s.ivWarned = true
	}
	s.imageVolumes = ivWhy == ""
	if !supported && (!s.warned || s.supported) {
		b.logf("Build pods run without a user namespace: %s", why)
		s.warned = true
	}
	if supported && !s.supported && !s.at.IsZero() {
		b.logf("Build pods run in a user namespace again: every build node supports it")
	}
	s.at, s.supported = time.Now(), supported
	return supported, supported && s.imageVolumes, nil
}

// nodesSupportUserNamespaces says whether every schedulable node the pod
// may land on reports user namespace support for the default runtime
// handler (status.runtimeHandlers, filled by kubelets of 1.32 and later
// from the runtime's own answer). ivWhy says why one of them does not
// mount image volumes into user-namespaced pods, or is "".
func (b *Backend) nodesSupportUserNamespaces(ctx context.Context) (supported bool, why, ivWhy string, _ error) {
	var nodes []corev1.Node
	if name := b.opts.Pod.NodeName; name != "" {
		n, err := b.kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, "", "", err
		}
		nodes = []corev1.Node{*n}
	} else {
		list, err := b.kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{
			LabelSelector: klabels.SelectorFromSet(b.opts.Pod.NodeSelector).String()})
		if err != nil {
			return false, "", "", err
		}
		nodes = list.Items
	}
	considered := 0
	for i := range nodes {
		n := &nodes[i]
		if n.Spec.Unschedulable && b.opts.Pod.NodeName == "" {
			continue
		}
		considered++
		if !defaultHandlerHasUserNamespaces(n) {
			return false, fmt.Sprintf("node %s does not report user namespace support (Kubernetes >= 1.33 with containerd >= 2.0 or CRI-O >= 1.25, runc >= 1.2 or crun >= 1.9, Linux >= 6.3)", n.Name), "", nil
		}
		if ok, why := imageVolumeRuntime(n); !ok && ivWhy == "" {
			ivWhy = why
		}
	}
	if considered == 0 {
		return false, "no schedulable node matches the build pods' node selector", "", nil
	}
	return true, "", ivWhy, nil
}

func defaultHandlerHasUserNamespaces(n *corev1.Node) bool {
	for _, h := range n.Status.RuntimeHandlers {
		if h.Name == "" {
			return h.Features != nil && h.Features.UserNamespaces != nil && *h.Features.UserNamespaces
		}
	}
	return false
}
