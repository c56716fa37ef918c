package credentials

import (
	"fmt"
	"strings"

	"github.com/containers/image/v5/docker/reference"

	"github.com/imagespec/imagespec-controller/pkg/revision"
)

// PullScope says when a build pulls its base image with the push
// credentials. Those reach every repository under the prefix, other
// tenants' images included, so a build uses them only for its own images
// (Layout.Owns: a spec building on its earlier revision, or on a sibling
// in the namespaced layout) and for the repositories the operator shares
// with every tenant. Any other base is pulled with the ImageSpec's pull
// Secret alone, or anonymously. Both backends and base image tracking
// decide through it, so a spec pulls the same everywhere.
type PullScope struct {
	// Layout names the ImageSpecs' images (see revision.Layout.Owns).
	Layout revision.Layout
	// Shared are repositories, or repository path prefixes, that every
	// ImageSpec may build on through the push credentials, such as an
	// operator's curated bases (registry.example.com/bases).
	Shared []string
}

// ParseShared normalizes repository prefixes as image references are
// (a Docker Hub namespace gains docker.io/), refusing tags and digests.
func ParseShared(repos []string) ([]string, error) {
	var out []string
	for _, r := range repos {
		r = strings.TrimSuffix(strings.TrimSpace(r), "/")
		if r == "" {
			continue
		}
		// A trailing component makes "team" parse as a namespace rather
		// than as docker.io/library/team.
		named, err := reference.ParseNormalizedNamed(r + "/x")
		if err != nil || !reference.IsNameOnly(named) {
			return nil, fmt.Errorf("shared repository %q is not a repository or repository prefix (no tag or digest)", r)
		}
		out = append(out, strings.TrimSuffix(named.Name(), "/x"))
	}
	return out, nil
}

// UsesPush reports whether the build of target may pull base with the
// push credentials.
func (p PullScope) UsesPush(target, base string) bool {
	if p.Layout.Owns(target, base) {
		return true
	}
	named, err := reference.ParseNormalizedNamed(base)
	if err != nil {
		return false
	}
	for _, s := range p.Shared {
		if named.Name() == s || strings.HasPrefix(named.Name(), s+"/") {
			return true
		}
	}
	return false
}

// Pull returns the credentials the build of target pulls base with: the
// pull Secret's entries, over the push credentials when UsesPush allows.
func (p PullScope) Pull(target, base string, push, pull Auths) Auths {
	if !p.UsesPush(target, base) {
		push = nil
	}
	return Merged(push, pull)
}

// Explain says why a failed pull of base had no push credentials, when
// that is the likely cause: base is in the registry target is pushed to,
// outside the spec's own images and the shared repositories. Empty
// otherwise.
func (p PullScope) Explain(target, base string) string {
	t, err := reference.ParseNormalizedNamed(target)
	if err != nil {
		return ""
	}
	b, err := reference.ParseNormalizedNamed(base)
	if err != nil || reference.Domain(b) != reference.Domain(t) || p.UsesPush(target, base) {
		return ""
	}
	return "spec.baseImage is neither this ImageSpec's own image nor in a shared repository, so it is pulled without the push credentials: spec.pullSecret must name a Secret that may read it"
}
