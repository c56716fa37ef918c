package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/app"
	"github.com/imagespec/imagespec-controller/pkg/backend/buildahpod"
	"github.com/imagespec/imagespec-controller/pkg/backend/inprocess"
	"github.com/imagespec/imagespec-controller/pkg/names"
	"github.com/imagespec/imagespec-controller/pkg/revision"
	"github.com/imagespec/imagespec-controller/pkg/supplychain"
	"github.com/imagespec/imagespec-controller/test/framework/images"
	"github.com/imagespec/imagespec-controller/test/framework/registry"
)

// Backend is one way the controller builds, as a scenario sees it: a
// behaviour both backends have is one scenario function run on each.
type Backend struct {
	// Name is what the backend writes to status.backend.
	Name string
	// Start runs a controller with this backend on namespace until the
	// test ends.
	Start func(tb testing.TB, namespace string, cfg ControllerConfig) *Controller
	// WaitStopped waits up to a minute until nothing of the job's build is
	// left and fails the test otherwise (the inprocess backend's Cancel
	// returns only once its build is gone, so it has nothing to wait for;
	// its scenarios prove a stop by what is not pushed).
	WaitStopped func(t *testing.T, namespace string, job *v1alpha1.ImageSpecJob)
}

// backends are set up per run of the scenarios: the buildahpod backend
// needs a node, started once for all its scenarios and stopped after them.
var backends = []struct {
	name  string
	setup func(t *testing.T) Backend
}{
	{inprocess.Name, func(t *testing.T) Backend {
		return Backend{Name: inprocess.Name, Start: func(tb testing.TB, ns string, cfg ControllerConfig) *Controller {
			c, _ := StartInprocessController(tb, ns, cfg)
			return c
		}, WaitStopped: func(*testing.T, string, *v1alpha1.ImageSpecJob) {}}
	}},
	{buildahpod.Name, func(t *testing.T) Backend {
		p := StartPodEnv(t)
		return Backend{Name: buildahpod.Name, Start: func(tb testing.TB, ns string, cfg ControllerConfig) *Controller {
			c, _ := p.StartPodController(tb, ns, cfg, nil)
			return c
		}, WaitStopped: func(t *testing.T, ns string, job *v1alpha1.ImageSpecJob) {
			waitPodGone(t, p, ns, job.Name)
		}}
	}},
}

// scenarios run on every backend.
var scenarios = []struct {
	name string
	run  func(t *testing.T, b Backend)
}{
	{"CondaOnNotebookBase", testCondaOnNotebookBase},
	{"PhasesOnlyMoveForward", testPhasesOnlyMoveForward},
	{"DeleteSpecStopsBuild", testDeleteSpecStopsBuild},
	{"DeleteNamespaceStopsBuilds", testDeleteNamespaceStopsBuilds},
	{"RepositoryLayouts", testRepositoryLayouts},
	{"PrivateBaseImage", testPrivateBaseImage},
	{"PullScope", testPullScope},
	{"AlreadyBuilt", testAlreadyBuilt},
	{"SupplyChain", testSupplyChain},
}

// TestBackends runs each scenario against each backend:
// TestBackends/<backend>/<scenario>.
func TestBackends(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			b := be.setup(t)
			for _, sc := range scenarios {
				t.Run(sc.name, func(t *testing.T) { sc.run(t, b) })
			}
		})
	}
}

