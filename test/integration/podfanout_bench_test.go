package integration

import (
	"context"
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
)

// BenchmarkSpecsToBuildPods is the fan-out with the production backend:
// N ImageSpecs, written by 8 concurrent clients, to N build pods (with
// their ConfigMaps) in the build namespace, against the same objects (a
// job, a ConfigMap and a pod per spec) written by a plain client with 8
// workers, on the same API server in the same run, and against a plain
// client making the writes the controller needs (the ImageSpec too, and
// both statuses). No node runs here, so the pods stay Pending. It reports
// the ratios and the controller's requests per spec by verb and resource.
// Run: go test ./test/integration -run '^$' -bench SpecsToBuildPods -benchtime 1x
func BenchmarkSpecsToBuildPods(b *testing.B) {
	for _, n := range []int{500, 1000} {
		b.Run(fmt.Sprintf("specs=%d", n), func(b *testing.B) {
			for it := 0; it < b.N; it++ {
				plain, sameWrites, ctrl, perSpec := specsToBuildPods(b, n)
				b.ReportMetric(plain.Seconds(), "plain-client-s")
				b.ReportMetric(sameWrites.Seconds(), "same-writes-client-s")
				b.ReportMetric(ctrl.Seconds(), "controller-s")
				b.ReportMetric(ctrl.Seconds()/plain.Seconds(), "ratio")
				b.ReportMetric(ctrl.Seconds()/sameWrites.Seconds(), "ratio-to-same-writes")
				b.ReportMetric(perSpec, "requests/spec")
			}
		})
	}
}

