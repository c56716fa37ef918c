package supplychain

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/containers/image/v5/docker"
	"github.com/containers/image/v5/docker/reference"
	"github.com/containers/image/v5/pkg/blobinfocache/none"
	"github.com/containers/image/v5/types"
	"github.com/docker/distribution/registry/api/errcode"
	v2 "github.com/docker/distribution/registry/api/v2"
	digest "github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// descriptor is an OCI descriptor with the OCI 1.1 fields.
type descriptor = imgspecv1.Descriptor

// The empty config of OCI 1.1 artifacts: the two bytes "{}".
var emptyConfig = []byte("{}")

// attach pushes payload as an artifact whose subject is the image and
// returns its manifest's descriptor, as the referrers index lists it.
func (a *Attester) attach(ctx context.Context, sys *types.SystemContext, repo reference.Named, subject descriptor, artifactType, kind string, payload []byte, now time.Time) (descriptor, error) {
	ref, err := docker.NewReferenceUnknownDigest(repo)
	if err != nil {
		return descriptor{}, err
	}
	dest, err := ref.NewImageDestination(ctx, sys)
	if err != nil {
		return descriptor{}, err
	}
	defer dest.Close()
	put := func(data []byte, isConfig bool) (digest.Digest, error) {
		d := digest.FromBytes(data)
		_, err := dest.PutBlob(ctx, bytes.NewReader(data), types.BlobInfo{Digest: d, Size: int64(len(data))}, none.NoCache, isConfig)
		return d, err
	}
	configDigest, err := put(emptyConfig, true)
	if err != nil {
		return descriptor{}, err
	}
	payloadDigest, err := put(payload, false)
	if err != nil {
		return descriptor{}, err
	}
	annotations := map[string]string{
		ArtifactAnnotation:          kind,
		imgspecv1.AnnotationCreated: now.UTC().Format(time.RFC3339),
	}
	m := imgspecv1.Manifest{
		MediaType:    imgspecv1.MediaTypeImageManifest,
		ArtifactType: artifactType,
		Config:       descriptor{MediaType: imgspecv1.MediaTypeEmptyJSON, Digest: configDigest, Size: int64(len(emptyConfig))},
		Layers:       []descriptor{{MediaType: artifactType, Digest: payloadDigest, Size: int64(len(payload))}},
		Subject:      &subject,
		Annotations:  annotations,
	}
	m.SchemaVersion = 2
	raw, err := json.Marshal(m)
	if err != nil {
		return descriptor{}, err
	}
	if err := dest.PutManifest(ctx, raw, nil); err != nil {
		return descriptor{}, err
	}
	if err := dest.Commit(ctx, nil); err != nil {
		return descriptor{}, err
	}
	return descriptor{
		MediaType:    imgspecv1.MediaTypeImageManifest,
		ArtifactType: artifactType,
		Digest:       digest.FromBytes(raw),
		Size:         int64(len(raw)),
		Annotations:  annotations,
	}, nil
}

// ReferrersTag is the tag the referrers tag schema uses for an image
// digest: sha256-<hex>.
func ReferrersTag(d digest.Digest) string {
	return strings.ReplaceAll(d.String(), ":", "-")
}

// updateReferrersTag writes the referrers tag schema's index for the image:
// what was listed stays, except earlier artifacts of the controller of the
// same kinds (a revision attested again), which the new ones replace.
func (a *Attester) updateReferrersTag(ctx context.Context, sys *types.SystemContext, repo reference.Named, subject digest.Digest, added ...descriptor) error {
	tagged, err := reference.WithTag(repo, ReferrersTag(subject))
	if err != nil {
		return err
	}
	ref, err := docker.NewReference(tagged)
	if err != nil {
		return err
	}
	index := imgspecv1.Index{MediaType: imgspecv1.MediaTypeImageIndex}
	index.SchemaVersion = 2
	if src, err := ref.NewImageSource(ctx, sys); err == nil {
		raw, _, err := src.GetManifest(ctx, nil)
		src.Close()
		switch {
		case err == nil:
			if err := json.Unmarshal(raw, &index); err != nil {
				return fmt.Errorf("%s holds no OCI index: %w", tagged, err)
			}
		case !isManifestUnknown(err):
			return err
		}
	} else if !isManifestUnknown(err) {
		return err
	}
	replaced := map[string]bool{}
	for _, d := range added {
		replaced[d.Annotations[ArtifactAnnotation]] = true
	}
	kept := index.Manifests[:0]
	for _, d := range index.Manifests {
		if !replaced[d.Annotations[ArtifactAnnotation]] {
			kept = append(kept, d)
		}
	}
	index.Manifests = append(kept, added...)
	raw, err := json.Marshal(index)
	if err != nil {
		return err
	}
	dest, err := ref.NewImageDestination(ctx, sys)
	if err != nil {
		return err
	}
	defer dest.Close()
	if err := dest.PutManifest(ctx, raw, nil); err != nil {
		return err
	}
	return dest.Commit(ctx, nil)
}

func isManifestUnknown(err error) bool {
	var ec errcode.ErrorCoder
	return errors.As(err, &ec) && ec.ErrorCode() == v2.ErrorCodeManifestUnknown
}
