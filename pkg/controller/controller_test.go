package controller

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	kubeinformers "k8s.io/client-go/informers"
	kubefake "k8s.io/client-go/kubernetes/fake"
	core "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2/ktesting"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/backend"
	"github.com/imagespec/imagespec-controller/pkg/backend/backendtest"
	"github.com/imagespec/imagespec-controller/pkg/config"
	"github.com/imagespec/imagespec-controller/pkg/dockerfile"
	"github.com/imagespec/imagespec-controller/pkg/generated/clientset/versioned/fake"
	informers "github.com/imagespec/imagespec-controller/pkg/generated/informers/externalversions"
	"github.com/imagespec/imagespec-controller/pkg/revision"
)

const (
	testNS       = "team"
	testPrefix   = "registry.example.com/images"
	testPassword = "s3cr3t-never-logged"
)

var testNow = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

type fixture struct {
	t        *testing.T
	client   *fake.Clientset
	kube     *kubefake.Clientset
	ctrl     *Controller
	backend  *backendtest.Scripted
	recorder *record.FakeRecorder
}

func defaultOptions() Options {
	return Options{
		Registry: config.Registry{
			Host: "registry.example.com", Username: "robot", Password: config.NewSecret(testPassword), RepoPrefix: testPrefix,
		},
		BuildTimeout:          time.Hour,
		SucceededHistoryLimit: 2,
		FailedHistoryLimit:    2,
		// No registry here; TestAlreadyBuilt fakes one.
		BuildExisting: true,
	}
}

