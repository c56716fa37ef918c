// Package builtimage finds images the controller already pushed, so a
// revision that exists (a recreated job, a reverted spec, a controller that
// stopped after the push but before the status write) costs a manifest
// read, not a build. An image at a target tag counts only when its config
// carries names.ImageRevisionLabel with that tag, which every build
// writes: a tag someone else pushed over is built again.
package builtimage

import (
	"context"
	"errors"
	"fmt"

	"github.com/containers/image/v5/docker"
	"github.com/containers/image/v5/docker/reference"
	"github.com/containers/image/v5/image"
	"github.com/containers/image/v5/manifest"
	"github.com/docker/distribution/registry/api/errcode"
	v2 "github.com/docker/distribution/registry/api/v2"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/imagespec/imagespec-controller/pkg/credentials"
	"github.com/imagespec/imagespec-controller/pkg/names"
)

// UserAgent is what the registry sees for these reads.
const UserAgent = "imagespec-controller/built-image-check"

// Image is an image found at a target tag.
type Image struct {
	// Digest is the manifest digest at the tag.
	Digest string
	// BaseDigest is the base image digest buildah recorded in the
	// manifest; empty when absent.
	BaseDigest string
}

// Registry reads target images with the controller's push credentials.
type Registry struct {
	Auths credentials.Auths
	// CertDir holds ca.crt trusted for every registry, or a certs.d tree
	// of <host[:port]>/ca.crt. The system's CAs are trusted too.
	CertDir string
	// Insecure lists registries reached without TLS verification.
	Insecure []string
}

// Find reports the image at target when it carries target's revision
// label. A missing tag, or an image without the label, is (Image{}, false,
// nil); errors are for reads that failed (the caller builds then).
func (r *Registry) Find(ctx context.Context, target string) (Image, bool, error) {
	named, err := reference.ParseNormalizedNamed(target)
	if err != nil {
		return Image{}, false, fmt.Errorf("target %q: %w", target, err)
	}
	tagged, ok := named.(reference.NamedTagged)
	if !ok {
		return Image{}, false, fmt.Errorf("target %q has no tag", target)
	}
	ref, err := docker.NewReference(tagged)
	if err != nil {
		return Image{}, false, err
	}
	sys := r.Auths.SystemContext(named, r.CertDir, r.Insecure, UserAgent)
	src, err := ref.NewImageSource(ctx, sys)
	if err != nil {
		return Image{}, false, err
	}
	defer src.Close()
	raw, mimeType, err := src.GetManifest(ctx, nil)
	if err != nil {
		var ec errcode.ErrorCoder
		if errors.As(err, &ec) && ec.ErrorCode() == v2.ErrorCodeManifestUnknown {
			return Image{}, false, nil
		}
		return Image{}, false, err
	}
	if manifest.MIMETypeIsMultiImage(mimeType) {
		// Builds push single images.
		return Image{}, false, nil
	}
	img, err := image.FromUnparsedImage(ctx, sys, image.UnparsedInstance(src, nil))
	if err != nil {
		return Image{}, false, err
	}
	info, err := img.Inspect(ctx)
	if err != nil {
		return Image{}, false, err
	}
	if info.Labels[names.ImageRevisionLabel] != tagged.Tag() {
		return Image{}, false, nil
	}
	d, err := manifest.Digest(raw)
	if err != nil {
		return Image{}, false, err
	}
	found := Image{Digest: d.String()}
	if mimeType == imgspecv1.MediaTypeImageManifest {
		if m, err := manifest.OCI1FromManifest(raw); err == nil {
			found.BaseDigest = m.Annotations[names.BaseDigestAnnotation]
		}
	}
	return found, true, nil
}
