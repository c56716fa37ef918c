package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/app"
	"github.com/imagespec/imagespec-controller/pkg/backend"
	"github.com/imagespec/imagespec-controller/pkg/backend/buildahpod"
	clientset "github.com/imagespec/imagespec-controller/pkg/generated/clientset/versioned"
)

// BenchmarkSpecsToBuildPods is the fan-out with the production backend:
// N ImageSpecs, written by 8 concurrent clients, to N build pods (with
// their ConfigMaps) in the build namespace, on one API server in one run,
// against three plain clients with 8 workers each:
//   - the floor: the very objects the controller makes for a spec (its job,
//     ConfigMap and pod, copied from a controller's output and renamed);
//   - the same count of minimal objects (a small job, ConfigMap and pod),
//     the floor this benchmark used first;
//   - the writes the controller needs (the ImageSpec too, and both
//     statuses).
//
// No node runs here, so the pods stay Pending. It reports the ratios, the
// controller's requests per spec by verb and resource, and the CPU the API
// server, etcd and this process (controller and clients) spent on each arm:
// on a machine where they share few cores, CPU is what the times measure.
// Run: go test ./test/integration -run '^$' -bench SpecsToBuildPods -benchtime 1x
func BenchmarkSpecsToBuildPods(b *testing.B) {
	for _, n := range []int{500, 1000} {
		b.Run(fmt.Sprintf("specs=%d", n), func(b *testing.B) {
			for it := 0; it < b.N; it++ {
				r := specsToBuildPods(b, n)
				b.ReportMetric(r.same.Seconds(), "plain-client-s")
				b.ReportMetric(r.minimal.Seconds(), "minimal-objects-client-s")
				b.ReportMetric(r.sameWrites.Seconds(), "same-writes-client-s")
				b.ReportMetric(r.ctrl.Seconds(), "controller-s")
				b.ReportMetric(r.ctrl.Seconds()/r.same.Seconds(), "ratio")
				b.ReportMetric(r.ctrl.Seconds()/r.minimal.Seconds(), "ratio-to-minimal-objects")
				b.ReportMetric(r.ctrl.Seconds()/r.sameWrites.Seconds(), "ratio-to-same-writes")
				b.ReportMetric(r.perSpec, "requests/spec")
			}
		})
	}
}

type fanOutResult struct {
	same, minimal, sameWrites, ctrl time.Duration
	perSpec                         float64
}

