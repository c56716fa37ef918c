package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/app"
	"github.com/imagespec/imagespec-controller/pkg/controller"
	"github.com/imagespec/imagespec-controller/test/framework/controlplane"
	"github.com/imagespec/imagespec-controller/test/framework/secretscan"
)

// What artifacts/deploy installs.
const (
	systemNamespace = "imagespec-system"
	deploymentName  = "imagespec-controller"
	envSecretName   = "imagespec-controller-env"
	controllerLabel = "app.kubernetes.io/name=imagespec-controller"
	// Made by the test: the registry CAs for the build pods.
	registryCertsMap  = "registry-certs"
	registryCertsPath = "/etc/registry-certs.d"
)

// TestInCluster runs the controller as artifacts/deploy ships it, on a
// cluster with every component a real one has (kube-controller-manager,
// kube-scheduler, kube-proxy, a pod network): kubectl apply -k of an
// overlay that only sets what any site sets for a private registry (the
// image, built from this repo by hack/build-image.sh, and the builder
// image, its pull Secret, the registry CA and the package index as
// flags), and the settings Secret made from a .env with --from-file, as
// the README says. The Deployment's ReplicaSet makes both replicas; they
// become Ready through their probes on the pod network and reach the
// apiserver through the kubernetes Service with their ServiceAccount
// token, so every API call goes through the shipped RBAC, Pod Security
// level and admission policy. One holds the Lease and builds; deleting it
// mid-build hands over to the other, which finishes the same build pod
// (no build starts twice), and the ReplicaSet replaces it. The registry
// password stays out of the pods, their environment, logs and every
// ConfigMap.
func TestInCluster(t *testing.T) {
	env := SharedEnv(t)
	// The node pulls the controller image with its own credentials, as a
	// cluster's nodes pull from a private registry; build pods still use
	// the builder pull Secret.
	p := startPodEnv(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cp := env.ControlPlane

	image := buildControllerImage(ctx, t, env)
	// The replicas' package index holds the first build's pip step until
	// the test releases it, so the leader can be deleted mid-build.
	index := newHangingIndex(t)
	overlay := writeOverlay(t, env, image, p.Builder, index.addr)
	start := time.Now()
	if out, err := cp.Kubectl(ctx, "apply", "--server-side", "-k", overlay); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	settingsFile := filepath.Join(env.WorkDir, "incluster.env")
	prefix := env.Registry.Host + "/incluster"
	if _, err := WriteSettings(settingsFile, env.Registry.Host, env.Registry.Username, env.Registry.Password, prefix); err != nil {
		t.Fatal(err)
	}
	// As the README says: the .env verbatim as a file, not --from-env-file.
	if out, err := cp.Kubectl(ctx, "-n", systemNamespace, "create", "secret", "generic", envSecretName, "--from-file=env="+settingsFile); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	createCertsConfigMap(ctx, t, p, env.CertsDir)
	t.Cleanup(func() {
		if t.Failed() {
			dumpControllerLogs(t, cp)
		}
	})
	// Removing the Deployment first stops the replicas before the node.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = p.Kube.AppsV1().Deployments(systemNamespace).Delete(ctx, deploymentName, metav1.DeleteOptions{})
	})

	dep := waitDeploymentReady(t, p, 2, 5*time.Minute)
	if got := dep.Spec.Template.Spec.Containers[0].Image; got != image {
		t.Fatalf("the Deployment runs %q, want %q from the overlay", got, image)
	}
	pods := controllerPods(t, p)
	t.Logf("%d replicas Ready %s after apply", len(pods), time.Since(start).Round(time.Millisecond))
	for _, pod := range pods {
		if pod.Spec.HostNetwork || pod.Status.PodIP == "" {
			t.Errorf("replica %s: hostNetwork %v, IP %q; want the pod network", pod.Name, pod.Spec.HostNetwork, pod.Status.PodIP)
		}
	}
	leader := waitLeader(t, p, "")

	// The test's own client, only to create and read ImageSpecs.
	clients, err := app.NewClients(cp.RESTConfig, app.Options{QPS: -1})
	if err != nil {
		t.Fatal(err)
	}
	c := &Controller{Clients: clients}
	// The tenant's namespace holds nothing of the controller's: the
	// builder's pull Secret is in the build namespace (startPodEnv).
	ns := NewNamespace(t)

	// The leader is deleted while its build runs: the other replica takes
	// the Lease and finishes the same build pod; nothing starts twice.
	createSpec(t, c, ns, "handover", v1alpha1.ImageSpecSpec{
		BaseImage: env.BaseImage,
		Packages:  v1alpha1.Packages{Pip: []string{"e2e-hello==1.0"}},
	})
	running := runningJob(t, c, ns, "handover", "", index)
	podNS, podName := p.BuildPod(ns, running.Name)
	before, err := p.Kube.CoreV1().Pods(podNS).Get(ctx, podName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if before.Spec.HostNetwork || before.Status.PodIP == "" {
		t.Errorf("build pod hostNetwork %v, IP %q; want the pod network", before.Spec.HostNetwork, before.Status.PodIP)
	}
	deleted := time.Now()
	if err := p.Kube.CoreV1().Pods(systemNamespace).Delete(ctx, leader, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	next := waitLeader(t, p, leader)
	t.Logf("Lease moved from %s to %s %s after the delete", leader, next, time.Since(deleted).Round(time.Millisecond))
	index.Release()
	job := WaitJob(t, c, ns, "handover", "", buildTimeout)
	requirePodPhase(t, job, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
	if !strings.HasPrefix(job.Status.Image, prefix+"/handover:") {
		t.Errorf("status.image %q, want %s/handover:<tag> from the Secret's repo prefix", job.Status.Image, prefix)
	}
	if info := env.Inspect(t, env.Registry, job.Status.Image); info.Digest != job.Status.Digest || !strings.HasPrefix(info.Digest, "sha256:") {
		t.Errorf("registry has digest %s, status says %s", info.Digest, job.Status.Digest)
	}
	after, err := p.Kube.CoreV1().Pods(podNS).Get(ctx, podName, metav1.GetOptions{})
	if err != nil || after.UID != before.UID {
		t.Errorf("build pod %s: UID %s before the handover, %v after (err %v): the build was started again", podName, before.UID, uidOf(after), err)
	}
	count := jobEventCounts(t, p.Kube, job)
	for _, reason := range []string{v1alpha1.EventBuildStarted, v1alpha1.EventBuildSucceeded} {
		if count[reason] != 1 {
			t.Errorf("%d %s events for job %s, want exactly 1 (events: %v)", count[reason], reason, job.Name, count)
		}
	}
	// The ReplicaSet replaces the deleted replica.
	waitDeploymentReady(t, p, 2, 3*time.Minute)
	// Only the deleted replica was replaced.
	for _, pod := range pods {
		got, err := p.Kube.CoreV1().Pods(systemNamespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if present := err == nil && got.DeletionTimestamp == nil; present == (pod.Name == leader) {
			t.Errorf("replica %s present %v after the handover (%v); want only the deleted leader %s gone", pod.Name, present, err, leader)
		}
	}
	t.Logf("two replicas Ready again %s after the delete", time.Since(deleted).Round(time.Millisecond))

	// The new leader (the standby, or the replacement if it asked first)
	// builds the next spec from start to end.
	createSpec(t, c, ns, "incluster", v1alpha1.ImageSpecSpec{
		BaseImage: env.BaseImage,
		Packages:  v1alpha1.Packages{Pip: []string{"e2e-hello==1.0"}},
	})
	job = WaitJob(t, c, ns, "incluster", "", buildTimeout)
	requirePodPhase(t, job, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
	requireJobCount(t, c, ns, map[string]int{"incluster": 1, "handover": 1})
	logs, err := cp.Kubectl(ctx, "-n", systemNamespace, "logs", next)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"Successfully acquired lease" lock="` + systemNamespace + "/" + deploymentName + `"`,
		`"Acting as leader" lease="` + systemNamespace + "/" + deploymentName + `"`,
		"Build pod created: job " + ns + "/" + job.Name,
	} {
		if !strings.Contains(string(logs), want) {
			t.Errorf("the new leader's log lacks %q:\n%s", want, logs)
		}
	}
	// As shipped, a recreated job of a built revision finishes from the
	// registry, without a build pod.
	if err := c.Clients.Client.PrimehubV1alpha1().ImageSpecJobs(ns).Delete(ctx, job.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, time.Minute, func(ctx context.Context) (bool, string) {
		j, err := c.Clients.Client.PrimehubV1alpha1().ImageSpecJobs(ns).Get(ctx, job.Name, metav1.GetOptions{})
		if err != nil || j.UID == job.UID {
			return false, fmt.Sprintf("recreated job: %v", err)
		}
		if j.Status.Phase.IsFinal() && (j.Status.Reason != v1alpha1.ReasonAlreadyBuilt || j.Status.Digest != job.Status.Digest) {
			t.Fatalf("recreated job %s: %s/%s %s, want AlreadyBuilt with %s", j.Name, j.Status.Phase, j.Status.Reason, j.Status.Digest, job.Status.Digest)
		}
		return j.Status.Phase.IsFinal(), fmt.Sprintf("job %s: %s %s", j.Name, j.Status.Phase, j.Status.Reason)
	})
	// The push credentials live in the build namespace only.
	if _, err := p.Kube.CoreV1().Secrets(ns).Get(ctx, controller.DefaultPushSecretName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("push Secret in the ImageSpec's namespace: %v, want none", err)
	}
	if _, err := p.Kube.CoreV1().Secrets(p.BuildNamespace).Get(ctx, controller.DefaultPushSecretName, metav1.GetOptions{}); err != nil {
		t.Errorf("push Secret in the build namespace %s: %v", p.BuildNamespace, err)
	}
	scanControllerPods(ctx, t, env, c, ns, p)
}

// writeOverlay writes a kustomization over artifacts/deploy that sets the
// controller image and appends the flags and volume this site needs.
func writeOverlay(tb testing.TB, env *Env, image, builder, pipIndex string) string {
	tb.Helper()
	root, err := controlplane.RepoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	dir := filepath.Join(env.WorkDir, "overlay")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	// kustomize takes only relative paths to a base.
	base, err := filepath.Rel(dir, filepath.Join(root, "artifacts", "deploy"))
	if err != nil {
		tb.Fatal(err)
	}
	slash := strings.LastIndex(image, "/")
	colon := strings.LastIndex(image, ":")
	if colon < slash {
		tb.Fatalf("image %q has no tag", image)
	}
	type op struct {
		Op    string `json:"op"`
		Path  string `json:"path"`
		Value any    `json:"value"`
	}
	const ctr = "/spec/template/spec/containers/0"
	var ops []op
	for _, arg := range []string{
		"--builder-image=" + builder,
		"--builder-image-pull-secret=" + builderPullSecret,
		"--builder-registry-certs-dir=" + registryCertsPath,
		"--pip-index-url=http://" + pipIndex + "/simple/",
		"--pip-trusted-host=" + pipIndex,
		// The site's curated bases, which every tenant builds on.
		"--shared-repository=" + env.Registry.Host + "/base",
		// The controller's own registry reads (the already-built check)
		// trust the same CAs.
		"--registry-certs-dir=" + registryCertsPath,
	} {
		ops = append(ops, op{"add", ctr + "/args/-", arg})
	}
	// One file mount per host rather than the ConfigMap's items as a tree:
	// the kubelet makes each directory of such a tree a symlink into
	// ..data, and LoadRegistryCAs reads only real directories.
	hosts, err := os.ReadDir(env.CertsDir)
	if err != nil {
		tb.Fatal(err)
	}
	for _, h := range hosts {
		ops = append(ops, op{"add", ctr + "/volumeMounts/-", corev1.VolumeMount{
			Name: "registry-certs", MountPath: registryCertsPath + "/" + h.Name() + "/ca.crt", SubPath: certsKey(h.Name()), ReadOnly: true,
		}})
	}
	ops = append(ops, op{"add", "/spec/template/spec/volumes/-", corev1.Volume{Name: "registry-certs", VolumeSource: corev1.VolumeSource{
		ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: registryCertsMap}},
	}}})
	patch, err := json.MarshalIndent(ops, "", "  ")
	if err != nil {
		tb.Fatal(err)
	}
	kustomization := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- %s
images:
- name: imagespec-controller
  newName: %s
  newTag: %s
patches:
- path: site.json
  target: {kind: Deployment, name: %s}
`, base, image[:colon], image[colon+1:], deploymentName)
	for name, b := range map[string][]byte{"kustomization.yaml": []byte(kustomization), "site.json": patch} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

// waitDeploymentReady waits until the Deployment's current template runs
// replicas pods, all Ready through their probes.
func waitDeploymentReady(tb testing.TB, p *PodEnv, replicas int32, timeout time.Duration) *appsv1.Deployment {
	tb.Helper()
	var dep *appsv1.Deployment
	WaitFor(tb, timeout, func(ctx context.Context) (bool, string) {
		var err error
		if dep, err = p.Kube.AppsV1().Deployments(systemNamespace).Get(ctx, deploymentName, metav1.GetOptions{}); err != nil {
			return false, err.Error()
		}
		st := dep.Status
		if st.ObservedGeneration >= dep.Generation && st.UpdatedReplicas == replicas && st.ReadyReplicas == replicas && st.Replicas == replicas {
			return true, ""
		}
		pods, _ := p.Kube.CoreV1().Pods(systemNamespace).List(ctx, metav1.ListOptions{LabelSelector: controllerLabel})
		b, _ := json.Marshal(map[string]any{"deployment": st, "pods": pods})
		return false, string(b)
	})
	return dep
}

// controllerPods lists the running replicas.
func controllerPods(tb testing.TB, p *PodEnv) []corev1.Pod {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	list, err := p.Kube.CoreV1().Pods(systemNamespace).List(ctx, metav1.ListOptions{LabelSelector: controllerLabel})
	if err != nil {
		tb.Fatal(err)
	}
	var pods []corev1.Pod
	for _, pod := range list.Items {
		if pod.DeletionTimestamp == nil {
			pods = append(pods, pod)
		}
	}
	return pods
}

// waitLeader waits until the Lease is held by a running replica (its
// identity is the pod's host name, then "_" and a random part) other than
// not, and returns that pod's name.
func waitLeader(tb testing.TB, p *PodEnv, not string) string {
	tb.Helper()
	var leader string
	WaitFor(tb, 2*time.Minute, func(ctx context.Context) (bool, string) {
		lease, err := p.Kube.CoordinationV1().Leases(systemNamespace).Get(ctx, deploymentName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		holder := ""
		if lease.Spec.HolderIdentity != nil {
			holder = *lease.Spec.HolderIdentity
		}
		name, _, _ := strings.Cut(holder, "_")
		var names []string
		for _, pod := range controllerPods(tb, p) {
			names = append(names, pod.Name)
			if pod.Name == name && name != not {
				leader = name
				return true, ""
			}
		}
		return false, fmt.Sprintf("Lease held by %q; replicas %v", holder, names)
	})
	return leader
}

// scanControllerPods: the registry credentials are in no replica's pod
// object, environment or log, no ConfigMap, and nowhere ScanSecrets looks.
func scanControllerPods(ctx context.Context, t *testing.T, env *Env, c *Controller, ns string, p *PodEnv) {
	t.Helper()
	cred := RegistryCredential(env.Registry)
	sources := map[string]string{}
	for _, pod := range controllerPods(t, p) {
		podJSON, err := secretscan.JSON(pod)
		if err != nil {
			t.Fatal(err)
		}
		sources["pod "+pod.Name] = podJSON
		logs, err := env.ControlPlane.Kubectl(ctx, "-n", systemNamespace, "logs", pod.Name)
		if err != nil {
			t.Fatal(err)
		}
		sources["the log of "+pod.Name] = string(logs)
		// The process environment the container really got.
		out, err := env.ControlPlane.Kubectl(ctx, "-n", systemNamespace, "exec", pod.Name, "--", "/usr/bin/env")
		if err != nil {
			t.Errorf("reading the environment of %s: %v", pod.Name, err)
		} else if sources["the environment of "+pod.Name] = string(out); !strings.Contains(string(out), "POD_NAMESPACE="+systemNamespace) {
			t.Errorf("the environment of %s lacks POD_NAMESPACE:\n%s", pod.Name, redact(string(out), cred.Password))
		}
	}
	cms, err := p.Kube.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sources["ConfigMaps"], err = secretscan.JSON(cms); err != nil {
		t.Fatal(err)
	}
	for _, where := range secretscan.Find(sources, cred) {
		t.Errorf("the registry credentials appear in %s", where)
	}
	env.ScanSecrets(t, c, ns, nil, cred)
}

func dumpControllerLogs(t *testing.T, cp *controlplane.ControlPlane) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := cp.Kubectl(ctx, "-n", systemNamespace, "logs", "-l", controllerLabel, "--prefix", "--tail=-1")
	t.Logf("controller logs (%v):\n%s", err, out)
	out, err = cp.Kubectl(ctx, "-n", systemNamespace, "get", "events", "--sort-by=.lastTimestamp")
	t.Logf("events in %s (%v):\n%s", systemNamespace, err, out)
}

// buildControllerImage builds the controller image from this repo with
// hack/build-image.sh and pushes it to the shared registry.
func buildControllerImage(ctx context.Context, tb testing.TB, env *Env) string {
	tb.Helper()
	root, err := controlplane.RepoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	ref := env.Registry.Host + "/imagespec/controller:incluster-" + randomHex(3)
	logPath := filepath.Join(env.WorkDir, "build-image.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		tb.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "build-image.sh"))
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(),
		"BASE_IMAGE=local",
		"OUTPUT=docker://"+ref,
		fmt.Sprintf("PUSH_FLAGS=--cert-dir %s --creds %s:%s",
			filepath.Join(env.CertsDir, env.Registry.Host), env.Registry.Username, env.Registry.Password),
	)
	start := time.Now()
	if err := cmd.Run(); err != nil {
		out, _ := os.ReadFile(logPath)
		tb.Fatalf("hack/build-image.sh: %v\n%s", err, redact(string(out), env.Registry.Password))
	}
	tb.Logf("controller image %s built and pushed in %s", ref, time.Since(start).Round(time.Millisecond))
	return ref
}

// createCertsConfigMap puts the certs.d tree's CAs into a ConfigMap, to be
// mounted as that tree for --builder-registry-certs-dir.
func createCertsConfigMap(ctx context.Context, tb testing.TB, p *PodEnv, certsDir string) {
	tb.Helper()
	hosts, err := os.ReadDir(certsDir)
	if err != nil {
		tb.Fatal(err)
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: registryCertsMap, Namespace: systemNamespace},
		Data:       map[string]string{},
	}
	for _, h := range hosts {
		b, err := os.ReadFile(filepath.Join(certsDir, h.Name(), "ca.crt"))
		if err != nil {
			tb.Fatal(err)
		}
		cm.Data[certsKey(h.Name())] = string(b)
	}
	if _, err := p.Kube.CoreV1().ConfigMaps(systemNamespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		tb.Fatal(err)
	}
}

var nonKey = regexp.MustCompile(`[^-._a-zA-Z0-9]`)

// certsKey is a ConfigMap key for a host[:port] (keys cannot hold ':').
func certsKey(host string) string { return nonKey.ReplaceAllString(host, "_") + ".crt" }

// redact hides secret in text printed on failure.
func redact(text, secret string) string {
	if secret == "" {
		return text
	}
	return strings.ReplaceAll(text, secret, "<password>")
}
