package buildahpod

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/backend"
	"github.com/imagespec/imagespec-controller/pkg/credentials"
	"github.com/imagespec/imagespec-controller/pkg/dockerfile"
	"github.com/imagespec/imagespec-controller/pkg/names"
	"github.com/imagespec/imagespec-controller/pkg/revision"
)

const password = "s3cret-Pa55word-never-shown"

func testJob(name string) *v1alpha1.ImageSpecJob {
	return &v1alpha1.ImageSpecJob{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: "team", UID: types.UID("uid-" + name),
			Labels: map[string]string{names.ImageSpecLabel: "myspec", "team": "a"},
		},
		Spec: v1alpha1.ImageSpecJobSpec{
			BaseImage:   "registry.example.com/base/python:3",
			TargetImage: "registry.example.com/team/myspec:abc123",
			PushSecret:  "push-creds",
			PullSecret:  "pull-creds",
			Packages: v1alpha1.Packages{
				Apt: []string{"curl"},
				Pip: []string{"requests>=2", `pwned; python_version >= "3$(touch /x)"`},
			},
		},
	}
}

func dockerSecret(name string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "team"},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(
			`{"auths":{"registry.example.com":{"username":"u","password":"` + password + `"}}}`)},
	}
}

type fixture struct {
	kube     *fake.Clientset
	be       *Backend
	notified chan string
}