func specsToBuildPods(b *testing.B, n int) (r fanOutResult) {
	const creators = 8
	c := benchClient(b)
	cfg := rest.CopyConfig(SharedControlPlane(b).RESTConfig)
	cfg.QPS, cfg.Burst = -1, 0
	k, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	minimalPod := func(ns string, i int) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("spec-%d-0123456789ab-build", i), Namespace: ns},
			Spec: corev1.PodSpec{
				RestartPolicy: corev1.RestartPolicyNever,
				Containers:    []corev1.Container{{Name: "build", Image: buildahpod.DefaultBuilderImage, Command: []string{"/bin/sh", "-c", "true"}}},
			},
		}
	}
	// The API server's first writes of each kind are slower (the 500-spec
	// floor took longer than the 1000-spec one without this): untimed.
	warm := NewTestNamespace(b)
	if err := parallel(50, creators, func(i int) error {
		if _, err := k.CoreV1().Pods(warm).Create(ctx, minimalPod(warm, i), metav1.CreateOptions{}); err != nil {
			return err
		}
		spec, err := c.PrimehubV1alpha1().ImageSpecs(warm).Create(ctx, newImageSpec(warm, fmt.Sprintf("warm-%d", i), v1alpha1.Packages{}), metav1.CreateOptions{})
		if err != nil {
			return err
		}
		spec.Status.Phase = v1alpha1.JobPending
		if _, err := c.PrimehubV1alpha1().ImageSpecs(warm).UpdateStatus(ctx, spec, metav1.UpdateOptions{}); err != nil {
			return err
		}
		_, err = c.PrimehubV1alpha1().ImageSpecJobs(warm).Create(ctx, &v1alpha1.ImageSpecJob{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("warm-%d", i), Namespace: warm},
			Spec:       v1alpha1.ImageSpecJobSpec{BaseImage: "python:3.11-slim", TargetImage: fmt.Sprintf("%s/warm-%d:0123456789ab", testRepoPrefix, i)},
		}, metav1.CreateOptions{})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	made := controllerObjects(b, c, k)

	// The floor: the controller's own objects for each spec (its job,
	// ConfigMap and pod), created directly.
	nsSame, buildSame := NewTestNamespace(b), NewTestNamespace(b)
	objs := make([]fanOutObjects, n)
	for i := range objs {
		objs[i] = made.forSpec(b, i, nsSame, buildSame)
	}
	var cpuSame cpuTimes
	r.same, cpuSame = timedCPU(b, func() error {
		return parallel(n, creators, func(i int) error {
			if _, err := c.PrimehubV1alpha1().ImageSpecJobs(nsSame).Create(ctx, objs[i].job, metav1.CreateOptions{}); err != nil {
				return err
			}
			if _, err := k.CoreV1().ConfigMaps(buildSame).Create(ctx, objs[i].configMap, metav1.CreateOptions{}); err != nil {
				return err
			}
			_, err := k.CoreV1().Pods(buildSame).Create(ctx, objs[i].pod, metav1.CreateOptions{})
			return err
		})
	})

	// As many minimal objects: a small job, ConfigMap and pod per spec.
	nsMinimal, buildMinimal := NewTestNamespace(b), NewTestNamespace(b)
	var cpuMinimal cpuTimes
	r.minimal, cpuMinimal = timedCPU(b, func() error {
		return parallel(n, creators, func(i int) error {
			job := &v1alpha1.ImageSpecJob{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("spec-%d-0123456789ab", i), Namespace: nsMinimal},
				Spec: v1alpha1.ImageSpecJobSpec{BaseImage: "python:3.11-slim", TargetImage: fmt.Sprintf("%s/spec-%d:0123456789ab", testRepoPrefix, i),
					Packages: v1alpha1.Packages{Pip: []string{fmt.Sprintf("pkg%d>=1", i)}}},
			}
			if _, err := c.PrimehubV1alpha1().ImageSpecJobs(nsMinimal).Create(ctx, job, metav1.CreateOptions{}); err != nil {
				return err
			}
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("spec-%d-0123456789ab-build", i), Namespace: buildMinimal},
				Data: map[string]string{"Dockerfile": "FROM python:3.11-slim\n"}}
			if _, err := k.CoreV1().ConfigMaps(buildMinimal).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
				return err
			}
			_, err := k.CoreV1().Pods(buildMinimal).Create(ctx, minimalPod(buildMinimal, i), metav1.CreateOptions{})
			return err
		})
	})

	// The writes the controller cannot do without, by a plain client: the
	// user's ImageSpec, its job, the job's and the ImageSpec's status (so
	// kubectl get shows the build pending), a ConfigMap and a pod, the
	// job, ConfigMap and pod as the controller makes them.
	nsWrites, buildWrites := NewTestNamespace(b), NewTestNamespace(b)
	for i := range objs {
		objs[i] = made.forSpec(b, i, nsWrites, buildWrites)
	}
	var cpuWrites cpuTimes
	r.sameWrites, cpuWrites = timedCPU(b, func() error {
		return parallel(n, creators, func(i int) error {
			name := fmt.Sprintf("spec-%d", i)
			spec, err := c.PrimehubV1alpha1().ImageSpecs(nsWrites).Create(ctx,
				newImageSpec(nsWrites, name, v1alpha1.Packages{Pip: []string{fmt.Sprintf("pkg%d>=1", i)}}), metav1.CreateOptions{})
			if err != nil {
				return err
			}
			job, err := c.PrimehubV1alpha1().ImageSpecJobs(nsWrites).Create(ctx, objs[i].job, metav1.CreateOptions{})
			if err != nil {
				return err
			}
			job.Status.Phase, job.Status.PodName = v1alpha1.JobPending, objs[i].pod.Name
			if _, err := c.PrimehubV1alpha1().ImageSpecJobs(nsWrites).UpdateStatus(ctx, job, metav1.UpdateOptions{}); err != nil {
				return err
			}
			spec.Status.Phase, spec.Status.JobName = v1alpha1.JobPending, job.Name
			if _, err := c.PrimehubV1alpha1().ImageSpecs(nsWrites).UpdateStatus(ctx, spec, metav1.UpdateOptions{}); err != nil {
				return err
			}
			if _, err := k.CoreV1().ConfigMaps(buildWrites).Create(ctx, objs[i].configMap, metav1.CreateOptions{}); err != nil {
				return err
			}
			_, err = k.CoreV1().Pods(buildWrites).Create(ctx, objs[i].pod, metav1.CreateOptions{})
			return err
		})
	})

	// The controller as cmd/controller runs it by default (client limits,
	// workers), with the buildahpod backend and a build namespace of its
	// own, and no limit on concurrent builds.
	ns, buildNS := NewTestNamespace(b), NewTestNamespace(b)
	pods := watchCount(b, k, buildNS)
	in := startFanOutController(b, ns, buildNS)
	var start time.Time
	var cpuCtrl cpuTimes
	r.ctrl, cpuCtrl = timedCPU(b, func() error {
		start = time.Now()
		go createBenchSpecs(b, c, ns, n, creators)
		deadline := time.After(5 * time.Minute)
		for got := 0; got < n; got++ {
			select {
			case <-pods:
			case <-deadline:
				return fmt.Errorf("%d of %d build pods after 5 minutes", got, n)
			}
		}
		return nil
	})

	// Requests per spec, by verb and resource (names and namespaces cut).
	reqs := in.find(func(req request) bool { return !req.at.Before(start) && req.at.Before(start.Add(r.ctrl)) })
	byKind := map[string]int{}
	conflicts := 0
	for _, req := range reqs {
		byKind[req.method+" "+resourceOf(req.path)]++
		if req.code == 409 {
			conflicts++
		}
	}
	var kinds []string
	for kind, count := range byKind {
		kinds = append(kinds, fmt.Sprintf("%s %.2f", kind, float64(count)/float64(n)))
	}
	sort.Strings(kinds)
	r.perSpec = float64(len(reqs)) / float64(n)
	b.Logf("%d specs: controller %v; plain client making the controller's job, ConfigMap and pod %v (controller %.2fx); "+
		"as many minimal objects %v (%.2fx); the writes the controller needs (ImageSpec, job, both statuses, ConfigMap, pod) %v (%.2fx)",
		n, r.ctrl.Round(time.Millisecond), r.same.Round(time.Millisecond), r.ctrl.Seconds()/r.same.Seconds(),
		r.minimal.Round(time.Millisecond), r.ctrl.Seconds()/r.minimal.Seconds(),
		r.sameWrites.Round(time.Millisecond), r.ctrl.Seconds()/r.sameWrites.Seconds())
	b.Logf("%d specs, CPU per spec (apiserver / etcd / this process): controller %s; controller's objects %s; minimal objects %s; the writes the controller needs %s",
		n, cpuCtrl.perSpec(n), cpuSame.perSpec(n), cpuMinimal.perSpec(n), cpuWrites.perSpec(n))
	b.Logf("%d specs: controller requests per spec %.2f (%d conflicts): %s", n, r.perSpec, conflicts, strings.Join(kinds, ", "))
	return r
}