// newFixture builds a controller on fake clientsets whose informer caches
// hold objs (sample-controller's pattern: the sync handler reads the
// caches and the test checks the writes it makes).
func newFixture(t *testing.T, opts Options, objs ...runtime.Object) *fixture {
	t.Helper()
	var crObjs, kubeObjs []runtime.Object
	for _, o := range objs {
		switch o.(type) {
		case *v1alpha1.ImageSpec, *v1alpha1.ImageSpecJob:
			crObjs = append(crObjs, o)
		default:
			kubeObjs = append(kubeObjs, o)
		}
	}
	f := &fixture{t: t, client: fake.NewSimpleClientset(crObjs...), kube: kubefake.NewSimpleClientset(kubeObjs...)}
	_, ctx := ktesting.NewTestContext(t)
	inf := informers.NewSharedInformerFactory(f.client, 0)
	kinf := kubeinformers.NewSharedInformerFactory(f.kube, 0)
	f.backend = backendtest.NewScripted()
	c, err := New(ctx, f.kube, f.client, inf.Primehub().V1alpha1().ImageSpecs(), inf.Primehub().V1alpha1().ImageSpecJobs(),
		kinf.Core().V1().Secrets(), f.backend, opts)
	if err != nil {
		t.Fatal(err)
	}
	f.recorder = record.NewFakeRecorder(100)
	c.recorder = f.recorder
	c.now = func() time.Time { return testNow }
	for _, o := range objs {
		var err error
		switch o := o.(type) {
		case *v1alpha1.ImageSpec:
			err = inf.Primehub().V1alpha1().ImageSpecs().Informer().GetIndexer().Add(o)
		case *v1alpha1.ImageSpecJob:
			err = inf.Primehub().V1alpha1().ImageSpecJobs().Informer().GetIndexer().Add(o)
		case *corev1.Secret:
			err = kinf.Core().V1().Secrets().Informer().GetIndexer().Add(o)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	f.ctrl = c
	f.client.ClearActions()
	f.kube.ClearActions()
	return f
}

func newSpec(name string, pkgs v1alpha1.Packages) *v1alpha1.ImageSpec {
	return &v1alpha1.ImageSpec{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS, UID: types.UID("uid-" + name), Generation: 1},
		Spec:       v1alpha1.ImageSpecSpec{BaseImage: "python:3.11-slim", Packages: pkgs},
	}
}

// jobFor is the job the controller would create for spec, in phase.
func (f *fixture) jobFor(spec *v1alpha1.ImageSpec, phase v1alpha1.ImageSpecJobPhase) *v1alpha1.ImageSpecJob {
	f.t.Helper()
	rev, errs := f.ctrl.revisionOf(spec)
	if len(errs) > 0 {
		f.t.Fatal(errs)
	}
	job := &v1alpha1.ImageSpecJob{
		ObjectMeta: metav1.ObjectMeta{
			Name: JobName(spec.Name, rev.tag), Namespace: spec.Namespace, UID: types.UID("uid-" + JobName(spec.Name, rev.tag)),
			CreationTimestamp: metav1.NewTime(testNow.Add(-time.Minute)),
			OwnerReferences:   []metav1.OwnerReference{*metav1.NewControllerRef(spec, v1alpha1.SchemeGroupVersion.WithKind("ImageSpec"))},
		},
		Spec: v1alpha1.ImageSpecJobSpec{BaseImage: spec.Spec.BaseImage, Packages: spec.Spec.Packages, TargetImage: rev.targetImage,
			PushSecret: f.ctrl.pushSecretName(), RepoPrefix: f.ctrl.opts.Registry.RepoPrefix},
		Status: v1alpha1.ImageSpecJobStatus{Phase: phase},
	}
	if phase != "" && phase != v1alpha1.JobPending {
		job.Status.Backend = "scripted"
	}
	if phase == v1alpha1.JobSucceeded {
		job.Status.Image = rev.targetImage
		job.Status.Digest = "sha256:" + strings.Repeat("a", 64)
	}
	return job
}

func (f *fixture) writes() []core.Action {
	var out []core.Action
	for _, a := range append(f.client.Actions(), f.kube.Actions()...) {
		if a.GetVerb() != "get" && a.GetVerb() != "list" && a.GetVerb() != "watch" {
			out = append(out, a)
		}
	}
	return out
}

func (f *fixture) events() []string {
	var out []string
	for {
		select {
		case e := <-f.recorder.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func (f *fixture) syncSpec(spec *v1alpha1.ImageSpec) {
	f.t.Helper()
	if err := f.ctrl.syncImageSpec(context.Background(), cache.NewObjectName(spec.Namespace, spec.Name)); err != nil {
		f.t.Fatalf("syncImageSpec: %v", err)
	}
}

func (f *fixture) syncJob(job *v1alpha1.ImageSpecJob) {
	f.t.Helper()
	if err := f.ctrl.syncJob(context.Background(), keyOf(job)); err != nil {
		f.t.Fatalf("syncJob: %v", err)
	}
}

func statusUpdate[T runtime.Object](t *testing.T, actions []core.Action, resource string) T {
	t.Helper()
	for _, a := range actions {
		if a.GetVerb() == "update" && a.GetSubresource() == "status" && a.GetResource().Resource == resource {
			return a.(core.UpdateAction).GetObject().(T)
		}
	}
	var zero T
	t.Fatalf("no status update of %s in %v", resource, actions)
	return zero
}

func TestNewSpecCreatesDeterministicJob(t *testing.T) {
	spec := newSpec("numpy", v1alpha1.Packages{Pip: []string{"numpy==1.26.*"}})
	f := newFixture(t, defaultOptions(), spec)
	f.syncSpec(spec)

	var created *v1alpha1.ImageSpecJob
	for _, a := range f.writes() {
		if a.GetVerb() == "create" && a.GetResource().Resource == "imagespecjobs" {
			created = a.(core.CreateAction).GetObject().(*v1alpha1.ImageSpecJob)
		}
	}
	if created == nil {
		t.Fatalf("no job created: %v", f.writes())
	}
	if ev := f.events(); len(ev) != 1 || !strings.Contains(ev[0], "JobCreated") {
		t.Errorf("events %v", ev)
	}
	in := backendInputsOf(spec)
	tag := revision.Tag(in, "")
	if want := spec.Name + "-" + tag; created.Name != want {
		t.Errorf("job name %q, want %q", created.Name, want)
	}
	if want := testPrefix + "/numpy:" + tag; created.Spec.TargetImage != want {
		t.Errorf("target %q, want %q", created.Spec.TargetImage, want)
	}
	if ref := metav1.GetControllerOf(created); ref == nil || ref.UID != spec.UID {
		t.Errorf("job has no controller reference to the spec: %v", created.OwnerReferences)
	}
	if created.Spec.PushSecret != DefaultPushSecretName || created.Labels[ImageSpecLabel] != "numpy" {
		t.Errorf("push secret %q, labels %v", created.Spec.PushSecret, created.Labels)
	}
	for _, a := range f.writes() {
		if a.GetSubresource() == "status" {
			t.Fatalf("status written before the job's informer event: %v", a)
		}
	}
	// The job's informer event syncs the spec again; now its status names
	// the job.
	f = newFixture(t, defaultOptions(), spec, created)
	f.syncSpec(spec)
	st := statusUpdate[*v1alpha1.ImageSpec](t, f.writes(), "imagespecs").Status
	if st.Phase != v1alpha1.JobPending || st.JobName != created.Name || st.Revision != tag || st.ObservedGeneration != 1 {
		t.Errorf("spec status %+v", st)
	}
	if c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionReady); c == nil || c.Status != metav1.ConditionFalse {
		t.Errorf("Ready condition %+v", c)
	}
}

func backendInputsOf(spec *v1alpha1.ImageSpec) dockerfile.Inputs {
	return backend.Inputs(spec.Spec.BaseImage, spec.Spec.Packages, nil)
}

func TestInvalidSpecCreatesNoJob(t *testing.T) {
	cases := []struct {
		name  string
		pkgs  v1alpha1.Packages
		field string
	}{
		{"apt uppercase", v1alpha1.Packages{Apt: []string{"curl", "Not_A_Package"}}, "spec.packages.apt[1]"},
		{"pip flag", v1alpha1.Packages{Pip: []string{"--index-url=http://x"}}, "spec.packages.pip[0]"},
		{"conda flag", v1alpha1.Packages{Conda: []string{"-c conda-forge"}}, "spec.packages.conda[0]"},
		{"shell injection", v1alpha1.Packages{Pip: []string{"requests; rm -rf /"}}, "spec.packages.pip[0]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec := newSpec("bad", tc.pkgs)
			f := newFixture(t, defaultOptions(), spec)
			f.syncSpec(spec)
			for _, a := range f.writes() {
				if a.GetVerb() == "create" {
					t.Fatalf("created something for an invalid spec: %v", a)
				}
			}
			st := statusUpdate[*v1alpha1.ImageSpec](t, f.writes(), "imagespecs").Status
			c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionReady)
			if st.Phase != v1alpha1.JobFailed || c == nil || c.Reason != v1alpha1.ReasonInvalidSpec || !strings.Contains(c.Message, tc.field) {
				t.Fatalf("status %+v does not name %s", st, tc.field)
			}
			ev := f.events()
			if len(ev) != 1 || !strings.HasPrefix(ev[0], "Warning InvalidSpec") || !strings.Contains(ev[0], tc.field) {
				t.Fatalf("events %v", ev)
			}
		})
	}
}

func TestSyncedSpecIsIdle(t *testing.T) {
	spec := newSpec("idle", v1alpha1.Packages{Apt: []string{"curl"}})
	f := newFixture(t, defaultOptions(), spec)
	job := f.jobFor(spec, v1alpha1.JobSucceeded)
	// First sync computes the status; a second controller seeing that
	// status must write nothing.
	f = newFixture(t, defaultOptions(), spec, job)
	f.syncSpec(spec)
	synced := statusUpdate[*v1alpha1.ImageSpec](t, f.writes(), "imagespecs")
	if synced.Status.Image != job.Status.Image || synced.Status.PinnedImage != testPrefix+"/idle@"+job.Status.Digest {
		t.Fatalf("status %+v", synced.Status)
	}
	if c := meta.FindStatusCondition(synced.Status.Conditions, v1alpha1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
		t.Fatalf("Ready %+v", c)
	}
	f = newFixture(t, defaultOptions(), synced, job)
	f.syncSpec(synced)
	f.syncJob(job)
	if w := f.writes(); len(w) != 0 {
		t.Fatalf("idle sync wrote: %v", w)
	}
}

func TestSpecUpdateSupersedesRunningJob(t *testing.T) {
	old := newSpec("app", v1alpha1.Packages{Pip: []string{"requests>=2.31"}})
	f := newFixture(t, defaultOptions(), old)
	oldJob := f.jobFor(old, v1alpha1.JobRunning)
	oldJob.Status.Image = ""
	updated := old.DeepCopy()
	updated.Generation = 2
	updated.Spec.Packages.Pip = append(updated.Spec.Packages.Pip, "numpy")
	previous := old.DeepCopy()
	previous.Status.Image = testPrefix + "/app:previous"

	f = newFixture(t, defaultOptions(), updated, oldJob)
	f.ctrl.backend.(*backendtest.Scripted).Set(keyOf(oldJob).String(), backend.Status{Phase: v1alpha1.JobRunning})
	f.syncSpec(updated)
	created := 0
	for _, a := range f.writes() {
		if a.GetVerb() == "create" && a.GetResource().Resource == "imagespecjobs" {
			created++
		}
	}
	if created != 1 {
		t.Fatalf("want one new job, got %d: %v", created, f.writes())
	}
	if f.ctrl.jobQueue.Len() != 1 {
		t.Fatalf("old job not queued for cancellation")
	}
	f.client.ClearActions()
	f.syncJob(oldJob)
	st := statusUpdate[*v1alpha1.ImageSpecJob](t, f.writes(), "imagespecjobs").Status
	if st.Phase != v1alpha1.JobCancelled || st.Reason != v1alpha1.ReasonSuperseded || st.FinishTime == nil {
		t.Fatalf("old job status %+v", st)
	}
	if !f.backend.Cancelled(keyOf(oldJob).String()) {
		t.Fatal("old build was not cancelled")
	}
}

func TestJobLifecycle(t *testing.T) {
	spec := newSpec("life", v1alpha1.Packages{Apt: []string{"curl"}})
	base := newFixture(t, defaultOptions(), spec)
	job := base.jobFor(spec, "")
	digest := "sha256:" + strings.Repeat("b", 64)

	cases := []struct {
		name       string
		mutate     func(*v1alpha1.ImageSpecJob)
		backend    *backend.Status
		wantPhase  v1alpha1.ImageSpecJobPhase
		wantReason string
		wantEvent  string
		cancelled  bool
	}{
		{name: "new job starts", wantPhase: v1alpha1.JobRunning, wantReason: v1alpha1.ReasonBuilding, wantEvent: "BuildStarted"},
		{name: "success", mutate: markStarted, backend: &backend.Status{Phase: v1alpha1.JobSucceeded, Digest: digest},
			wantPhase: v1alpha1.JobSucceeded, wantReason: v1alpha1.ReasonSucceeded, wantEvent: "BuildSucceeded"},
		{name: "push failure", mutate: markStarted, backend: &backend.Status{Phase: v1alpha1.JobFailed, Reason: v1alpha1.ReasonPushFailed, Message: "unauthorized", LogTail: "..."},
			wantPhase: v1alpha1.JobFailed, wantReason: v1alpha1.ReasonPushFailed, wantEvent: "Warning BuildFailed"},
		{name: "cancel", mutate: func(j *v1alpha1.ImageSpecJob) { markStarted(j); j.Spec.Cancel = true },
			wantPhase: v1alpha1.JobCancelled, wantReason: v1alpha1.ReasonCancelled, wantEvent: "BuildCancelled", cancelled: true},
		{name: "timeout while pending", mutate: func(j *v1alpha1.ImageSpecJob) {
			markStarted(j)
			j.Status.Phase = v1alpha1.JobPending
			j.CreationTimestamp = metav1.NewTime(testNow.Add(-2 * time.Hour))
		}, wantPhase: v1alpha1.JobFailed, wantReason: v1alpha1.ReasonTimeout, wantEvent: "BuildFailed", cancelled: true},
		{name: "invalid job", mutate: func(j *v1alpha1.ImageSpecJob) { j.Spec.Packages.Apt = []string{"$(reboot)"} },
			wantPhase: v1alpha1.JobFailed, wantReason: v1alpha1.ReasonInvalidSpec, wantEvent: "BuildFailed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			j := job.DeepCopy()
			if tc.mutate != nil {
				tc.mutate(j)
			}
			f := newFixture(t, defaultOptions(), spec, j)
			switch {
			case tc.backend != nil:
				f.backend.Set(keyOf(j).String(), *tc.backend)
			case j.Status.Backend != "":
				// A build the backend is running.
				f.backend.Set(keyOf(j).String(), backend.Status{Phase: v1alpha1.JobRunning})
			}
			f.syncJob(j)
			st := statusUpdate[*v1alpha1.ImageSpecJob](t, f.writes(), "imagespecjobs").Status
			if st.Phase != tc.wantPhase || st.Reason != tc.wantReason {
				t.Fatalf("phase %s reason %s (%s), want %s %s", st.Phase, st.Reason, st.Message, tc.wantPhase, tc.wantReason)
			}
			c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionSucceeded)
			if c == nil || c.Reason != tc.wantReason {
				t.Fatalf("Succeeded condition %+v", c)
			}
			if tc.wantPhase.IsFinal() && st.FinishTime == nil {
				t.Fatal("final job without finishTime")
			}
			if tc.wantPhase == v1alpha1.JobSucceeded && (st.Digest != digest || st.Image != j.Spec.TargetImage) {
				t.Fatalf("succeeded without image/digest: %+v", st)
			}
			if tc.wantReason == v1alpha1.ReasonTimeout && !strings.Contains(st.Message, "never started") {
				t.Fatalf("timeout message does not say the job never ran: %q", st.Message)
			}
			if got := f.backend.Cancelled(keyOf(j).String()); got != tc.cancelled {
				t.Fatalf("backend cancelled = %v, want %v", got, tc.cancelled)
			}
			ev := strings.Join(f.events(), "\n")
			if !strings.Contains(ev, tc.wantEvent) {
				t.Fatalf("events %q lack %q", ev, tc.wantEvent)
			}
			if strings.Contains(ev, testPassword) {
				t.Fatal("an event carries the registry password")
			}
		})
	}
}