func newFixture(t *testing.T, opts Options, objs ...any) *fixture {
	t.Helper()
	kube := fake.NewClientset()
	for _, o := range objs {
		switch o := o.(type) {
		case *corev1.Secret:
			if _, err := kube.CoreV1().Secrets(o.Namespace).Create(context.Background(), o, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	factory := informers.NewSharedInformerFactoryWithOptions(kube, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = names.ManagedSelector() }))
	be, err := New(opts, kube, factory)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	factory.Start(ctx.Done())
	t.Cleanup(func() {
		cancel()
		factory.Shutdown()
	})
	f := &fixture{kube: kube, be: be, notified: make(chan string, 100)}
	if err := be.Run(ctx, func(key string) { f.notified <- key }); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestPodName(t *testing.T) {
	long := strings.Repeat("a", 250)
	for _, c := range []struct{ job, want string }{
		{"spec-1234abcd", "spec-1234abcd-build"},
		{strings.Repeat("x", 247), strings.Repeat("x", 247) + "-build"},
	} {
		if got := PodName(c.job); got != c.want {
			t.Errorf("PodName(%q) = %q, want %q", c.job, got, c.want)
		}
	}
	n1, n2 := PodName(long+"x"), PodName(long+"y")
	if n1 == n2 || len(n1) > 253 || n1 != PodName(long+"x") {
		t.Errorf("long names: %q (%d) and %q must differ, be stable and fit 253", n1, len(n1), n2)
	}
	if errs := validation.IsDNS1123Subdomain(n1); len(errs) > 0 {
		t.Errorf("%q: %v", n1, errs)
	}
	for _, name := range []string{"short", strings.Repeat("b", 63), strings.Repeat("b", 64), long} {
		v := jobLabelValue(name)
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			t.Errorf("label value for %d-byte name: %q: %v", len(name), v, errs)
		}
	}
	if jobLabelValue(strings.Repeat("b", 64)) == jobLabelValue(strings.Repeat("b", 64)+"c") {
		t.Error("label values of different long names collide")
	}
}

func TestEnsureCreatesOnePodWithConfigMap(t *testing.T) {
	f := newFixture(t, Options{BuilderImage: "reg.local/builder:1", BuildTimeout: 90 * time.Second},
		dockerSecret("push-creds"), dockerSecret("pull-creds"))
	job := testJob("myspec-abc123")
	ctx := context.Background()

	st, err := f.be.Ensure(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	if st.Phase != v1alpha1.JobPending || st.PodName != "myspec-abc123-build" {
		t.Fatalf("status %+v", st)
	}
	// Again, as after a restart (the controller recorded the pod) or a
	// failed status write (it did not: creating again finds the pod): no
	// second pod.
	if _, err := f.be.Ensure(ctx, job); err != nil {
		t.Fatal(err)
	}
	job.Status.PodName = st.PodName
	for i := 0; i < 3; i++ {
		if _, err := f.be.Ensure(ctx, job); err != nil {
			t.Fatal(err)
		}
	}
	pods, _ := f.kube.CoreV1().Pods("team").List(ctx, metav1.ListOptions{})
	if len(pods.Items) != 1 {
		t.Fatalf("%d pods, want 1", len(pods.Items))
	}
	creates := 0
	for _, a := range f.kube.Actions() {
		if a.GetVerb() == "create" && a.GetResource().Resource == "pods" {
			creates++
		}
	}
	if creates > 2 {
		t.Errorf("%d pod creates, want 1, and at most one more refused as existing before the job recorded its pod", creates)
	}
	pod := &pods.Items[0]

	// Owner, labels.
	ref := metav1.GetControllerOf(pod)
	if ref == nil || ref.UID != job.UID || ref.Kind != "ImageSpecJob" || ref.APIVersion != "primehub.io/v1alpha1" {
		t.Errorf("controller ref %+v", ref)
	}
	for k, v := range job.Labels {
		if pod.Labels[k] != v {
			t.Errorf("label %s=%q, want %q", k, pod.Labels[k], v)
		}
	}
	if pod.Labels[names.ManagedByLabel] != names.ComponentName || pod.Labels[JobLabel] != job.Name {
		t.Errorf("labels %v", pod.Labels)
	}
	if pod.Spec.RestartPolicy != corev1.RestartPolicyNever || pod.Spec.ActiveDeadlineSeconds == nil || *pod.Spec.ActiveDeadlineSeconds != 90 {
		t.Errorf("restart policy %s, deadline %v", pod.Spec.RestartPolicy, pod.Spec.ActiveDeadlineSeconds)
	}
	if pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken {
		t.Error("the service account token must not be mounted")
	}

	// Least privilege.
	c := pod.Spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.Privileged != nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" ||
		strings.Join(capNames(sc.Capabilities.Add), ",") != "SETUID,SETGID,SETFCAP" || sc.SeccompProfile != nil {
		b, _ := json.Marshal(sc)
		t.Errorf("security context %s", b)
	}
	if c.TerminationMessagePolicy != corev1.TerminationMessageFallbackToLogsOnError {
		t.Errorf("termination message policy %s", c.TerminationMessagePolicy)
	}

	// Credentials only as Secret volumes; nothing secret anywhere in the
	// pod or ConfigMap.
	secretVols := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		if v.Secret != nil {
			secretVols[v.Secret.SecretName] = v.Name
		}
	}
	if secretVols["push-creds"] == "" || secretVols["pull-creds"] == "" {
		t.Errorf("secret volumes %v", secretVols)
	}
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			t.Errorf("env %s comes from %v: values must be plain data", e.Name, e.ValueFrom)
		}
	}
	cm, err := f.kube.CoreV1().ConfigMaps("team").Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for name, obj := range map[string]any{"pod": pod, "configmap": cm} {
		b, _ := json.Marshal(obj)
		if strings.Contains(string(b), password) || strings.Contains(string(b), "dXNlcj") {
			t.Errorf("a credential appears in the %s", name)
		}
	}
	if ref := metav1.GetControllerOf(cm); ref == nil || ref.UID != job.UID {
		t.Errorf("ConfigMap controller ref %+v", ref)
	}

	// The ConfigMap carries the Dockerfiles; the pod only names images.
	want, err := dockerfile.Render(backend.JobInputs(job))
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data[keyDockerfile] != string(want) {
		t.Errorf("Dockerfile:\n%s\nwant:\n%s", cm.Data[keyDockerfile], want)
	}
	user := cm.Data[keyDockerfileUser]
	if !strings.Contains(user, "USER 0:0\n") || !strings.HasSuffix(user, "ARG IMAGESPEC_BASE_USER\nUSER ${IMAGESPEC_BASE_USER}\n") {
		t.Errorf("Dockerfile.user:\n%s", user)
	}
	if cm.Data[keyScript] != buildScript {
		t.Error("ConfigMap lacks the build script")
	}
	podJSON, _ := json.Marshal(pod.Spec)
	if strings.Contains(string(podJSON), "pwned") || strings.Contains(string(podJSON), "requests") {
		t.Error("package entries must reach the pod through the ConfigMap only")
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if env["IMAGESPEC_TARGET_IMAGE"] != job.Spec.TargetImage || env["IMAGESPEC_BASE_IMAGE"] != "registry.example.com/base/python:3" ||
		env["IMAGESPEC_PUSH_AUTHFILE"] != pushAuthDir+"/auth.json" || env["IMAGESPEC_PULL_AUTHFILE"] != pullAuthDir+"/auth.json" ||
		env["IMAGESPEC_IMAGE_LABEL"] != "io.imagespec.revision=abc123" {
		t.Errorf("env %v", env)
	}

	// The pod's creation reaches the job through the informer.
	select {
	case key := <-f.notified:
		if key != "team/myspec-abc123" {
			t.Errorf("notified %q", key)
		}
	case <-time.After(10 * time.Second):
		t.Error("no notification for the new pod")
	}
}

