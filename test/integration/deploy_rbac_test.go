package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/app"
	"github.com/imagespec/imagespec-controller/pkg/backend"
	"github.com/imagespec/imagespec-controller/pkg/backend/backendtest"
	"github.com/imagespec/imagespec-controller/pkg/backend/buildahpod"
	"github.com/imagespec/imagespec-controller/pkg/config"
	"github.com/imagespec/imagespec-controller/pkg/controller"
)

// gcrEnv is PrimeHub's GCR example: the password is a single-quoted
// one-line JSON key.
const gcrEnv = `PRIMEHUB_FEATURE_CUSTOM_IMAGE=true
PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT=https://gcr.io
PRIMEHUB_CUSTOM_IMAGE_REGISTRY_USERNAME=_json_key
PRIMEHUB_CUSTOM_IMAGE_REGISTRY_PASSWORD='{"type":"service_account","project_id":"p","private_key":"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n","client_email":"b@p.iam.gserviceaccount.com"}'
PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX=gcr.io/my-private-repo
`

func kustomize(t *testing.T, dir string) []byte {
	t.Helper()
	cp := SharedControlPlane(t)
	out, err := exec.Command(filepath.Join(cp.BinDir, "kubectl"), "kustomize", dir).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("kubectl kustomize %s: %v: %s", dir, err, stderr)
	}
	return out
}

func typedFrom[T any](t *testing.T, u map[string]any) *T {
	t.Helper()
	var v T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u, &v); err != nil {
		t.Fatal(err)
	}
	return &v
}