// startFanOutController runs the controller as cmd/controller does by
// default (client limits, workers) on namespace, with the buildahpod
// backend, its own build namespace and no limit on concurrent builds.
func startFanOutController(b *testing.B, namespace, buildNS string) *instance {
	opts := defaultControllerOptions(namespace)
	opts.QPS, opts.Burst = app.DefaultQPS, app.DefaultBurst
	opts.Workers = app.DefaultWorkers
	opts.Controller.PushSecretNamespace = buildNS
	opts.Controller.MaxConcurrentBuilds = 0
	return startInstanceWith(b, SharedControlPlane(b).RESTConfig, opts, func(cl *app.Clients) (backend.Backend, error) {
		return buildahpod.New(buildahpod.Options{BuildNamespace: buildNS}, cl.Kube, cl.Managed)
	})
}

// fanOutObjects are the objects the controller makes for one spec.
type fanOutObjects struct {
	job       *v1alpha1.ImageSpecJob
	configMap *corev1.ConfigMap
	pod       *corev1.Pod
}

// madeObjects holds the objects a controller made for spec "spec-0" in
// namespace (builds in buildNS), as JSON without server-set fields.
type madeObjects struct {
	namespace, buildNS  string
	job, configMap, pod string
}

// controllerObjects runs a controller for one ImageSpec like the
// benchmark's and returns the job, ConfigMap and pod it made.
func controllerObjects(b *testing.B, c clientset.Interface, k kubernetes.Interface) madeObjects {
	ctx := context.Background()
	ns, buildNS := NewTestNamespace(b), NewTestNamespace(b)
	pods := watchCount(b, k, buildNS)
	in := startFanOutController(b, ns, buildNS)
	defer func() { in.cancel(); in.wait(b) }()
	createBenchSpecs(b, c, ns, 1, 1)
	select {
	case <-pods:
	case <-time.After(time.Minute):
		b.Fatal("no build pod a minute after the ImageSpec")
	}
	podList, err := k.CoreV1().Pods(buildNS).List(ctx, metav1.ListOptions{})
	if err != nil || len(podList.Items) != 1 {
		b.Fatalf("build pods: %v (err %v)", len(podList.Items), err)
	}
	pod := podList.Items[0]
	cm, err := k.CoreV1().ConfigMaps(buildNS).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		b.Fatal(err)
	}
	jobs, err := c.PrimehubV1alpha1().ImageSpecJobs(ns).List(ctx, metav1.ListOptions{})
	if err != nil || len(jobs.Items) != 1 {
		b.Fatalf("jobs: %v (err %v)", len(jobs.Items), err)
	}
	job := jobs.Items[0]
	job.Status = v1alpha1.ImageSpecJobStatus{}
	pod.Status = corev1.PodStatus{}
	return madeObjects{namespace: ns, buildNS: buildNS,
		job: clientObjectJSON(b, &job), configMap: clientObjectJSON(b, cm), pod: clientObjectJSON(b, &pod)}
}

