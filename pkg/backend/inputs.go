package backend

import (
	"strings"

	"github.com/containers/image/v5/docker/reference"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/dockerfile"
	"github.com/imagespec/imagespec-controller/pkg/names"
)

// Inputs maps API fields onto the renderer's inputs. The base image's user
// is left empty: a backend resolves it from the pulled base image.
func Inputs(baseImage string, p v1alpha1.Packages, s *v1alpha1.PackageSources) dockerfile.Inputs {
	in := dockerfile.Inputs{
		BaseImage: baseImage,
		Packages:  dockerfile.Packages{Apt: p.Apt, Pip: p.Pip, Conda: p.Conda},
	}
	if s != nil {
		in.Sources = dockerfile.Sources{
			AptMirror:         s.AptMirror,
			PipIndexURL:       s.PipIndexURL,
			PipExtraIndexURLs: s.PipExtraIndexURLs,
			PipTrustedHosts:   s.PipTrustedHosts,
			CondaChannels:     s.CondaChannels,
		}
	}
	return in
}

// JobInputs is Inputs for a job's spec.
func JobInputs(job *v1alpha1.ImageSpecJob) dockerfile.Inputs {
	return Inputs(job.Spec.BaseImage, job.Spec.Packages, job.Spec.PackageSources)
}

// SourcesToAPI records configured package sources on a job; nil when none
// are set, so jobs of clusters with internet access stay short.
func SourcesToAPI(s dockerfile.Sources) *v1alpha1.PackageSources {
	if s.AptMirror == "" && s.PipIndexURL == "" && len(s.PipExtraIndexURLs) == 0 && len(s.PipTrustedHosts) == 0 && len(s.CondaChannels) == 0 {
		return nil
	}
	return &v1alpha1.PackageSources{
		AptMirror:         s.AptMirror,
		PipIndexURL:       s.PipIndexURL,
		PipExtraIndexURLs: s.PipExtraIndexURLs,
		PipTrustedHosts:   s.PipTrustedHosts,
		CondaChannels:     s.CondaChannels,
	}
}

// RevisionLabel is the names.ImageRevisionLabel value of a job's image:
// the tag of its target. Empty for a target without a tag (never made by
// the controller).
func RevisionLabel(job *v1alpha1.ImageSpecJob) string {
	named, err := reference.ParseNormalizedNamed(job.Spec.TargetImage)
	if err != nil {
		return ""
	}
	if tagged, ok := named.(reference.Tagged); ok {
		return tagged.Tag()
	}
	return ""
}

// ImageLabel is the label every build adds to its image, "key=value"
// (empty for a target without a tag): buildah applies it in a last LABEL
// step of its own, so it never spoils the layer cache of the steps before.
func ImageLabel(job *v1alpha1.ImageSpecJob) string {
	if rev := RevisionLabel(job); rev != "" {
		return names.ImageRevisionLabel + "=" + rev
	}
	return ""
}

// BuildLayers is how many layers a job's build adds on top of its base
// image: one per RUN step of its Dockerfile (both backends build with
// --layers; USER and LABEL steps add none).
func BuildLayers(job *v1alpha1.ImageSpecJob) (int, error) {
	df, err := dockerfile.Render(JobInputs(job))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, line := range strings.Split(string(df), "\n") {
		if strings.HasPrefix(line, "RUN ") {
			n++
		}
	}
	return n, nil
}