func capNames(cs []corev1.Capability) []string {
	var out []string
	for _, c := range cs {
		out = append(out, string(c))
	}
	return out
}

func TestPodOptions(t *testing.T) {
	job := testJob("myspec-abc123")
	for _, c := range []struct {
		name  string
		opts  Options
		check func(t *testing.T, pod *corev1.Pod)
	}{
		{"privileged", Options{Privileged: true}, func(t *testing.T, pod *corev1.Pod) {
			sc := pod.Spec.Containers[0].SecurityContext
			if sc.Privileged == nil || !*sc.Privileged || sc.AllowPrivilegeEscalation != nil || sc.Capabilities != nil {
				t.Errorf("security context %+v", sc)
			}
		}},
		{"localhost seccomp", Options{SeccompProfile: "Localhost/buildah.json"}, func(t *testing.T, pod *corev1.Pod) {
			sp := pod.Spec.Containers[0].SecurityContext.SeccompProfile
			if sp == nil || sp.Type != corev1.SeccompProfileTypeLocalhost || *sp.LocalhostProfile != "buildah.json" {
				t.Errorf("seccomp %+v", sp)
			}
		}},
		{"cache pvc", Options{Cache: &CacheVolume{PVC: "layers"}}, func(t *testing.T, pod *corev1.Pod) {
			v := volume(pod, "storage")
			if v == nil || v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != "layers" {
				t.Errorf("storage volume %+v", v)
			}
		}},
		{"cache host path", Options{Cache: &CacheVolume{HostPath: "/var/cache/buildah"}}, func(t *testing.T, pod *corev1.Pod) {
			v := volume(pod, "storage")
			if v == nil || v.HostPath == nil || v.HostPath.Path != "/var/cache/buildah" {
				t.Errorf("storage volume %+v", v)
			}
		}},
		{"default storage", Options{}, func(t *testing.T, pod *corev1.Pod) {
			if v := volume(pod, "storage"); v == nil || v.EmptyDir == nil {
				t.Errorf("storage volume %+v", v)
			}
			if pod.Spec.Containers[0].Image != DefaultBuilderImage {
				t.Errorf("image %s", pod.Spec.Containers[0].Image)
			}
		}},
		{"scheduling and resources", Options{HostNetwork: true, Pod: PodConfig{
			NodeSelector: map[string]string{"pool": "build"}, ServiceAccountName: "builder", PriorityClassName: "low",
			Tolerations:      []corev1.Toleration{{Key: "build", Operator: corev1.TolerationOpExists}},
			ImagePullSecrets: []corev1.LocalObjectReference{{Name: "builder-pull"}},
			Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{
				corev1.ResourceMemory: mustQuantity("2Gi")}},
		}}, func(t *testing.T, pod *corev1.Pod) {
			s := pod.Spec
			if s.NodeSelector["pool"] != "build" || s.ServiceAccountName != "builder" || s.PriorityClassName != "low" ||
				len(s.Tolerations) != 1 || s.ImagePullSecrets[0].Name != "builder-pull" || !s.HostNetwork ||
				s.DNSPolicy != corev1.DNSClusterFirstWithHostNet || s.Containers[0].Resources.Limits.Memory().String() != "2Gi" {
				b, _ := json.Marshal(s)
				t.Errorf("spec %s", b)
			}
		}},
		{"registry CAs", Options{RegistryCAs: map[string][]byte{"reg.local:5000": []byte("PEM")}}, func(t *testing.T, pod *corev1.Pod) {
			v := volume(pod, "registry-cas")
			if v == nil || v.ConfigMap == nil || v.ConfigMap.Items[0].Path != "reg.local:5000/ca.crt" {
				t.Errorf("CA volume %+v", v)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := c.opts.setDefaults(); err != nil {
				t.Fatal(err)
			}
			b := &Backend{opts: c.opts}
			pod, err := b.pod(job, false, baseStorePlan{})
			if err != nil {
				t.Fatal(err)
			}
			c.check(t, pod)
		})
	}
	for _, bad := range []Options{
		{SeccompProfile: "RuntimeDefault"},
		{SeccompProfile: "Localhost//abs"},
		{Privileged: true, SeccompProfile: "Unconfined"},
		{StorageDriver: "btrfs"},
		{Cache: &CacheVolume{}},
		{Cache: &CacheVolume{PVC: "a", HostPath: "/b"}},
		{UserNamespaces: "yes"},
		{UserNamespaces: UserNamespacesOn, Privileged: true},
		{UserNamespaces: UserNamespacesOn, HostNetwork: true},
		{UserNamespaces: UserNamespacesOn, Cache: &CacheVolume{HostPath: "/b"}},
	} {
		if err := bad.setDefaults(); err == nil {
			t.Errorf("options %+v accepted", bad)
		}
	}
}

