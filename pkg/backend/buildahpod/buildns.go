package buildahpod

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/backend"
	"github.com/imagespec/imagespec-controller/pkg/credentials"
	"github.com/imagespec/imagespec-controller/pkg/dockerfile"
	"github.com/imagespec/imagespec-controller/pkg/names"
	"github.com/imagespec/imagespec-controller/pkg/revision"
)

// With Options.BuildNamespace, every build pod, its ConfigMap, the push
// Secret and a per-build copy of the ImageSpec's pull Secret live in that
// one namespace, which tenants have no access to: owner references cannot
// cross namespaces, so the job is named by labels and annotations instead,
// and Cancel (called for every job that ends or disappears, also for pods
// found at start whose job is gone) removes all three.

const (
	// JobNamespaceLabel is the namespace of the pod's job.
	JobNamespaceLabel = "primehub.io/imagespecjob-namespace"
	// JobUIDLabel is the UID of the pod's job: only that job's pod is
	// taken for its own.
	JobUIDLabel = "primehub.io/imagespecjob-uid"
	// JobNameAnnotation is the job's full name (labels are cut at 63).
	JobNameAnnotation = "primehub.io/imagespecjob-name"

	pullCopySuffix = "-pull"
)

// PodRef is the namespace and name of a job's build pod (and ConfigMap):
// in buildNamespace when it is set, "<job>-<hash of its namespace>-build"
// so jobs of one name in two namespaces never meet; else in the job's
// namespace, "<job>-build".
func PodRef(buildNamespace, jobNamespace, jobName string) (namespace, name string) {
	if buildNamespace == "" {
		return jobNamespace, PodName(jobName)
	}
	sum := sha256.Sum256([]byte(jobNamespace))
	return buildNamespace, boundedName(jobName+"-"+hex.EncodeToString(sum[:])[:8], nameSuffix, maxNameLength)
}

func (b *Backend) podRef(job *v1alpha1.ImageSpecJob) (namespace, name string) {
	return PodRef(b.opts.BuildNamespace, job.Namespace, job.Name)
}

// pullCopyName is the per-build copy of the pull Secret in the build
// namespace.
func pullCopyName(podName string) string {
	return boundedName(podName, pullCopySuffix, maxNameLength)
}

// pullSecretName is the Secret the pod mounts for pulls.
func (b *Backend) pullSecretName(job *v1alpha1.ImageSpecJob) string {
	if job.Spec.PullSecret == "" || b.opts.BuildNamespace == "" {
		return job.Spec.PullSecret
	}
	_, name := b.podRef(job)
	return pullCopyName(name)
}

// pullsWithPush reports whether the job's base image is pulled with the
// push credentials: always without a build namespace (PrimeHub's way, no
// boundary), else only where the pull scope allows.
func (b *Backend) pullsWithPush(job *v1alpha1.ImageSpecJob) bool {
	if b.opts.BuildNamespace == "" {
		return true
	}
	return b.opts.Pulls.UsesPush(job.Spec.TargetImage, dockerfile.Normalize(backend.JobInputs(job)).BaseImage)
}

