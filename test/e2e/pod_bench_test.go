package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/backend/buildahpod"
	"github.com/imagespec/imagespec-controller/pkg/backend/inprocess"
)

// The same spec through both backends in one run, from ImageSpec creation
// to a Succeeded job: a pip package new to both (so the step runs in both)
// on the shared base, after one untimed build per backend: the inprocess
// store keeps the base image between builds, and the pod backend's first
// build in the namespace made its base store, which later pods mount (see
// BackendsCold for builds without either), which the node pulled in a warm
// pod; a second untimed build per backend is the node's first on that
// store (reported on its own). Scheduling, starting the builder
// container and the kubelet's status report are the pod backend's
// overhead. The pod build is split with
// the build script's own times (its start, the ends of its pull and build
// stages and its end, in nanoseconds, from its termination message; the
// kubelet's times have whole seconds) and the moments a pod watch first
// shows the pod, the builder container terminated and the pod final: spec
// write -> pod created (the controller), pod created -> script start
// (scheduling, sandbox, container start), the script's pull, build and
// push, script end -> the kubelet's report reaching watchers, and that
// report -> the job final.
func BenchmarkBackendsEndToEnd(b *testing.B) {
	env := SharedEnv(b)
	p := StartPodEnv(b)
	nsIn := NewNamespace(b)
	nsPod := NewNamespace(b)
	cIn, _ := StartInprocessController(b, nsIn, ControllerConfig{})
	cPod, _ := p.StartPodController(b, nsPod, ControllerConfig{}, nil)
	podNS, _ := p.BuildPod(nsPod, "any")
	seen := watchPodTimes(b, p, podNS)
	// warmUp builds one untimed spec on each backend; it returns the pod
	// backend's job and its time from the spec write to the job final.
	warmUp := func(name string) (podJob *v1alpha1.ImageSpecJob, podTime time.Duration) {
		spec := v1alpha1.ImageSpecSpec{BaseImage: env.BaseImage,
			Packages: v1alpha1.Packages{Pip: []string{addBenchPackage(b, env, "bench-backends-"+name)}}}
		for _, c := range []struct {
			c  *Controller
			ns string
		}{{cIn, nsIn}, {cPod, nsPod}} {
			start := time.Now()
			createSpec(b, c.c, c.ns, name, spec)
			job := waitFinal(b, c.c, c.ns, name, "")
			if job.Status.Phase != v1alpha1.JobSucceeded {
				b.Fatalf("warm-up build %s/%s: %s %s", c.ns, job.Name, job.Status.Phase, job.Status.Message)
			}
			if c.c == cPod {
				podJob, podTime = job, time.Since(start)
			}
		}
		return podJob, podTime
	}
	// The warm-up pod makes the namespace's base store after its job ended.
	warm, _ := warmUp("warm-up")
	// Then the node pulls the store in a warm pod. The first build to
	// mount the store: also untimed, and reported on its own.
	waitStoreMade(b, p, nsPod, warm.Name)
	firstJob, firstMount := warmUp("warm-up-node")
	firstPod, firstScript := finishedBuildPod(b, p, nsPod, firstJob.Name)
	firstCreated, _, _ := seen.get(firstPod.Name)
	firstMountStart := firstScript.started.Sub(firstCreated)

	var inproc, viaPod, phaseLag time.Duration
	var split podBuildSplit
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		spec := v1alpha1.ImageSpecSpec{BaseImage: env.BaseImage,
			Packages: v1alpha1.Packages{Pip: []string{addBenchPackage(b, env, "bench-backends")}}}
		name := fmt.Sprintf("both-%d", i)
		runInproc := func() {
			start := time.Now()
			createSpec(b, cIn, nsIn, name, spec)
			waitFinal(b, cIn, nsIn, name, "")
			inproc += time.Since(start)
		}
		runPod := func() {
			start := time.Now()
			createSpec(b, cPod, nsPod, name, spec)
			job := waitFinal(b, cPod, nsPod, name, "")
			end := time.Now()
			viaPod += end.Sub(start)
			b.StopTimer()
			defer b.StartTimer()
			podName := split.add(b, p, seen, nsPod, job.Name, start, end)
			_, terminated, final := seen.get(podName)
			// The job may end before the pod's phase does.
			for wait := time.Now(); final.IsZero() && time.Since(wait) < 10*time.Second; time.Sleep(20 * time.Millisecond) {
				_, terminated, final = seen.get(podName)
			}
			if final.IsZero() {
				b.Fatalf("pod %s: final not seen", podName)
			}
			phaseLag += final.Sub(terminated)
		}
		inTurn(i, runInproc, runPod)
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(inproc.Seconds()/n, "inprocess-s/op")
	b.ReportMetric(viaPod.Seconds()/n, "buildahpod-s/op")
	b.ReportMetric((viaPod-inproc).Seconds()/n, "pod-overhead-s/op")
	b.ReportMetric(split.toPod.Seconds()/n, "pod-spec-to-pod-created-s/op")
	b.ReportMetric(split.toScript.Seconds()/n, "pod-created-to-script-start-s/op")
	b.ReportMetric(split.script().Seconds()/n, "pod-script-s/op")
	b.ReportMetric(split.pull.Seconds()/n, "pod-script-pull-s/op")
	b.ReportMetric(split.build.Seconds()/n, "pod-script-build-s/op")
	b.ReportMetric(split.push.Seconds()/n, "pod-script-push-s/op")
	b.ReportMetric(split.toReport.Seconds()/n, "pod-script-end-to-kubelet-report-s/op")
	b.ReportMetric(split.reportToFinal.Seconds()/n, "pod-report-to-job-final-s/op")
	b.ReportMetric(phaseLag.Seconds()/n, "pod-terminated-to-pod-final-s/op")
	b.ReportMetric(firstMount.Seconds(), "pod-first-store-mount-on-node-s")
	b.ReportMetric(firstMountStart.Seconds(), "pod-first-store-mount-created-to-script-start-s")
	b.Logf("%d builds each: inprocess %.2fs/op, buildahpod %.2fs/op (spec -> pod created %.2fs, pod created -> script start %.2fs, script %.2fs [pull %.2fs, build %.2fs, push %.2fs], script end -> kubelet report %.2fs, report -> job final %.2fs; container terminated -> pod final %.2fs)",
		b.N, inproc.Seconds()/n, viaPod.Seconds()/n, split.toPod.Seconds()/n, split.toScript.Seconds()/n, split.script().Seconds()/n,
		split.pull.Seconds()/n, split.build.Seconds()/n, split.push.Seconds()/n, split.toReport.Seconds()/n, split.reportToFinal.Seconds()/n, phaseLag.Seconds()/n)
	b.Logf("untimed: the node's first build on the base store, after the warm pod %.2fs (pod created -> script start %.2fs)",
		firstMount.Seconds(), firstMountStart.Seconds())
}