func volume(pod *corev1.Pod, name string) *corev1.VolumeSource {
	for _, v := range pod.Spec.Volumes {
		if v.Name == name {
			return &v.VolumeSource
		}
	}
	return nil
}

func TestMissingSecretFailsBeforeThePod(t *testing.T) {
	for _, c := range []struct {
		name    string
		secrets []any
		reason  string
	}{
		{"no push secret", []any{dockerSecret("pull-creds")}, v1alpha1.ReasonPushFailed},
		{"no pull secret", []any{dockerSecret("push-creds")}, v1alpha1.ReasonBaseImagePullFailed},
		{"opaque push secret", []any{dockerSecret("pull-creds"), &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "push-creds", Namespace: "team"},
			Data:       map[string][]byte{"password": []byte(password)}}}, v1alpha1.ReasonPushFailed},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, Options{}, c.secrets...)
			st, err := f.be.Ensure(context.Background(), testJob("myspec-abc123"))
			if err != nil {
				t.Fatal(err)
			}
			if st.Phase != v1alpha1.JobFailed || st.Reason != c.reason || strings.Contains(st.Message, password) {
				t.Errorf("status %+v", st)
			}
			pods, _ := f.kube.CoreV1().Pods("team").List(context.Background(), metav1.ListOptions{})
			if len(pods.Items) != 0 {
				t.Errorf("%d pods created", len(pods.Items))
			}
		})
	}
}