// copyPullSecret writes the job's pull Secret, read from the job's own
// namespace only, into the build namespace as a dockerconfigjson Secret
// for this build, over the push credentials where the pull scope allows.
// A legacy dockercfg Secret is converted on the way. Both go through
// pkg/credentials, as in the inprocess backend, so a spec pulls the same
// on both.
func (b *Backend) copyPullSecret(ctx context.Context, job *v1alpha1.ImageSpecJob, push *corev1.Secret) (backend.Status, bool, error) {
	if job.Spec.PullSecret == "" || b.opts.BuildNamespace == "" {
		return backend.Status{}, false, nil
	}
	src, st, done, err := b.getSecret(ctx, job.Namespace, job.Spec.PullSecret, v1alpha1.ReasonBaseImagePullFailed, "pull")
	if done || err != nil {
		return st, done, err
	}
	auths, err := credentials.Parse(src)
	if err != nil {
		// Not a docker Secret: the message names the Secret, not its data.
		return backend.Status{Phase: v1alpha1.JobFailed, Reason: v1alpha1.ReasonBaseImagePullFailed,
			Message: "The pull Secret: " + err.Error()}, true, nil
	}
	// As the inprocess backend pulls: the push credentials (push, already
	// read and checked), where allowed, with the pull Secret's entries on
	// top, so an own or shared base in the target registry still pulls
	// when the pull Secret is for another registry.
	if push != nil && b.pullsWithPush(job) {
		pushAuths, err := credentials.Parse(push)
		if err != nil {
			return backend.Status{}, false, err
		}
		auths = credentials.Merged(pushAuths, auths)
	}
	ns, pod := b.podRef(job)
	data, err := auths.ConfigJSON()
	if err != nil {
		return backend.Status{}, false, err
	}
	name := pullCopyName(pod)
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels(job), Annotations: jobAnnotations(job)},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: data},
	}
	_, err = b.kube.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		existing, getErr := b.kube.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
		if getErr != nil {
			return backend.Status{}, false, getErr
		}
		if !ownedBy(existing, job) {
			// An earlier job's of the same name: replaced on the retry.
			err := b.kube.CoreV1().Secrets(ns).Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &existing.UID}})
			if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				return backend.Status{}, false, fmt.Errorf("deleting Secret %s/%s: %w", ns, name, err)
			}
			return backend.Status{}, false, fmt.Errorf("Secret %s/%s was an earlier job's; deleted it, will retry", ns, name)
		}
		existing = existing.DeepCopy()
		existing.Data = secret.Data
		_, err = b.kube.CoreV1().Secrets(ns).Update(ctx, existing, metav1.UpdateOptions{})
	}
	if err != nil {
		return backend.Status{}, false, fmt.Errorf("copying the pull Secret to %s/%s: %w", ns, name, err)
	}
	return backend.Status{}, false, nil
}

// deletePullCopy removes the job's copy of its pull Secret.
func (b *Backend) deletePullCopy(ctx context.Context, job *v1alpha1.ImageSpecJob) error {
	if b.opts.BuildNamespace == "" {
		return nil
	}
	ns, pod := b.podRef(job)
	return deleteJobObject(ctx, b.kube.CoreV1().Secrets(ns), "Secret", ns, pullCopyName(pod), job)
}

// jobAnnotations name the job exactly, for objects that cannot carry an
// owner reference to it.
func jobAnnotations(job *v1alpha1.ImageSpecJob) map[string]string {
	return map[string]string{JobNameAnnotation: job.Name}
}

// jobKeyOf is the namespace/name of the job an object of this backend
// belongs to, from its owner reference or, in the build namespace, its
// label and annotation.
func jobKeyOf(obj metav1.Object) (string, bool) {
	if ref := metav1.GetControllerOf(obj); ref != nil {
		if ref.Kind != "ImageSpecJob" || ref.APIVersion != v1alpha1.SchemeGroupVersion.String() {
			return "", false
		}
		return obj.GetNamespace() + "/" + ref.Name, true
	}
	ns, name := obj.GetLabels()[JobNamespaceLabel], obj.GetAnnotations()[JobNameAnnotation]
	if ns == "" || name == "" || obj.GetLabels()[names.ManagedByLabel] != names.ComponentName {
		return "", false
	}
	return ns + "/" + name, true
}

// CacheRepositoryComponent is the path component of the layer cache
// repositories under the repository prefix. Namespace and ImageSpec names
// never contain '_', so no layout ever names an image there.
const CacheRepositoryComponent = "imagespec_cache"

// CacheRepository is where builds of job's namespace keep their layer
// cache: <prefix>/imagespec_cache/<namespace>. One repository per
// namespace, written only by that namespace's builds (the controller names
// it; tenants hold no registry credentials), so one tenant's layers never
// reach another's build. Empty when the cache is off, or for the single
// layout (one repository only).
func (b *Backend) CacheRepository(job *v1alpha1.ImageSpecJob) string {
	if b.opts.NoRegistryCache || job.Spec.RepoPrefix == "" || job.Spec.PushSecret == "" || b.opts.Pulls.Layout == revision.LayoutSingle {
		return ""
	}
	return job.Spec.RepoPrefix + "/" + CacheRepositoryComponent + "/" + job.Namespace
}