func markStarted(j *v1alpha1.ImageSpecJob) {
	j.Status.Backend = "scripted"
	j.Status.Phase = v1alpha1.JobRunning
}

func TestConcurrencyLimitQueues(t *testing.T) {
	opts := defaultOptions()
	opts.MaxConcurrentBuilds = 1
	a, b := newSpec("a", v1alpha1.Packages{Apt: []string{"curl"}}), newSpec("b", v1alpha1.Packages{Apt: []string{"git"}})
	base := newFixture(t, opts, a, b)
	ja, jb := base.jobFor(a, ""), base.jobFor(b, "")
	f := newFixture(t, opts, a, b, ja, jb)
	f.syncJob(ja)
	f.client.ClearActions()
	f.syncJob(jb)
	st := statusUpdate[*v1alpha1.ImageSpecJob](t, f.writes(), "imagespecjobs").Status
	if st.Phase != v1alpha1.JobPending || st.Reason != v1alpha1.ReasonQueued || !strings.Contains(st.Message, "limit 1") {
		t.Fatalf("second job status %+v", st)
	}
	if f.backend.Starts(keyOf(jb).String()) != 0 {
		t.Fatal("second build started past the limit")
	}
	// The first job finishing frees the slot and wakes the queued one.
	for f.ctrl.jobQueue.Len() > 0 {
		k, _ := f.ctrl.jobQueue.Get()
		f.ctrl.jobQueue.Done(k)
	}
	done := ja.DeepCopy()
	markStarted(done)
	done.Status.Phase = v1alpha1.JobSucceeded
	if err := f.ctrl.jobIndexer.Update(done); err != nil {
		t.Fatal(err)
	}
	if f.ctrl.slots.inUse() != 0 {
		t.Fatalf("%d slots in use once the only build is final", f.ctrl.slots.inUse())
	}
	f.ctrl.wakeWaiting()
	if f.ctrl.jobQueue.Len() == 0 {
		t.Fatal("queued job not woken when a slot freed")
	}
}