func TestCancelDeletesPodAndConfigMap(t *testing.T) {
	f := newFixture(t, Options{}, dockerSecret("push-creds"), dockerSecret("pull-creds"))
	ctx := context.Background()
	job := testJob("myspec-abc123")
	if _, err := f.be.Ensure(ctx, job); err != nil {
		t.Fatal(err)
	}
	if err := f.be.Cancel(ctx, job); err != nil {
		t.Fatal(err)
	}
	name := PodName(job.Name)
	if _, err := f.kube.CoreV1().Pods("team").Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("pod after Cancel: %v", err)
	}
	if _, err := f.kube.CoreV1().ConfigMaps("team").Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("ConfigMap after Cancel: %v", err)
	}
	// Idempotent, also for a deleted job known by name only.
	if err := f.be.Cancel(ctx, &v1alpha1.ImageSpecJob{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: job.Name}}); err != nil {
		t.Fatal(err)
	}
	// A job whose pod vanished outside Cancel fails instead of building
	// twice, once the informer has seen the deletion.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := f.be.pods.Pods("team").Get(name); apierrors.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the informer never saw the deletion")
		}
		time.Sleep(10 * time.Millisecond)
	}
	job.Status.PodName = name
	st, err := f.be.Ensure(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	if st.Phase != v1alpha1.JobFailed || st.Reason != v1alpha1.ReasonBackendError {
		t.Errorf("status after the pod vanished: %+v", st)
	}
}

