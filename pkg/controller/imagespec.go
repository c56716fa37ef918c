package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/containers/image/v5/docker/reference"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/backend"
	"github.com/imagespec/imagespec-controller/pkg/dockerfile"
	"github.com/imagespec/imagespec-controller/pkg/revision"
)

func everything() labels.Selector { return labels.Everything() }

func keyOf(job *v1alpha1.ImageSpecJob) cache.ObjectName {
	return cache.NewObjectName(job.Namespace, job.Name)
}

// desiredRevision is what the current spec of an ImageSpec builds. The
// revision is identified by its whole target image: the repository and the
// tag (the hash of the build inputs).
type desiredRevision struct {
	tag, targetImage string
	sources          *v1alpha1.PackageSources
	// baseDigest: base image tracking tied the revision to this digest.
	baseDigest string
}

// revisionOf validates spec and works out its revision. Errors carry field
// paths (spec.packages.pip[1]: ...).
func (c *Controller) revisionOf(spec *v1alpha1.ImageSpec) (desiredRevision, field.ErrorList) {
	specPath := field.NewPath("spec")
	in := backend.Inputs(spec.Spec.BaseImage, spec.Spec.Packages, backend.SourcesToAPI(c.opts.Sources))
	var errs field.ErrorList
	errs = append(errs, dockerfile.ValidateBaseImage(in.BaseImage, specPath.Child("baseImage"))...)
	errs = append(errs, dockerfile.ValidatePackages(in.Packages, specPath.Child("packages"))...)
	if spec.Spec.PullSecret != "" {
		for _, msg := range validation.IsDNS1123Subdomain(spec.Spec.PullSecret) {
			errs = append(errs, field.Invalid(specPath.Child("pullSecret"), spec.Spec.PullSecret, msg))
		}
	}
	if len(errs) > 0 {
		return desiredRevision{}, errs
	}
	baseDigest := revisionBaseDigest(spec, dockerfile.Normalize(in).BaseImage)
	tag := revision.TagWithBase(in, spec.Spec.UpdateTime, baseDigest)
	target, err := c.opts.Layout.Target(c.opts.Registry.RepoPrefix, spec.Namespace, spec.Name, tag)
	if err != nil {
		return desiredRevision{}, field.ErrorList{field.Invalid(field.NewPath("metadata", "name"), spec.Name,
			fmt.Sprintf("does not make a valid image name under %q: %v", c.opts.Registry.RepoPrefix, err))}
	}
	return desiredRevision{
		tag:         tag,
		targetImage: target,
		sources:     backend.SourcesToAPI(c.opts.Sources),
		baseDigest:  baseDigest,
	}, nil
}

// AttemptJobName is the deterministic name of attempt n of the revision
// tag of the ImageSpec specName: <spec>-<tag> for the first, then
// <spec>-<tag>-<n>.
func AttemptJobName(specName, tag string, n int) string {
	if n <= 1 {
		return JobName(specName, tag)
	}
	return JobName(specName, tag+"-"+strconv.Itoa(n))
}

// attemptOf is the attempt number a job records; 1 for jobs made before
// attempts were counted.
func attemptOf(j *v1alpha1.ImageSpecJob) int {
	if n, err := strconv.Atoi(j.Annotations[AttemptAnnotation]); err == nil && n > 0 {
		return n
	}
	return 1
}

// tagOf is the revision tag of a job: the tag of its target image.
func tagOf(j *v1alpha1.ImageSpecJob) string {
	if ref, err := reference.ParseNormalizedNamed(j.Spec.TargetImage); err == nil {
		if t, ok := ref.(reference.Tagged); ok {
			return t.Tag()
		}
	}
	return ""
}

// attemptsOf returns the jobs that build target, newest attempt first.
func attemptsOf(jobs []*v1alpha1.ImageSpecJob, target string) []*v1alpha1.ImageSpecJob {
	var out []*v1alpha1.ImageSpecJob
	for _, j := range jobs {
		if j.Spec.TargetImage == target {
			out = append(out, j)
		}
	}
	sort.Slice(out, func(i, k int) bool {
		if ai, ak := attemptOf(out[i]), attemptOf(out[k]); ai != ak {
			return ai > ak
		}
		return newerThan(out[i], out[k])
	})
	return out
}

// nextAttempt is the attempt number of a new job for tag: one past every
// attempt of that tag, whatever its repository.
func nextAttempt(jobs []*v1alpha1.ImageSpecJob, tag string) int {
	n := 0
	for _, j := range jobs {
		if tagOf(j) == tag {
			n = max(n, attemptOf(j))
		}
	}
	return n + 1
}