// BenchmarkBackendsCold is BackendsEndToEnd's spec with nothing at hand:
// the inprocess controller starts on an empty store (so it pulls the base
// image too), the pod backend in a new namespace (an empty layer cache in
// the registry and no base store: the pod pulls the base into its empty
// store, and makes the namespace's base store on the way). From the spec write to
// the job's final status, same run, alternating which backend goes first;
// controllers start outside the timed part, and an untimed pod build in
// another namespace first has the node pull the builder image.
func BenchmarkBackendsCold(b *testing.B) {
	env := SharedEnv(b)
	p := StartPodEnv(b)
	// The node pulls the builder image for its first pod, once: in a
	// namespace of its own, not part of any timed build.
	nsWarm := NewNamespace(b)
	cWarm, _ := p.StartPodController(b, nsWarm, ControllerConfig{}, nil)
	createSpec(b, cWarm, nsWarm, "warm-up", v1alpha1.ImageSpecSpec{BaseImage: env.BaseImage,
		Packages: v1alpha1.Packages{Pip: []string{addBenchPackage(b, env, "bench-cold-warm")}}})
	warmJob := waitFinal(b, cWarm, nsWarm, "warm-up", "")
	requirePodPhase(b, warmJob, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
	waitStoreMade(b, p, nsWarm, warmJob.Name)
	podNS, _ := p.BuildPod(nsWarm, "any")
	seen := watchPodTimes(b, p, podNS)

	var inproc, viaPod time.Duration
	var split podBuildSplit
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		nsIn, nsPod := NewNamespace(b), NewNamespace(b)
		store, err := os.MkdirTemp(env.WorkDir, "bench-cold-store-")
		if err != nil {
			b.Fatal(err)
		}
		// Registered first, so it runs after the backend shut the store down.
		b.Cleanup(func() {
			if err := os.RemoveAll(store); err != nil {
				b.Errorf("removing the cold store: %v", err)
			}
		})
		cIn, _ := startInprocessWith(b, nsIn, ControllerConfig{}, func(o *inprocess.Options) { o.StorageDir = store })
		cPod, _ := p.StartPodController(b, nsPod, ControllerConfig{}, nil)
		spec := v1alpha1.ImageSpecSpec{BaseImage: env.BaseImage,
			Packages: v1alpha1.Packages{Pip: []string{addBenchPackage(b, env, "bench-cold")}}}
		b.StartTimer()
		runInproc := func() {
			start := time.Now()
			createSpec(b, cIn, nsIn, "cold", spec)
			requireBuiltBy(b, waitFinal(b, cIn, nsIn, "cold", ""), inprocess.Name, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
			inproc += time.Since(start)
		}
		runPod := func() {
			start := time.Now()
			createSpec(b, cPod, nsPod, "cold", spec)
			job := waitFinal(b, cPod, nsPod, "cold", "")
			requirePodPhase(b, job, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
			end := time.Now()
			viaPod += end.Sub(start)
			b.StopTimer()
			defer b.StartTimer()
			split.add(b, p, seen, nsPod, job.Name, start, end)
			// Its base-store container may still run, and then the
			// node's pull of the store: not into the next build.
			waitStoreMade(b, p, nsPod, job.Name)
		}
		inTurn(i, runInproc, runPod)
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(inproc.Seconds()/n, "inprocess-cold-s/op")
	b.ReportMetric(viaPod.Seconds()/n, "buildahpod-cold-s/op")
	b.ReportMetric((viaPod-inproc).Seconds()/n, "pod-overhead-s/op")
	b.ReportMetric(split.pull.Seconds()/n, "pod-script-pull-s/op")
	b.ReportMetric(split.toScript.Seconds()/n, "pod-created-to-script-start-s/op")
	b.Logf("%d cold builds each: inprocess %.2fs/op, buildahpod %.2fs/op (+%.2fs; spec -> pod created %.2fs, pod created -> script start %.2fs, its script %.2fs, of which the base pull %.2fs, script end -> kubelet report %.2fs, report -> job final %.2fs)",
		b.N, inproc.Seconds()/n, viaPod.Seconds()/n, (viaPod-inproc).Seconds()/n, split.toPod.Seconds()/n, split.toScript.Seconds()/n,
		split.script().Seconds()/n, split.pull.Seconds()/n, split.toReport.Seconds()/n, split.reportToFinal.Seconds()/n)
}

// podBuildSplit sums the parts of timed pod builds: spec write -> pod
// created (the controller), pod created -> script start, the script's
// pull, build and push, script end -> the kubelet's report reaching a pod
// watch, and that report -> the job final.
type podBuildSplit struct {
	toPod, toScript, pull, build, push, toReport, reportToFinal time.Duration
}

// add adds the parts of job's finished build pod in ns, whose spec was
// written at start and whose job was final at end; seen watches ns. It
// returns the pod's name.
func (s *podBuildSplit) add(b *testing.B, p *PodEnv, seen *podTimes, ns, job string, start, end time.Time) string {
	b.Helper()
	pod, script := finishedBuildPod(b, p, ns, job)
	created, terminated, _ := seen.get(pod.Name)
	if created.IsZero() || terminated.IsZero() {
		b.Fatalf("pod %s: created seen %v, terminated seen %v", pod.Name, created, terminated)
	}
	s.toPod += created.Sub(start)
	s.toScript += script.started.Sub(created)
	s.pull += script.pulled.Sub(script.started)
	s.build += script.built.Sub(script.pulled)
	s.push += script.finished.Sub(script.built)
	s.toReport += terminated.Sub(script.finished)
	s.reportToFinal += end.Sub(terminated)
	return pod.Name
}

// script is the build scripts' whole time.
func (s *podBuildSplit) script() time.Duration { return s.pull + s.build + s.push }

// finishedBuildPod reads the build pod of a finished job and the build
// script's times from its termination message.
func finishedBuildPod(b *testing.B, p *PodEnv, ns, job string) (*corev1.Pod, scriptTimes) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	podNS, podName := p.BuildPod(ns, job)
	pod, err := p.Kube.CoreV1().Pods(podNS).Get(ctx, podName, metav1.GetOptions{})
	if err != nil {
		b.Fatal(err)
	}
	ctr := buildContainer(pod)
	if ctr == nil || ctr.State.Terminated == nil {
		b.Fatalf("pod %s: no terminated builder container", podName)
	}
	times, err := parseScriptTimes(ctr.State.Terminated.Message)
	if err != nil {
		b.Fatalf("pod %s: %v", podName, err)
	}
	return pod, times
}

// scriptTimes are the build script's start, the ends of its pull and build
// stages, and its end.
type scriptTimes struct{ started, pulled, built, finished time.Time }

func (t scriptTimes) total() time.Duration { return t.finished.Sub(t.started) }

// parseScriptTimes reads the started=, pulled=, built= and finished= lines
// (Unix seconds with a fraction) of a termination message.
func parseScriptTimes(msg string) (scriptTimes, error) {
	var t scriptTimes
	for key, into := range map[string]*time.Time{"started": &t.started, "pulled": &t.pulled, "built": &t.built, "finished": &t.finished} {
		found := false
		for _, line := range strings.Split(msg, "\n") {
			v, ok := strings.CutPrefix(line, key+"=")
			if !ok {
				continue
			}
			sec, frac, _ := strings.Cut(v, ".")
			s, err1 := strconv.ParseInt(sec, 10, 64)
			ns, err2 := strconv.ParseInt((frac + "000000000")[:9], 10, 64)
			if err1 != nil || err2 != nil {
				return t, fmt.Errorf("termination message: %s=%q is not a time", key, v)
			}
			*into, found = time.Unix(s, ns), true
		}
		if !found {
			return t, fmt.Errorf("termination message has no %s= time", key)
		}
	}
	return t, nil
}

// podTimes records when a watch of the build namespace first showed each
// pod, its builder container terminated, and the pod final.
type podTimes struct {
	mu                         sync.Mutex
	created, terminated, final map[string]time.Time
}

func (t *podTimes) get(pod string) (created, terminated, final time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.created[pod], t.terminated[pod], t.final[pod]
}

func watchPodTimes(b *testing.B, p *PodEnv, ns string) *podTimes {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	w, err := p.Kube.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	t := &podTimes{created: map[string]time.Time{}, terminated: map[string]time.Time{}, final: map[string]time.Time{}}
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			now := time.Now()
			t.mu.Lock()
			if _, done := t.created[pod.Name]; !done {
				t.created[pod.Name] = now
			}
			if _, done := t.terminated[pod.Name]; !done && buildContainer(pod) != nil && buildContainer(pod).State.Terminated != nil {
				t.terminated[pod.Name] = now
			}
			if _, done := t.final[pod.Name]; !done && (pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed) {
				t.final[pod.Name] = now
			}
			t.mu.Unlock()
		}
	}()
	return t
}

