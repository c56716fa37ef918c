package controller

import (
	"context"
	"fmt"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
)

// builtCheckTimeout bounds the registry read of finishIfBuilt.
const builtCheckTimeout = 10 * time.Second

// uidMarks remembers, per job key, the UID of the job last marked, so a
// job recreated under the same name is a new job.
type uidMarks struct {
	mu sync.Mutex
	m  map[cache.ObjectName]types.UID
}

func (u *uidMarks) has(key cache.ObjectName, uid types.UID) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.m[key] == uid
}

func (u *uidMarks) mark(key cache.ObjectName, uid types.UID) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil {
		u.m = map[cache.ObjectName]types.UID{}
	}
	u.m[key] = uid
}

func (u *uidMarks) forget(key cache.ObjectName) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.m, key)
}

// finishIfBuilt ends job as Succeeded with reason AlreadyBuilt when its
// target is in the registry with its revision's label: a recreated job, a
// reverted spec, or a job whose build pushed before this process could
// write the status. Each job is looked for once per process (its first
// sync here, also after a restart); a failed read just builds. A build
// that still runs for it is stopped first: the image it would push is
// there.
func (c *Controller) finishIfBuilt(ctx context.Context, key cache.ObjectName, job *v1alpha1.ImageSpecJob) (bool, error) {
	if c.findBuilt == nil || c.builtChecked.has(key, job.UID) {
		return false, nil
	}
	// A registry that does not answer must not hold a worker: the job
	// then just builds.
	readCtx, cancel := context.WithTimeout(ctx, builtCheckTimeout)
	img, found, err := c.findBuilt(readCtx, job.Spec.TargetImage)
	cancel()
	if err != nil {
		klog.FromContext(ctx).V(2).Info("Could not look for an already built image; building", "image", job.Spec.TargetImage, "err", c.redact(err.Error()))
	}
	if !found {
		c.builtChecked.mark(key, job.UID)
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
	status := job.Status.DeepCopy()
	status.ObservedGeneration = job.Generation
	status.Phase = v1alpha1.JobSucceeded
	status.Reason = v1alpha1.ReasonAlreadyBuilt
	status.Image = job.Spec.TargetImage
	status.Digest = img.Digest
	if status.BaseImageDigest == "" {
		status.BaseImageDigest = img.BaseDigest
	}
	status.Message = fmt.Sprintf("Already built: %s@%s is in the registry with this revision's label; nothing was built", job.Spec.TargetImage, img.Digest)
	now := metav1.NewTime(c.now())
	status.FinishTime = &now
	setCondition(&status.Conditions, v1alpha1.ConditionSucceeded, metav1.ConditionTrue, status.Reason, status.Message, job.Generation)
	if err := c.updateJobStatus(ctx, job, status); err != nil {
		return true, err
	}
	c.builtChecked.forget(key)
	c.recordTransition(job, status)
	return true, nil
}