// JobName is the deterministic name of the job that builds revision tag of
// the ImageSpec name, so retries and restarts never create a second job.
// Names too long for an object name keep their tail unique with a hash.
func JobName(specName, tag string) string {
	name := specName + "-" + tag
	if len(name) <= validation.DNS1123SubdomainMaxLength {
		return name
	}
	sum := sha256.Sum256([]byte(specName))
	keep := validation.DNS1123SubdomainMaxLength - len(tag) - 10
	return strings.TrimRight(specName[:keep], "-.") + "-" + hex.EncodeToString(sum[:])[:8] + "-" + tag
}

func (c *Controller) jobsOf(spec *v1alpha1.ImageSpec) ([]*v1alpha1.ImageSpecJob, error) {
	objs, err := c.jobIndexer.ByIndex(jobsByOwnerIndex, spec.Namespace+"/"+spec.Name)
	if err != nil {
		return nil, err
	}
	jobs := make([]*v1alpha1.ImageSpecJob, 0, len(objs))
	for _, o := range objs {
		job := o.(*v1alpha1.ImageSpecJob)
		// A job left by an earlier ImageSpec of the same name is not ours.
		if ref := metav1.GetControllerOf(job); ref != nil && ref.UID == spec.UID {
			jobs = append(jobs, job)
		}
	}
	return jobs, nil
}

func (c *Controller) syncImageSpec(ctx context.Context, key cache.ObjectName) error {
	logger := klog.FromContext(ctx)
	spec, err := c.specLister.ImageSpecs(key.Namespace).Get(key.Name)
	if apierrors.IsNotFound(err) {
		// Its jobs are garbage-collected through their ownerReferences;
		// their builds stop now, not when the collector gets to them.
		objs, err := c.jobIndexer.ByIndex(jobsByOwnerIndex, key.Namespace+"/"+key.Name)
		if err != nil {
			return err
		}
		for _, o := range objs {
			if j := o.(*v1alpha1.ImageSpecJob); !j.Status.Phase.IsFinal() {
				c.jobQueue.Add(keyOf(j))
			}
		}
		return nil
	}
	if err != nil {
		return err
	}
	jobs, err := c.jobsOf(spec)
	if err != nil {
		return err
	}

	status := spec.Status.DeepCopy()
	status.ObservedGeneration = spec.Generation
	// The revision below comes from the stored status: a moved base
	// digest is stored by this write before any job is made for it, so a
	// restart finds the same revision, and the write's event builds it.
	status.TrackedBaseImage = c.trackedBase(ctx, spec)

	rev, errs := c.revisionOf(spec)
	if len(errs) > 0 {
		msg := errs.ToAggregate().Error()
		status.Phase = v1alpha1.JobFailed
		status.JobName = ""
		status.Revision = ""
		changed := setCondition(&status.Conditions, v1alpha1.ConditionReady, metav1.ConditionFalse, v1alpha1.ReasonInvalidSpec, msg, spec.Generation)
		if changed {
			c.recorder.Event(spec, corev1.EventTypeWarning, v1alpha1.ReasonInvalidSpec, msg)
		}
		c.supersedeOthers(jobs, "")
		// No retry: nothing changes until the spec does.
		return c.updateSpecStatus(ctx, spec, status)
	}

	var job *v1alpha1.ImageSpecJob
	if attempts := attemptsOf(jobs, rev.targetImage); len(attempts) > 0 {
		job = attempts[0]
	}
	// A new job when the revision (target image) has none, or when an
	// edit landed on a revision whose last attempt failed or was
	// cancelled: the edit is the user asking again (the package may have
	// been published since). A failure of the current generation's own
	// job is not retried until the next edit.
	if job == nil || needsNewAttempt(spec, job) {
		attempt := nextAttempt(jobs, rev.tag)
		name := AttemptJobName(spec.Name, rev.tag, attempt)
		cause, causeMsg := causeOf(spec, jobs, rev, attempt)
		if _, err = c.createJob(ctx, spec, rev, name, attempt, cause, causeMsg); err != nil {
			return err
		}
		// The new job's informer event syncs this spec again and writes
		// its status then, usually with the job already running: one
		// status write per new revision instead of two.
		c.supersedeOthers(jobs, name)
		return nil
	}
	c.supersedeOthers(jobs, job.Name)

	status.JobName = job.Name
	status.Revision = rev.tag
	status.Phase = job.Status.Phase
	if status.Phase == "" {
		status.Phase = v1alpha1.JobPending
	}
	switch job.Status.Phase {
	case v1alpha1.JobSucceeded:
		status.Image = job.Status.Image
		status.PinnedImage = pinned(job.Status.Image, job.Status.Digest)
		setCondition(&status.Conditions, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonSucceeded,
			fmt.Sprintf("%s is built from the current spec", job.Status.Image), spec.Generation)
	case v1alpha1.JobFailed, v1alpha1.JobCancelled:
		keepNewestImage(status, jobs)
		setCondition(&status.Conditions, v1alpha1.ConditionReady, metav1.ConditionFalse, job.Status.Reason,
			fmt.Sprintf("job %s: %s", job.Name, job.Status.Message), spec.Generation)
	default:
		keepNewestImage(status, jobs)
		reason := job.Status.Reason
		if reason == "" {
			reason = v1alpha1.ReasonQueued
		}
		msg := fmt.Sprintf("job %s is building the current spec", job.Name)
		if reason == v1alpha1.ReasonBackendError || reason == v1alpha1.ReasonPushSecretFailed {
			// Why it does not build, so kubectl get/describe of the spec
			// tells it without looking at the job.
			msg = fmt.Sprintf("job %s: %s", job.Name, job.Status.Message)
		}
		setCondition(&status.Conditions, v1alpha1.ConditionReady, metav1.ConditionFalse, reason, msg, spec.Generation)
	}

	if err := c.pruneHistory(ctx, spec, jobs, job.Name, status.Image); err != nil {
		logger.Error(err, "Pruning job history")
	}
	return c.updateSpecStatus(ctx, spec, status)
}