// BenchmarkRegistryCache measures the pod backend's layer cache in the
// registry, same run: an apt + pip spec's first build with the cache (which
// also pushes every new step, and whose pod makes the namespace's base
// store, which the node then pulls in a warm pod) against the same build
// with the cache (and so base stores) off, and the rebuild after one pip
// change in a fresh pod (empty store, the base store mounted) against the
// first build, and one more pip change after that. Each iteration uses
// new namespaces, so new (empty) caches and stores. Times run from the
// spec write to the job's final status; the time from the maker's end to
// the warm pod's is reported on its own.
func BenchmarkRegistryCache(b *testing.B) {
	env := SharedEnv(b)
	p := StartPodEnv(b)
	var coldCache, coldNoCache, rebuild, rebuildPull, rebuildBuild, rebuildPush, rebuildWarmNode, warming time.Duration
	for i := 0; i < b.N; i++ {
		nsCache, nsOff := NewNamespace(b), NewNamespace(b)
		cCache, _ := p.StartPodController(b, nsCache, ControllerConfig{}, nil)
		cOff, _ := p.StartPodController(b, nsOff, ControllerConfig{}, func(o *buildahpod.Options) { o.NoRegistryCache = true })
		build := func(c *Controller, ns string) time.Duration {
			start := time.Now()
			createSpec(b, c, ns, "cached", baseSpec(env))
			requirePodPhase(b, waitFinal(b, c, ns, "cached", ""), v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
			return time.Since(start)
		}
		inTurn(i, func() { coldCache += build(cCache, nsCache) }, func() { coldNoCache += build(cOff, nsOff) })
		first := getSpec(b, cCache, nsCache, "cached").Status.JobName
		// The first pod makes the namespace's base store after its job
		// ended; a rebuild later than that mounts it.
		b.StopTimer()
		warming += waitStoreMade(b, p, nsCache, first)
		b.StartTimer()
		start := time.Now()
		updateSpec(b, cCache, nsCache, "cached", func(s *v1alpha1.ImageSpecSpec) { s.Packages.Pip = append(s.Packages.Pip, "e2e-extra") })
		again := waitFinal(b, cCache, nsCache, "cached", first)
		requirePodPhase(b, again, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
		rebuild += time.Since(start)
		b.StopTimer()
		_, script := finishedBuildPod(b, p, nsCache, again.Name)
		rebuildPull += script.pulled.Sub(script.started)
		rebuildBuild += script.built.Sub(script.pulled)
		rebuildPush += script.finished.Sub(script.built)
		b.StartTimer()

		// Another pip change.
		start = time.Now()
		updateSpec(b, cCache, nsCache, "cached", func(s *v1alpha1.ImageSpecSpec) {
			s.Packages.Pip = append(s.Packages.Pip, addBenchPackage(b, env, "bench-rebuild"))
		})
		requirePodPhase(b, waitFinal(b, cCache, nsCache, "cached", again.Name), v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
		rebuildWarmNode += time.Since(start)
	}
	n := float64(b.N)
	b.ReportMetric(coldCache.Seconds()/n, "cold-cache-s/op")
	b.ReportMetric(coldNoCache.Seconds()/n, "cold-nocache-s/op")
	b.ReportMetric(rebuild.Seconds()/n, "rebuild-s/op")
	b.ReportMetric(coldCache.Seconds()/coldNoCache.Seconds(), "cold-cache/nocache")
	b.ReportMetric(rebuild.Seconds()/coldCache.Seconds(), "rebuild/cold")
	b.ReportMetric(rebuildPull.Seconds()/n, "rebuild-script-pull-s/op")
	b.ReportMetric(rebuildBuild.Seconds()/n, "rebuild-script-build-s/op")
	b.ReportMetric(rebuildPush.Seconds()/n, "rebuild-script-push-s/op")
	b.ReportMetric(rebuildWarmNode.Seconds()/n, "rebuild-warm-node-s/op")
	b.ReportMetric(rebuildWarmNode.Seconds()/coldCache.Seconds(), "rebuild-warm-node/cold")
	b.ReportMetric(warming.Seconds()/n, "store-warm-s/op")
	outside := rebuild - rebuildPull - rebuildBuild - rebuildPush
	b.Logf("%d each: cold build with the cache %.1fs (without %.1fs, %.2fx); the node held the base store %.1fs after its maker ended; rebuild after one pip change in a fresh pod %.1fs (%.2fx the cold build; its script: pull %.2fs, build %.2fs, push %.2fs; outside the script %.2fs); another pip change after that %.1fs (%.2fx)",
		b.N, coldCache.Seconds()/n, coldNoCache.Seconds()/n, coldCache.Seconds()/coldNoCache.Seconds(), warming.Seconds()/n,
		rebuild.Seconds()/n, rebuild.Seconds()/coldCache.Seconds(),
		rebuildPull.Seconds()/n, rebuildBuild.Seconds()/n, rebuildPush.Seconds()/n, outside.Seconds()/n,
		rebuildWarmNode.Seconds()/n, rebuildWarmNode.Seconds()/coldCache.Seconds())
}

// BenchmarkUserNamespaces builds the BackendsEndToEnd spec (a pip package
// new to all, on the shared base) in a user-namespaced pod (the default on
// this node), in a pod of the host's users, and in a user-namespaced pod
// with buildah's vfs driver instead of overlay, same run, rotating which
// goes first; from the spec write to the job's final status, and the build
// script's own part of it (its start and end times in the termination
// message): the rest is the controller, the kubelet and the runtime.
func BenchmarkUserNamespaces(b *testing.B) {
	env := SharedEnv(b)
	p := StartPodEnv(b)
	type arm struct {
		name   string
		userns bool
		tweak  func(*buildahpod.Options)
		ns     string
		c      *Controller
		total  time.Duration
		script time.Duration // the build script's own run, in the pod
	}
	arms := []*arm{
		{name: "userns", userns: true},
		{name: "host-users", tweak: func(o *buildahpod.Options) { o.UserNamespaces = buildahpod.UserNamespacesOff }},
		{name: "userns-vfs", userns: true, tweak: func(o *buildahpod.Options) { o.StorageDriver = "vfs" }},
	}
	for _, a := range arms {
		a.ns = NewNamespace(b)
		a.c, _ = p.StartPodController(b, a.ns, ControllerConfig{}, a.tweak)
	}
	build := func(a *arm, name string, spec v1alpha1.ImageSpecSpec) {
		start := time.Now()
		createSpec(b, a.c, a.ns, name, spec)
		job := waitFinal(b, a.c, a.ns, name, "")
		a.total += time.Since(start)
		if job.Status.Phase != v1alpha1.JobSucceeded {
			b.Fatalf("%s: job %s/%s: %s %s", a.name, a.ns, job.Name, job.Status.Phase, job.Status.Message)
		}
		b.StopTimer()
		defer b.StartTimer()
		pod, script := finishedBuildPod(b, p, a.ns, job.Name)
		if got := pod.Spec.HostUsers != nil && !*pod.Spec.HostUsers; got != a.userns {
			b.Fatalf("%s: pod %s: user namespace %t, want %t", a.name, pod.Name, got, a.userns)
		}
		a.script += script.total()
	}
	// The node pulls the builder image for the first pod: not any arm's.
	for _, a := range arms {
		build(a, "warm-up", v1alpha1.ImageSpecSpec{BaseImage: env.BaseImage,
			Packages: v1alpha1.Packages{Pip: []string{addBenchPackage(b, env, "bench-userns-warm")}}})
		a.total, a.script = 0, 0
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		spec := v1alpha1.ImageSpecSpec{BaseImage: env.BaseImage,
			Packages: v1alpha1.Packages{Pip: []string{addBenchPackage(b, env, "bench-userns")}}}
		for j := range arms {
			build(arms[(i+j)%len(arms)], fmt.Sprintf("userns-%d", i), spec)
		}
	}
	b.StopTimer()
	n := float64(b.N)
	var line []string
	for _, a := range arms {
		b.ReportMetric(a.total.Seconds()/n, a.name+"-s/op")
		b.ReportMetric(a.script.Seconds()/n, a.name+"-script-s/op")
		line = append(line, fmt.Sprintf("%s %.2fs/op (script %.2fs, the rest %.2fs)", a.name, a.total.Seconds()/n, a.script.Seconds()/n, (a.total-a.script).Seconds()/n))
	}
	b.ReportMetric(arms[0].total.Seconds()/arms[1].total.Seconds(), "userns/host-users")
	b.ReportMetric(arms[2].total.Seconds()/arms[0].total.Seconds(), "vfs/overlay")
	b.Logf("%d builds each: %s; userns/host-users %.2f, vfs/overlay (userns) %.2f", b.N, strings.Join(line, ", "),
		arms[0].total.Seconds()/arms[1].total.Seconds(), arms[2].total.Seconds()/arms[0].total.Seconds())
}

// buildContainer is the status of pod's build container (a pod that makes
// its namespace's base store has a second container).
func buildContainer(pod *corev1.Pod) *corev1.ContainerStatus {
	for i := range pod.Status.ContainerStatuses {
		if pod.Status.ContainerStatuses[i].Name == buildahpod.ContainerName {
			return &pod.Status.ContainerStatuses[i]
		}
	}
	return nil
}
