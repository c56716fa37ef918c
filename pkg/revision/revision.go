// Package revision names builds: a short tag that identifies what an image
// is built from, and the image reference it is pushed to.
//
// # What the tag identifies
//
// Tag hashes the normalized build inputs (see dockerfile.Normalize):
//
//   - the base image reference, fully qualified, so ubuntu and
//     docker.io/library/ubuntu:latest are the same build;
//   - the apt, conda and pip lists, each sorted with exact duplicates
//     removed. Every package manager gets its whole list in one call and
//     resolves it as a set, so reordering a list changes nothing in the
//     image and must not cause a rebuild. The Dockerfile is rendered in that
//     same order, so one tag always means one Dockerfile;
//   - updateTime, the user's explicit "rebuild now".
//
// A revision is the tag together with the repository it is pushed to
// (TargetImage: <repo prefix>/<name>:<tag>, or another Layout): the
// controller matches jobs
// by their whole target image, so a new repository prefix or registry
// builds every ImageSpec again under the new name, with the same tag.
//
// Not part of the identity:
//
//   - the package sources (apt mirror, pip indexes and trusted hosts, conda
//     channels). They are controller settings that say where packages come
//     from, not what is installed: changing a mirror must not rename and
//     rebuild every image in the cluster at once. Each job records the
//     sources it used (spec.packageSources); to rebuild with new sources,
//     change updateTime;
//   - the pull and push secrets: rotating credentials must not rebuild
//     every image;
//   - the base image's configured user (Inputs.User). It is a property of
//     the base image, already identified by its reference, and it is only
//     known once the base image's configuration has been read, which may
//     happen after the tag is needed to name the build;
//   - the base image's digest behind a tag, unless base image tracking saw
//     the tag move: then TagWithBase adds the new digest, so the moved tag
//     is one new revision. Without tracking a moved tag is picked up only
//     through updateTime or a digest reference.
//
// # Stability
//
// The hash covers a versioned, length-prefixed encoding of plain strings,
// independent of Go's map order, struct layout or encoders, so a tag stays
// the same across Go and library versions. Changing what goes into the
// identity means bumping encodingVersion, which renames every build once.
package revision

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"

	"github.com/containers/image/v5/docker/reference"
	"github.com/imagespec/imagespec-controller/pkg/dockerfile"
)

// TagLength is the number of hex digits in a tag (48 bits).
const TagLength = 12

const encodingVersion = "imagespec-revision/v1"

// Tag returns the short lowercase hex tag identifying in and updateTime.
// Callers validate in first; Tag itself never fails.
func Tag(in dockerfile.Inputs, updateTime string) string {
	return TagWithBase(in, updateTime, "")
}

// TagWithBase is Tag for a revision tied to the base image digest
// baseDigest (base image tracking saw the base tag move to it). An empty
// baseDigest gives Tag's value, so every tag made before tracking, or
// while the tag has not moved, is unchanged.
func TagWithBase(in dockerfile.Inputs, updateTime, baseDigest string) string {
	n := dockerfile.Normalize(in)
	h := sha256.New()
	writeString(h, encodingVersion)
	writeString(h, "baseImage")
	writeString(h, n.BaseImage)
	writeList(h, "apt", n.Packages.Apt)
	writeList(h, "conda", n.Packages.Conda)
	writeList(h, "pip", n.Packages.Pip)
	// Package sources left the identity; their fields stay in the
	// encoding, empty, so every tag made without sources is unchanged.
	writeString(h, "aptMirror")
	writeString(h, "")
	writeString(h, "pipIndexURL")
	writeString(h, "")
	writeList(h, "pipExtraIndexURLs", nil)
	writeList(h, "pipTrustedHosts", nil)
	writeList(h, "condaChannels", nil)
	writeString(h, "updateTime")
	writeString(h, updateTime)
	if baseDigest != "" {
		writeString(h, "baseDigest")
		writeString(h, baseDigest)
	}
	return hex.EncodeToString(h.Sum(nil))[:TagLength]
}

// writeString writes len:bytes, so no two different sequences of strings
// share an encoding.
func writeString(h hash.Hash, s string) {
	h.Write([]byte(strconv.Itoa(len(s)) + ":" + s))
}

func writeList(h hash.Hash, name string, list []string) {
	writeString(h, name)
	writeString(h, strconv.Itoa(len(list)))
	for _, s := range list {
		writeString(h, s)
	}
}

