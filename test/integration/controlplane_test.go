package integration

import (
	"context"
	"encoding/json"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/generated/clientset/versioned"
	"github.com/imagespec/imagespec-controller/pkg/generated/informers/externalversions"
	"github.com/imagespec/imagespec-controller/test/framework/controlplane"
)

func testContext(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// The CRDs from artifacts/crds are served: the generated clientset writes an
// ImageSpec, a generated informer sees it, and kubectl explains its schema.
func TestControlPlaneServesImageSpecs(t *testing.T) {
	cp := SharedControlPlane(t)
	ns := NewTestNamespace(t)
	ctx := testContext(t, time.Minute)
	cs, err := versioned.NewForConfig(cp.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}

	factory := externalversions.NewSharedInformerFactoryWithOptions(cs, 0, externalversions.WithNamespace(ns))
	lister := factory.Primehub().V1alpha1().ImageSpecs().Lister()
	// Shutdown waits for the informers, which stop only when their
	// channel closes.
	informerCtx, stopInformers := context.WithCancel(ctx)
	factory.Start(informerCtx.Done())
	t.Cleanup(func() {
		stopInformers()
		factory.Shutdown()
	})
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			t.Fatalf("informer for %v did not sync", typ)
		}
	}

	spec := &v1alpha1.ImageSpec{
		ObjectMeta: metav1.ObjectMeta{Name: "datasci", Namespace: ns},
		Spec: v1alpha1.ImageSpecSpec{
			BaseImage: "python:3.11-slim",
			Packages: v1alpha1.Packages{
				Apt:   []string{"curl"},
				Pip:   []string{"requests>=2.31"},
				Conda: []string{"conda-forge::numpy>=1.26"},
			},
		},
	}
	created, err := cs.PrimehubV1alpha1().ImageSpecs(ns).Create(ctx, spec, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create ImageSpec: %v", err)
	}

	var got *v1alpha1.ImageSpec
	err = wait.PollUntilContextCancel(ctx, 20*time.Millisecond, true, func(context.Context) (bool, error) {
		is, err := lister.ImageSpecs(ns).Get("datasci")
		if err != nil || is.ResourceVersion != created.ResourceVersion {
			return false, nil
		}
		got = is
		return true, nil
	})
	if err != nil {
		t.Fatalf("ImageSpec %s/datasci never reached the informer cache: %v", ns, err)
	}
	if got.Spec.BaseImage != spec.Spec.BaseImage ||
		strings.Join(got.Spec.Packages.Apt, ",") != "curl" ||
		strings.Join(got.Spec.Packages.Pip, ",") != "requests>=2.31" ||
		strings.Join(got.Spec.Packages.Conda, ",") != "conda-forge::numpy>=1.26" {
		t.Errorf("informer holds spec %+v, want %+v", got.Spec, spec.Spec)
	}

	out, err := cp.Kubectl(ctx, "explain", "imagespec.spec.packages")
	if err != nil {
		t.Fatal(err)
	}
	text := string(out)
	for _, field := range []string{"apt", "pip", "conda"} {
		if !strings.Contains(text, field) {
			t.Errorf("kubectl explain imagespec.spec.packages lacks %q:\n%s", field, text)
		}
	}
	if !strings.Contains(text, "FIELDS") {
		t.Errorf("kubectl explain printed no field docs:\n%s", text)
	}
}

