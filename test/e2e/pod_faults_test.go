package e2e

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
)

// Faults a real cluster has, each in the middle of a pod build: the
// apiserver restarts, the apiserver and etcd restart, the node's kubelet
// restarts. The controller and the build pod ride it out: the same pod
// finishes, the job ends Succeeded with the digest the registry has, one
// job, and the build started and succeeded exactly once.
func TestBuildahPodFaults(t *testing.T) {
	env := SharedEnv(t)
	p := StartPodEnv(t)
	faults := []struct {
		name string
		do   func(ctx context.Context) error
	}{
		{"APIServerRestart", func(ctx context.Context) error { return env.ControlPlane.Restart(ctx, false) }},
		{"APIServerAndEtcdRestart", func(ctx context.Context) error { return env.ControlPlane.Restart(ctx, true) }},
		{"KubeletRestart", func(ctx context.Context) error { return p.Node.RestartKubelet(ctx) }},
	}
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			ns := NewNamespace(t)
			index := newHangingIndex(t)
			c, _ := p.StartPodController(t, ns, ControllerConfig{Tweak: hangingIndexOptions(index)}, nil)
			createSpec(t, c, ns, "steady", v1alpha1.ImageSpecSpec{
				BaseImage: env.BaseImage,
				Packages:  v1alpha1.Packages{Pip: []string{"e2e-hello"}},
			})
			job := runningJob(t, c, ns, "steady", "", index)
			podNS, podName := p.BuildPod(ns, job.Name)
			pod, err := p.Kube.CoreV1().Pods(podNS).Get(context.Background(), podName, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			start := time.Now()
			if err := f.do(ctx); err != nil {
				t.Fatalf("%s: %v", f.name, err)
			}
			t.Logf("%s took %s", f.name, time.Since(start).Round(100*time.Millisecond))
			index.Release()

			job = WaitJob(t, c, ns, "steady", "", buildTimeout)
			requirePodPhase(t, job, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
			if info := env.Inspect(t, env.Registry, job.Status.Image); info.Digest != job.Status.Digest {
				t.Errorf("registry has %s, status says %s", info.Digest, job.Status.Digest)
			}
			after, err := p.Kube.CoreV1().Pods(podNS).Get(context.Background(), podName, metav1.GetOptions{})
			if err != nil || after.UID != pod.UID {
				t.Errorf("build pod %s: UID %s before, %v after (err %v): the build was started again", podName, pod.UID, uidOf(after), err)
			}
			requireJobCount(t, c, ns, map[string]int{"steady": 1})
			count := jobEventCounts(t, p.Kube, job)
			for _, reason := range []string{v1alpha1.EventBuildStarted, v1alpha1.EventBuildSucceeded} {
				if count[reason] != 1 {
					t.Errorf("%d %s events for job %s, want exactly 1 (events: %v)", count[reason], reason, job.Name, count)
				}
			}
		})
	}
}

// jobEventCounts counts the events of a job by reason: of this job (by
// UID), not of an earlier one of the same name.
func jobEventCounts(t *testing.T, kube kubernetes.Interface, job *v1alpha1.ImageSpecJob) map[string]int {
	t.Helper()
	events, err := kube.CoreV1().Events(job.Namespace).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, e := range events.Items {
		if e.InvolvedObject.UID == job.UID {
			count[e.Reason] += int(max(e.Count, 1))
		}
	}
	return count
}

func uidOf(o metav1.Object) any {
	if o == nil {
		return nil
	}
	return o.GetUID()
}
