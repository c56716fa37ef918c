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
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

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
	// Made by the test: the controller image's pull Secret and the
	// registry CAs for the build pods.
	controllerPullSecret = "controller-pull"
	registryCertsMap     = "registry-certs"
	registryCertsPath    = "/etc/registry-certs.d"
)

// TestInCluster runs the controller the way artifacts/deploy ships it: the
// image hack/build-image.sh builds from this repo, the namespace, RBAC and
// Deployment applied with kubectl apply -k, the settings Secret made from a
// .env with --from-file, and a pod made from the Deployment's template on a
// real node, watching all namespaces as shipped. It authenticates with its ServiceAccount token only, so every
// API call of a buildahpod build goes through the shipped RBAC. The build
// must succeed, the pod must become Ready through its /readyz probe, log
// that it took the Lease and started the build pod, and keep the registry
// password out of its environment, its log and every ConfigMap.
//
// There is no kube-controller-manager, so the test creates the pod a
// ReplicaSet would. Its changes to the template are listed in
// controllerPod.
func TestInCluster(t *testing.T) {
	env := SharedEnv(t)
	p := StartPodEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cp := env.ControlPlane

	image := buildControllerImage(ctx, t, env)

	// What kube-controller-manager would add to the namespace
	// (kube-root-ca.crt for the token volume); apply then sets its labels.
	if err := cp.CreateNamespace(ctx, systemNamespace); err != nil {
		t.Fatal(err)
	}
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := cp.Kubectl(ctx, "apply", "--server-side", "-k", filepath.Join(root, "artifacts", "deploy")); err != nil {
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
	p.createDockerSecret(t, systemNamespace, controllerPullSecret, env.Registry.AuthFile)
	createCertsConfigMap(ctx, t, p, env.CertsDir)

	ns := NewNamespace(t)
	p.createDockerSecret(t, ns, builderPullSecret, env.Registry.AuthFile)

	dep, err := p.Kube.AppsV1().Deployments(systemNamespace).Get(ctx, deploymentName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := dep.Spec.Template.Spec.Containers[0].Image; got != "imagespec-controller:latest" {
		t.Fatalf("the applied Deployment runs %q, want the kustomization's imagespec-controller:latest", got)
	}

	// The shipped template, with only the image moved to the registry, is
	// admitted by the namespace's Pod Security level (restricted); the
	// host network the test needs is refused there, which is why the test
	// lowers the level before it creates the pod.
	shipped := podFromTemplate(dep, image)
	dry := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	if _, err := p.Kube.CoreV1().Pods(systemNamespace).Create(ctx, shipped, dry); err != nil {
		t.Fatalf("the Deployment's pod template is not admitted in %s: %v", systemNamespace, err)
	}
	pod := controllerPod(dep, image, cp.APIServerURL, p.Builder, env)
	if _, err := p.Kube.CoreV1().Pods(systemNamespace).Create(ctx, pod, dry); !apierrors.IsForbidden(err) {
		t.Fatalf("a hostNetwork pod in the restricted namespace: %v, want forbidden by Pod Security", err)
	}
	patch := []byte(`{"metadata":{"labels":{"pod-security.kubernetes.io/enforce":"privileged"}}}`)
	if _, err := p.Kube.CoreV1().Namespaces().Patch(ctx, systemNamespace, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}

	// Pod Security admission reads namespaces from the API server's cache,
	// so the new level takes a moment to apply: retry while it still
	// refuses.
	var createErr error
	_ = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 15*time.Second, true, func(ctx context.Context) (bool, error) {
		_, createErr = p.Kube.CoreV1().Pods(systemNamespace).Create(ctx, pod, metav1.CreateOptions{})
		return createErr == nil || !apierrors.IsForbidden(createErr), nil
	})
	if createErr != nil {
		t.Fatal(createErr)
	}
	// Cleanups run last first: the log dump, then the pod's deletion, then
	// the node's Stop registered by StartPodEnv.
	t.Cleanup(func() { deletePod(t, p, systemNamespace, pod.Name) })
	t.Cleanup(func() {
		if t.Failed() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := cp.Kubectl(ctx, "-n", systemNamespace, "logs", pod.Name)
			t.Logf("controller log (%v):\n%s", err, out)
		}
	})

	start := time.Now()
	waitPodReady(t, p, systemNamespace, pod.Name, 3*time.Minute)
	t.Logf("controller pod Ready %s after create", time.Since(start).Round(time.Millisecond))

	// The test's own client, only to create and read the ImageSpec.
	clients, err := app.NewClients(cp.RESTConfig, app.Options{QPS: -1})
	if err != nil {
		t.Fatal(err)
	}
	c := &Controller{Clients: clients}
	createSpec(t, c, ns, "incluster", v1alpha1.ImageSpecSpec{
		BaseImage: env.BaseImage,
		Packages:  v1alpha1.Packages{Pip: []string{"e2e-hello==1.0"}},
	})
	job := WaitJob(t, c, ns, "incluster", "", buildTimeout)
	requirePodPhase(t, job, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
	t.Logf("job %s succeeded %s after the controller pod was created", job.Name, time.Since(start).Round(time.Millisecond))
	if !strings.HasPrefix(job.Status.Image, prefix+"/incluster:") {
		t.Errorf("status.image %q, want %s/incluster:<tag> from the Secret's repo prefix", job.Status.Image, prefix)
	}
	info := env.Inspect(t, env.Registry, job.Status.Image)
	if info.Digest != job.Status.Digest || !strings.HasPrefix(info.Digest, "sha256:") {
		t.Errorf("registry has digest %s, status says %s", info.Digest, job.Status.Digest)
	}
	if _, err := p.Kube.CoreV1().Secrets(ns).Get(ctx, controller.DefaultPushSecretName, metav1.GetOptions{}); err != nil {
		t.Errorf("push Secret the controller writes: %v", err)
	}

	logs, err := cp.Kubectl(ctx, "-n", systemNamespace, "logs", pod.Name)
	if err != nil {
		t.Fatal(err)
	}
	lease, err := p.Kube.CoordinationV1().Leases(systemNamespace).Get(ctx, deploymentName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	holder := ""
	if lease.Spec.HolderIdentity != nil {
		holder = *lease.Spec.HolderIdentity
	}
	for _, want := range []string{
		`"Successfully acquired lease" lock="` + systemNamespace + "/" + deploymentName + `"`,
		`"Acting as leader" lease="` + systemNamespace + "/" + deploymentName + `" identity="` + holder + `"`,
		"Build pod created: job " + ns + "/" + job.Name,
	} {
		if holder == "" || !strings.Contains(string(logs), want) {
			t.Errorf("controller log lacks %q (lease holder %q):\n%s", want, holder, logs)
		}
	}

	cred := RegistryCredential(env.Registry)
	cur, err := p.Kube.CoreV1().Pods(systemNamespace).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	podJSON, err := secretscan.JSON(cur)
	if err != nil {
		t.Fatal(err)
	}
	cms, err := p.Kube.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cmsJSON, err := secretscan.JSON(cms)
	if err != nil {
		t.Fatal(err)
	}
	sources := map[string]string{"the controller pod": podJSON, "the controller log": string(logs), "ConfigMaps": cmsJSON}
	// The process environment the container really got.
	if out, err := cp.Kubectl(ctx, "-n", systemNamespace, "exec", pod.Name, "--", "/usr/bin/env"); err != nil {
		t.Errorf("reading the container's environment: %v", err)
	} else if sources["the container's environment"] = string(out); !strings.Contains(string(out), "POD_NAMESPACE="+systemNamespace) {
		t.Errorf("the container's environment lacks POD_NAMESPACE:\n%s", redact(string(out), cred.Password))
	}
	for _, where := range secretscan.Find(sources, cred) {
		t.Errorf("the registry credentials appear in %s", where)
	}
	env.ScanSecrets(t, c, ns, nil, RegistryCredential(env.Registry))
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

// podFromTemplate is the pod a ReplicaSet would make from the Deployment,
// with only the image reference pointing at the test registry.
func podFromTemplate(d *appsv1.Deployment, image string) *corev1.Pod {
	tmpl := d.Spec.Template.DeepCopy()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:        d.Name + "-incluster",
			Namespace:   d.Namespace,
			Labels:      tmpl.Labels,
			Annotations: tmpl.Annotations,
		},
		Spec: tmpl.Spec,
	}
	pod.Spec.Containers[0].Image = image
	return pod
}

// controllerPod is podFromTemplate plus what this test environment needs,
// and nothing else:
//   - hostNetwork, env KUBERNETES_SERVICE_HOST/PORT: the apiserver, the
//     registry and the package index listen on the host's 127.0.0.1, and
//     without kube-proxy the kubernetes Service IP leads nowhere (the
//     namespace's Pod Security level is lowered to privileged for it);
//   - an imagePullSecret: the node has no registry credentials;
//   - args for the local builder image and its pull Secret, build pods on
//     the host network, the registry CA (a ConfigMap's keys mounted as a
//     certs.d tree) and the local package index.
//
// The scheduler places the pod, as it would a ReplicaSet's.
func controllerPod(d *appsv1.Deployment, image, apiserverURL, builder string, env *Env) *corev1.Pod {
	pod := podFromTemplate(d, image)
	spec := &pod.Spec
	spec.HostNetwork = true
	spec.ImagePullSecrets = append(spec.ImagePullSecrets, corev1.LocalObjectReference{Name: controllerPullSecret})
	_, port, _ := strings.Cut(strings.TrimPrefix(apiserverURL, "https://"), ":")
	ctr := &spec.Containers[0]
	ctr.Env = append(ctr.Env,
		corev1.EnvVar{Name: "KUBERNETES_SERVICE_HOST", Value: "127.0.0.1"},
		corev1.EnvVar{Name: "KUBERNETES_SERVICE_PORT", Value: port},
	)
	ctr.Args = append(ctr.Args,
		"--builder-image="+builder,
		"--builder-image-pull-secret="+builderPullSecret,
		"--builder-host-network",
		"--builder-registry-certs-dir="+registryCertsPath,
		"--pip-index-url="+env.PyPI.URL(),
		"--pip-trusted-host="+env.PyPI.Addr(),
	)
	// One file mount per host rather than the ConfigMap's items as a tree:
	// the kubelet makes each directory of such a tree a symlink into
	// ..data, and LoadRegistryCAs reads only real directories.
	hosts, _ := os.ReadDir(env.CertsDir)
	for _, h := range hosts {
		ctr.VolumeMounts = append(ctr.VolumeMounts, corev1.VolumeMount{
			Name:      "registry-certs",
			MountPath: registryCertsPath + "/" + h.Name() + "/ca.crt",
			SubPath:   certsKey(h.Name()),
			ReadOnly:  true,
		})
	}
	spec.Volumes = append(spec.Volumes, corev1.Volume{Name: "registry-certs", VolumeSource: corev1.VolumeSource{
		ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: registryCertsMap}},
	}})
	return pod
}