// TargetImage returns <repoPrefix>/<name>:<tag>, fully qualified.
// repoPrefix is a registry host with an optional path (localhost:5000/team,
// gcr.io/my-private-repo) or a Docker Hub namespace; the registry is
// recognized the way image references define it, so localhost:5000 stays
// the registry.
func TargetImage(repoPrefix, name, tag string) (string, error) {
	if repoPrefix == "" {
		return "", errors.New("target repository prefix is empty")
	}
	if strings.HasSuffix(repoPrefix, "/") || strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("target repository %q/%q: prefix and name are joined with a single '/'", repoPrefix, name)
	}
	named, err := reference.ParseNormalizedNamed(repoPrefix + "/" + name)
	if err != nil {
		return "", fmt.Errorf("target repository %q is not a valid image repository: %w", repoPrefix+"/"+name, err)
	}
	if !reference.IsNameOnly(named) {
		return "", fmt.Errorf("target repository %q must not carry a tag or digest", repoPrefix+"/"+name)
	}
	tagged, err := reference.WithTag(named, tag)
	if err != nil {
		return "", fmt.Errorf("target tag %q: %w", tag, err)
	}
	return tagged.String(), nil
}

// Layout says how an ImageSpec's images are named under the repository
// prefix.
type Layout string

const (
	// LayoutPrefix is PrimeHub's <prefix>/<name>:<tag>: ImageSpecs of the
	// same name in two namespaces share a repository.
	LayoutPrefix Layout = "prefix"
	// LayoutNamespaced is <prefix>/<namespace>/<name>:<tag>: every
	// namespace has repositories of its own.
	LayoutNamespaced Layout = "namespaced"
	// LayoutSingle is PrimeHub's single-repository mode
	// <prefix>:<name>-<tag>, for registries that allow one repository per
	// account; the prefix is that repository.
	LayoutSingle Layout = "single"
)

// Layouts lists the layouts ParseLayout accepts.
var Layouts = []Layout{LayoutPrefix, LayoutNamespaced, LayoutSingle}

// ParseLayout accepts a layout's name; empty is LayoutPrefix.
func ParseLayout(s string) (Layout, error) {
	if s == "" {
		return LayoutPrefix, nil
	}
	for _, l := range Layouts {
		if string(l) == s {
			return l, nil
		}
	}
	return "", fmt.Errorf("unknown repository layout %q (want one of %v)", s, Layouts)
}

// Target is the image an ImageSpec's revision is pushed to under l.
func (l Layout) Target(repoPrefix, namespace, name, tag string) (string, error) {
	switch l {
	case LayoutPrefix, "":
		return TargetImage(repoPrefix, name, tag)
	case LayoutNamespaced:
		if namespace == "" {
			return "", errors.New("the namespaced layout needs the ImageSpec's namespace")
		}
		return TargetImage(repoPrefix+"/"+namespace, name, tag)
	case LayoutSingle:
		if repoPrefix == "" {
			return "", errors.New("target repository prefix is empty")
		}
		named, err := reference.ParseNormalizedNamed(repoPrefix)
		if err != nil {
			return "", fmt.Errorf("target repository %q is not a valid image repository: %w", repoPrefix, err)
		}
		if !reference.IsNameOnly(named) {
			return "", fmt.Errorf("target repository %q must not carry a tag or digest", repoPrefix)
		}
		tagged, err := reference.WithTag(named, name+"-"+tag)
		if err != nil {
			return "", fmt.Errorf("target tag %q (the single-repository layout puts the ImageSpec's name in the tag): %w", name+"-"+tag, err)
		}
		return tagged.String(), nil
	}
	return "", fmt.Errorf("unknown repository layout %q", l)
}

// Owns reports whether image is one of the images of the ImageSpec whose
// revision is pushed to target under l: another revision of the same
// ImageSpec (prefix layout: the same repository; single layout: the same
// repository and a tag of this ImageSpec's name, never a digest, which
// would pick any image of the shared repository) or, in the namespaced
// layout, any image of the same namespace. Both references are parsed the
// way image references are normalized; anything unparsable is not owned.
func (l Layout) Owns(target, image string) bool {
	t, err := reference.ParseNormalizedNamed(target)
	if err != nil {
		return false
	}
	img, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return false
	}
	switch l {
	case LayoutPrefix, "":
		return img.Name() == t.Name()
	case LayoutNamespaced:
		i := strings.LastIndex(t.Name(), "/")
		return i > 0 && strings.HasPrefix(img.Name(), t.Name()[:i+1])
	case LayoutSingle:
		tt, ok := t.(reference.Tagged)
		it, itok := img.(reference.Tagged)
		if _, pinned := img.(reference.Digested); pinned || !ok || !itok || img.Name() != t.Name() {
			return false
		}
		name, ok := singleLayoutName(tt.Tag())
		other, otherOK := singleLayoutName(it.Tag())
		return ok && otherOK && name == other
	}
	return false
}

// singleLayoutName is the ImageSpec name in a single-layout tag
// <name>-<TagLength hex digits>. The hex part has a fixed length, so the
// name is exact: "a-b-<hex>" is ImageSpec a-b's, never a's.
func singleLayoutName(tag string) (string, bool) {
	i := len(tag) - TagLength - 1
	if i < 1 || tag[i] != '-' {
		return "", false
	}
	for _, c := range tag[i+1:] {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return "", false
		}
	}
	return tag[:i], true
}