// TestDeployManifests checks what the Deployment promises: a privilege-free
// pod, probes on the probe address, leader election, and settings only
// from a mounted Secret.
func TestDeployManifests(t *testing.T) {
	var dep *appsv1.Deployment
	var roles []*rbacv1.ClusterRole
	var nsRoles []*rbacv1.Role
	var userRoles []*rbacv1.ClusterRole
	for _, u := range decodeManifests(t, kustomize(t, deployDir(t))) {
		switch u.GetKind() {
		case "Deployment":
			dep = typedFrom[appsv1.Deployment](t, u.Object)
		case "ClusterRole":
			role := typedFrom[rbacv1.ClusterRole](t, u.Object)
			if role.Name != "imagespec-controller" {
				userRoles = append(userRoles, role)
				continue
			}
			roles = append(roles, role)
		case "Role":
			nsRoles = append(nsRoles, typedFrom[rbacv1.Role](t, u.Object))
		case "Secret":
			t.Fatalf("artifacts/deploy must not hold a Secret: %s", u.GetName())
		}
	}
	if dep == nil || len(roles) != 1 {
		t.Fatalf("want one Deployment and one controller ClusterRole, got %v and %d", dep != nil, len(roles))
	}
	// The roles aggregated into admin/edit/view grant ImageSpecs only, and
	// never the creation of jobs.
	if len(userRoles) != 2 {
		t.Errorf("want the edit and view ClusterRoles for users, got %d", len(userRoles))
	}
	for _, role := range userRoles {
		for _, r := range role.Rules {
			if !slices.Equal(r.APIGroups, []string{"primehub.io"}) || slices.Contains(r.Verbs, "*") ||
				(slices.Contains(r.Resources, "imagespecjobs") && slices.Contains(r.Verbs, "create")) {
				t.Errorf("user ClusterRole %s: rule %+v", role.Name, r)
			}
		}
	}
	for _, r := range roles[0].Rules {
		if slices.Contains(r.Verbs, "*") || slices.Contains(r.Resources, "*") || slices.Contains(r.APIGroups, "*") {
			t.Errorf("wildcard rule %+v", r)
		}
		// Pods, ConfigMaps and Secrets are written in the build namespace
		// only; Secrets are never listed or watched anywhere.
		for _, res := range []string{"pods", "configmaps", "secrets"} {
			if slices.Contains(r.Resources, res) && slices.ContainsFunc(r.Verbs, func(v string) bool { return v != "get" }) {
				t.Errorf("the ClusterRole grants %v on %s", r.Verbs, res)
			}
		}
	}
	for _, role := range nsRoles {
		for _, r := range role.Rules {
			if slices.Contains(r.Resources, "secrets") && (slices.Contains(r.Verbs, "list") || slices.Contains(r.Verbs, "watch")) {
				t.Errorf("Role %s/%s lists or watches Secrets: %+v", role.Namespace, role.Name, r)
			}
			if (slices.Contains(r.Resources, "pods") || slices.Contains(r.Resources, "secrets")) && role.Namespace != buildNamespace {
				t.Errorf("Role %s/%s grants %v on %v outside the build namespace", role.Namespace, role.Name, r.Verbs, r.Resources)
			}
		}
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas < 2 {
		t.Errorf("replicas %v: a standby needs two", dep.Spec.Replicas)
	}
	pod := dep.Spec.Template.Spec
	if psc := pod.SecurityContext; psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Errorf("pod does not require a non-root user: %+v", psc)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Containers))
	}
	ctr := pod.Containers[0]
	sc := ctr.SecurityContext
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		(sc.Privileged != nil && *sc.Privileged) || sc.Capabilities == nil ||
		!slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		t.Errorf("container security context not restrictive: %+v", sc)
	}
	args := strings.Join(ctr.Args, " ")
	for _, want := range []string{"--backend=buildahpod", "--build-namespace=" + buildNamespace, "--leader-elect=true", "--health-probe-bind-address=:8081", "--metrics-bind-address=:8080"} {
		if !strings.Contains(args, want) {
			t.Errorf("args %q lack %s", args, want)
		}
	}
	for _, p := range []struct {
		probe *corev1.Probe
		path  string
	}{{ctr.LivenessProbe, "/healthz"}, {ctr.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.String() != "health" {
			t.Errorf("probe for %s: %+v", p.path, p.probe)
		}
	}
	// Settings arrive only as the mounted Secret named by --env-file.
	for _, e := range ctr.Env {
		if strings.HasPrefix(e.Name, "PRIMEHUB_") || e.Value != "" && strings.Contains(strings.ToLower(e.Name), "password") {
			t.Errorf("settings in the pod environment: %s", e.Name)
		}
	}
	if len(ctr.EnvFrom) > 0 {
		t.Errorf("envFrom %+v", ctr.EnvFrom)
	}
	envFile := ""
	for _, a := range ctr.Args {
		if v, ok := strings.CutPrefix(a, "--env-file="); ok {
			envFile = v
		}
	}
	mounted := false
	for _, m := range ctr.VolumeMounts {
		for _, v := range pod.Volumes {
			if v.Name == m.Name && v.Secret != nil && v.Secret.SecretName == "imagespec-controller-env" && filepath.Dir(envFile) == m.MountPath {
				mounted = true
			}
		}
	}
	if !mounted {
		t.Errorf("--env-file=%s is not in the mounted Secret imagespec-controller-env", envFile)
	}
}

