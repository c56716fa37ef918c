package controller

import (
	"context"
	"fmt"
	"time"

	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/backend"
)

// builtCheckTimeout bounds the registry read of finishIfBuilt.
const builtCheckTimeout = 10 * time.Second

// finishIfBuilt ends job as Succeeded with reason AlreadyBuilt when its
// target is in the registry with its revision's label: a recreated job, a
// reverted spec, or a job whose build pushed before this process could
// write the status. Each job is looked for once per process (its first
// sync here, also after a restart); a failed read just builds. A build
// that still runs for it is stopped first: the image it would push is
// there.
func (c *Controller) finishIfBuilt(ctx context.Context, key cache.ObjectName, job *v1alpha1.ImageSpecJob) (bool, error) {
	if uid, checked := c.builtChecked.get(key); c.findBuilt == nil || checked && uid == job.UID {
		return false, nil
	}
	// A registry that does not answer must not hold a worker: the job
	// then just builds.
	readCtx, cancel := context.WithTimeout(ctx, builtCheckTimeout)
	img, exists, err := c.findBuilt(readCtx, job.Spec.TargetImage)
	cancel()
	if err != nil {
		klog.FromContext(ctx).V(2).Info("Could not look for an already built image; building", "image", job.Spec.TargetImage, "err", c.redact(err.Error()))
	}
	if !exists {
		c.builtChecked.set(key, job.UID)
		return false, nil
	}
	if started(job) {
		giveUp, err := c.boundedCancel(ctx, job)
		if err != nil && !giveUp {
			return true, fmt.Errorf("%s backend: stopping the build of an image that is already built: %w", c.backend.Name(), err)
		}
		if err != nil {
			// The image is there whatever that build does: finish.
			klog.FromContext(ctx).Error(err, "Stopping the build of an already built image was not confirmed; finishing the job anyway", "timeout", c.opts.CancelTimeout)
		}
	}
	c.slots.unreserve(key)
	found := backend.Status{
		Phase:   v1alpha1.JobSucceeded,
		Reason:  v1alpha1.ReasonAlreadyBuilt,
		Message: fmt.Sprintf("Already built: %s@%s is in the registry with this revision's label; nothing was built", job.Spec.TargetImage, img.Digest),
		Digest:  img.Digest,
	}
	if job.Status.BaseImageDigest == "" {
		// A digest a build already reported stays.
		found.BaseImageDigest = img.BaseDigest
	}
	status := job.Status.DeepCopy()
	status.ObservedGeneration = job.Generation
	c.applyAttested(ctx, key, status, found, job, job.Status.Backend, c.now())
	if err := c.updateJobStatus(ctx, job, status); err != nil {
		return true, err
	}
	c.builtChecked.forget(key)
	c.recordTransition(job, status)
	return true, nil
}
