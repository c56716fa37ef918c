package integration

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/backend"
	"github.com/imagespec/imagespec-controller/pkg/backend/backendtest"
	"github.com/imagespec/imagespec-controller/pkg/config"
	"github.com/imagespec/imagespec-controller/pkg/controller"
	"github.com/imagespec/imagespec-controller/test/framework/secretscan"
)

const digestA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

func TestControllerCreateToSuccess(t *testing.T) {
	ns := NewTestNamespace(t)
	c, k := clients(t)
	be := backendtest.NewScripted()
	startController(t, be, defaultControllerOptions(ns))

	spec := createSpec(t, c, newImageSpec(ns, "numpy", v1alpha1.Packages{Apt: []string{"curl"}, Pip: []string{"numpy==1.26.*"}}))
	jobName := currentJobName(t, c, ns, spec.Name, 1)
	if !strings.HasPrefix(jobName, "numpy-") {
		t.Fatalf("job name %q", jobName)
	}
	job := waitForJobPhase(t, c, ns, jobName, v1alpha1.JobRunning)
	if job.Spec.TargetImage != testRepoPrefix+"/numpy:"+strings.TrimPrefix(jobName, "numpy-") {
		t.Fatalf("target %q for job %q", job.Spec.TargetImage, jobName)
	}
	if job.Status.StartTime == nil || job.Status.Backend != "scripted" {
		t.Fatalf("running job status %+v", job.Status)
	}

	be.Succeed(ns+"/"+jobName, digestA)
	job = waitForJobPhase(t, c, ns, jobName, v1alpha1.JobSucceeded)
	if job.Status.Digest != digestA || job.Status.Image != job.Spec.TargetImage || job.Status.FinishTime == nil {
		t.Fatalf("succeeded job status %+v", job.Status)
	}
	spec = waitForSpec(t, c, ns, spec.Name, "Ready", func(s *v1alpha1.ImageSpec) bool {
		r := readyCondition(s)
		return r != nil && r.Status == metav1.ConditionTrue
	})
	if spec.Status.Image != job.Spec.TargetImage || spec.Status.PinnedImage != testRepoPrefix+"/numpy@"+digestA ||
		spec.Status.Phase != v1alpha1.JobSucceeded || spec.Status.JobName != jobName {
		t.Fatalf("spec status %+v", spec.Status)
	}
	events := waitForEvent(t, k, ns, jobName, "BuildSucceeded")
	if !strings.Contains(strings.Join(events, "\n"), "BuildStarted") {
		t.Fatalf("no BuildStarted event: %v", events)
	}
	if got := be.Starts(ns + "/" + jobName); got != 1 {
		t.Fatalf("build started %d times", got)
	}

	// The push Secret holds the credentials, as a dockerconfigjson; nothing
	// else the controller wrote does.
	secret := pushSecret(t, k, ns)
	if secret.Type != corev1.SecretTypeDockerConfigJson || !strings.Contains(string(secret.Data[corev1.DockerConfigJsonKey]), testPassword) {
		t.Fatalf("push secret %s lacks the credentials", secret.Name)
	}
	assertNoPassword(t, ns)
}

// assertNoPassword scans what users can read besides the Secret: status,
// events and ConfigMaps, for every form of the credentials (see
// secretscan), and fails when a list cannot be read.
func assertNoPassword(t *testing.T, ns string) {
	t.Helper()
	cs, kc := clients(t)
	ctx := context.Background()
	sources := map[string]string{}
	add := func(name string, list any, err error) {
		t.Helper()
		if err == nil {
			sources[name], err = secretscan.JSON(list)
		}
		if err != nil {
			t.Fatalf("listing %s to scan: %v", name, err)
		}
	}
	specs, err := cs.PrimehubV1alpha1().ImageSpecs(ns).List(ctx, metav1.ListOptions{})
	add("imagespecs", specs, err)
	jobs, err := cs.PrimehubV1alpha1().ImageSpecJobs(ns).List(ctx, metav1.ListOptions{})
	add("imagespecjobs", jobs, err)
	events, err := kc.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	add("events", events, err)
	cms, err := kc.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
	add("configmaps", cms, err)
	for _, where := range secretscan.Find(sources, secretscan.Credential{User: testUser, Password: testPassword}) {
		t.Errorf("the registry credentials appear in %s", where)
	}
}