func TestHistoryLimits(t *testing.T) {
	spec := newSpec("hist", v1alpha1.Packages{Apt: []string{"curl"}})
	base := newFixture(t, defaultOptions(), spec)
	current := base.jobFor(spec, v1alpha1.JobRunning)
	objs := []runtime.Object{spec, current}
	var names []string
	for i := 0; i < 6; i++ {
		for _, phase := range []v1alpha1.ImageSpecJobPhase{v1alpha1.JobSucceeded, v1alpha1.JobFailed} {
			j := current.DeepCopy()
			j.Name = fmt.Sprintf("hist-%s-%d", strings.ToLower(string(phase)), i)
			j.UID = types.UID(j.Name)
			j.Status.Phase = phase
			j.Spec.TargetImage = testPrefix + "/hist:" + j.Name // an earlier revision
			j.Status.Image = j.Spec.TargetImage
			ft := metav1.NewTime(testNow.Add(time.Duration(i) * time.Minute))
			j.Status.FinishTime = &ft
			objs = append(objs, j)
			names = append(names, j.Name)
		}
	}
	deletedBy := func(f *fixture) map[string]bool {
		deleted := map[string]bool{}
		for _, a := range f.writes() {
			if a.GetVerb() == "delete" {
				deleted[a.(core.DeleteAction).GetName()] = true
			}
		}
		return deleted
	}
	// status.image lags behind (the write of a newer success was lost to a
	// conflict): it moves to the newest succeeded job, and the history is
	// cut to the newest 2 of each kind.
	lagging := spec.DeepCopy()
	lagging.Status.Image = testPrefix + "/hist:hist-succeeded-0"
	objs[0] = lagging
	f := newFixture(t, defaultOptions(), objs...)
	f.syncSpec(lagging)
	deleted := deletedBy(f)
	want := map[string]bool{
		"hist-succeeded-0": true, "hist-succeeded-1": true, "hist-succeeded-2": true, "hist-succeeded-3": true,
		"hist-failed-0": true, "hist-failed-1": true, "hist-failed-2": true, "hist-failed-3": true,
	}
	if fmt.Sprint(deleted) != fmt.Sprint(want) {
		t.Fatalf("deleted %v, want %v", deleted, want)
	}
	if st := statusUpdate[*v1alpha1.ImageSpec](t, f.writes(), "imagespecs").Status; st.Image != testPrefix+"/hist:hist-succeeded-5" {
		t.Errorf("status.image %q, want the newest succeeded job's", st.Image)
	}

	// The job whose image is in use stays even past a limit of 0.
	inUse := spec.DeepCopy()
	inUse.Status.Image = testPrefix + "/hist:hist-succeeded-5"
	objs[0] = inUse
	opts := defaultOptions()
	opts.SucceededHistoryLimit = 0
	f = newFixture(t, opts, objs...)
	f.syncSpec(inUse)
	deleted = deletedBy(f)
	for _, n := range names {
		if strings.HasPrefix(n, "hist-succeeded-") && deleted[n] == (n == "hist-succeeded-5") {
			t.Errorf("limit 0: %s deleted %v; want every succeeded job deleted but the one in use", n, deleted[n])
		}
	}
}

