package e2e

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/app"
	"github.com/imagespec/imagespec-controller/pkg/basetrack"
	"github.com/imagespec/imagespec-controller/pkg/controller"
	"github.com/imagespec/imagespec-controller/test/framework/images"
	"github.com/imagespec/imagespec-controller/test/framework/registry"
)

// Base image tracking against a real registry: two tracked ImageSpecs on
// one base share its checks (one manifest request per interval), a new
// image pushed over the base tag builds exactly one new revision of each
// and none of the untracked one, and a deleted tag backs the checks off
// without failing anything.
func TestBaseImageTracking(t *testing.T) {
	const interval = time.Second
	env := SharedEnv(t)
	ctx := context.Background()
	// The base lives in a registry of its own whose access log counts the
	// tracker's requests; it needs a pull Secret, as a tenant's would.
	baseReg, err := registry.Start(ctx, registry.Options{WorkDir: env.WorkDir, AccessLog: true})
	if err != nil {
		t.Fatal(err)
	}
	defer baseReg.Stop()
	if err := env.AddRegistryCA(baseReg); err != nil {
		t.Fatal(err)
	}
	const repo = "base/tracked"
	base, firstDigest, err := images.Push(ctx, images.Busybox, baseReg, repo+":latest")
	if err != nil {
		t.Fatal(err)
	}

	ns := NewNamespace(t)
	c, _ := StartInprocessController(t, ns, ControllerConfig{Tweak: func(o *app.Options) {
		o.Controller.BaseImages = controller.BaseImageTracking{Interval: interval}
	}})
	createDockerSecret(t, c, ns, "base-pull", baseReg.AuthFile)
	tracked := []string{"tracked-a", "tracked-b"}
	for _, name := range tracked {
		createSpec(t, c, ns, name, v1alpha1.ImageSpecSpec{BaseImage: base, PullSecret: "base-pull", TrackBaseImage: ptr.To(true)})
	}
	createSpec(t, c, ns, "fixed", v1alpha1.ImageSpecSpec{BaseImage: base, PullSecret: "base-pull", TrackBaseImage: ptr.To(false)})

	firstJobs := map[string]*v1alpha1.ImageSpecJob{}
	for _, name := range append(tracked, "fixed") {
		job := WaitJob(t, c, ns, name, "", buildTimeout)
		requireBuiltBy(t, job, "inprocess", v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
		if job.Spec.Cause != v1alpha1.CauseFirstBuild || job.Annotations[controller.BaseImageDigestAnnotation] != "" {
			t.Errorf("%s: first job cause %s, base digest annotation %q", name, job.Spec.Cause, job.Annotations[controller.BaseImageDigestAnnotation])
		}
		firstJobs[name] = job
	}
	// The first digest seen is the starting point: recorded, nothing built.
	for _, name := range tracked {
		waitSpec(t, c, ns, name, func(is *v1alpha1.ImageSpec) (bool, string) {
			tb := is.Status.TrackedBaseImage
			return tb != nil && tb.Image == base && tb.Digest == firstDigest && tb.RevisionDigest == "", fmt.Sprintf("trackedBaseImage %+v", tb)
		})
	}
	time.Sleep(5 * interval)
	requireJobCount(t, c, ns, map[string]int{"tracked-a": 1, "tracked-b": 1, "fixed": 1})

	// The tag moves.
	_, movedDigest, err := images.Push(ctx, images.Pause, baseReg, repo+":latest")
	if err != nil {
		t.Fatal(err)
	}
	if movedDigest == firstDigest {
		t.Fatal("the new base image has the old digest")
	}
	for _, name := range tracked {
		job := WaitJob(t, c, ns, name, firstJobs[name].Name, buildTimeout)
		requireBuiltBy(t, job, "inprocess", v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
		if job.Spec.Cause != v1alpha1.CauseBaseImageUpdate {
			t.Errorf("%s: job %s cause %q, want %s", name, job.Name, job.Spec.Cause, v1alpha1.CauseBaseImageUpdate)
		}
		if want := firstDigest + " -> " + movedDigest; !strings.Contains(job.Spec.CauseMessage, want) {
			t.Errorf("%s: cause message %q, want it to hold %q", name, job.Spec.CauseMessage, want)
		}
		if got := job.Annotations[controller.BaseImageDigestAnnotation]; got != movedDigest {
			t.Errorf("%s: job annotation %s=%q, want %s", name, controller.BaseImageDigestAnnotation, got, movedDigest)
		}
		if job.Status.BaseImageDigest != movedDigest {
			t.Errorf("%s: the new revision was built on %s, want %s", name, job.Status.BaseImageDigest, movedDigest)
		}
		is := waitSpec(t, c, ns, name, func(is *v1alpha1.ImageSpec) (bool, string) {
			return is.Status.Image == job.Status.Image, "image " + is.Status.Image
		})
		if tb := is.Status.TrackedBaseImage; tb == nil || tb.Digest != movedDigest || tb.RevisionDigest != movedDigest {
			t.Errorf("%s: trackedBaseImage %+v, want digest and revisionDigest %s", name, tb, movedDigest)
		}
	}
	time.Sleep(5 * interval)
	requireJobCount(t, c, ns, map[string]int{"tracked-a": 2, "tracked-b": 2, "fixed": 1})
	if is := getSpec(t, c, ns, "fixed"); is.Status.TrackedBaseImage != nil || is.Status.JobName != firstJobs["fixed"].Name {
		t.Errorf("untracked spec: trackedBaseImage %+v, job %s", is.Status.TrackedBaseImage, is.Status.JobName)
	}

	// One request per round for the shared base, however many specs use it.
	checks := trackerChecks(baseReg, repo)
	if len(checks) < 5 {
		t.Fatalf("only %d checks of the base tag in %d+ intervals", len(checks), 10)
	}
	for i := 1; i < len(checks); i++ {
		if gap := checks[i].Time.Sub(checks[i-1].Time); gap < interval/2 {
			t.Errorf("checks %d and %d of one base were %s apart: more than one request per interval", i-1, i, gap)
		}
	}
	t.Logf("%d checks of %s, %d ImageSpecs tracking it", len(checks), base, len(tracked))

	// The tag is deleted: checks fail and back off (2, then 4 intervals),
	// the last digest stays, nothing builds or fails.
	deleteManifest(t, baseReg, repo, movedDigest)
	deleted := time.Now()
	WaitFor(t, 30*interval, func(context.Context) (bool, string) {
		failed := failedSince(trackerChecks(baseReg, repo), deleted)
		return len(failed) >= 3, fmt.Sprintf("%d failed checks", len(failed))
	})
	failed := failedSince(trackerChecks(baseReg, repo), deleted)
	for i, minGap := range []time.Duration{2 * interval, 4 * interval} {
		if gap := failed[i+1].Time.Sub(failed[i].Time); gap < minGap-interval/4 {
			t.Errorf("failed checks %d and %d were %s apart, want at least %s", i, i+1, gap, minGap)
		}
	}
	requireJobCount(t, c, ns, map[string]int{"tracked-a": 2, "tracked-b": 2, "fixed": 1})
	for _, name := range tracked {
		is := getSpec(t, c, ns, name)
		if tb := is.Status.TrackedBaseImage; tb == nil || tb.Digest != movedDigest {
			t.Errorf("%s: after failed checks trackedBaseImage %+v, want the last digest %s kept", name, tb, movedDigest)
		}
		if cond := meta.FindStatusCondition(is.Status.Conditions, v1alpha1.ConditionReady); cond == nil || cond.Status != metav1.ConditionTrue {
			t.Errorf("%s: Ready %+v after failed checks, want True", name, cond)
		}
	}
}

// trackerChecks are the tracker's manifest requests for repo's tags.
func trackerChecks(r *registry.Registry, repo string) []registry.Request {
	var out []registry.Request
	for _, req := range r.Requests() {
		if req.UserAgent == basetrack.UserAgent && req.Method == http.MethodHead && strings.HasPrefix(req.Path, "/v2/"+repo+"/manifests/") {
			out = append(out, req)
		}
	}
	sort.Slice(out, func(i, k int) bool { return out[i].Time.Before(out[k].Time) })
	return out
}

func failedSince(reqs []registry.Request, since time.Time) []registry.Request {
	var out []registry.Request
	for _, r := range reqs {
		if r.Time.After(since) && r.Status == http.StatusNotFound {
			out = append(out, r)
		}
	}
	return out
}

func deleteManifest(tb testing.TB, r *registry.Registry, repo, digest string) {
	tb.Helper()
	req, err := http.NewRequest(http.MethodDelete, "https://"+r.Host+"/v2/"+repo+"/manifests/"+digest, nil)
	if err != nil {
		tb.Fatal(err)
	}
	req.SetBasicAuth(r.Username, r.Password)
	resp, err := r.HTTPClient().Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		tb.Fatalf("DELETE %s@%s: %s", repo, digest, resp.Status)
	}
}

func getSpec(tb testing.TB, c *Controller, ns, name string) *v1alpha1.ImageSpec {
	tb.Helper()
	is, err := c.Clients.Client.PrimehubV1alpha1().ImageSpecs(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	return is
}

func waitSpec(tb testing.TB, c *Controller, ns, name string, cond func(*v1alpha1.ImageSpec) (bool, string)) *v1alpha1.ImageSpec {
	tb.Helper()
	var is *v1alpha1.ImageSpec
	WaitFor(tb, time.Minute, func(ctx context.Context) (bool, string) {
		s, err := c.Clients.Client.PrimehubV1alpha1().ImageSpecs(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		is = s
		return cond(s)
	})
	return is
}

// requireJobCount checks how many jobs each ImageSpec has.
func requireJobCount(tb testing.TB, c *Controller, ns string, want map[string]int) {
	tb.Helper()
	jobs, err := c.Clients.Client.PrimehubV1alpha1().ImageSpecJobs(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	got := map[string]int{}
	for _, j := range jobs.Items {
		got[j.Labels[controller.ImageSpecLabel]]++
	}
	for name, n := range want {
		if got[name] != n {
			tb.Errorf("ImageSpec %s has %d jobs, want %d", name, got[name], n)
		}
	}
}
