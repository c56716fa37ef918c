package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
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