func TestPushSecret(t *testing.T) {
	spec := newSpec("sec", v1alpha1.Packages{Apt: []string{"curl"}})
	base := newFixture(t, defaultOptions(), spec)
	job := base.jobFor(spec, "")

	t.Run("created with the credentials", func(t *testing.T) {
		f := newFixture(t, defaultOptions(), spec, job)
		f.syncJob(job)
		var secret *corev1.Secret
		for _, a := range f.kube.Actions() {
			if a.GetVerb() == "create" && a.GetResource().Resource == "secrets" {
				secret = a.(core.CreateAction).GetObject().(*corev1.Secret)
			}
		}
		if secret == nil || secret.Type != corev1.SecretTypeDockerConfigJson || secret.Labels[ManagedByLabel] != ComponentName {
			t.Fatalf("secret %+v", secret)
		}
		if !strings.Contains(string(secret.Data[corev1.DockerConfigJsonKey]), testPassword) {
			t.Fatal("secret lacks the password")
		}
		st := statusUpdate[*v1alpha1.ImageSpecJob](t, f.writes(), "imagespecjobs").Status
		if strings.Contains(fmt.Sprintf("%+v", st), testPassword) {
			t.Fatal("status carries the password")
		}
	})
	t.Run("stale secret updated after the password changed", func(t *testing.T) {
		stale := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: DefaultPushSecretName, Namespace: testNS, Labels: map[string]string{ManagedByLabel: ComponentName}},
			Type:       corev1.SecretTypeDockerConfigJson,
			Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{}}`)},
		}
		f := newFixture(t, defaultOptions(), spec, stale)
		if err := f.ctrl.refreshPushSecrets(context.Background()); err != nil {
			t.Fatal(err)
		}
		var updated *corev1.Secret
		for _, a := range f.kube.Actions() {
			if a.GetVerb() == "update" {
				updated = a.(core.UpdateAction).GetObject().(*corev1.Secret)
			}
		}
		if updated == nil || !strings.Contains(string(updated.Data[corev1.DockerConfigJsonKey]), testPassword) {
			t.Fatalf("stale secret not refreshed: %v", f.kube.Actions())
		}
	})
	t.Run("a user's secret of that name is left alone", func(t *testing.T) {
		mine := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: DefaultPushSecretName, Namespace: testNS},
			Type:       corev1.SecretTypeDockerConfigJson,
			Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{}}`)},
		}
		f := newFixture(t, defaultOptions(), spec, job)
		if _, err := f.kube.CoreV1().Secrets(testNS).Create(context.Background(), mine, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		err := f.ctrl.syncJob(context.Background(), keyOf(job))
		if err == nil || !strings.Contains(err.Error(), "not managed") || strings.Contains(err.Error(), testPassword) {
			t.Fatalf("want a refusal naming the unmanaged Secret, got %v", err)
		}
		if f.backend.Starts(keyOf(job).String()) != 0 {
			t.Fatal("build started without push credentials")
		}
	})
}

