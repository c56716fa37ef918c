package controller

import (
	"fmt"
	"strings"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/backend"
	"github.com/imagespec/imagespec-controller/pkg/dockerfile"
)

// maxCauseMessage keeps spec.causeMessage under its schema limit.
const maxCauseMessage = 1000

// causeOf says why a new job (attempt of rev) is created for spec, and
// what changed against the job the spec showed before.
func causeOf(spec *v1alpha1.ImageSpec, jobs []*v1alpha1.ImageSpecJob, rev desiredRevision, attempt int) (string, string) {
	if len(jobs) == 0 {
		return v1alpha1.CauseFirstBuild, "first build of " + rev.targetImage
	}
	if attempts := attemptsOf(jobs, rev.targetImage); len(attempts) > 0 {
		last := attempts[0]
		return v1alpha1.CauseRetry, fmt.Sprintf("attempt %d; job %s ended %s (%s)", attempt, last.Name, last.Status.Phase, last.Status.Reason)
	}
	prev := previousJob(spec, jobs)
	if diff := specDiff(prev.Spec.BaseImage, prev.Spec.Packages, spec.Spec.BaseImage, spec.Spec.Packages); diff != "" {
		return v1alpha1.CauseSpecChange, clip(diff)
	}
	if prev.Spec.UpdateTime != spec.Spec.UpdateTime {
		return v1alpha1.CauseRebuild, clip(fmt.Sprintf("updateTime: %q -> %q", prev.Spec.UpdateTime, spec.Spec.UpdateTime))
	}
	if rev.baseDigest != "" && prev.Annotations[BaseImageDigestAnnotation] != rev.baseDigest {
		// What the previous build really used, else what it was tied to.
		old := prev.Status.BaseImageDigest
		if old == "" {
			old = prev.Annotations[BaseImageDigestAnnotation]
		}
		if old == "" {
			old = "unknown digest"
		}
		return v1alpha1.CauseBaseImageUpdate, clip(fmt.Sprintf("%s: %s -> %s", spec.Spec.BaseImage, old, rev.baseDigest))
	}
	if prev.Spec.TargetImage != rev.targetImage {
		return v1alpha1.CauseRepositoryChange, clip(fmt.Sprintf("%s -> %s", prev.Spec.TargetImage, rev.targetImage))
	}
	return v1alpha1.CauseSpecChange, ""
}

// previousJob is the job the spec's status names, else its newest job.
func previousJob(spec *v1alpha1.ImageSpec, jobs []*v1alpha1.ImageSpecJob) *v1alpha1.ImageSpecJob {
	var newest *v1alpha1.ImageSpecJob
	for _, j := range jobs {
		if j.Name == spec.Status.JobName {
			return j
		}
		if newest == nil || newerThan(j, newest) {
			newest = j
		}
	}
	return newest
}

// specDiff is a short, human-readable diff of the build inputs, e.g.
// "baseImage: a -> b; pip: +requests>=2.31; apt: -vim". Lists are compared
// as the sets each package manager resolves.
func specDiff(oldBase string, oldPkgs v1alpha1.Packages, newBase string, newPkgs v1alpha1.Packages) string {
	o := dockerfile.Normalize(backend.Inputs(oldBase, oldPkgs, nil))
	n := dockerfile.Normalize(backend.Inputs(newBase, newPkgs, nil))
	var parts []string
	if o.BaseImage != n.BaseImage {
		parts = append(parts, fmt.Sprintf("baseImage: %s -> %s", oldBase, newBase))
	}
	for _, m := range []struct {
		name     string
		old, new []string
	}{{"apt", o.Packages.Apt, n.Packages.Apt}, {"conda", o.Packages.Conda, n.Packages.Conda}, {"pip", o.Packages.Pip, n.Packages.Pip}} {
		var changes []string
		for _, p := range m.new {
			if !contains(m.old, p) {
				changes = append(changes, "+"+p)
			}
		}
		for _, p := range m.old {
			if !contains(m.new, p) {
				changes = append(changes, "-"+p)
			}
		}
		if len(changes) > 0 {
			parts = append(parts, m.name+": "+strings.Join(changes, " "))
		}
	}
	return strings.Join(parts, "; ")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func clip(s string) string {
	if len(s) <= maxCauseMessage {
		return s
	}
	s = s[:maxCauseMessage]
	for len(s) > 0 && s[len(s)-1]&0xC0 == 0x80 {
		s = s[:len(s)-1]
	}
	if len(s) > 0 && s[len(s)-1] >= 0xC0 {
		s = s[:len(s)-1]
	}
	return s + "..."
}