// keepNewestImage points status.image at the newest succeeded job while
// the current one has not succeeded. The write that would have recorded a
// job's success can be lost to a conflict with an edit that starts the
// next revision, whose path writes no image; without this the ImageSpec
// would name an older image, and history pruning would keep that older
// job for it.
func keepNewestImage(status *v1alpha1.ImageSpecStatus, jobs []*v1alpha1.ImageSpecJob) {
	var newest *v1alpha1.ImageSpecJob
	for _, j := range jobs {
		if j.Status.Phase == v1alpha1.JobSucceeded && j.Status.Image != "" && j.DeletionTimestamp == nil && (newest == nil || newerThan(j, newest)) {
			newest = j
		}
	}
	if newest != nil {
		status.Image = newest.Status.Image
		status.PinnedImage = pinned(newest.Status.Image, newest.Status.Digest)
	}
}

// needsNewAttempt: j, the newest attempt of spec's revision, failed or was
// cancelled before the spec's latest edit, so the edit builds it again.
func needsNewAttempt(spec *v1alpha1.ImageSpec, j *v1alpha1.ImageSpecJob) bool {
	failed := j.Status.Phase == v1alpha1.JobFailed || j.Status.Phase == v1alpha1.JobCancelled
	return failed && specGeneration(j) < spec.Generation
}

func (c *Controller) createJob(ctx context.Context, spec *v1alpha1.ImageSpec, rev desiredRevision, name string, attempt int, cause, causeMsg string) (*v1alpha1.ImageSpecJob, error) {
	job := &v1alpha1.ImageSpecJob{
		ObjectMeta: metav1.ObjectMeta{
			Name:            name,
			Namespace:       spec.Namespace,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(spec, v1alpha1.SchemeGroupVersion.WithKind("ImageSpec"))},
		},
		Spec: v1alpha1.ImageSpecJobSpec{
			BaseImage:      spec.Spec.BaseImage,
			PullSecret:     spec.Spec.PullSecret,
			Packages:       *spec.Spec.Packages.DeepCopy(),
			PackageSources: rev.sources,
			TargetImage:    rev.targetImage,
			PushSecret:     c.pushSecretName(),
			RepoPrefix:     c.opts.Registry.RepoPrefix,
			UpdateTime:     spec.Spec.UpdateTime,
			Cause:          cause,
			CauseMessage:   causeMsg,
		},
	}
	job.Annotations = map[string]string{SpecGenerationAnnotation: strconv.FormatInt(spec.Generation, 10)}
	if attempt > 1 {
		job.Annotations[AttemptAnnotation] = strconv.Itoa(attempt)
	}
	if rev.baseDigest != "" {
		job.Annotations[BaseImageDigestAnnotation] = rev.baseDigest
	}
	job.Labels = map[string]string{RevisionLabel: rev.tag}
	if len(validation.IsValidLabelValue(spec.Name)) == 0 {
		job.Labels[ImageSpecLabel] = spec.Name
	}
	created, err := c.client.PrimehubV1alpha1().ImageSpecJobs(spec.Namespace).Create(ctx, job, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		// Created by an earlier attempt whose informer event has not
		// arrived yet, or by someone else: only adopt our own.
		existing, getErr := c.client.PrimehubV1alpha1().ImageSpecJobs(spec.Namespace).Get(ctx, name, metav1.GetOptions{})
		if getErr != nil {
			return nil, getErr
		}
		if ref := metav1.GetControllerOf(existing); ref == nil || ref.UID != spec.UID {
			msg := fmt.Sprintf("ImageSpecJob %s exists and is not owned by this ImageSpec; delete it to build", name)
			c.recorder.Event(spec, corev1.EventTypeWarning, v1alpha1.EventJobNameTaken, msg)
			return nil, fmt.Errorf("%s", msg)
		}
		return existing, nil
	}
	if err != nil {
		return nil, err
	}
	why := cause
	if causeMsg != "" {
		why += ": " + causeMsg
	}
	c.recorder.Eventf(spec, corev1.EventTypeNormal, v1alpha1.EventJobCreated, "Created ImageSpecJob %s to build %s (%s)", created.Name, created.Spec.TargetImage, why)
	return created, nil
}