// waitPodReady waits for the pod's Ready condition (its readiness probe).
func waitPodReady(tb testing.TB, p *PodEnv, namespace, name string, timeout time.Duration) {
	tb.Helper()
	WaitFor(tb, timeout, func(ctx context.Context) (bool, string) {
		pod, err := p.Kube.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, cs := range pod.Status.ContainerStatuses {
			if cs.RestartCount > 0 {
				// A crash loop never becomes Ready in time; say why now.
				return false, fmt.Sprintf("container %s restarted %d times, last %+v", cs.Name, cs.RestartCount, cs.LastTerminationState)
			}
		}
		for _, cond := range pod.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				return true, ""
			}
		}
		b, _ := json.Marshal(pod.Status)
		return false, string(b)
	})
}

// deletePod deletes a pod and waits until the kubelet has removed it.
func deletePod(tb testing.TB, p *PodEnv, namespace, name string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.Kube.CoreV1().Pods(namespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		tb.Errorf("delete pod %s: %v", name, err)
		return
	}
	for {
		if _, err := p.Kube.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return
		}
		select {
		case <-ctx.Done():
			tb.Errorf("pod %s/%s still there after a minute", namespace, name)
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// redact hides secret in text printed on failure.
func redact(text, secret string) string {
	if secret == "" {
		return text
	}
	return strings.ReplaceAll(text, secret, "<password>")
}
