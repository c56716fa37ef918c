package controller

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/backend"
	"github.com/imagespec/imagespec-controller/pkg/dockerfile"
	"github.com/imagespec/imagespec-controller/pkg/metrics"
	"github.com/imagespec/imagespec-controller/pkg/revision"
)

// started reports whether a backend was asked to build the job.
func started(job *v1alpha1.ImageSpecJob) bool { return job.Status.Backend != "" }

func (c *Controller) syncJob(ctx context.Context, key cache.ObjectName) error {
	logger := klog.FromContext(ctx)
	job, err := c.jobLister.ImageSpecJobs(key.Namespace).Get(key.Name)
	if apierrors.IsNotFound(err) {
		// Deleted: stop whatever still builds it and free its slot.
		gone := &v1alpha1.ImageSpecJob{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
		if giveUp, err := c.boundedCancel(ctx, gone); err != nil {
			if !giveUp {
				return err
			}
			logger.Error(err, "Cancelling the build of a deleted job did not complete; giving up", "timeout", c.opts.CancelTimeout)
		}
		c.slots.unreserve(key)
		c.errorWrites.forget(key)
		c.builtChecked.forget(key)
		c.attested.forget(key)
		return nil
	}
	if err != nil {
		return err
	}
	if job.Status.Phase.IsFinal() {
		c.errorWrites.forget(key)
		c.cancelling.forget(key)
		c.builtChecked.forget(key)
		c.attested.forget(key)
		return nil
	}

	now := c.now()
	// Checked before a build starts; invalid inputs are reported as such
	// (below), not as a job the controller did not make.
	var invalid, rejected field.ErrorList
	if !started(job) {
		if invalid = validateJob(job); len(invalid) == 0 {
			rejected = c.authorizeJob(job)
		}
	}
	switch {
	case job.Spec.Cancel:
		return c.stopJob(ctx, job, v1alpha1.JobCancelled, v1alpha1.ReasonCancelled, "Cancelled: spec.cancel is true")
	case c.ownerDeleted(job) != "":
		// Garbage collection would delete the job later; until then the
		// build could still push, so it stops now.
		return c.stopJob(ctx, job, v1alpha1.JobCancelled, v1alpha1.ReasonImageSpecDeleted,
			fmt.Sprintf("Cancelled: ImageSpec %s was deleted", c.ownerDeleted(job)))
	case len(rejected) > 0:
		// Before superseding: a job that was never the controller's says
		// so, instead of looking like an outdated revision.
		return c.stopJob(ctx, job, v1alpha1.JobFailed, v1alpha1.ReasonRejected, "Not built: "+rejected.ToAggregate().Error())
	case c.supersededBy(job) != "":
		return c.stopJob(ctx, job, v1alpha1.JobCancelled, v1alpha1.ReasonSuperseded,
			fmt.Sprintf("Superseded: the ImageSpec changed; %s builds the current spec", c.supersededBy(job)))
	case c.opts.BuildTimeout > 0 && !now.Before(job.CreationTimestamp.Add(c.opts.BuildTimeout)):
		return c.stopJob(ctx, job, v1alpha1.JobFailed, v1alpha1.ReasonTimeout, c.timeoutMessage(job, now))
	}

	if len(invalid) == 0 {
		if done, err := c.finishIfBuilt(ctx, key, job); done || err != nil {
			return err
		}
	}

	status := job.Status.DeepCopy()
	status.ObservedGeneration = job.Generation
	if !started(job) {
		if len(invalid) > 0 {
			return c.stopJob(ctx, job, v1alpha1.JobFailed, v1alpha1.ReasonInvalidSpec, invalid.ToAggregate().Error())
		}
		if !c.slots.acquire(key) {
			status.Phase = v1alpha1.JobPending
			status.Reason = v1alpha1.ReasonQueued
			status.Message = fmt.Sprintf("Waiting for a free build slot: %d builds are running (limit %d)", c.slots.inUse(), c.opts.MaxConcurrentBuilds)
			setCondition(&status.Conditions, v1alpha1.ConditionSucceeded, metav1.ConditionUnknown, v1alpha1.ReasonQueued, status.Message, job.Generation)
			c.requeueAtDeadline(job, now)
			return c.updateJobStatus(ctx, job, status)
		}
		if err := c.ensurePushSecret(ctx, c.pushSecretNamespace(job.Namespace)); err != nil {
			c.slots.unreserve(key)
			msg := c.redact(fmt.Sprintf("Cannot prepare the push Secret %s/%s: %v", c.pushSecretNamespace(job.Namespace), c.opts.PushSecretName, err))
			return c.reportPendingError(ctx, job, v1alpha1.ReasonPushSecretFailed, msg, err)
		}
	}

	bs, err := c.backend.Ensure(ctx, job)
	if err != nil {
		if !started(job) {
			c.slots.unreserve(key)
		}
		msg := c.redact(fmt.Sprintf("The %s backend cannot start the build (will retry): %v", c.backend.Name(), err))
		return c.reportPendingError(ctx, job, v1alpha1.ReasonBackendError, msg, fmt.Errorf("%s backend: %w", c.backend.Name(), err))
	}
	c.applyAttested(ctx, key, status, bs, job, c.backend.Name(), now)
	if err := c.updateJobStatus(ctx, job, status); err != nil {
		return err
	}
	c.recordTransition(job, status)
	if status.Phase.IsFinal() {
		logger.V(2).Info("Build finished", "phase", status.Phase, "reason", status.Reason)
		return nil
	}
	c.requeueAtDeadline(job, now)
	return nil
}

// validateJob checks a job's build inputs; jobs are usually made by the
// controller from a valid spec, but a user may create one directly.
func validateJob(job *v1alpha1.ImageSpecJob) field.ErrorList {
	specPath := field.NewPath("spec")
	in := backend.JobInputs(job)
	errs := dockerfile.ValidateBaseImage(in.BaseImage, specPath.Child("baseImage"))
	errs = append(errs, dockerfile.ValidatePackages(in.Packages, specPath.Child("packages"))...)
	errs = append(errs, dockerfile.ValidateSources(in.Sources, specPath.Child("packageSources"))...)
	return errs
}

// authorizeJob checks that the job is one the controller made: controlled
// by an ImageSpec that exists, pushing to exactly the image its own inputs
// make under the configured repository prefix, with the configured push
// Secret. Anyone who may create jobs could otherwise push anything to any
// repository the push credentials reach (another tenant's image, a shared
// base image).
func (c *Controller) authorizeJob(job *v1alpha1.ImageSpecJob) field.ErrorList {
	meta := field.NewPath("metadata")
	specPath := field.NewPath("spec")
	ref := metav1.GetControllerOf(job)
	if ref == nil || ref.Kind != "ImageSpec" || !strings.HasPrefix(ref.APIVersion, v1alpha1.SchemeGroupVersion.Group+"/") {
		return field.ErrorList{field.Forbidden(meta.Child("ownerReferences"),
			"a job is built only for the ImageSpec that controls it; create or edit an ImageSpec instead")}
	}
	owner, err := c.specLister.ImageSpecs(job.Namespace).Get(ref.Name)
	if err != nil || owner.UID != ref.UID {
		return field.ErrorList{field.Forbidden(meta.Child("ownerReferences"),
			fmt.Sprintf("ImageSpec %s (uid %s) does not exist", ref.Name, ref.UID))}
	}
	var errs field.ErrorList
	in := backend.Inputs(job.Spec.BaseImage, job.Spec.Packages, nil)
	tag := revision.TagWithBase(in, job.Spec.UpdateTime, job.Annotations[BaseImageDigestAnnotation])
	want, err := c.opts.Layout.Target(c.opts.Registry.RepoPrefix, owner.Namespace, owner.Name, tag)
	if err != nil {
		errs = append(errs, field.Forbidden(specPath.Child("targetImage"), err.Error()))
	} else if job.Spec.TargetImage != want {
		errs = append(errs, field.Forbidden(specPath.Child("targetImage"),
			fmt.Sprintf("%q is not the image this job's inputs make for ImageSpec %s: %s", job.Spec.TargetImage, owner.Name, want)))
	}
	if job.Spec.PushSecret != c.pushSecretName() {
		errs = append(errs, field.Forbidden(specPath.Child("pushSecret"),
			fmt.Sprintf("%q is not the controller's push Secret %q", job.Spec.PushSecret, c.pushSecretName())))
	}
	if job.Spec.RepoPrefix != "" && job.Spec.RepoPrefix != c.opts.Registry.RepoPrefix {
		errs = append(errs, field.Forbidden(specPath.Child("repoPrefix"),
			fmt.Sprintf("%q is not the configured repository prefix %q", job.Spec.RepoPrefix, c.opts.Registry.RepoPrefix)))
	}
	return errs
}

// phaseRank orders phases along a job's life.
func phaseRank(p v1alpha1.ImageSpecJobPhase) int {
	switch {
	case p == "":
		return 0
	case p == v1alpha1.JobPending:
		return 1
	case p == v1alpha1.JobRunning:
		return 2
	case p.IsFinal():
		return 3
	}
	return 0
}

func applyBackendStatus(status *v1alpha1.ImageSpecJobStatus, bs backend.Status, job *v1alpha1.ImageSpecJob, backendName string, now time.Time) {
	if phaseRank(bs.Phase) < phaseRank(status.Phase) {
		// A job's phase only moves forward: a backend's view may lag (a
		// restarted watch, a kubelet that has not caught up), and whoever
		// watches the job must never see Running -> Pending.
		bs.Phase, bs.Reason, bs.Message = status.Phase, status.Reason, status.Message
	}
	status.Backend = backendName
	status.Phase = bs.Phase
	status.Reason = bs.Reason
	status.Message = bs.Message
	if bs.StartTime != nil && status.StartTime == nil {
		status.StartTime = bs.StartTime.DeepCopy()
	}
	if bs.PodName != "" {
		status.PodName = bs.PodName
	}
	if bs.BaseImageDigest != "" {
		status.BaseImageDigest = bs.BaseImageDigest
	}
	if bs.LogTail != "" {
		status.LogTail = truncateTail(bs.LogTail, v1alpha1.MaxLogTailBytes)
	}
	cond := metav1.ConditionUnknown
	switch bs.Phase {
	case v1alpha1.JobSucceeded:
		status.Image = job.Spec.TargetImage
		status.Digest = bs.Digest
		if status.Reason == "" {
			status.Reason = v1alpha1.ReasonSucceeded
		}
		if status.Message == "" {
			status.Message = fmt.Sprintf("Pushed %s@%s", job.Spec.TargetImage, bs.Digest)
		}
		cond = metav1.ConditionTrue
	case v1alpha1.JobFailed:
		if status.Reason == "" {
			status.Reason = v1alpha1.ReasonBuildFailed
		}
		cond = metav1.ConditionFalse
	case v1alpha1.JobRunning:
		if status.Reason == "" {
			status.Reason = v1alpha1.ReasonBuilding
		}
	}
	if status.Phase.IsFinal() && status.FinishTime == nil {
		t := metav1.NewTime(now)
		status.FinishTime = &t
	}
	setCondition(&status.Conditions, v1alpha1.ConditionSucceeded, cond, status.Reason, status.Message, job.Generation)
}

// stopJob cancels the build, if any, and records a final phase. The job
// object stays, so its history is kept.
func (c *Controller) stopJob(ctx context.Context, job *v1alpha1.ImageSpecJob, phase v1alpha1.ImageSpecJobPhase, reason, msg string) error {
	if giveUp, err := c.boundedCancel(ctx, job); err != nil {
		if !giveUp {
			return fmt.Errorf("%s backend: cancelling: %w", c.backend.Name(), err)
		}
		// The node may be down: finalize anyway so the job leaves its
		// slot and the spec moves on, and say what may still run.
		left := fmt.Sprintf("a build of %s in the %s backend", job.Spec.TargetImage, c.backend.Name())
		if job.Status.PodName != "" {
			left = fmt.Sprintf("build pod %s/%s (it may still push %s; delete the pod, or the node's containers, by hand if the node comes back)",
				job.Namespace, job.Status.PodName, job.Spec.TargetImage)
		}
		phase = v1alpha1.JobCancelled
		if reason == v1alpha1.ReasonTimeout {
			phase = v1alpha1.JobFailed
		}
		msg = c.redact(fmt.Sprintf("%s; stopping the build was not confirmed within %s (%v), so the job is final anyway: %s may be left",
			msg, c.opts.CancelTimeout, err, left))
		reason = v1alpha1.ReasonCancelIncomplete
		c.recorder.Eventf(job, corev1.EventTypeWarning, v1alpha1.ReasonCancelIncomplete,
			"Stopping the build was not confirmed within %s; %s may be left", c.opts.CancelTimeout, left)
	}
	status := job.Status.DeepCopy()
	status.ObservedGeneration = job.Generation
	status.Phase = phase
	status.Reason = reason
	status.Message = msg
	now := metav1.NewTime(c.now())
	status.FinishTime = &now
	cond := metav1.ConditionFalse
	setCondition(&status.Conditions, v1alpha1.ConditionSucceeded, cond, reason, msg, job.Generation)
	if err := c.updateJobStatus(ctx, job, status); err != nil {
		return err
	}
	c.recordTransition(job, status)
	return nil
}

// ownerDeleted returns the name of the job's ImageSpec when it is gone
// (or replaced by another of the same name, or being deleted), else "".
func (c *Controller) ownerDeleted(job *v1alpha1.ImageSpecJob) string {
	ref := metav1.GetControllerOf(job)
	if ref == nil || ref.Kind != "ImageSpec" {
		return ""
	}
	spec, err := c.specLister.ImageSpecs(job.Namespace).Get(ref.Name)
	switch {
	case apierrors.IsNotFound(err):
		return ref.Name
	case err != nil:
		return ""
	case spec.UID != ref.UID || spec.DeletionTimestamp != nil:
		return ref.Name
	}
	return ""
}

// supersededBy returns the job that builds the owner's current spec when
// that is not job, or "".
func (c *Controller) supersededBy(job *v1alpha1.ImageSpecJob) string {
	ref := metav1.GetControllerOf(job)
	if ref == nil || ref.Kind != "ImageSpec" {
		return ""
	}
	spec, err := c.specLister.ImageSpecs(job.Namespace).Get(ref.Name)
	if err != nil || spec.UID != ref.UID {
		return ""
	}
	rev, errs := c.revisionOf(spec)
	if len(errs) > 0 {
		return ""
	}
	jobs, err := c.jobsOf(spec)
	if err != nil {
		return ""
	}
	// The job the spec's sync creates, when the cache does not have it yet.
	current := "job " + AttemptJobName(spec.Name, rev.tag, nextAttempt(jobs, rev.tag))
	if attempts := attemptsOf(jobs, rev.targetImage); len(attempts) > 0 {
		if attempts[0].Name == job.Name {
			return ""
		}
		if !needsNewAttempt(spec, attempts[0]) {
			current = "job " + attempts[0].Name
		}
	}
	return current
}

func (c *Controller) timeoutMessage(job *v1alpha1.ImageSpecJob, now time.Time) string {
	created := job.CreationTimestamp.Time
	if job.Status.StartTime == nil {
		return fmt.Sprintf("Timed out: not finished %s after the job was created (limit %s); it never started running (still %s)",
			now.Sub(created).Round(time.Second), c.opts.BuildTimeout, reasonOr(job.Status.Reason, "Pending"))
	}
	start := job.Status.StartTime.Time
	return fmt.Sprintf("Timed out: not finished %s after the job was created (limit %s): %s waiting, %s running",
		now.Sub(created).Round(time.Second), c.opts.BuildTimeout, start.Sub(created).Round(time.Second), now.Sub(start).Round(time.Second))
}

func reasonOr(reason, fallback string) string {
	if reason == "" {
		return fallback
	}
	return reason
}

// requeueAtDeadline makes the job's timeout fire without polling.
func (c *Controller) requeueAtDeadline(job *v1alpha1.ImageSpecJob, now time.Time) {
	if c.opts.BuildTimeout <= 0 {
		return
	}
	c.jobQueue.AddAfter(keyOf(job), job.CreationTimestamp.Add(c.opts.BuildTimeout).Sub(now)+10*time.Millisecond)
}

func (c *Controller) updateJobStatus(ctx context.Context, job *v1alpha1.ImageSpecJob, status *v1alpha1.ImageSpecJobStatus) error {
	if equality.Semantic.DeepEqual(&job.Status, status) {
		return nil
	}
	updated := job.DeepCopy()
	updated.Status = *status
	_, err := c.client.PrimehubV1alpha1().ImageSpecJobs(job.Namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{})
	return err
}

// recordTransition emits one event per phase change.
func (c *Controller) recordTransition(job *v1alpha1.ImageSpecJob, status *v1alpha1.ImageSpecJobStatus) {
	metrics.BuildTransition(job, status)
	if job.Status.Phase == status.Phase && job.Status.Reason == status.Reason {
		return
	}
	switch status.Phase {
	case v1alpha1.JobPending:
		if status.Reason == v1alpha1.ReasonQueued {
			c.recorder.Event(job, corev1.EventTypeNormal, v1alpha1.EventBuildQueued, status.Message)
		}
	case v1alpha1.JobRunning:
		c.recorder.Eventf(job, corev1.EventTypeNormal, v1alpha1.EventBuildStarted, "Building %s with the %s backend", job.Spec.TargetImage, status.Backend)
	case v1alpha1.JobSucceeded:
		c.recorder.Event(job, corev1.EventTypeNormal, v1alpha1.EventBuildSucceeded, status.Message)
	case v1alpha1.JobFailed:
		c.recorder.Eventf(job, corev1.EventTypeWarning, v1alpha1.EventBuildFailed, "%s: %s", status.Reason, status.Message)
	case v1alpha1.JobCancelled:
		c.recorder.Eventf(job, corev1.EventTypeNormal, v1alpha1.EventBuildCancelled, "%s: %s", status.Reason, status.Message)
	}
}

// wakeWaiting requeues the jobs waiting for a build slot, oldest first:
// called when the cache shows a build leave its slot.
func (c *Controller) wakeWaiting() {
	if c.opts.MaxConcurrentBuilds <= 0 {
		return
	}
	for _, j := range c.slots.waiting() {
		c.jobQueue.Add(keyOf(j))
	}
}

// truncateTail keeps the last max bytes of s, cut at a line (or at least a
// rune) boundary so the tail stays valid UTF-8.
func truncateTail(s string, max int) string {
	if len(s) <= max {
		return s
	}
	s = s[len(s)-max:]
	for i := 0; i < len(s) && i < 256; i++ {
		if s[i] == '\n' {
			return s[i+1:]
		}
	}
	for len(s) > 0 && !utf8.RuneStart(s[0]) {
		s = s[1:]
	}
	return s
}