// A job recreated under an earlier job's name meets that job's pod: in
// Ensure when the cache shows the pod, on the create path (through that
// job's ConfigMap) when it does not yet, since new pods are read from the
// cache only. Either way the pod is deleted first, never its ConfigMap
// under it, and the job waits.
func TestStalePodOfEarlierJobIsReplaced(t *testing.T) {
	for _, path := range []string{"Ensure", "create"} {
		t.Run(path, func(t *testing.T) {
			f := newFixture(t, Options{}, dockerSecret("push-creds"), dockerSecret("pull-creds"))
			ctx := context.Background()
			old := testJob("myspec-abc123")
			if _, err := f.be.Ensure(ctx, old); err != nil {
				t.Fatal(err)
			}
			renewed := old.DeepCopy()
			renewed.UID = "uid-new"
			f.kube.ClearActions()
			var st backend.Status
			var err error
			if path == "Ensure" {
				st, err = f.be.Ensure(ctx, renewed)
			} else {
				st, err = f.be.create(ctx, renewed)
			}
			for _, a := range f.kube.Actions() {
				if a.GetVerb() == "delete" && a.GetResource().Resource == "configmaps" {
					t.Errorf("the earlier job's ConfigMap was deleted before its pod")
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			if st.Phase != v1alpha1.JobPending || !strings.Contains(st.Message, "earlier job") {
				t.Errorf("status %+v", st)
			}
			if _, err := f.kube.CoreV1().Pods("team").Get(ctx, PodName(old.Name), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Errorf("the earlier job's pod was not deleted: %v", err)
			}
		})
	}
}

func TestStaleConfigMapIsReplaced(t *testing.T) {
	f := newFixture(t, Options{}, dockerSecret("push-creds"), dockerSecret("pull-creds"))
	ctx := context.Background()
	job := testJob("myspec-abc123")
	stale, err := f.be.configMap(job)
	if err != nil {
		t.Fatal(err)
	}
	stale.Data[keyDockerfile] = "FROM elsewhere\n"
	if _, err := f.kube.CoreV1().ConfigMaps("team").Create(ctx, stale, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := f.be.Ensure(ctx, job)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Ensure still fails: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cm, err := f.kube.CoreV1().ConfigMaps("team").Get(ctx, PodName(job.Name), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(cm.Data[keyDockerfile], "elsewhere") {
		t.Error("the pod reads the stale Dockerfile")
	}
	if _, err := f.kube.CoreV1().Pods("team").Get(ctx, PodName(job.Name), metav1.GetOptions{}); err != nil {
		t.Errorf("no pod after the ConfigMap was replaced: %v", err)
	}
}

// With a build namespace the pod, its ConfigMap and a converted copy of
// the pull Secret go there, named after the job's namespace too, with
// labels instead of owner references; pod events notify the job; Cancel
// removes all three; a pull Secret is read from the job's namespace only.
func TestBuildNamespace(t *testing.T) {
	// A legacy dockercfg pull Secret, converted on the way.
	pull := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "pull-creds", Namespace: "team"},
		Type:       corev1.SecretTypeDockercfg,
		Data:       map[string][]byte{corev1.DockerConfigKey: []byte(`{"base.example.com":{"username":"u","password":"` + password + `"}}`)},
	}
	push := dockerSecret("push-creds")
	push.Namespace = "builds"
	// The job's base is in a shared repository: its pull copy carries the
	// push credentials too.
	f := newFixture(t, Options{BuildNamespace: "builds", Pulls: credentials.PullScope{Shared: []string{"registry.example.com/base"}}}, push, pull)
	ctx := context.Background()
	job := testJob("myspec-abc123")

	st, err := f.be.Ensure(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	ns, name := PodRef("builds", "team", job.Name)
	if ns != "builds" || st.PodName != name {
		t.Fatalf("status %+v, want pod %s/%s", st, ns, name)
	}
	if _, other := PodRef("builds", "team-b", job.Name); other == name {
		t.Errorf("two namespaces' jobs of one name share pod %s", name)
	}
	pod, err := f.kube.CoreV1().Pods("builds").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pod.OwnerReferences) != 0 || pod.Labels[JobUIDLabel] != string(job.UID) || pod.Labels[JobNamespaceLabel] != "team" || pod.Annotations[JobNameAnnotation] != job.Name {
		t.Errorf("pod owners %v, labels %v, annotations %v", pod.OwnerReferences, pod.Labels, pod.Annotations)
	}
	if _, err := f.kube.CoreV1().Pods("team").Get(ctx, PodName(job.Name), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a pod in the job's namespace: %v", err)
	}
	if _, err := f.kube.CoreV1().ConfigMaps("builds").Get(ctx, name, metav1.GetOptions{}); err != nil {
		t.Errorf("ConfigMap: %v", err)
	}
	v := volume(pod, "pull-auth")
	if v == nil || v.Secret == nil || v.Secret.SecretName != pullCopyName(name) {
		t.Fatalf("pull volume %+v, want the copy %s", v, pullCopyName(name))
	}
	copied, err := f.kube.CoreV1().Secrets("builds").Get(ctx, pullCopyName(name), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The pull Secret's entries over the push credentials, as inprocess pulls.
	if copied.Type != corev1.SecretTypeDockerConfigJson || !strings.Contains(string(copied.Data[corev1.DockerConfigJsonKey]), `"auths":{"base.example.com"`) ||
		!strings.Contains(string(copied.Data[corev1.DockerConfigJsonKey]), `"registry.example.com"`) {
		t.Errorf("copy %s: %s", copied.Type, copied.Data)
	}
	select {
	case key := <-f.notified:
		if key != "team/"+job.Name {
			t.Errorf("notified %q, want team/%s", key, job.Name)
		}
	case <-time.After(10 * time.Second):
		t.Error("no notification for the build pod")
	}

	if err := f.be.Cancel(ctx, job); err != nil {
		t.Fatal(err)
	}
	_, perr := f.kube.CoreV1().Pods("builds").Get(ctx, name, metav1.GetOptions{})
	_, cerr := f.kube.CoreV1().ConfigMaps("builds").Get(ctx, name, metav1.GetOptions{})
	_, serr := f.kube.CoreV1().Secrets("builds").Get(ctx, pullCopyName(name), metav1.GetOptions{})
	if !apierrors.IsNotFound(perr) || !apierrors.IsNotFound(cerr) || !apierrors.IsNotFound(serr) {
		t.Errorf("after Cancel: pod %v, ConfigMap %v, pull copy %v", perr, cerr, serr)
	}

	// The pull Secret only in another namespace: not found, named in the
	// job's own.
	other := testJob("other-abc123")
	other.Namespace = "team-b"
	st, err = f.be.Ensure(ctx, other)
	if err != nil {
		t.Fatal(err)
	}
	if st.Phase != v1alpha1.JobFailed || st.Reason != v1alpha1.ReasonBaseImagePullFailed || !strings.Contains(st.Message, "team-b/pull-creds") {
		t.Errorf("status %+v, want BaseImagePullFailed naming team-b/pull-creds", st)
	}
}

func podEnv(t *testing.T, kube *fake.Clientset, ns, name string) map[string]string {
	t.Helper()
	pod, err := kube.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, e := range pod.Spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	return env
}

// In a build namespace the push credentials pull only the spec's own
// images and shared repositories: another tenant's image is pulled with
// the pull Secret alone (the copy holds nothing else), or anonymously
// (no pull authfile at all).
func TestPullScopeInBuildNamespace(t *testing.T) {
	pull := dockerSecret("pull-creds")
	pull.Data = map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"base.example.com":{"username":"u","password":"p"}}}`)}
	push := dockerSecret("push-creds")
	push.Namespace = "builds"
	ctx := context.Background()
	for _, c := range []struct {
		name, base, pullSecret string
		pullAuth               string // IMAGESPEC_PULL_AUTHFILE; "" unset
		pushInCopy             bool
	}{
		{"own-revision", "registry.example.com/team/myspec:0123456789ab", "", pushAuthDir + "/auth.json", false},
		{"shared", "registry.example.com/base/python:3", "", pushAuthDir + "/auth.json", false},
		{"other-tenant", "registry.example.com/victim/app:latest", "", "", false},
		{"other-tenant-pull-secret", "registry.example.com/victim/app:latest", "pull-creds", pullAuthDir + "/auth.json", false},
		{"shared-pull-secret", "registry.example.com/base/python:3", "pull-creds", pullAuthDir + "/auth.json", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, Options{BuildNamespace: "builds", Pulls: credentials.PullScope{Shared: []string{"registry.example.com/base"}}}, push, pull)
			job := testJob("myspec-abc123")
			job.Spec.BaseImage, job.Spec.PullSecret = c.base, c.pullSecret
			st, err := f.be.Ensure(ctx, job)
			if err != nil {
				t.Fatal(err)
			}
			env := podEnv(t, f.kube, "builds", st.PodName)
			if env["IMAGESPEC_PULL_AUTHFILE"] != c.pullAuth {
				t.Errorf("IMAGESPEC_PULL_AUTHFILE=%q, want %q", env["IMAGESPEC_PULL_AUTHFILE"], c.pullAuth)
			}
			if c.pullSecret == "" {
				return
			}
			copied, err := f.kube.CoreV1().Secrets("builds").Get(ctx, pullCopyName(st.PodName), metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			data := string(copied.Data[corev1.DockerConfigJsonKey])
			if !strings.Contains(data, "base.example.com") || strings.Contains(data, password) != c.pushInCopy {
				t.Errorf("pull copy %s: push credentials in it %v, want %v", data, strings.Contains(data, password), c.pushInCopy)
			}
		})
	}
}

// The registry layer cache: one repository per job namespace under the
// job's prefix, named in the pod's environment; none when turned off, for
// the single layout, or without push credentials.
func TestCacheRepository(t *testing.T) {
	job := testJob("myspec-abc123")
	job.Spec.RepoPrefix = "registry.example.com/team"
	for _, c := range []struct {
		name string
		opts Options
		want string
	}{
		{"default", Options{}, "registry.example.com/team/imagespec_cache/team"},
		{"off", Options{NoRegistryCache: true}, ""},
		{"single layout", Options{Pulls: credentials.PullScope{Layout: revision.LayoutSingle}}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, c.opts, dockerSecret("push-creds"), dockerSecret("pull-creds"))
			if got := f.be.CacheRepository(job); got != c.want {
				t.Errorf("CacheRepository = %q, want %q", got, c.want)
			}
			st, err := f.be.Ensure(context.Background(), job)
			if err != nil {
				t.Fatal(err)
			}
			if env := podEnv(t, f.kube, "team", st.PodName); env["IMAGESPEC_CACHE_REPO"] != c.want {
				t.Errorf("IMAGESPEC_CACHE_REPO=%q, want %q", env["IMAGESPEC_CACHE_REPO"], c.want)
			}
		})
	}
	noPush := job.DeepCopy()
	noPush.Spec.PushSecret = ""
	if got := newFixture(t, Options{}).be.CacheRepository(noPush); got != "" {
		t.Errorf("without push credentials: %q", got)
	}
}

// A new build reads its pod from the cache only: creating it tolerates
// one that exists, so no GET answering 404 precedes every new pod.
func TestNewBuildReadsNoPodLive(t *testing.T) {
	f := newFixture(t, Options{}, dockerSecret("push-creds"), dockerSecret("pull-creds"))
	f.kube.ClearActions()
	if _, err := f.be.Ensure(context.Background(), testJob("myspec-abc123")); err != nil {
		t.Fatal(err)
	}
	created := false
	for _, a := range f.kube.Actions() {
		if a.GetResource().Resource != "pods" {
			continue
		}
		switch a.GetVerb() {
		case "get":
			t.Errorf("a live GET of the pod for a new build")
		case "create":
			created = true
		}
	}
	if !created {
		t.Error("no pod created")
	}
}

// With a build namespace, one read of the push Secret serves the builds
// that start within Options.PushSecretRecheck; a missing push Secret is read again
// (and fails the build) every time.
func TestPushSecretReadOncePerFanOut(t *testing.T) {
	push := dockerSecret("push-creds")
	push.Namespace = "builds"
	f := newFixture(t, Options{BuildNamespace: "builds"}, push, dockerSecret("pull-creds"))
	ctx := context.Background()
	reads := func() int {
		n := 0
		for _, a := range f.kube.Actions() {
			if g, ok := a.(k8stesting.GetAction); ok && a.GetResource().Resource == "secrets" && g.GetName() == "push-creds" {
				n++
			}
		}
		return n
	}
	for _, name := range []string{"one-abc123", "two-abc123", "three-abc123"} {
		if _, err := f.be.Ensure(ctx, testJob(name)); err != nil {
			t.Fatal(err)
		}
	}
	if got := reads(); got != 1 {
		t.Errorf("%d reads of the push Secret for 3 builds, want 1", got)
	}
	// A recheck shorter than the builds' spacing reads it for each.
	f = newFixture(t, Options{BuildNamespace: "builds", PushSecretRecheck: time.Nanosecond}, push, dockerSecret("pull-creds"))
	for _, name := range []string{"one-abc123", "two-abc123", "three-abc123"} {
		if _, err := f.be.Ensure(ctx, testJob(name)); err != nil {
			t.Fatal(err)
		}
	}
	if got := reads(); got != 3 {
		t.Errorf("%d reads of the push Secret for 3 builds with a 1 ns recheck, want 3", got)
	}

	f2 := newFixture(t, Options{BuildNamespace: "builds"}, dockerSecret("pull-creds"))
	for range 2 {
		st, err := f2.be.Ensure(ctx, testJob("four-abc123"))
		if err != nil || st.Phase != v1alpha1.JobFailed || st.Reason != v1alpha1.ReasonPushFailed {
			t.Fatalf("without the push Secret: %+v, %v", st, err)
		}
	}
}