// PrimeHub's sample conda spec (tensorflow=1.13*) and a pip package on a
// base laid out like jupyter/docker-stacks (/opt/conda owned by jovyan,
// USER 1000), with the package index as the conda channel. The stand-in
// conda parses the rendered command line as conda would and installs the
// newest 1.13 release, not 1.14. Afterwards the notebook user still owns its
// environment: as jovyan, a conda install that replaces what the build
// installed and a pip reinstall into the prefix both succeed, and nothing
// under /opt/conda or the home is owned by anyone else.
func testCondaOnNotebookBase(t *testing.T, b Backend) {
	env := SharedEnv(t)
	ns := NewNamespace(t)
	index := env.PyPI.URL()
	c := b.Start(t, ns, ControllerConfig{Tweak: func(o *app.Options) {
		o.Controller.Sources.CondaChannels = []string{index}
	}})
	createSpec(t, c, ns, "notebook", v1alpha1.ImageSpecSpec{
		BaseImage: env.NotebookImage,
		Packages: v1alpha1.Packages{
			Conda: []string{"tensorflow=1.13*"},
			Pip:   []string{"e2e-hello==1.0"},
		},
	})
	job := WaitJob(t, c, ns, "notebook", "", buildTimeout)
	requireBuiltBy(t, job, b.Name, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
	if info := env.Inspect(t, env.Registry, job.Status.Image); info.User != "1000" {
		t.Errorf("config user %q, want the base image's 1000", info.User)
	}

	// As the image's user (1000). Each step prints a marker when it
	// succeeds, so every step that fails is reported, not just the first.
	out := env.RunInImage(t, env.Registry, job.Status.Image, `
echo "user=$(id -un)"
find /opt/conda /home/jovyan ! -user jovyan -printf 'foreign %u %p\n'
find /opt/conda ! -type l ! -perm -g+rw -printf 'not-group-writable %p\n'
grep -F '# cmd: conda install --yes -c `+index+` -- tensorflow=1.13*' /opt/conda/conda-meta/history >/dev/null && echo "history=ok"
python -c 'import tensorflow, e2e_hello; print("built", tensorflow.__version__, e2e_hello.greet())'
conda install --yes -c `+index+` -- 'tensorflow=1.14' && echo "user-conda-install=ok"
pip install --no-cache-dir --disable-pip-version-check --index-url `+index+` --trusted-host `+env.PyPI.Addr()+` --force-reinstall --no-deps 'e2e-hello==1.0' && echo "user-pip-install=ok"
python -c 'import tensorflow; print("after", tensorflow.__version__)'
true
`)
	for _, want := range []string{
		"user=jovyan\n",
		"built 1.13.1 hello from e2e\n",
		"history=ok\n",
		"user-conda-install=ok\n",
		"user-pip-install=ok\n",
		"after 1.14.0\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("running the image as its user: missing %q in:\n%s", want, out)
		}
	}
	for _, bad := range []string{"foreign ", "not-group-writable "} {
		if strings.Contains(out, bad) {
			t.Errorf("the build left files the notebook user does not own or its group cannot write:\n%s", out)
			break
		}
	}

	// The SBOM has conda's record of what conda installed, marked as
	// requested, with the version the stand-in resolved.
	if job.Status.SupplyChain == nil {
		t.Fatal("no status.supplyChain")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	repo := job.Status.Image[:strings.LastIndex(job.Status.Image, ":")]
	doc := string(fetchArtifact(t, ctx, env, repo, job.Status.SupplyChain.SBOM, job.Status.Digest))
	for _, want := range []string{`"pkg:conda/tensorflow@1.13.1?`, supplychain.RequestedPrefix + "spec.packages.conda[0]: tensorflow=1.13*"} {
		if !strings.Contains(doc, want) {
			t.Errorf("the SBOM lacks %s", want)
		}
	}
}

// The namespaced layout gives two namespaces' ImageSpecs of one name
// repositories of their own; the single-repository layout puts every
// image in the prefix's repository, the ImageSpec's name in the tag.
func testRepositoryLayouts(t *testing.T, b Backend) {
	env := SharedEnv(t)
	spec := v1alpha1.ImageSpecSpec{BaseImage: env.BaseImage, Packages: v1alpha1.Packages{Pip: []string{"e2e-hello==1.0"}}}
	layout := func(l revision.Layout) ControllerConfig {
		return ControllerConfig{Tweak: func(o *app.Options) { o.Controller.Layout = l }}
	}
	prefix := env.Settings.Registry.RepoPrefix
	var images []string
	for range 2 {
		ns := NewNamespace(t)
		c := b.Start(t, ns, layout(revision.LayoutNamespaced))
		createSpec(t, c, ns, "app", spec)
		job := WaitJob(t, c, ns, "app", "", buildTimeout)
		requireBuiltBy(t, job, b.Name, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
		if !strings.HasPrefix(job.Status.Image, prefix+"/"+ns+"/app:") {
			t.Errorf("namespaced layout: status.image %q, want %s/%s/app:<tag>", job.Status.Image, prefix, ns)
		}
		images = append(images, job.Status.Image)
	}
	for _, img := range images {
		if !TagExists(t, env.Registry, img) {
			t.Errorf("%s was not pushed", img)
		}
	}
	if images[0] == images[1] {
		t.Errorf("two namespaces share %s", images[0])
	}

	ns := NewNamespace(t)
	c := b.Start(t, ns, layout(revision.LayoutSingle))
	createSpec(t, c, ns, "app", spec)
	job := WaitJob(t, c, ns, "app", "", buildTimeout)
	requireBuiltBy(t, job, b.Name, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
	if !strings.HasPrefix(job.Status.Image, prefix+":app-") || !TagExists(t, env.Registry, job.Status.Image) {
		t.Errorf("single layout: status.image %q (pushed: %v), want %s:app-<tag>", job.Status.Image, TagExists(t, env.Registry, job.Status.Image), prefix)
	}
}

// A base image in a registry only the ImageSpec's pull Secret opens, the
// Secret in the legacy .dockercfg form: both backends read it through
// pkg/credentials and build on exactly that base; the same Secret on a
// spec whose base is in the target registry still pulls with the push
// credentials under it; without the Secret the pull fails.
func testPrivateBaseImage(t *testing.T, b Backend) {
	env := SharedEnv(t)
	ns := NewNamespace(t)
	// On the host address, so build pods reach it too.
	r := startRegistry(t, registry.Options{Address: env.HostIP})
	base, baseDigest := pushBase(t, r, "private/debian-python:1")
	c := b.Start(t, ns, ControllerConfig{})
	entry, err := json.Marshal(map[string]map[string]string{r.Host: {
		"auth": base64.StdEncoding.EncodeToString([]byte(r.Username + ":" + r.Password))}})
	if err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "private-pull", Namespace: ns},
		Type:       corev1.SecretTypeDockercfg,
		Data:       map[string][]byte{corev1.DockerConfigKey: entry},
	}
	if _, err := c.Clients.Kube.CoreV1().Secrets(ns).Create(context.Background(), secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, base, pullSecret string
		phase                  v1alpha1.ImageSpecJobPhase
		reason                 string
	}{
		{"private", base, "private-pull", v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded},
		{"target-registry", env.BaseImage, "private-pull", v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded},
		{"no-secret", base, "", v1alpha1.JobFailed, v1alpha1.ReasonBaseImagePullFailed},
	} {
		createSpec(t, c, ns, tc.name, v1alpha1.ImageSpecSpec{
			BaseImage:  tc.base,
			PullSecret: tc.pullSecret,
			Packages:   v1alpha1.Packages{Pip: []string{"e2e-third"}},
		})
		job := WaitJob(t, c, ns, tc.name, "", buildTimeout)
		requireBuiltBy(t, job, b.Name, tc.phase, tc.reason)
		if tc.name == "private" && job.Status.BaseImageDigest != baseDigest {
			t.Errorf("base image digest %q, want %q", job.Status.BaseImageDigest, baseDigest)
		}
		if tc.phase == v1alpha1.JobSucceeded {
			if info := env.Inspect(t, env.Registry, job.Status.Image); info.Digest != job.Status.Digest {
				t.Errorf("%s: registry has %s, status says %s", tc.name, info.Digest, job.Status.Digest)
			}
		}
	}
	env.ScanSecrets(t, c, ns, nil, RegistryCredential(r), RegistryCredential(env.Registry))
}

// The push credentials read every tenant's images, so a build pulls with
// them only its own (namespaced layout: any image of its namespace) and
// the shared repositories. Tenant A builds an image and then one on top of
// it; tenant B, naming A's image as its base, fails with
// BaseImagePullFailed and a message that says why, and pushes nothing;
// with a pull Secret that may read A's repository, the same spec builds.
func testPullScope(t *testing.T, b Backend) {
	env := SharedEnv(t)
	namespaced := ControllerConfig{Tweak: func(o *app.Options) { o.Controller.Layout = revision.LayoutNamespaced }}
	prefix := env.Settings.Registry.RepoPrefix
	spec := v1alpha1.ImageSpecSpec{BaseImage: env.BaseImage, Packages: v1alpha1.Packages{Pip: []string{"e2e-hello==1.0"}}}

	nsA := NewNamespace(t)
	cA := b.Start(t, nsA, namespaced)
	createSpec(t, cA, nsA, "private", spec)
	private := WaitJob(t, cA, nsA, "private", "", buildTimeout)
	requireBuiltBy(t, private, b.Name, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
	// A sibling in the same namespace builds on it with the push
	// credentials.
	createSpec(t, cA, nsA, "derived", v1alpha1.ImageSpecSpec{BaseImage: private.Status.Image, Packages: v1alpha1.Packages{Pip: []string{"e2e-third"}}})
	derived := WaitJob(t, cA, nsA, "derived", "", buildTimeout)
	requireBuiltBy(t, derived, b.Name, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
	if derived.Status.BaseImageDigest != private.Status.Digest {
		t.Errorf("derived: base digest %s, want %s's %s", derived.Status.BaseImageDigest, private.Status.Image, private.Status.Digest)
	}
	if err := cA.Stop(); err != nil {
		t.Fatal(err)
	}

	nsB := NewNamespace(t)
	cB := b.Start(t, nsB, namespaced)
	stolen := v1alpha1.ImageSpecSpec{BaseImage: private.Status.Image, Packages: v1alpha1.Packages{Pip: []string{"e2e-third"}}}
	createSpec(t, cB, nsB, "thief", stolen)
	job := WaitJob(t, cB, nsB, "thief", "", buildTimeout)
	requireBuiltBy(t, job, b.Name, v1alpha1.JobFailed, v1alpha1.ReasonBaseImagePullFailed)
	if !strings.Contains(job.Status.Message, "spec.pullSecret") {
		t.Errorf("message %q does not say the push credentials were not used and a pull Secret is needed", job.Status.Message)
	}
	if TagExists(t, env.Registry, job.Spec.TargetImage) {
		t.Errorf("%s was pushed", job.Spec.TargetImage)
	}
	// The same base with a pull Secret that may read it: the refusal was
	// the credentials and nothing else.
	createDockerSecret(t, cB, nsB, "granted", env.Registry.AuthFile)
	stolen.PullSecret = "granted"
	createSpec(t, cB, nsB, "granted", stolen)
	granted := WaitJob(t, cB, nsB, "granted", "", buildTimeout)
	requireBuiltBy(t, granted, b.Name, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
	if !strings.HasPrefix(granted.Status.Image, prefix+"/"+nsB+"/granted:") || granted.Status.BaseImageDigest != private.Status.Digest {
		t.Errorf("granted: image %s on base %s, want %s/%s/granted:<tag> on %s", granted.Status.Image, granted.Status.BaseImageDigest, prefix, nsB, private.Status.Digest)
	}
}

// With the already-built check on (as shipped): every build labels its
// image with its revision; a job recreated for a revision whose image is
// in the registry ends Succeeded (AlreadyBuilt) with the registry's digest
// and no build; once someone else pushed over the tag (no label), the
// recreated job builds again and replaces it.
func testAlreadyBuilt(t *testing.T, b Backend) {
	env := SharedEnv(t)
	ns := NewNamespace(t)
	c := b.Start(t, ns, ControllerConfig{Tweak: func(o *app.Options) { o.Controller.BuildExisting = false }})
	// A name of its own per backend: the prefix layout would give both
	// backends' runs one target.
	name := "reuse-" + b.Name
	createSpec(t, c, ns, name, v1alpha1.ImageSpecSpec{BaseImage: env.BaseImage, Packages: v1alpha1.Packages{Pip: []string{"e2e-hello==1.0"}}})
	built := WaitJob(t, c, ns, name, "", buildTimeout)
	requireBuiltBy(t, built, b.Name, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
	info := env.Inspect(t, env.Registry, built.Status.Image)
	_, tag, _ := strings.Cut(strings.TrimPrefix(built.Status.Image, env.Registry.Host+"/"), ":")
	if info.Labels[names.ImageRevisionLabel] != tag {
		t.Fatalf("image labels %v, want %s=%s", info.Labels, names.ImageRevisionLabel, tag)
	}

	recreate := func(old *v1alpha1.ImageSpecJob) (*v1alpha1.ImageSpecJob, time.Duration) {
		t.Helper()
		ctx := context.Background()
		jobs := c.Clients.Client.PrimehubV1alpha1().ImageSpecJobs(ns)
		deleted := time.Now()
		if err := jobs.Delete(ctx, old.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		var job *v1alpha1.ImageSpecJob
		WaitFor(t, buildTimeout, func(ctx context.Context) (bool, string) {
			j, err := jobs.Get(ctx, old.Name, metav1.GetOptions{})
			if err != nil || j.UID == old.UID {
				return false, fmt.Sprintf("recreated job: %v", err)
			}
			job = j
			return j.Status.Phase.IsFinal(), fmt.Sprintf("job %s: %s %s", j.Name, j.Status.Phase, j.Status.Reason)
		})
		return job, time.Since(deleted)
	}
	again, took := recreate(built)
	// Measured from the delete: the controller recreates the job, finds
	// its image and finishes it (polled every 100 ms).
	t.Logf("job deleted -> recreated job %s %s/%s in %.2f s", again.Name, again.Status.Phase, again.Status.Reason, took.Seconds())
	if again.Status.Phase != v1alpha1.JobSucceeded || again.Status.Reason != v1alpha1.ReasonAlreadyBuilt ||
		again.Status.Digest != built.Status.Digest || again.Status.Image != built.Status.Image || again.Status.PodName != "" {
		t.Errorf("recreated job: %+v, want AlreadyBuilt with %s@%s and no pod", again.Status, built.Status.Image, built.Status.Digest)
	}
	// Attached anew, unsigned without a key, and no attachment fails.
	if sc := again.Status.SupplyChain; sc == nil || sc.SBOM == "" || sc.Provenance == "" || sc.SBOMPackages == 0 || sc.SignedBy != "" {
		t.Errorf("recreated job: status.supplyChain %+v, want the SBOM and provenance, no signature", sc)
	}
	if ev := jobEventCounts(t, c.Clients.Kube, again); ev[v1alpha1.EventBuildStarted] != 0 || ev[v1alpha1.EventBuildSucceeded] != 1 {
		t.Errorf("events of the recreated job %v, want one %s and no %s", ev, v1alpha1.EventBuildSucceeded, v1alpha1.EventBuildStarted)
	}
	if is := getSpec(t, c, ns, name); is.Status.Image != built.Status.Image || is.Status.PinnedImage != built.Status.Image[:strings.LastIndex(built.Status.Image, ":")]+"@"+built.Status.Digest {
		t.Errorf("ImageSpec status image %s pinned %s", is.Status.Image, is.Status.PinnedImage)
	}

	// Someone else's image over the tag: not this revision's, so built.
	if _, _, err := images.Push(context.Background(), images.Busybox, env.Registry, strings.TrimPrefix(built.Status.Image, env.Registry.Host+"/")); err != nil {
		t.Fatal(err)
	}
	foreign := env.Inspect(t, env.Registry, built.Status.Image).Digest
	rebuilt, _ := recreate(again)
	requireBuiltBy(t, rebuilt, b.Name, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
	if now := env.Inspect(t, env.Registry, built.Status.Image); now.Digest == foreign || now.Digest != rebuilt.Status.Digest || now.Labels[names.ImageRevisionLabel] != tag {
		t.Errorf("after the rebuild the tag has %s (foreign %s, job %s), labels %v", now.Digest, foreign, rebuilt.Status.Digest, now.Labels)
	}
}