func TestJobNameIsBoundedAndDeterministic(t *testing.T) {
	long := strings.Repeat("a", 250)
	n1, n2 := JobName(long, "0123456789ab"), JobName(long, "0123456789ab")
	if n1 != n2 || len(n1) > 253 || !strings.HasSuffix(n1, "-0123456789ab") {
		t.Fatalf("JobName = %q (%d)", n1, len(n1))
	}
	if JobName(long+"b", "0123456789ab") == JobName(long+"c", "0123456789ab") {
		t.Fatal("truncated names collide")
	}
	if got := JobName("short", "abc"); got != "short-abc" {
		t.Fatalf("JobName = %q", got)
	}
}

func TestTruncateTail(t *testing.T) {
	s := strings.Repeat("line ✓\n", 2000)
	got := truncateTail(s, v1alpha1.MaxLogTailBytes)
	if len(got) > v1alpha1.MaxLogTailBytes || !strings.HasPrefix(got, "line") || !strings.HasSuffix(s, got) {
		t.Fatalf("tail %d bytes, starts %q", len(got), got[:10])
	}
}

// Only jobs the controller made for an existing ImageSpec are built: a
// hand-made job that targets another repository, another tag than its
// inputs make, or another push Secret ends Failed/Rejected naming the
// field, and the backend never sees it.
func TestHandMadeJobsAreRejected(t *testing.T) {
	spec := newSpec("app", v1alpha1.Packages{Pip: []string{"requests"}})
	cases := []struct {
		name  string
		edit  func(j *v1alpha1.ImageSpecJob)
		field string // "" means built
	}{
		{"made by the controller", func(*v1alpha1.ImageSpecJob) {}, ""},
		{"no owner", func(j *v1alpha1.ImageSpecJob) { j.OwnerReferences = nil }, "metadata.ownerReferences"},
		// The ImageSpec it names is gone: cancelled as any job whose
		// ImageSpec was deleted.
		{"owner of another uid", func(j *v1alpha1.ImageSpecJob) { j.OwnerReferences[0].UID = "other" }, "deleted"},
		{"owner is not an ImageSpec", func(j *v1alpha1.ImageSpecJob) { j.OwnerReferences[0].Kind = "ConfigMap" }, "metadata.ownerReferences"},
		{"another tenant's repository", func(j *v1alpha1.ImageSpecJob) {
			j.Spec.TargetImage = testPrefix + "/victim:" + strings.Repeat("a", 12)
		}, "spec.targetImage"},
		{"a shared base image", func(j *v1alpha1.ImageSpecJob) { j.Spec.TargetImage = "registry.example.com/base/python:3.11" }, "spec.targetImage"},
		{"a tag its inputs do not make", func(j *v1alpha1.ImageSpecJob) { j.Spec.TargetImage = testPrefix + "/app:latest" }, "spec.targetImage"},
		{"inputs changed under the target", func(j *v1alpha1.ImageSpecJob) { j.Spec.Packages.Pip = []string{"evil"} }, "spec.targetImage"},
		{"another push Secret", func(j *v1alpha1.ImageSpecJob) { j.Spec.PushSecret = "stolen" }, "spec.pushSecret"},
		{"another repository prefix", func(j *v1alpha1.ImageSpecJob) { j.Spec.RepoPrefix = "elsewhere.example.com" }, "spec.repoPrefix"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f0 := newFixture(t, defaultOptions(), spec)
			job := f0.jobFor(spec, "")
			tc.edit(job)
			f := newFixture(t, defaultOptions(), spec, job)
			f.syncJob(job)
			key := keyOf(job).String()
			if tc.field == "" {
				if f.backend.Starts(key) != 1 {
					t.Fatalf("the controller's own job was not built: %v", f.writes())
				}
				return
			}
			if n := f.backend.Starts(key); n != 0 {
				t.Errorf("the backend started the job %d times", n)
			}
			st := statusUpdate[*v1alpha1.ImageSpecJob](t, f.writes(), "imagespecjobs").Status
			if tc.field == "deleted" {
				if st.Phase != v1alpha1.JobCancelled || st.Reason != v1alpha1.ReasonImageSpecDeleted {
					t.Errorf("status %s/%s %q, want Cancelled/ImageSpecDeleted", st.Phase, st.Reason, st.Message)
				}
				return
			}
			if st.Phase != v1alpha1.JobFailed || st.Reason != v1alpha1.ReasonRejected || !strings.Contains(st.Message, tc.field) {
				t.Errorf("status %s/%s %q, want Failed/Rejected naming %s", st.Phase, st.Reason, st.Message, tc.field)
			}
			if strings.Contains(st.Message, testPassword) {
				t.Error("the message holds the password")
			}
		})
	}
}