// clientObjectJSON is obj as a client would send it: without the fields
// the API server sets.
func clientObjectJSON(b *testing.B, obj metav1.Object) string {
	obj.SetUID("")
	obj.SetResourceVersion("")
	obj.SetCreationTimestamp(metav1.Time{})
	obj.SetManagedFields(nil)
	obj.SetGeneration(0)
	raw, err := json.Marshal(obj)
	if err != nil {
		b.Fatal(err)
	}
	return string(raw)
}

var specZero = regexp.MustCompile(`(spec-|pkg)0([^0-9])`)

// forSpec is the objects for spec number i in namespace (builds in buildNS).
func (m madeObjects) forSpec(b *testing.B, i int, namespace, buildNS string) fanOutObjects {
	rename := func(s string) []byte {
		s = strings.NewReplacer(m.namespace, namespace, m.buildNS, buildNS).Replace(s)
		return []byte(specZero.ReplaceAllString(s, fmt.Sprintf("${1}%d${2}", i)))
	}
	var o fanOutObjects
	for raw, into := range map[string]any{m.job: &o.job, m.configMap: &o.configMap, m.pod: &o.pod} {
		if err := json.Unmarshal(rename(raw), into); err != nil {
			b.Fatal(err)
		}
	}
	return o
}

// timedCPU runs fn and returns how long it took and the CPU it cost.
func timedCPU(b *testing.B, fn func() error) (time.Duration, cpuTimes) {
	cpu := readCPUTimes()
	start := time.Now()
	if err := fn(); err != nil {
		b.Fatal(err)
	}
	return time.Since(start), readCPUTimes().since(cpu)
}

// watchCount sends one value for every pod created in namespace.
func watchCount(b *testing.B, k kubernetes.Interface, namespace string) <-chan struct{} {
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	w, err := k.CoreV1().Pods(namespace).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	out := make(chan struct{}, 100000)
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			if ev.Type == watch.Added {
				out <- struct{}{}
			}
		}
	}()
	return out
}

var namedObject = regexp.MustCompile(`/namespaces/[^/]+/([^/]+)(/[^/]+)?(/[^/]+)?$`)

// resourceOf turns an API path into its resource (and subresource).
func resourceOf(path string) string {
	if m := namedObject.FindStringSubmatch(path); m != nil {
		return m[1] + m[3]
	}
	return path
}