func TestControlPlaneConfigMapReachesInformer(t *testing.T) {
	cp := SharedControlPlane(t)
	ns := NewTestNamespace(t)
	ctx := testContext(t, time.Minute)
	cs, err := kubernetes.NewForConfig(cp.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}

	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(ns))
	lister := factory.Core().V1().ConfigMaps().Lister()
	// Shutdown waits for the informers, which stop only when their
	// channel closes.
	informerCtx, stopInformers := context.WithCancel(ctx)
	factory.Start(informerCtx.Done())
	t.Cleanup(func() {
		stopInformers()
		factory.Shutdown()
	})
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			t.Fatalf("informer for %v did not sync", typ)
		}
	}

	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: ns},
		Data:       map[string]string{"answer": "42"},
	}
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextCancel(ctx, 20*time.Millisecond, true, func(context.Context) (bool, error) {
		got, err := lister.ConfigMaps(ns).Get("probe")
		return err == nil && got.Data["answer"] == "42", nil
	})
	if err != nil {
		t.Fatalf("configmap %s/probe never reached the informer cache: %v", ns, err)
	}
}

// Without kube-controller-manager, CreateNamespace stands in for it; pods
// (privileged ones too, for builds) must then pass admission.
func TestControlPlaneNamespaceAdmitsPods(t *testing.T) {
	cp := SharedControlPlane(t)
	ns := NewTestNamespace(t)
	ctx := testContext(t, time.Minute)
	cs, err := kubernetes.NewForConfig(cp.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}

	if _, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Errorf("serviceaccount default: %v", err)
	}
	root, err := cs.CoreV1().ConfigMaps(ns).Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("configmap kube-root-ca.crt: %v", err)
	}
	if root.Data["ca.crt"] != string(cp.CA.CertPEM) {
		t.Errorf("kube-root-ca.crt does not hold the control plane's CA")
	}

	privileged := true
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "builder", Namespace: ns},
		Spec: corev1.PodSpec{
			// No scheduler runs; a node test binds pods itself the same way.
			NodeName: "no-such-node",
			Containers: []corev1.Container{{
				Name:            "build",
				Image:           "example.invalid/builder:1",
				SecurityContext: &corev1.SecurityContext{Privileged: &privileged},
			}},
		},
	}
	created, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create privileged pod: %v", err)
	}
	// The ServiceAccount admission plugin mounts the token and root CA.
	var projected bool
	for _, v := range created.Spec.Volumes {
		if v.Projected != nil {
			projected = true
		}
	}
	if !projected {
		t.Errorf("pod has no projected service account volume: %+v", created.Spec.Volumes)
	}
}

