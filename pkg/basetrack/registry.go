package basetrack

import (
	"context"
	"fmt"
	"strings"

	"github.com/containers/image/v5/docker"
	"github.com/containers/image/v5/docker/reference"
	"k8s.io/client-go/kubernetes"

	"github.com/imagespec/imagespec-controller/pkg/credentials"
)

// UserAgent is what the registry sees for base image checks.
const UserAgent = "imagespec-controller/base-image-tracker"

// RegistryCheck reads a tag's manifest digest with one HEAD request
// (besides the registry's /v2/ ping).
type RegistryCheck struct {
	// Kube reads the pull Secrets keys name.
	Kube kubernetes.Interface
	// Own are the controller's credentials, used for keys with
	// PushCredentials; a key's pull Secret entries go on top of them, as
	// builds merge them.
	Own credentials.Auths
	// CertDir holds ca.crt trusted for every registry, or a certs.d tree
	// of <host[:port]>/ca.crt. The system's CAs are trusted too.
	CertDir string
	// Insecure lists registries reached without TLS verification.
	Insecure []string
}

// Check implements Options.Check.
func (r *RegistryCheck) Check(ctx context.Context, key Key) (string, error) {
	named, err := reference.ParseNormalizedNamed(key.Image)
	if err != nil {
		return "", fmt.Errorf("base image %q: %w", key.Image, err)
	}
	ref, err := docker.NewReference(reference.TagNameOnly(named))
	if err != nil {
		return "", fmt.Errorf("base image %q: %w", key.Image, err)
	}
	var auths credentials.Auths
	if key.PushCredentials {
		auths = r.Own
	}
	if key.PullSecret != "" {
		ns, name, _ := strings.Cut(key.PullSecret, "/")
		pull, err := credentials.Read(ctx, r.Kube, ns, name)
		if err != nil {
			return "", err
		}
		auths = credentials.Merged(auths, pull)
	}
	sys := auths.SystemContext(named, r.CertDir, r.Insecure, UserAgent)
	digest, err := docker.GetDigest(ctx, sys, ref)
	if err != nil {
		return "", err
	}
	return digest.String(), nil
}
