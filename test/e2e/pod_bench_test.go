package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/backend/buildahpod"
)

// The same spec through both backends in one run, from ImageSpec creation
// to a Succeeded job: a pip package new to both (so the step runs in both)
// on the shared base. The inprocess store keeps the base image between
// builds; each pod pulls it into a fresh emptyDir, which is part of the
// pod backend's overhead, as are scheduling, starting the builder
// container and the kubelet's status report. The pod's own timestamps have
// one-second resolution.
func BenchmarkBackendsEndToEnd(b *testing.B) {
	env := SharedEnv(b)
	p := StartPodEnv(b)
	nsIn := NewNamespace(b)
	nsPod := NewNamespace(b)
	cIn, _ := StartInprocessController(b, nsIn, ControllerConfig{})
	cPod, _ := p.StartPodController(b, nsPod, ControllerConfig{}, nil)

	var inproc, viaPod, toStart, running, toFinal time.Duration
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
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			podNS, podName := p.BuildPod(nsPod, job.Name)
			pod, err := p.Kube.CoreV1().Pods(podNS).Get(ctx, podName, metav1.GetOptions{})
			if err != nil {
				b.Fatal(err)
			}
			if len(pod.Status.ContainerStatuses) == 1 && pod.Status.ContainerStatuses[0].State.Terminated != nil {
				term := pod.Status.ContainerStatuses[0].State.Terminated
				toStart += term.StartedAt.Sub(pod.CreationTimestamp.Time)
				running += term.FinishedAt.Sub(term.StartedAt.Time)
				toFinal += job.Status.FinishTime.Sub(term.FinishedAt.Time)
			}
			b.StartTimer()
		}
		if i%2 == 0 {
			runInproc()
			runPod()
		} else {
			runPod()
			runInproc()
		}
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(inproc.Seconds()/n, "inprocess-s/op")
	b.ReportMetric(viaPod.Seconds()/n, "buildahpod-s/op")
	b.ReportMetric((viaPod-inproc).Seconds()/n, "pod-overhead-s/op")
	b.ReportMetric(toStart.Seconds()/n, "pod-create-to-start-s/op")
	b.ReportMetric(running.Seconds()/n, "pod-container-run-s/op")
	b.ReportMetric(toFinal.Seconds()/n, "pod-exit-to-final-s/op")
	b.Logf("%d builds each: inprocess %.1fs/op, buildahpod %.1fs/op (pod created->started %.1fs, container ran %.1fs, exit->job final %.1fs)",
		b.N, inproc.Seconds()/n, viaPod.Seconds()/n, toStart.Seconds()/n, running.Seconds()/n, toFinal.Seconds()/n)
}

// BenchmarkRegistryCache measures the pod backend's layer cache in the
// registry, same run: an apt + pip spec's first build with the cache (which
// also pushes every new step) against the same build with the cache off,
// and the rebuild after one pip change in a fresh pod (empty store)
// against the first build. Each iteration uses new namespaces, so new
// (empty) caches. Times run from the spec write to the job's final status.
func BenchmarkRegistryCache(b *testing.B) {
	env := SharedEnv(b)
	p := StartPodEnv(b)
	var coldCache, coldNoCache, rebuild time.Duration
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
		if i%2 == 0 {
			coldCache += build(cCache, nsCache)
			coldNoCache += build(cOff, nsOff)
		} else {
			coldNoCache += build(cOff, nsOff)
			coldCache += build(cCache, nsCache)
		}
		first := getSpec(b, cCache, nsCache, "cached").Status.JobName
		start := time.Now()
		updateSpec(b, cCache, nsCache, "cached", func(s *v1alpha1.ImageSpecSpec) { s.Packages.Pip = append(s.Packages.Pip, "e2e-extra") })
		requirePodPhase(b, waitFinal(b, cCache, nsCache, "cached", first), v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
		rebuild += time.Since(start)
	}
	n := float64(b.N)
	b.ReportMetric(coldCache.Seconds()/n, "cold-cache-s/op")
	b.ReportMetric(coldNoCache.Seconds()/n, "cold-nocache-s/op")
	b.ReportMetric(rebuild.Seconds()/n, "rebuild-s/op")
	b.ReportMetric(coldCache.Seconds()/coldNoCache.Seconds(), "cold-cache/nocache")
	b.ReportMetric(rebuild.Seconds()/coldCache.Seconds(), "rebuild/cold")
	b.Logf("%d each: cold build with the cache %.1fs (without %.1fs, %.2fx); rebuild after one pip change in a fresh pod %.1fs (%.2fx the cold build)",
		b.N, coldCache.Seconds()/n, coldNoCache.Seconds()/n, coldCache.Seconds()/coldNoCache.Seconds(), rebuild.Seconds()/n, rebuild.Seconds()/coldCache.Seconds())
}