// The repository layout names the job's target; a job carrying another
// layout's name (under the namespaced layout: the repository every
// namespace would share) is refused.
func TestRepositoryLayouts(t *testing.T) {
	spec := newSpec("app", v1alpha1.Packages{Pip: []string{"requests"}})
	want := map[revision.Layout]string{
		revision.LayoutPrefix:     testPrefix + "/app:",
		revision.LayoutNamespaced: testPrefix + "/" + testNS + "/app:",
		revision.LayoutSingle:     testPrefix + ":app-",
	}
	for layout, prefix := range want {
		t.Run(string(layout), func(t *testing.T) {
			opts := defaultOptions()
			opts.Layout = layout
			f := newFixture(t, opts, spec)
			job := f.jobFor(spec, "")
			if !strings.HasPrefix(job.Spec.TargetImage, prefix) {
				t.Fatalf("target %q, want %s<tag>", job.Spec.TargetImage, prefix)
			}
			f = newFixture(t, opts, spec, job)
			f.syncJob(job)
			if f.backend.Starts(keyOf(job).String()) != 1 {
				t.Fatalf("the controller's own job was not built: %v", f.writes())
			}
		})
	}
	opts := defaultOptions()
	opts.Layout = revision.LayoutNamespaced
	f0 := newFixture(t, opts, spec)
	job := f0.jobFor(spec, "")
	tag := job.Spec.TargetImage[strings.LastIndex(job.Spec.TargetImage, ":")+1:]
	job.Spec.TargetImage = testPrefix + "/app:" + tag
	f := newFixture(t, opts, spec, job)
	f.syncJob(job)
	if n := f.backend.Starts(keyOf(job).String()); n != 0 {
		t.Errorf("the backend started the job %d times", n)
	}
	st := statusUpdate[*v1alpha1.ImageSpecJob](t, f.writes(), "imagespecjobs").Status
	if st.Phase != v1alpha1.JobFailed || st.Reason != v1alpha1.ReasonRejected || !strings.Contains(st.Message, "spec.targetImage") || !strings.Contains(st.Message, testNS+"/app:") {
		t.Errorf("status %s/%s %q, want Failed/Rejected naming spec.targetImage and the namespaced target", st.Phase, st.Reason, st.Message)
	}
}