func specsToBuildPods(b *testing.B, n int) (plain, sameWrites, ctrl time.Duration, perSpec float64) {
	const creators = 8
	c := benchClient(b)
	cfg := rest.CopyConfig(SharedControlPlane(b).RESTConfig)
	cfg.QPS, cfg.Burst = -1, 0
	k, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	pod := func(ns string, i int) *corev1.Pod {
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
		if _, err := k.CoreV1().Pods(warm).Create(ctx, pod(warm, i), metav1.CreateOptions{}); err != nil {
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

	// The floor: a job, a ConfigMap and a pod per spec, created directly.
	nsPlain, buildPlain := NewTestNamespace(b), NewTestNamespace(b)
	start := time.Now()
	if err := parallel(n, creators, func(i int) error {
		job := &v1alpha1.ImageSpecJob{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("spec-%d-0123456789ab", i), Namespace: nsPlain},
			Spec: v1alpha1.ImageSpecJobSpec{BaseImage: "python:3.11-slim", TargetImage: fmt.Sprintf("%s/spec-%d:0123456789ab", testRepoPrefix, i),
				Packages: v1alpha1.Packages{Pip: []string{fmt.Sprintf("pkg%d>=1", i)}}},
		}
		if _, err := c.PrimehubV1alpha1().ImageSpecJobs(nsPlain).Create(ctx, job, metav1.CreateOptions{}); err != nil {
			return err
		}
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("spec-%d-0123456789ab-build", i), Namespace: buildPlain},
			Data: map[string]string{"Dockerfile": "FROM python:3.11-slim\n"}}
		if _, err := k.CoreV1().ConfigMaps(buildPlain).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			return err
		}
		_, err := k.CoreV1().Pods(buildPlain).Create(ctx, pod(buildPlain, i), metav1.CreateOptions{})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	plain = time.Since(start)

	// The writes the controller cannot do without, by a plain client: the
	// user's ImageSpec, its job, the job's and the ImageSpec's status (so
	// kubectl get shows the build pending), a ConfigMap and a pod.
	nsSame, buildSame := NewTestNamespace(b), NewTestNamespace(b)
	start = time.Now()
	if err := parallel(n, creators, func(i int) error {
		name := fmt.Sprintf("spec-%d", i)
		spec, err := c.PrimehubV1alpha1().ImageSpecs(nsSame).Create(ctx,
			newImageSpec(nsSame, name, v1alpha1.Packages{Pip: []string{fmt.Sprintf("pkg%d>=1", i)}}), metav1.CreateOptions{})
		if err != nil {
			return err
		}
		job, err := c.PrimehubV1alpha1().ImageSpecJobs(nsSame).Create(ctx, &v1alpha1.ImageSpecJob{
			ObjectMeta: metav1.ObjectMeta{Name: name + "-0123456789ab", Namespace: nsSame},
			Spec: v1alpha1.ImageSpecJobSpec{BaseImage: spec.Spec.BaseImage, TargetImage: fmt.Sprintf("%s/%s:0123456789ab", testRepoPrefix, name),
				Packages: spec.Spec.Packages},
		}, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		job.Status.Phase, job.Status.PodName = v1alpha1.JobPending, job.Name+"-build"
		if _, err := c.PrimehubV1alpha1().ImageSpecJobs(nsSame).UpdateStatus(ctx, job, metav1.UpdateOptions{}); err != nil {
			return err
		}
		spec.Status.Phase, spec.Status.JobName = v1alpha1.JobPending, job.Name
		if _, err := c.PrimehubV1alpha1().ImageSpecs(nsSame).UpdateStatus(ctx, spec, metav1.UpdateOptions{}); err != nil {
			return err
		}
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: job.Name + "-build", Namespace: buildSame},
			Data: map[string]string{"Dockerfile": "FROM python:3.11-slim\n"}}
		if _, err := k.CoreV1().ConfigMaps(buildSame).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			return err
		}
		_, err = k.CoreV1().Pods(buildSame).Create(ctx, pod(buildSame, i), metav1.CreateOptions{})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	sameWrites = time.Since(start)

	// The controller as cmd/controller runs it by default (client limits,
	// workers), with the buildahpod backend and a build namespace of its
	// own, and no limit on concurrent builds.
	ns, buildNS := NewTestNamespace(b), NewTestNamespace(b)
	opts := defaultControllerOptions(ns)
	opts.QPS, opts.Burst = app.DefaultQPS, app.DefaultBurst
	opts.Workers = app.DefaultWorkers
	opts.Controller.PushSecretNamespace = buildNS
	opts.Controller.MaxConcurrentBuilds = 0
	pods := watchCount(b, k, buildNS)
	in := startInstanceWith(b, SharedControlPlane(b).RESTConfig, opts, func(cl *app.Clients) (backend.Backend, error) {
		return buildahpod.New(buildahpod.Options{BuildNamespace: buildNS}, cl.Kube, cl.Managed)
	})
	start = time.Now()
	go createBenchSpecs(b, c, ns, n, creators)
	deadline := time.After(5 * time.Minute)
	for got := 0; got < n; got++ {
		select {
		case <-pods:
		case <-deadline:
			b.Fatalf("%d of %d build pods after 5 minutes", got, n)
		}
	}
	ctrl = time.Since(start)

	// Requests per spec, by verb and resource (names and namespaces cut).
	reqs := in.find(func(r request) bool { return !r.at.Before(start) && r.at.Before(start.Add(ctrl)) })
	byKind := map[string]int{}
	conflicts := 0
	for _, r := range reqs {
		byKind[r.method+" "+resourceOf(r.path)]++
		if r.code == 409 {
			conflicts++
		}
	}
	var kinds []string
	for kind, count := range byKind {
		kinds = append(kinds, fmt.Sprintf("%s %.2f", kind, float64(count)/float64(n)))
	}
	sort.Strings(kinds)
	perSpec = float64(len(reqs)) / float64(n)
	b.Logf("%d specs: plain client (job, ConfigMap, pod each) %v, controller %v (%.2fx); the same writes as the controller by a plain client (ImageSpec, job, both statuses, ConfigMap, pod) %v (controller %.2fx); controller requests per spec %.2f (%d conflicts): %s",
		n, plain.Round(time.Millisecond), ctrl.Round(time.Millisecond), ctrl.Seconds()/plain.Seconds(),
		sameWrites.Round(time.Millisecond), ctrl.Seconds()/sameWrites.Seconds(), perSpec, conflicts, strings.Join(kinds, ", "))
	return plain, sameWrites, ctrl, perSpec
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