// TestDeploySecretFromPrimeHubEnv generates the settings Secret from a .env
// with the GCR example and reads it back as the controller does: the
// single-quoted JSON key must come out as the key, without quotes.
func TestDeploySecretFromPrimeHubEnv(t *testing.T) {
	// The copy keeps artifacts/ intact: the kustomization reaches ../crds.
	artifacts := filepath.Join(t.TempDir(), "artifacts")
	if out, err := exec.Command("cp", "-r", filepath.Dir(deployDir(t)), artifacts).CombinedOutput(); err != nil {
		t.Fatalf("copy: %v: %s", err, out)
	}
	dir := filepath.Join(artifacts, "deploy")
	if err := os.WriteFile(filepath.Join(dir, "with-env", ".env"), []byte(gcrEnv), 0o600); err != nil {
		t.Fatal(err)
	}
	var secret *corev1.Secret
	var dep *appsv1.Deployment
	for _, u := range decodeManifests(t, kustomize(t, filepath.Join(dir, "with-env"))) {
		switch u.GetKind() {
		case "Secret":
			secret = typedFrom[corev1.Secret](t, u.Object)
		case "Deployment":
			dep = typedFrom[appsv1.Deployment](t, u.Object)
		}
	}
	if secret == nil || dep == nil {
		t.Fatal("with-env renders no Secret or no Deployment")
	}
	if secret.Namespace != deployNamespace || !strings.HasPrefix(secret.Name, "imagespec-controller-env-") {
		t.Fatalf("secret %s/%s", secret.Namespace, secret.Name)
	}
	if got := string(secret.Data["env"]); got != gcrEnv {
		t.Fatalf("secret data differs from the .env file:\n%s", got)
	}
	var refs []string
	for _, v := range dep.Spec.Template.Spec.Volumes {
		if v.Secret != nil {
			refs = append(refs, v.Secret.SecretName)
		}
	}
	if !slices.Contains(refs, secret.Name) {
		t.Fatalf("Deployment mounts %v, not the generated %s", refs, secret.Name)
	}

	// What the mounted file gives the controller.
	mounted := filepath.Join(t.TempDir(), "env")
	if err := os.WriteFile(mounted, secret.Data["env"], 0o400); err != nil {
		t.Fatal(err)
	}
	vars, err := config.ReadEnvFile(mounted)
	if err != nil {
		t.Fatal(err)
	}
	settings, err := config.Load(config.MapLookup(vars))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"type":"service_account","project_id":"p","private_key":"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n","client_email":"b@p.iam.gserviceaccount.com"}`
	if got := settings.Registry.Password.Reveal(); got != want {
		t.Fatalf("password read from the mounted .env differs from the JSON key (len %d, want %d)", len(got), len(want))
	}
	if settings.Registry.Username != "_json_key" || settings.Registry.RepoPrefix != "gcr.io/my-private-repo" || !settings.FeatureEnabled {
		t.Fatalf("settings %+v", settings.Registry)
	}
}

// rbacCycle runs one controller as user through a create-to-success cycle,
// a rebuild after someone tampered with the push Secret, and history
// pruning. It reports whether everything completed before deadline.
func rbacCycle(t *testing.T, user string, leader *app.LeaderElection, deadline time.Duration) (in *instance, ok bool, why string) {
	t.Helper()
	ns := NewTestNamespace(t)
	c, k := clients(t)
	be := backendtest.NewScripted()
	opts := defaultControllerOptions(ns)
	opts.LeaderElection = leader
	// As the Deployment runs it: the push Secret in the build namespace,
	// checked on every build here, so the overwrite below is restored by
	// the next build (as shipped, by the first build 30 s later).
	opts.Controller.PushSecretNamespace = buildNamespace
	opts.Controller.PushSecretRecheck = time.Nanosecond
	// Keep no succeeded job besides the current one, so pruning deletes.
	opts.Controller.SucceededHistoryLimit = 0
	// The first build creates the push Secret.
	if err := k.CoreV1().Secrets(buildNamespace).Delete(context.Background(), controller.DefaultPushSecretName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	in = startInstance(t, userConfig(t, user), be, opts)

	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	waitStarted := func() (string, bool) {
		select {
		case key := <-be.Started():
			return key, true
		case <-ctx.Done():
			return "", false
		}
	}
	waitPhase := func(name string, phase v1alpha1.ImageSpecJobPhase) bool {
		for ctx.Err() == nil {
			j, err := c.PrimehubV1alpha1().ImageSpecJobs(ns).Get(ctx, name, metav1.GetOptions{})
			if err == nil && j.Status.Phase == phase {
				return true
			}
			time.Sleep(50 * time.Millisecond)
		}
		return false
	}

	spec := createSpec(t, c, newImageSpec(ns, "rbac", v1alpha1.Packages{Apt: []string{"curl"}}))
	key, started := waitStarted()
	if !started {
		return in, false, "no build started"
	}
	first := strings.TrimPrefix(key, ns+"/")
	if !waitPhase(first, v1alpha1.JobRunning) {
		return in, false, "first job never Running"
	}
	be.Succeed(key, digestA)
	if !waitPhase(first, v1alpha1.JobSucceeded) {
		return in, false, "first job never Succeeded"
	}

	// The tenant's namespace gets no copy of the push credentials.
	if _, err := k.CoreV1().Secrets(ns).Get(ctx, controller.DefaultPushSecretName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		return in, false, fmt.Sprintf("push Secret in the ImageSpec's namespace: %v", err)
	}
	// Someone overwrites the managed push Secret: the next build restores it.
	s, err := k.CoreV1().Secrets(buildNamespace).Get(ctx, controller.DefaultPushSecretName, metav1.GetOptions{})
	if err != nil {
		return in, false, "no push Secret: " + err.Error()
	}
	s.Data[corev1.DockerConfigJsonKey] = []byte(`{"auths":{}}`)
	if _, err := k.CoreV1().Secrets(buildNamespace).Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The controller writes the spec's status meanwhile: retry on conflict.
	if err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := c.PrimehubV1alpha1().ImageSpecs(ns).Get(ctx, spec.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Spec.Packages.Apt = append(cur.Spec.Packages.Apt, "git")
		_, err = c.PrimehubV1alpha1().ImageSpecs(ns).Update(ctx, cur, metav1.UpdateOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	key, started = waitStarted()
	if !started {
		return in, false, "no rebuild started"
	}
	second := strings.TrimPrefix(key, ns+"/")
	s, err = k.CoreV1().Secrets(buildNamespace).Get(ctx, controller.DefaultPushSecretName, metav1.GetOptions{})
	if err != nil || !strings.Contains(string(s.Data[corev1.DockerConfigJsonKey]), testPassword) {
		return in, false, "push Secret not restored before the rebuild"
	}
	if !waitPhase(second, v1alpha1.JobRunning) {
		return in, false, "second job never Running"
	}
	be.Succeed(key, digestA)
	if !waitPhase(second, v1alpha1.JobSucceeded) {
		return in, false, "second job never Succeeded"
	}
	// History limit 0: the first job is pruned.
	for ctx.Err() == nil {
		if _, err := c.PrimehubV1alpha1().ImageSpecJobs(ns).Get(ctx, first, metav1.GetOptions{}); err != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if ctx.Err() != nil {
		return in, false, "first job not pruned"
	}
	for ctx.Err() == nil {
		if len(eventsFor(t, k, ns, second)) > 0 {
			return in, true, ""
		}
		time.Sleep(50 * time.Millisecond)
	}
	return in, false, "no events recorded"
}

// TestDeployRBACAllowsFullCycle runs the controller as the service account
// of artifacts/deploy, with exactly its roles: builds, push Secret
// management, pruning, events and the lease all work, and nothing is ever
// forbidden.
func TestDeployRBACAllowsFullCycle(t *testing.T) {
	applyDeploy(t)
	leader := &app.LeaderElection{
		Namespace: deployNamespace, Name: "test-rbac-cycle",
		LeaseDuration: 4 * time.Second, RenewDeadline: 3 * time.Second, RetryPeriod: 500 * time.Millisecond,
	}
	in, ok, why := rbacCycle(t, deployUser, leader, waitTimeout)
	if !ok {
		t.Fatalf("cycle as %s did not complete: %s; forbidden: %v", deployUser, why, in.forbidden())
	}
	if f := in.forbidden(); len(f) > 0 {
		t.Fatalf("forbidden requests: %v", f)
	}
	if len(in.find(func(r request) bool {
		return strings.Contains(r.path, "/leases/") && r.method == "PUT" && r.code == 200
	})) == 0 {
		t.Fatal("the lease was never renewed")
	}
}

// TestDeployRBACMissingVerbFails takes one verb away from the ClusterRole,
// or from the build namespace's Role, at a time: the cycle must then fail
// with a forbidden request, so the positive test above shows the roles are
// sufficient, not that nothing is checked.
func TestDeployRBACMissingVerbFails(t *testing.T) {
	applyDeploy(t)
	var clusterRole *rbacv1.ClusterRole
	var buildRole *rbacv1.Role
	for _, u := range readManifests(t, filepath.Join(deployDir(t), "base", "rbac.yaml")) {
		switch {
		case u.GetKind() == "ClusterRole":
			clusterRole = typedFrom[rbacv1.ClusterRole](t, u.Object)
		case u.GetKind() == "Role" && u.GetNamespace() == buildNamespace:
			buildRole = typedFrom[rbacv1.Role](t, u.Object)
		}
	}
	if clusterRole == nil || buildRole == nil {
		t.Fatalf("rbac.yaml: ClusterRole %v, Role in %s %v", clusterRole != nil, buildNamespace, buildRole != nil)
	}
	_, k := clients(t)
	for _, tc := range []struct{ kind, resource, verb string }{
		{"ClusterRole", "imagespecjobs/status", "update"},
		{"ClusterRole", "imagespecjobs", "delete"},
		{"Role", "secrets", "update"},
		{"Role", "secrets", "create"},
	} {
		t.Run(tc.kind+"-"+strings.ReplaceAll(tc.resource, "/", "-")+"-"+tc.verb, func(t *testing.T) {
			name := "imagespec-missing-" + strings.ToLower(tc.kind) + "-" + strings.ReplaceAll(tc.resource, "/", "-") + "-" + tc.verb
			rules := clusterRole.Rules
			if tc.kind == "Role" {
				rules = buildRole.Rules
			}
			reduced, removed := withoutVerb(t, rules, tc.resource, tc.verb)
			if !removed {
				t.Fatalf("rbac.yaml's %s grants no %s on %s", tc.kind, tc.verb, tc.resource)
			}
			clusterRules, buildRules := clusterRole.Rules, buildRole.Rules
			if tc.kind == "Role" {
				buildRules = reduced
			} else {
				clusterRules = reduced
			}
			bindRoles(t, k, name, clusterRules, buildRules)
			user := "system:serviceaccount:" + deployNamespace + ":" + name
			in, ok, _ := rbacCycle(t, user, nil, 8*time.Second)
			if ok {
				t.Fatalf("the cycle completed without %s on %s", tc.verb, tc.resource)
			}
			forbidden := in.forbidden()
			if len(forbidden) == 0 {
				t.Fatalf("the cycle failed without a forbidden request")
			}
			t.Logf("without %s on %s: %v", tc.verb, tc.resource, forbidden[0])
		})
	}
}

// withoutVerb is rules without verb on resource.
func withoutVerb(t *testing.T, rules []rbacv1.PolicyRule, resource, verb string) ([]rbacv1.PolicyRule, bool) {
	removed := false
	var out []rbacv1.PolicyRule
	for _, r := range rules {
		r = *r.DeepCopy()
		if slices.Contains(r.Resources, resource) && slices.Contains(r.Verbs, verb) {
			if len(r.Resources) > 1 {
				t.Fatalf("rule %+v covers more than %s", r, resource)
			}
			r.Verbs = slices.DeleteFunc(r.Verbs, func(v string) bool { return v == verb })
			removed = true
			if len(r.Verbs) == 0 {
				continue
			}
		}
		out = append(out, r)
	}
	return out, removed
}

// bindRoles gives ServiceAccount name of the deploy namespace a ClusterRole
// with clusterRules and a Role in the build namespace with buildRules.
func bindRoles(t *testing.T, k kubernetes.Interface, name string, clusterRules, buildRules []rbacv1.PolicyRule) {
	t.Helper()
	ctx := context.Background()
	subjects := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: deployNamespace}}
	_ = k.RbacV1().ClusterRoles().Delete(ctx, name, metav1.DeleteOptions{})
	_ = k.RbacV1().ClusterRoleBindings().Delete(ctx, name, metav1.DeleteOptions{})
	_ = k.RbacV1().Roles(buildNamespace).Delete(ctx, name, metav1.DeleteOptions{})
	_ = k.RbacV1().RoleBindings(buildNamespace).Delete(ctx, name, metav1.DeleteOptions{})
	if _, err := k.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: clusterRules}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects:   subjects,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.RbacV1().Roles(buildNamespace).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: buildNamespace}, Rules: buildRules}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.RbacV1().RoleBindings(buildNamespace).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: buildNamespace},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects:   subjects,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestDeployRBACBuildahpodBackend runs the buildahpod backend (the
// Deployment's) as the deployed service account: it creates the build's
// ConfigMap and pod, watches them, and on cancel deletes both, without a
// forbidden request. No node runs the pod here; builds on a node are the
// e2e suite's.
func TestDeployRBACBuildahpodBackend(t *testing.T) {
	applyDeploy(t)
	ns := NewTestNamespace(t)
	c, k := clients(t)
	opts := defaultControllerOptions(ns)
	opts.Controller.PushSecretNamespace = buildNamespace
	in := startInstanceWith(t, userConfig(t, deployUser), opts, func(cl *app.Clients) (backend.Backend, error) {
		return buildahpod.New(buildahpod.Options{BuildNamespace: buildNamespace}, cl.Kube, cl.Managed)
	})

	// A pull Secret of the tenant's, copied into the build namespace.
	pull := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "base-pull", Namespace: ns},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"base.example":{"auth":"dTpw"}}}`)},
	}
	if _, err := k.CoreV1().Secrets(ns).Create(context.Background(), pull, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	spec := newImageSpec(ns, "pod", v1alpha1.Packages{Apt: []string{"curl"}})
	spec.Spec.PullSecret = pull.Name
	createSpec(t, c, spec)
	job := currentJobName(t, c, ns, "pod", 1)
	podNS, pod := buildahpod.PodRef(buildNamespace, ns, job)
	waitFor(t, "build pod "+pod, func() (bool, string) {
		_, err := k.CoreV1().Pods(podNS).Get(context.Background(), pod, metav1.GetOptions{})
		return err == nil, fmt.Sprint(err)
	})
	if _, err := k.CoreV1().ConfigMaps(podNS).Get(context.Background(), pod, metav1.GetOptions{}); err != nil {
		t.Fatalf("build ConfigMap: %v", err)
	}
	copies, err := k.CoreV1().Secrets(podNS).List(context.Background(), metav1.ListOptions{LabelSelector: buildahpod.JobNamespaceLabel + "=" + ns})
	if err != nil || len(copies.Items) != 1 || !strings.Contains(string(copies.Items[0].Data[corev1.DockerConfigJsonKey]), "base.example") {
		t.Fatalf("the pull Secret's copy in %s: %v (err %v)", podNS, copies, err)
	}

	// A merge patch, as kubectl patch sends: no resourceVersion, so the
	// controller's own status writes cannot make it conflict.
	if _, err := c.PrimehubV1alpha1().ImageSpecJobs(ns).Patch(context.Background(), job, types.MergePatchType,
		[]byte(`{"spec":{"cancel":true}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitForJobPhase(t, c, ns, job, v1alpha1.JobCancelled)
	waitFor(t, "build pod, ConfigMap and pull Secret copy deleted", func() (bool, string) {
		_, perr := k.CoreV1().Pods(podNS).Get(context.Background(), pod, metav1.GetOptions{})
		_, cerr := k.CoreV1().ConfigMaps(podNS).Get(context.Background(), pod, metav1.GetOptions{})
		_, serr := k.CoreV1().Secrets(podNS).Get(context.Background(), copies.Items[0].Name, metav1.GetOptions{})
		return apierrors.IsNotFound(perr) && apierrors.IsNotFound(cerr) && apierrors.IsNotFound(serr), fmt.Sprint(perr, cerr, serr)
	})
	if f := in.forbidden(); len(f) > 0 {
		t.Fatalf("forbidden requests: %v", f)
	}
	// --builder-user-namespaces=auto looked at the nodes with the
	// deployed role (no kubelet here: it built without one).
	if len(in.find(func(r request) bool {
		return r.method == "GET" && strings.HasPrefix(r.path, "/api/v1/nodes") && r.code == 200
	})) == 0 {
		t.Fatal("the backend never listed the nodes for user namespace support")
	}
	for _, want := range []string{"/namespaces/" + buildNamespace + "/pods", "/namespaces/" + buildNamespace + "/configmaps", "/namespaces/" + buildNamespace + "/secrets"} {
		if len(in.find(func(r request) bool { return r.method == "POST" && strings.HasSuffix(r.path, want) && r.code == 201 })) == 0 {
			t.Errorf("the controller did not create %s", want)
		}
	}
}