func TestControllerSpecUpdateSupersedesRunningJob(t *testing.T) {
	ns := NewTestNamespace(t)
	c, k := clients(t)
	be := backendtest.NewScripted()
	startController(t, be, defaultControllerOptions(ns))

	spec := createSpec(t, c, newImageSpec(ns, "app", v1alpha1.Packages{Pip: []string{"requests>=2.31"}}))
	first := currentJobName(t, c, ns, spec.Name, 1)
	waitForJobPhase(t, c, ns, first, v1alpha1.JobRunning)

	updateSpec(t, c, ns, spec.Name, func(s *v1alpha1.ImageSpec) {
		s.Spec.Packages.Pip = append(s.Spec.Packages.Pip, "requests[socks]>=2.31,<3")
	})
	second := currentJobName(t, c, ns, spec.Name, 2)
	if second == first {
		t.Fatal("the new revision reuses the old job")
	}
	old := waitForJobPhase(t, c, ns, first, v1alpha1.JobCancelled)
	if old.Status.Reason != v1alpha1.ReasonSuperseded || !strings.Contains(old.Status.Message, second) {
		t.Fatalf("old job %+v", old.Status)
	}
	if !be.Cancelled(ns + "/" + first) {
		t.Fatal("the old build still runs")
	}
	waitForJobPhase(t, c, ns, second, v1alpha1.JobRunning)
	waitForEvent(t, k, ns, first, "BuildCancelled")
}

func TestControllerCancelKeepsJob(t *testing.T) {
	ns := NewTestNamespace(t)
	c, k := clients(t)
	be := backendtest.NewScripted()
	startController(t, be, defaultControllerOptions(ns))

	spec := createSpec(t, c, newImageSpec(ns, "cancelme", v1alpha1.Packages{Apt: []string{"git"}}))
	name := currentJobName(t, c, ns, spec.Name, 1)
	waitForJobPhase(t, c, ns, name, v1alpha1.JobRunning)
	patch := []byte(`{"spec":{"cancel":true}}`)
	if _, err := c.PrimehubV1alpha1().ImageSpecJobs(ns).Patch(context.Background(), name, "application/merge-patch+json", patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	job := waitForJobPhase(t, c, ns, name, v1alpha1.JobCancelled)
	if job.Status.Reason != v1alpha1.ReasonCancelled || job.Status.FinishTime == nil || !be.Cancelled(ns+"/"+name) {
		t.Fatalf("cancelled job %+v", job.Status)
	}
	waitForEvent(t, k, ns, name, "BuildCancelled")
	// The schema keeps a cancelled job cancelled and its inputs fixed.
	_, err := c.PrimehubV1alpha1().ImageSpecJobs(ns).Patch(context.Background(), name, "application/merge-patch+json", []byte(`{"spec":{"cancel":false}}`), metav1.PatchOptions{})
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "cannot be resumed") {
		t.Fatalf("un-cancelling: %v", err)
	}
	_, err = c.PrimehubV1alpha1().ImageSpecJobs(ns).Patch(context.Background(), name, "application/merge-patch+json", []byte(`{"spec":{"baseImage":"debian"}}`), metav1.PatchOptions{})
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "immutable") {
		t.Fatalf("changing a job's base image: %v", err)
	}
	// The ImageSpec reports the cancelled revision.
	waitForSpec(t, c, ns, spec.Name, "Cancelled", func(s *v1alpha1.ImageSpec) bool { return s.Status.Phase == v1alpha1.JobCancelled })
}

func TestControllerTimeoutCountsPending(t *testing.T) {
	ns := NewTestNamespace(t)
	c, k := clients(t)
	be := backendtest.NewScripted()
	// The build never leaves Pending, like a pod that no node takes.
	be.Initial = backend.Status{Phase: v1alpha1.JobPending, Reason: "Unschedulable", Message: "0/0 nodes are available"}
	opts := defaultControllerOptions(ns)
	opts.Controller.BuildTimeout = 3 * time.Second
	startController(t, be, opts)

	spec := createSpec(t, c, newImageSpec(ns, "stuck", v1alpha1.Packages{Apt: []string{"git"}}))
	name := currentJobName(t, c, ns, spec.Name, 1)
	job := waitForJobPhase(t, c, ns, name, v1alpha1.JobFailed)
	if job.Status.Reason != v1alpha1.ReasonTimeout || !strings.Contains(job.Status.Message, "never started running") {
		t.Fatalf("timed-out job %+v", job.Status)
	}
	if !be.Cancelled(ns + "/" + name) {
		t.Fatal("the pending build was not cancelled")
	}
	events := waitForEvent(t, k, ns, name, "BuildFailed")
	if !strings.Contains(strings.Join(events, "\n"), "Timeout") {
		t.Fatalf("events %v", events)
	}
}

