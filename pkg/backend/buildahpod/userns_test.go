package buildahpod

import (
	"context"
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
)

func node(name string, userns *bool, labels map[string]string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	n.Status.RuntimeHandlers = []corev1.NodeRuntimeHandler{
		{Name: "", Features: &corev1.NodeRuntimeHandlerFeatures{UserNamespaces: userns}},
		{Name: "runc", Features: &corev1.NodeRuntimeHandlerFeatures{UserNamespaces: userns}},
	}
	return n
}

// TestUserNamespaceDecision: auto follows what the nodes a pod may land on
// report; on and off do as they say; settings that exclude a user
// namespace turn auto off.
func TestUserNamespaceDecision(t *testing.T) {
	yes, no := ptr.To(true), ptr.To(false)
	old := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "old"}} // a kubelet before 1.32 reports no handlers
	cordoned := node("cordoned", no, nil)
	cordoned.Spec.Unschedulable = true
	for _, c := range []struct {
		name  string
		opts  Options
		nodes []runtime.Object
		want  bool
	}{
		{"all nodes support", Options{}, []runtime.Object{node("a", yes, nil), node("b", yes, nil)}, true},
		{"one node lacks support", Options{}, []runtime.Object{node("a", yes, nil), node("b", no, nil)}, false},
		{"a node reports nothing", Options{}, []runtime.Object{node("a", yes, nil), old}, false},
		{"cordoned node is not a build node", Options{}, []runtime.Object{node("a", yes, nil), cordoned}, true},
		{"no nodes", Options{}, nil, false},
		{"selector skips the old node", Options{Pod: PodConfig{NodeSelector: map[string]string{"pool": "build"}}},
			[]runtime.Object{node("a", yes, map[string]string{"pool": "build"}), node("b", no, nil)}, true},
		{"selector matches nothing", Options{Pod: PodConfig{NodeSelector: map[string]string{"pool": "gpu"}}},
			[]runtime.Object{node("a", yes, nil)}, false},
		{"node name", Options{Pod: PodConfig{NodeName: "a"}}, []runtime.Object{node("a", yes, nil), node("b", no, nil)}, true},
		{"on without asking", Options{UserNamespaces: UserNamespacesOn}, []runtime.Object{node("b", no, nil)}, true},
		{"off without asking", Options{UserNamespaces: UserNamespacesOff}, []runtime.Object{node("a", yes, nil)}, false},
		{"privileged builder", Options{Privileged: true}, []runtime.Object{node("a", yes, nil)}, false},
		{"host network", Options{HostNetwork: true}, []runtime.Object{node("a", yes, nil)}, false},
		{"host path cache", Options{Cache: &CacheVolume{HostPath: "/var/cache/b"}}, []runtime.Object{node("a", yes, nil)}, false},
		{"pvc cache", Options{Cache: &CacheVolume{PVC: "c"}}, []runtime.Object{node("a", yes, nil)}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := c.opts.setDefaults(); err != nil {
				t.Fatal(err)
			}
			kube := fake.NewClientset(c.nodes...)
			b := &Backend{opts: c.opts, kube: kube}
			got, _, err := b.userNamespace(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("user namespace %t, want %t", got, c.want)
			}
			pod, err := b.pod(testJob("j"), got, baseStorePlan{})
			if err != nil {
				t.Fatal(err)
			}
			if hu := pod.Spec.HostUsers; (hu != nil && !*hu) != c.want {
				t.Errorf("pod hostUsers %v, want a user namespace %t", hu, c.want)
			}
		})
	}
}

// TestUserNamespaceSurveyCached: one look at the nodes serves builds for
// nodeSurveyTTL; without the right to list nodes auto means off; other
// errors are retried, not taken for an answer.
func TestUserNamespaceSurveyCached(t *testing.T) {
	kube := fake.NewClientset(node("a", ptr.To(true), nil))
	b := &Backend{opts: Options{}, kube: kube}
	if err := b.opts.setDefaults(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if ok, _, err := b.userNamespace(context.Background()); err != nil || !ok {
			t.Fatalf("build %d: %t, %v", i, ok, err)
		}
	}
	lists := 0
	for _, a := range kube.Actions() {
		if a.Matches("list", "nodes") {
			lists++
		}
	}
	if lists != 1 {
		t.Errorf("%d node lists for 3 builds, want 1", lists)
	}

	for _, c := range []struct {
		err     error
		wantErr bool
	}{
		{apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "", errors.New("no")), false},
		{apierrors.NewServiceUnavailable("etcd"), true},
	} {
		kube := fake.NewClientset(node("a", ptr.To(true), nil))
		kube.PrependReactor("list", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, c.err })
		b := &Backend{opts: Options{}, kube: kube}
		if err := b.opts.setDefaults(); err != nil {
			t.Fatal(err)
		}
		ok, _, err := b.userNamespace(context.Background())
		if ok || (err != nil) != c.wantErr {
			t.Errorf("list fails with %v: user namespace %t, error %v", c.err, ok, err)
		}
	}
}
