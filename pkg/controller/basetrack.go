package controller

import (
	"context"
	"strings"
	"time"

	"github.com/containers/image/v5/docker/reference"
	"k8s.io/klog/v2"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/basetrack"
	"github.com/imagespec/imagespec-controller/pkg/metrics"
	"github.com/imagespec/imagespec-controller/pkg/revision"
)

// BaseImageTracking configures base image tracking: the controller checks
// base image tags and builds a new revision when one moves to a new digest.
type BaseImageTracking struct {
	// Default tracks ImageSpecs that leave spec.trackBaseImage unset.
	Default bool
	// Interval between two checks of one base image; zero turns tracking
	// off for every ImageSpec.
	Interval time.Duration
	// Check replaces the registry check (tests).
	Check func(context.Context, basetrack.Key) (string, error)
}

// newBaseTracker returns nil when tracking is off.
func (c *Controller) newBaseTracker() *basetrack.Tracker {
	bt := c.opts.BaseImages
	if bt.Interval <= 0 {
		return nil
	}
	check := bt.Check
	if check == nil {
		rc := &basetrack.RegistryCheck{Kube: c.kube, Own: c.opts.ownAuths(), CertDir: c.opts.RegistryCertDir, Insecure: c.opts.InsecureRegistries}
		check = rc.Check
	}
	return basetrack.New(basetrack.Options{
		Interval: bt.Interval,
		Check:    check,
		Keys:     c.trackedBaseKeys,
		Changed:  c.baseImageChecked,
		Checked:  func(result string) { metrics.BaseImageChecks.WithLabelValues(result).Inc() },
	})
}

// baseKey is what tracking checks for spec; false when spec is not tracked
// (tracking off, or a base pinned by digest, which cannot move).
func (c *Controller) baseKey(spec *v1alpha1.ImageSpec) (basetrack.Key, bool) {
	if c.baseTracker == nil {
		return basetrack.Key{}, false
	}
	on := c.opts.BaseImages.Default
	if spec.Spec.TrackBaseImage != nil {
		on = *spec.Spec.TrackBaseImage
	}
	if !on {
		return basetrack.Key{}, false
	}
	named, err := reference.ParseNormalizedNamed(spec.Spec.BaseImage)
	if err != nil {
		return basetrack.Key{}, false
	}
	if _, pinned := named.(reference.Canonical); pinned {
		return basetrack.Key{}, false
	}
	key := basetrack.Key{Image: reference.TagNameOnly(named).String()}
	if spec.Spec.PullSecret != "" {
		key.PullSecret = spec.Namespace + "/" + spec.Spec.PullSecret
	}
	// Any revision's tag names the same owner: the tag only matters to
	// the single layout, for the ImageSpec's name in it.
	target, err := c.opts.Layout.Target(c.opts.Registry.RepoPrefix, spec.Namespace, spec.Name, strings.Repeat("0", revision.TagLength))
	if err == nil {
		key.PushCredentials = c.opts.PullScope().UsesPush(target, key.Image)
	}
	return key, true
}

// trackedBaseKeys lists the keys of every tracked ImageSpec in the cache.
func (c *Controller) trackedBaseKeys() []basetrack.Key {
	specs, err := c.specLister.List(everything())
	if err != nil {
		return nil
	}
	var keys []basetrack.Key
	for _, s := range specs {
		if k, ok := c.baseKey(s); ok {
			keys = append(keys, k)
		}
	}
	return keys
}

// baseImageChecked syncs every ImageSpec of key: its digest is new.
func (c *Controller) baseImageChecked(key basetrack.Key) {
	specs, err := c.specLister.List(everything())
	if err != nil {
		return
	}
	for _, s := range specs {
		if k, ok := c.baseKey(s); ok && k == key {
			c.enqueueSpec(s)
		}
	}
}

// trackedBase is spec's status.trackedBaseImage as it should be now. The
// first digest seen is the starting point; a different digest later
// becomes RevisionDigest, so the moved tag builds exactly one new
// revision. A new base image starts over. Untracked specs keep what they
// have, so turning tracking off never switches back to an image of an
// older base.
func (c *Controller) trackedBase(ctx context.Context, spec *v1alpha1.ImageSpec) *v1alpha1.TrackedBaseImage {
	old := spec.Status.TrackedBaseImage
	key, ok := c.baseKey(spec)
	if !ok {
		return old
	}
	tb := &v1alpha1.TrackedBaseImage{Image: key.Image}
	if old != nil && old.Image == key.Image {
		tb = old.DeepCopy()
	}
	digest, known := c.baseTracker.Digest(key)
	if !known {
		c.baseTracker.Wake()
	} else if digest != tb.Digest {
		if tb.Digest != "" {
			tb.RevisionDigest = digest
			klog.FromContext(ctx).Info("Base image moved; building a new revision", "image", key.Image, "from", tb.Digest, "to", digest)
		}
		tb.Digest = digest
	}
	return tb
}

// revisionBaseDigest is the base digest spec's revision is tied to, if
// tracking tied it to one for its current base image.
func revisionBaseDigest(spec *v1alpha1.ImageSpec, normalizedBase string) string {
	if tb := spec.Status.TrackedBaseImage; tb != nil && tb.Image == normalizedBase {
		return tb.RevisionDigest
	}
	return ""
}
