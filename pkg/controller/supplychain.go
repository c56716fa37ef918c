package controller

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/backend"
	"github.com/imagespec/imagespec-controller/pkg/supplychain"
)

// attestTimeout bounds reading a pushed image's package records and
// attaching its SBOM, provenance and signature.
const attestTimeout = 5 * time.Minute

// attestation is what was attached for one job's pushed image.
type attestation struct {
	uid    types.UID
	digest string
	status v1alpha1.SupplyChainStatus
}

// applyAttested is applyBackendStatus for a backend's view bs that, when
// the image was pushed, first gets the image's supply chain attached.
func (c *Controller) applyAttested(ctx context.Context, key cache.ObjectName, status *v1alpha1.ImageSpecJobStatus, bs backend.Status, job *v1alpha1.ImageSpecJob, backendName string, now time.Time) {
	sc := c.attest(ctx, key, job, &bs, backendName)
	applyBackendStatus(status, bs, job, backendName, now)
	if sc != nil {
		status.SupplyChain = sc
	}
}

// attest attaches the SBOM, provenance and signature of a job's pushed
// image (bs is the backend's Succeeded status), once per job and digest.
// A job succeeds only with them: when they cannot be made the job fails
// with reason SupplyChainFailed; its image stays in the registry, and a
// new job of the revision finds it already built and attaches them
// without a build.
func (c *Controller) attest(ctx context.Context, key cache.ObjectName, job *v1alpha1.ImageSpecJob, bs *backend.Status, backendName string) *v1alpha1.SupplyChainStatus {
	if c.attestImage == nil || bs.Phase != v1alpha1.JobSucceeded || bs.Digest == "" {
		return nil
	}
	if done, ok := c.attested.get(key); ok && done.uid == job.UID && done.digest == bs.Digest {
		sc := done.status
		return &sc
	}
	subject, err := c.subject(job, bs, backendName)
	if err == nil {
		attestCtx, cancel := context.WithTimeout(ctx, attestTimeout)
		var res supplychain.Result
		res, err = c.attestImage(attestCtx, subject)
		cancel()
		if err == nil {
			klog.FromContext(ctx).V(2).Info("Attached SBOM and provenance", "image", job.Spec.TargetImage, "digest", bs.Digest, "sbom", res.SBOM, "packages", res.Packages, "provenance", res.Provenance, "signedBy", res.SignedBy)
			sc := v1alpha1.SupplyChainStatus{SBOM: res.SBOM, SBOMPackages: int32(res.Packages), Provenance: res.Provenance, SignedBy: res.SignedBy}
			c.attested.set(key, attestation{uid: job.UID, digest: bs.Digest, status: sc})
			return &sc
		}
	}
	bs.Phase = v1alpha1.JobFailed
	bs.Reason = v1alpha1.ReasonSupplyChainFailed
	bs.Message = c.redact(fmt.Sprintf("Pushed %s@%s, but its SBOM, provenance or signature could not be attached: %v. The image stays in the registry; a new job of this revision attaches them without building",
		job.Spec.TargetImage, bs.Digest, err))
	return nil
}

// subject describes a job's pushed image to the supply chain.
func (c *Controller) subject(job *v1alpha1.ImageSpecJob, bs *backend.Status, backendName string) (supplychain.Subject, error) {
	added, err := backend.BuildLayers(job)
	if err != nil {
		return supplychain.Subject{}, err
	}
	baseDigest := bs.BaseImageDigest
	if baseDigest == "" {
		baseDigest = job.Status.BaseImageDigest
	}
	owner := ""
	if ref := metav1.GetControllerOf(job); ref != nil {
		owner = ref.Name
	}
	var sources []string
	if s := job.Spec.PackageSources; s != nil {
		for _, u := range append(append([]string{s.AptMirror, s.PipIndexURL}, s.PipExtraIndexURLs...), s.CondaChannels...) {
			if u != "" {
				sources = append(sources, u)
			}
		}
	}
	started := job.CreationTimestamp.Time
	if job.Status.StartTime != nil {
		started = job.Status.StartTime.Time
	} else if bs.StartTime != nil {
		started = bs.StartTime.Time
	}
	return supplychain.Subject{
		Image:       job.Spec.TargetImage,
		Digest:      bs.Digest,
		BaseImage:   job.Spec.BaseImage,
		BaseDigest:  baseDigest,
		Apt:         job.Spec.Packages.Apt,
		Pip:         job.Spec.Packages.Pip,
		Conda:       job.Spec.Packages.Conda,
		AddedLayers: added,
		ExternalParameters: map[string]any{
			"imageSpec":   map[string]string{"namespace": job.Namespace, "name": owner},
			"baseImage":   job.Spec.BaseImage,
			"packages":    job.Spec.Packages,
			"targetImage": job.Spec.TargetImage,
			"updateTime":  job.Spec.UpdateTime,
		},
		InternalParameters: map[string]any{
			"job":            map[string]string{"namespace": job.Namespace, "name": job.Name, "uid": string(job.UID)},
			"cause":          job.Spec.Cause,
			"packageSources": job.Spec.PackageSources,
			"backend":        backendName,
		},
		Sources:      sources,
		Backend:      backendName,
		InvocationID: string(job.UID),
		Started:      started,
		Finished:     c.now(),
	}, nil
}