func TestControlPlaneKubectlIsPinnedVersion(t *testing.T) {
	cp := SharedControlPlane(t)
	ctx := testContext(t, time.Minute)
	want := pinnedKubeVersion(t)

	out, err := cp.Kubectl(ctx, "version", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		ClientVersion struct{ GitVersion string } `json:"clientVersion"`
		ServerVersion struct{ GitVersion string } `json:"serverVersion"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("kubectl version output %q: %v", out, err)
	}
	if v.ClientVersion.GitVersion != want || v.ServerVersion.GitVersion != want {
		t.Errorf("kubectl %q, kube-apiserver %q; want both %q", v.ClientVersion.GitVersion, v.ServerVersion.GitVersion, want)
	}
}

// pinnedKubeVersion reads the pin from hack/kube-tools/go.mod, the one place
// that states it.
func pinnedKubeVersion(t *testing.T) string {
	t.Helper()
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "hack", "kube-tools", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "k8s.io/kubernetes" {
			return f[1]
		}
	}
	t.Fatal("hack/kube-tools/go.mod does not pin k8s.io/kubernetes")
	return ""
}

func TestControlPlaneStopLeavesNothingBehind(t *testing.T) {
	t.Setenv(controlplane.KeepWorkDirEnv, "")
	shared := SharedControlPlane(t)
	ctx := testContext(t, 3*time.Minute)

	cp, err := controlplane.Start(ctx, controlplane.Options{BinDir: shared.BinDir, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop() })
	pids := cp.PIDs()
	if len(pids) != 2 {
		t.Fatalf("PIDs() = %v, want etcd and kube-apiserver", pids)
	}
	addrs := []string{hostPort(t, cp.APIServerURL), hostPort(t, cp.EtcdURL)}
	workDir := cp.WorkDir
	for _, pid := range pids {
		if !processAlive(pid) {
			t.Fatalf("pid %d not running before Stop", pid)
		}
	}

	if err := cp.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := cp.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	for _, pid := range pids {
		if processAlive(pid) || processGroupAlive(pid) {
			t.Errorf("process (group) %d still alive after Stop", pid)
		}
	}
	for _, addr := range addrs {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("port %s still taken after Stop: %v", addr, err)
			continue
		}
		l.Close()
	}
	if _, err := os.Stat(workDir); !os.IsNotExist(err) {
		t.Errorf("work dir %s still there after Stop (stat: %v)", workDir, err)
	}
	select {
	case <-cp.Done():
	default:
		t.Error("Done() not closed after Stop")
	}
}

// A kube-apiserver that cannot start fails Start with the end of its log,
// and what Start had already launched is gone.
func TestControlPlaneStartFailureReportsLogAndCleansUp(t *testing.T) {
	t.Setenv(controlplane.KeepWorkDirEnv, "")
	shared := SharedControlPlane(t)
	ctx := testContext(t, 3*time.Minute)
	before := controlPlaneWorkDirs(t)

	cp, err := controlplane.Start(ctx, controlplane.Options{
		BinDir:             shared.BinDir,
		ExtraAPIServerArgs: []string{"--no-such-flag=1"},
	})
	if err == nil {
		_ = cp.Stop()
		t.Fatal("Start succeeded with an unknown kube-apiserver flag")
	}
	if !strings.Contains(err.Error(), "kube-apiserver exited") || !strings.Contains(err.Error(), "no-such-flag") {
		t.Errorf("error lacks the exit and the log tail: %v", err)
	}
	t.Logf("Start failed as expected: %v", err)
	for _, dir := range controlPlaneWorkDirs(t) {
		if !slices.Contains(before, dir) {
			t.Errorf("failed Start left work dir %s", dir)
		}
	}
}

// controlPlaneWorkDirs lists the work dirs this test process owns; other
// test binaries may be creating theirs at the same time.
func controlPlaneWorkDirs(t *testing.T) []string {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(os.TempDir(), "imagespec-controlplane-*"))
	if err != nil {
		t.Fatal(err)
	}
	var ours []string
	for _, dir := range dirs {
		owner, err := os.ReadFile(filepath.Join(dir, "owner.pid"))
		if err == nil && strings.TrimSpace(string(owner)) == strconv.Itoa(os.Getpid()) {
			ours = append(ours, dir)
		}
	}
	return ours
}

func hostPort(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// With kube-controller-manager the test cluster collects garbage, deletes
// namespaces, runs Deployments and makes ServiceAccounts, as a real one
// does; Stop stops it with the rest.
func TestControllerManager(t *testing.T) {
	t.Setenv(controlplane.KeepWorkDirEnv, "")
	shared := SharedControlPlane(t)
	ctx := testContext(t, 4*time.Minute)
	cp, err := controlplane.Start(ctx, controlplane.Options{BinDir: shared.BinDir, Logf: t.Logf, ControllerManager: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop() })
	t.Logf("kube-controller-manager ready %v after Start began (apiserver %v)", cp.Timings.ControllerManagerReady, cp.Timings.APIServerReady)
	cs, err := kubernetes.NewForConfig(cp.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "gc-test"}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The ServiceAccount and root CA controllers fill a new namespace.
	waitUntil(t, 30*time.Second, "default ServiceAccount and kube-root-ca.crt in gc-test", func() bool {
		_, errSA := cs.CoreV1().ServiceAccounts("gc-test").Get(ctx, "default", metav1.GetOptions{})
		_, errCM := cs.CoreV1().ConfigMaps("gc-test").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		return errSA == nil && errCM == nil
	})

	// Garbage collection: deleting an owner deletes its dependents.
	owner, err := cs.CoreV1().ConfigMaps("gc-test").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "owner"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dep := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "dependent", OwnerReferences: []metav1.OwnerReference{{
		APIVersion: "v1", Kind: "ConfigMap", Name: owner.Name, UID: owner.UID,
	}}}}
	if _, err := cs.CoreV1().ConfigMaps("gc-test").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cs.CoreV1().ConfigMaps("gc-test").Delete(ctx, "owner", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitUntil(t, 60*time.Second, "the dependent ConfigMap is collected", func() bool {
		_, err := cs.CoreV1().ConfigMaps("gc-test").Get(ctx, "dependent", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	t.Logf("dependent collected %v after its owner was deleted", time.Since(start).Round(time.Millisecond))

	// A Deployment gets its ReplicaSet.
	replicas := int32(1)
	labels := map[string]string{"app": "d"}
	deploy := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "d"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.invalid/none"}}},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments("gc-test").Create(ctx, deploy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 60*time.Second, "a ReplicaSet and a pod for the Deployment", func() bool {
		rs, err1 := cs.AppsV1().ReplicaSets("gc-test").List(ctx, metav1.ListOptions{})
		pods, err2 := cs.CoreV1().Pods("gc-test").List(ctx, metav1.ListOptions{})
		return err1 == nil && err2 == nil && len(rs.Items) == 1 && len(pods.Items) == 1
	})

	// Namespace deletion removes everything in it and then the namespace.
	if err := cs.CoreV1().Namespaces().Delete(ctx, "gc-test", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	waitUntil(t, 2*time.Minute, "namespace gc-test is gone", func() bool {
		_, err := cs.CoreV1().Namespaces().Get(ctx, "gc-test", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	t.Logf("namespace deleted in %v", time.Since(start).Round(time.Millisecond))

	pids := cp.PIDs()
	if len(pids) != 3 {
		t.Fatalf("PIDs() = %v, want etcd, kube-apiserver and kube-controller-manager", pids)
	}
	if err := cp.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if processAlive(pid) || processGroupAlive(pid) {
			t.Errorf("process (group) %d still alive after Stop", pid)
		}
	}
}

func waitUntil(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", limit, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Restart replaces kube-apiserver (and etcd) on the same ports and data:
// what was stored survives, clients reconnect, and Done stays open.
func TestControlPlaneRestart(t *testing.T) {
	t.Setenv(controlplane.KeepWorkDirEnv, "")
	shared := SharedControlPlane(t)
	ctx := testContext(t, 4*time.Minute)
	cp, err := controlplane.Start(ctx, controlplane.Options{BinDir: shared.BinDir, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop() })
	cs, err := kubernetes.NewForConfig(cp.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kept"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, withEtcd := range []bool{false, true} {
		before := cp.PIDs()
		start := time.Now()
		if err := cp.Restart(ctx, withEtcd); err != nil {
			t.Fatalf("Restart(withEtcd=%v): %v", withEtcd, err)
		}
		t.Logf("Restart(withEtcd=%v) took %v", withEtcd, time.Since(start).Round(time.Millisecond))
		after := cp.PIDs()
		changed := 0
		for i := range before {
			if before[i] != after[i] {
				changed++
			}
		}
		if want := map[bool]int{false: 1, true: 2}[withEtcd]; changed != want {
			t.Errorf("Restart(withEtcd=%v): PIDs %v -> %v, want %d new processes", withEtcd, before, after, want)
		}
		if _, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "kept", metav1.GetOptions{}); err != nil {
			t.Errorf("after Restart(withEtcd=%v): %v", withEtcd, err)
		}
		select {
		case <-cp.Done():
			t.Fatalf("Done closed by Restart(withEtcd=%v): %v", withEtcd, cp.Err())
		default:
		}
	}
	if err := cp.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cp.Done():
	case <-time.After(10 * time.Second):
		t.Error("Done not closed after Stop")
	}
}