// With a push Secret namespace (the build namespace), the job's build
// writes the one push Secret there and none into the job's namespace.
func TestPushSecretInBuildNamespace(t *testing.T) {
	spec := newSpec("app", v1alpha1.Packages{Pip: []string{"requests"}})
	opts := defaultOptions()
	opts.PushSecretName = DefaultPushSecretName
	opts.PushSecretNamespace = "builds"
	f0 := newFixture(t, opts, spec)
	job := f0.jobFor(spec, "")
	f := newFixture(t, opts, spec, job)
	f.syncJob(job)
	if f.backend.Starts(keyOf(job).String()) != 1 {
		t.Fatalf("not built: %v", f.writes())
	}
	ctx := context.Background()
	s, err := f.kube.CoreV1().Secrets("builds").Get(ctx, DefaultPushSecretName, metav1.GetOptions{})
	if err != nil || !strings.Contains(string(s.Data[corev1.DockerConfigJsonKey]), "robot") {
		t.Fatalf("push Secret in the build namespace: %v", err)
	}
	if _, err := f.kube.CoreV1().Secrets(testNS).Get(ctx, DefaultPushSecretName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("push Secret in the job's namespace: %v, want none", err)
	}
	for _, a := range f.kube.Actions() {
		if a.GetResource().Resource == "secrets" && (a.GetVerb() == "list" || a.GetVerb() == "watch") {
			t.Errorf("the controller %s Secrets", a.GetVerb())
		}
	}
}

// Without a Secret informer the push Secret is read once per
// pushSecretRecheck, not once per build: a second build within the window
// sends no request for it; one after the window reads it again and
// restores a Secret someone changed.
func TestPushSecretReadOncePerWindow(t *testing.T) {
	spec := newSpec("app", v1alpha1.Packages{Pip: []string{"requests"}})
	spec2 := newSpec("other", v1alpha1.Packages{Pip: []string{"numpy"}})
	opts := defaultOptions()
	opts.PushSecretNamespace = "builds"
	f0 := newFixture(t, opts, spec, spec2)
	job, job2 := f0.jobFor(spec, ""), f0.jobFor(spec2, "")
	f := newFixture(t, opts, spec, spec2, job, job2)
	secretRequests := func() int {
		n := 0
		for _, a := range f.kube.Actions() {
			if a.GetResource().Resource == "secrets" {
				n++
			}
		}
		return n
	}
	f.syncJob(job)
	first := secretRequests()
	if first == 0 {
		t.Fatal("the first build did not write the push Secret")
	}
	f.syncJob(job2)
	if got := secretRequests(); got != first {
		t.Errorf("%d Secret requests for a second build within %v, want none", got-first, backend.DefaultPushSecretRecheck)
	}

	ctx := context.Background()
	s, err := f.kube.CoreV1().Secrets("builds").Get(ctx, DefaultPushSecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Data[corev1.DockerConfigJsonKey] = []byte(`{"auths":{}}`)
	if _, err := f.kube.CoreV1().Secrets("builds").Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	later := testNow.Add(backend.DefaultPushSecretRecheck + time.Second)
	f.ctrl.now = func() time.Time { return later }
	if err := f.ctrl.ensurePushSecret(ctx, "builds"); err != nil {
		t.Fatal(err)
	}
	if s, err = f.kube.CoreV1().Secrets("builds").Get(ctx, DefaultPushSecretName, metav1.GetOptions{}); err != nil || !strings.Contains(string(s.Data[corev1.DockerConfigJsonKey]), "robot") {
		t.Errorf("after the window the push Secret was not restored: %v", err)
	}
}
