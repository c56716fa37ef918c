// Package skopeo provides the upstream skopeo the tests verify sigstore
// signatures with: Debian's build has sigstore verification disabled.
package skopeo

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"

	"github.com/imagespec/imagespec-controller/test/framework/controlplane"
)

var (
	once sync.Once
	path string
	err  error
)

// Ensure returns the path of the pinned skopeo, building it with
// hack/install-skopeo.sh when the cache lacks it (about a minute when cold,
// milliseconds when warm). Build progress goes to stderr.
func Ensure(ctx context.Context) (string, error) {
	once.Do(func() { path, err = install(ctx) })
	return path, err
}

func install(ctx context.Context) (string, error) {
	root, err := controlplane.RepoRoot()
	if err != nil {
		return "", err
	}
	bin, err := controlplane.RunHackScript(ctx, root, "install-skopeo.sh")
	if err != nil {
		return "", err
	}
	if !filepath.IsAbs(bin) {
		return "", fmt.Errorf("install-skopeo.sh printed no binary path")
	}
	return bin, nil
}