func TestControllerConcurrencyLimitQueues(t *testing.T) {
	ns := NewTestNamespace(t)
	c, _ := clients(t)
	be := backendtest.NewScripted()
	opts := defaultControllerOptions(ns)
	opts.Controller.MaxConcurrentBuilds = 1
	startController(t, be, opts)

	createSpec(t, c, newImageSpec(ns, "first", v1alpha1.Packages{Apt: []string{"git"}}))
	first := currentJobName(t, c, ns, "first", 1)
	waitForJobPhase(t, c, ns, first, v1alpha1.JobRunning)
	createSpec(t, c, newImageSpec(ns, "second", v1alpha1.Packages{Apt: []string{"curl"}}))
	second := currentJobName(t, c, ns, "second", 1)
	waitFor(t, "second job queued", func() (bool, string) {
		j, err := c.PrimehubV1alpha1().ImageSpecJobs(ns).Get(context.Background(), second, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return j.Status.Reason == v1alpha1.ReasonQueued && strings.Contains(j.Status.Message, "limit 1"), fmt.Sprintf("%+v", j.Status)
	})
	if be.Starts(ns+"/"+second) != 0 {
		t.Fatal("second build started past the limit")
	}
	be.Succeed(ns+"/"+first, digestA)
	waitForJobPhase(t, c, ns, second, v1alpha1.JobRunning)
}

func TestControllerHistoryLimits(t *testing.T) {
	ns := NewTestNamespace(t)
	c, _ := clients(t)
	be := backendtest.NewScripted()
	opts := defaultControllerOptions(ns)
	opts.Controller.SucceededHistoryLimit = 1
	opts.Controller.FailedHistoryLimit = 1
	startController(t, be, opts)

	createSpec(t, c, newImageSpec(ns, "hist", v1alpha1.Packages{Apt: []string{"git"}}))
	var names []string
	for i := 1; i <= 5; i++ {
		name := currentJobName(t, c, ns, "hist", int64(i))
		names = append(names, name)
		waitForJobPhase(t, c, ns, name, v1alpha1.JobRunning)
		if i%2 == 1 {
			be.Succeed(ns+"/"+name, digestA)
			waitForJobPhase(t, c, ns, name, v1alpha1.JobSucceeded)
		} else {
			be.Fail(ns+"/"+name, v1alpha1.ReasonBuildFailed, "E: Unable to locate package", "")
			waitForJobPhase(t, c, ns, name, v1alpha1.JobFailed)
		}
		updateSpec(t, c, ns, "hist", func(s *v1alpha1.ImageSpec) { s.Spec.UpdateTime = fmt.Sprintf("2026-11-30T12:00:0%dZ", i) })
	}
	current := currentJobName(t, c, ns, "hist", 6)
	// Left: the current job, the newest failed (names[3]) and the newest
	// succeeded (names[4], whose image is status.image).
	want := map[string]bool{current: true, names[3]: true, names[4]: true}
	waitFor(t, "old jobs pruned", func() (bool, string) {
		jobs := listJobs(t, c, ns)
		got := map[string]bool{}
		for _, j := range jobs {
			got[j.Name] = true
		}
		return fmt.Sprint(got) == fmt.Sprint(want), fmt.Sprintf("jobs %v, want %v", got, want)
	})
}

func TestControllerRestartMidBuild(t *testing.T) {
	ns := NewTestNamespace(t)
	c, _ := clients(t)
	be := backendtest.NewScripted()
	first := startController(t, be, defaultControllerOptions(ns))

	createSpec(t, c, newImageSpec(ns, "restart", v1alpha1.Packages{Apt: []string{"git"}}))
	name := currentJobName(t, c, ns, "restart", 1)
	waitForJobPhase(t, c, ns, name, v1alpha1.JobRunning)
	first.stop(t)

	// The build finishes while no controller runs.
	be.Succeed(ns+"/"+name, digestA)
	startController(t, be, defaultControllerOptions(ns))
	waitForJobPhase(t, c, ns, name, v1alpha1.JobSucceeded)
	waitForSpec(t, c, ns, "restart", "the image", func(s *v1alpha1.ImageSpec) bool { return s.Status.Image != "" })
	if jobs := listJobs(t, c, ns); len(jobs) != 1 {
		t.Fatalf("%d jobs after a restart, want 1", len(jobs))
	}
	if got := be.Starts(ns + "/" + name); got != 1 {
		t.Fatalf("build started %d times across the restart", got)
	}
}

func TestControllerRetriesConflicts(t *testing.T) {
	ns := NewTestNamespace(t)
	c, _ := clients(t)
	be := backendtest.NewScripted()
	var name string // the job, known once the controller created it
	touch := map[string]func(int) error{
		"imagespecjobs": func(i int) error {
			p := []byte(fmt.Sprintf(`{"metadata":{"annotations":{"touched":"%d"}}}`, i))
			_, err := c.PrimehubV1alpha1().ImageSpecJobs(ns).Patch(context.Background(), name, "application/merge-patch+json", p, metav1.PatchOptions{})
			return err
		},
		"imagespecs": func(i int) error {
			p := []byte(fmt.Sprintf(`{"metadata":{"annotations":{"touched":"%d"}}}`, i))
			_, err := c.PrimehubV1alpha1().ImageSpecs(ns).Patch(context.Background(), "busy", "application/merge-patch+json", p, metav1.PatchOptions{})
			return err
		},
	}
	// Once the build has finished, the first status write of the job and
	// of the spec is preceded by another writer's change, so it carries a
	// stale resourceVersion for certain: a real 409 from the API server.
	var finished atomic.Bool
	var staled sync.Map
	ctrl := startControllerObserved(t, be, defaultControllerOptions(ns), func(req *http.Request) {
		if !finished.Load() || req.Method != http.MethodPut || !strings.HasSuffix(req.URL.Path, "/status") {
			return
		}
		for resource, f := range touch {
			if strings.Contains(req.URL.Path, "/"+resource+"/") {
				if _, done := staled.LoadOrStore(resource, true); !done {
					if err := f(-1); err != nil {
						t.Error(err)
					}
				}
			}
		}
	})
	createSpec(t, c, newImageSpec(ns, "busy", v1alpha1.Packages{Apt: []string{"git"}}))
	name = currentJobName(t, c, ns, "busy", 1)
	waitForJobPhase(t, c, ns, name, v1alpha1.JobRunning)

	// Besides, someone else keeps changing the job and the spec while the
	// build finishes: the controller must retry until the status is right.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, f := range touch {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := f(i); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	finished.Store(true)
	be.Succeed(ns+"/"+name, digestA)
	waitForJobPhase(t, c, ns, name, v1alpha1.JobSucceeded)
	waitForSpec(t, c, ns, "busy", "Ready", func(s *v1alpha1.ImageSpec) bool {
		r := readyCondition(s)
		return r != nil && r.Status == metav1.ConditionTrue
	})
	close(stop)
	wg.Wait()
	for _, resource := range []string{"imagespecjobs", "imagespecs"} {
		if _, ok := staled.Load(resource); !ok {
			t.Errorf("the controller wrote no %s status after the build finished", resource)
		}
	}
	if n := ctrl.conflicts.Load(); n < 2 {
		t.Errorf("the API server answered %d conflicts, want at least the 2 made certain", n)
	}
	// Expected conflicts are retried quietly, not reported as errors.
	log := ctrl.log()
	if !strings.Contains(log, "Build finished") {
		t.Fatalf("the controller's log was not captured:\n%s", log)
	}
	if strings.Contains(log, "Error syncing") {
		t.Errorf("a conflict was logged as an error:\n%s", log)
	}
	t.Logf("%d writes, %d conflicts", ctrl.writes.Load(), ctrl.conflicts.Load())
}

func TestControllerInvalidSpec(t *testing.T) {
	ns := NewTestNamespace(t)
	c, k := clients(t)
	be := backendtest.NewScripted()
	startController(t, be, defaultControllerOptions(ns))

	createSpec(t, c, newImageSpec(ns, "invalid", v1alpha1.Packages{Apt: []string{"curl", "Bad_Name"}, Pip: []string{"requests>=2.31"}}))
	spec := waitForSpec(t, c, ns, "invalid", "InvalidSpec", func(s *v1alpha1.ImageSpec) bool {
		r := readyCondition(s)
		return r != nil && r.Reason == v1alpha1.ReasonInvalidSpec
	})
	if msg := readyCondition(spec).Message; !strings.Contains(msg, "spec.packages.apt[1]") || spec.Status.Phase != v1alpha1.JobFailed {
		t.Fatalf("status does not say which field: %+v", spec.Status)
	}
	events := waitForEvent(t, k, ns, "invalid", v1alpha1.ReasonInvalidSpec)
	if !strings.HasPrefix(events[0], "Warning") {
		t.Fatalf("events %v", events)
	}
	if jobs := listJobs(t, c, ns); len(jobs) != 0 {
		t.Fatalf("an invalid spec made jobs: %v", jobs)
	}

	// Flags are refused by the schema itself, with a message that says
	// what to do instead.
	_, err := c.PrimehubV1alpha1().ImageSpecs(ns).Create(context.Background(),
		newImageSpec(ns, "flag", v1alpha1.Packages{Conda: []string{"-c conda-forge"}}), metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "channel::name") {
		t.Fatalf("creating a spec with a flag: %v", err)
	}

	// Fixing the spec builds it.
	updateSpec(t, c, ns, "invalid", func(s *v1alpha1.ImageSpec) { s.Spec.Packages.Apt = []string{"curl"} })
	name := currentJobName(t, c, ns, "invalid", 2)
	waitForJobPhase(t, c, ns, name, v1alpha1.JobRunning)
}

func TestControllerPushSecretFollowsPassword(t *testing.T) {
	ns := NewTestNamespace(t)
	c, k := clients(t)
	be := backendtest.NewScripted()
	opts := defaultControllerOptions(ns)
	first := startController(t, be, opts)
	createSpec(t, c, newImageSpec(ns, "creds", v1alpha1.Packages{Apt: []string{"git"}}))
	name := currentJobName(t, c, ns, "creds", 1)
	waitForJobPhase(t, c, ns, name, v1alpha1.JobRunning)
	if !strings.Contains(string(pushSecret(t, k, ns).Data[corev1.DockerConfigJsonKey]), testPassword) {
		t.Fatal("push secret lacks the first password")
	}
	first.stop(t)

	const rotated = "rotated-P4ssword-2"
	opts.Controller.Registry.Password = config.NewSecret(rotated)
	startController(t, be, opts)
	waitFor(t, "push secret rotated", func() (bool, string) {
		data := string(pushSecret(t, k, ns).Data[corev1.DockerConfigJsonKey])
		return strings.Contains(data, rotated) && !strings.Contains(data, testPassword), "old credentials"
	})
	for _, e := range eventsFor(t, k, ns, name) {
		if strings.Contains(e, rotated) {
			t.Fatal("an event carries the password")
		}
	}
}

func TestControllerIdleMakesNoWrites(t *testing.T) {
	ns := NewTestNamespace(t)
	c, _ := clients(t)
	be := backendtest.NewScripted()
	rc := startController(t, be, defaultControllerOptions(ns))
	for i := 0; i < 3; i++ {
		createSpec(t, c, newImageSpec(ns, fmt.Sprintf("idle-%d", i), v1alpha1.Packages{Apt: []string{"git"}}))
	}
	for i := 0; i < 3; i++ {
		name := currentJobName(t, c, ns, fmt.Sprintf("idle-%d", i), 1)
		waitForJobPhase(t, c, ns, name, v1alpha1.JobRunning)
		be.Succeed(ns+"/"+name, digestA)
		waitForJobPhase(t, c, ns, name, v1alpha1.JobSucceeded)
		waitForSpec(t, c, ns, fmt.Sprintf("idle-%d", i), "image", func(s *v1alpha1.ImageSpec) bool { return s.Status.Image != "" })
	}
	// Let in-flight events drain, then watch the controller do nothing.
	time.Sleep(2 * time.Second)
	before := rc.writes.Load()
	time.Sleep(5 * time.Second)
	if d := rc.writes.Load() - before; d != 0 {
		t.Fatalf("an idle controller sent %d write requests in 5s", d)
	}
}

// The controller must refuse a Secret it does not own rather than
// overwrite it.
func TestControllerLeavesForeignSecretAlone(t *testing.T) {
	ns := NewTestNamespace(t)
	c, k := clients(t)
	foreign := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: controller.DefaultPushSecretName, Namespace: ns},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"mine.example":{"auth":"bWluZTptaW5l"}}}`)},
	}
	if _, err := k.CoreV1().Secrets(ns).Create(context.Background(), foreign, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	be := backendtest.NewScripted()
	startController(t, be, defaultControllerOptions(ns))
	createSpec(t, c, newImageSpec(ns, "foreign", v1alpha1.Packages{Apt: []string{"git"}}))
	name := currentJobName(t, c, ns, "foreign", 1)
	events := waitForEvent(t, k, ns, name, "PushSecretFailed")
	if !strings.Contains(strings.Join(events, "\n"), "not managed") {
		t.Fatalf("events %v", events)
	}
	if be.Starts(ns+"/"+name) != 0 {
		t.Fatal("built with a Secret the controller does not own")
	}
	if got := string(pushSecret(t, k, ns).Data[corev1.DockerConfigJsonKey]); !strings.Contains(got, "mine.example") {
		t.Fatal("the user's Secret was overwritten")
	}
}

// A job made by hand, by anyone who may create ImageSpecJobs, is built
// only if it is exactly what the controller would make: one that targets
// another tenant's repository, or that copies its ImageSpec's owner
// reference but points at another image, ends Failed/Rejected naming the
// field, and the backend never starts it. The ImageSpec's own build goes
// on.
func TestControllerRejectsHandMadeJobs(t *testing.T) {
	ns := NewTestNamespace(t)
	c, _ := clients(t)
	be := backendtest.NewScripted()
	startController(t, be, defaultControllerOptions(ns))
	spec := createSpec(t, c, newImageSpec(ns, "mine", v1alpha1.Packages{Pip: []string{"requests"}}))
	own := waitForSpec(t, c, ns, "mine", "a job", func(s *v1alpha1.ImageSpec) bool { return s.Status.JobName != "" })

	handMade := []*v1alpha1.ImageSpecJob{
		{
			ObjectMeta: metav1.ObjectMeta{Name: "victim", Namespace: ns},
			Spec: v1alpha1.ImageSpecJobSpec{
				BaseImage: "python:3.11-slim", TargetImage: testRepoPrefix + "/victim:latest",
				PushSecret: controller.DefaultPushSecretName,
			},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Name: "mine-shadow", Namespace: ns,
				OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(spec, v1alpha1.SchemeGroupVersion.WithKind("ImageSpec"))}},
			Spec: v1alpha1.ImageSpecJobSpec{
				BaseImage: "python:3.11-slim", Packages: v1alpha1.Packages{Pip: []string{"requests"}},
				TargetImage: "registry.test.example/base/python:3.11-slim",
				PushSecret:  controller.DefaultPushSecretName,
			},
		},
	}
	for _, j := range handMade {
		if _, err := c.PrimehubV1alpha1().ImageSpecJobs(ns).Create(context.Background(), j, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, j := range handMade {
		got := waitForJobPhase(t, c, ns, j.Name, v1alpha1.JobFailed)
		if got.Status.Reason != v1alpha1.ReasonRejected {
			t.Errorf("job %s: reason %s (%s), want Rejected", j.Name, got.Status.Reason, got.Status.Message)
		}
		want := map[string]string{"victim": "metadata.ownerReferences", "mine-shadow": "spec.targetImage"}[j.Name]
		if !strings.Contains(got.Status.Message, want) {
			t.Errorf("job %s: message %q does not name %s", j.Name, got.Status.Message, want)
		}
		if n := be.Starts(ns + "/" + j.Name); n != 0 {
			t.Errorf("the backend started hand-made job %s %d times", j.Name, n)
		}
	}
	// The ImageSpec's own job is built as usual.
	be.Succeed(ns+"/"+own.Status.JobName, "sha256:"+strings.Repeat("b", 64))
	waitForJobPhase(t, c, ns, own.Status.JobName, v1alpha1.JobSucceeded)
}