// supersedeOthers wakes every unfinished job that no longer builds the
// current spec; its sync cancels it with reason Superseded.
func (c *Controller) supersedeOthers(jobs []*v1alpha1.ImageSpecJob, current string) {
	for _, j := range jobs {
		if j.Name != current && !j.Status.Phase.IsFinal() {
			c.jobQueue.Add(keyOf(j))
		}
	}
}

func pinned(image, digest string) string {
	if image == "" || digest == "" {
		return ""
	}
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return ""
	}
	return reference.TrimNamed(named).String() + "@" + digest
}

// pruneHistory deletes finished jobs beyond the history limits, oldest
// first. The current job and the job that built status.image are kept.
func (c *Controller) pruneHistory(ctx context.Context, spec *v1alpha1.ImageSpec, jobs []*v1alpha1.ImageSpecJob, current, image string) error {
	var succeeded, failed []*v1alpha1.ImageSpecJob
	for _, j := range jobs {
		if j.Name == current || j.DeletionTimestamp != nil {
			continue
		}
		switch j.Status.Phase {
		case v1alpha1.JobSucceeded:
			succeeded = append(succeeded, j)
		case v1alpha1.JobFailed, v1alpha1.JobCancelled:
			failed = append(failed, j)
		}
	}
	inUse := func(j *v1alpha1.ImageSpecJob) bool { return image != "" && j.Status.Image == image }
	var errs []error
	for _, group := range []struct {
		jobs  []*v1alpha1.ImageSpecJob
		limit int
	}{{succeeded, c.opts.SucceededHistoryLimit}, {failed, c.opts.FailedHistoryLimit}} {
		if group.limit < 0 || len(group.jobs) <= group.limit {
			continue
		}
		sort.Slice(group.jobs, func(i, k int) bool { return newerThan(group.jobs[i], group.jobs[k]) })
		for _, j := range group.jobs[group.limit:] {
			if inUse(j) {
				continue
			}
			uid := j.UID
			err := c.client.PrimehubV1alpha1().ImageSpecJobs(j.Namespace).Delete(ctx, j.Name, metav1.DeleteOptions{
				Preconditions: &metav1.Preconditions{UID: &uid},
			})
			if err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, err)
				continue
			}
			klog.FromContext(ctx).V(2).Info("Deleted old job", "job", j.Name, "phase", j.Status.Phase)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("deleting old jobs of %s/%s: %v", spec.Namespace, spec.Name, errs)
	}
	return nil
}

func finishedAt(j *v1alpha1.ImageSpecJob) metav1.Time {
	if j.Status.FinishTime != nil {
		return *j.Status.FinishTime
	}
	return j.CreationTimestamp
}

// specGeneration is the ImageSpec generation a job was made for; 0 for jobs
// made by hand.
func specGeneration(j *v1alpha1.ImageSpecJob) int64 {
	g, _ := strconv.ParseInt(j.Annotations[SpecGenerationAnnotation], 10, 64)
	return g
}

// newerThan orders jobs newest first: by the spec generation they build
// (timestamps have one-second resolution), then by finish time.
func newerThan(a, b *v1alpha1.ImageSpecJob) bool {
	if ga, gb := specGeneration(a), specGeneration(b); ga != gb {
		return ga > gb
	}
	ta, tb := finishedAt(a), finishedAt(b)
	if !ta.Equal(&tb) {
		return tb.Before(&ta)
	}
	return a.Name > b.Name
}

func (c *Controller) updateSpecStatus(ctx context.Context, spec *v1alpha1.ImageSpec, status *v1alpha1.ImageSpecStatus) error {
	if equality.Semantic.DeepEqual(&spec.Status, status) {
		return nil
	}
	updated := spec.DeepCopy()
	updated.Status = *status
	_, err := c.client.PrimehubV1alpha1().ImageSpecs(spec.Namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{})
	return err
}

// setCondition sets a condition and reports whether anything but the
// observed generation changed. The transition time moves only when the
// status does, as metav1.Condition prescribes.
func setCondition(conds *[]metav1.Condition, typ string, status metav1.ConditionStatus, reason, msg string, gen int64) bool {
	if reason == "" {
		reason = "Unknown"
	}
	old := meta.FindStatusCondition(*conds, typ)
	changed := old == nil || old.Status != status || old.Reason != reason || old.Message != msg
	meta.SetStatusCondition(conds, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: gen,
	})
	return changed
}
