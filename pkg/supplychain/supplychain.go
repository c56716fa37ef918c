// Package supplychain attaches to every pushed image what users need to
// trust it: an SPDX 2.3 SBOM read from the image's own package manager
// records (dpkg, pip, conda), an in-toto statement with SLSA v1
// provenance, and, with a signing key, a sigstore signature.
//
// It works from the registry alone, after the push, so both backends get
// the same documents and the signing key never enters a build pod. The
// SBOM and provenance are OCI 1.1 artifacts whose subject is the image
// manifest; since not every registry has the referrers API (distribution
// 2.8 has not), the referrers tag schema's index at
// <repository>:sha256-<hex> is written too, which clients (oras, skopeo)
// read where the API is missing. Signatures are cosign-compatible
// sigstore attachments (<repository>:sha256-<hex>.sig).
package supplychain

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containers/image/v5/docker"
	"github.com/containers/image/v5/docker/reference"
	"github.com/containers/image/v5/manifest"
	"github.com/containers/image/v5/types"
	digest "github.com/opencontainers/go-digest"
	"github.com/secure-systems-lab/go-securesystemslib/encrypted"

	"github.com/imagespec/imagespec-controller/pkg/credentials"
)

// UserAgent is what the registry sees for these requests.
const UserAgent = "imagespec-controller/supply-chain"

// Artifact types and the annotation that marks the controller's artifacts
// in the referrers index.
const (
	ArtifactTypeSBOM       = "application/spdx+json"
	ArtifactTypeProvenance = "application/vnd.in-toto+json"
	ArtifactAnnotation     = "io.imagespec.artifact"
)

// Subject is a pushed image and what went into it.
type Subject struct {
	// Image is the pushed target, repository and tag; Digest its manifest
	// digest.
	Image  string
	Digest string
	// BaseImage as the spec wrote it, BaseDigest the digest the build
	// used (may be empty when unknown).
	BaseImage  string
	BaseDigest string
	// Apt, Pip and Conda are the spec's package entries.
	Apt, Pip, Conda []string
	// AddedLayers is how many of the image's last layers the build made;
	// the rest are the base image's.
	AddedLayers int
	// Parameters: ExternalParameters are the user's inputs, Internal the
	// controller's (package sources, job); both go into the provenance
	// as they are.
	ExternalParameters map[string]any
	InternalParameters map[string]any
	// Sources are package source URLs (mirror, indexes, channels).
	Sources []string
	// Backend built it; InvocationID names the build (the job's UID).
	Backend      string
	InvocationID string
	Started      time.Time
	Finished     time.Time
}

// Repository is Image without its tag.
func (s Subject) Repository() string {
	named, err := reference.ParseNormalizedNamed(s.Image)
	if err != nil {
		return s.Image
	}
	return reference.TrimNamed(named).String()
}

// Result is where the artifacts are.
type Result struct {
	SBOM       string
	Packages   int
	Provenance string
	SignedBy   string
}

// Options configure an Attester.
type Options struct {
	// Auths are the push credentials; CertDir and Insecure as for the
	// controller's other registry requests.
	Auths    credentials.Auths
	CertDir  string
	Insecure []string
	// BuilderID is the provenance's builder.id; Tool names the SBOM's
	// creator.
	BuilderID string
	Tool      string
	// SigningKey is a sigstore (cosign) encrypted private key in PEM,
	// Passphrase its passphrase; no key, no signature.
	SigningKey []byte
	Passphrase []byte
	// WorkDir holds the registries.d configuration and the key file; a
	// private temporary directory when empty.
	WorkDir string
}

// Attester makes and attaches an image's SBOM, provenance and signature.
type Attester struct {
	opts        Options
	layers      *layerCache
	workDir     string
	ownWorkDir  bool
	keyFile     string
	fingerprint string
	now         func() time.Time
}

// BuildType is the SLSA buildType of the controller's builds.
const BuildType = "https://github.com/imagespec/imagespec-controller/buildtypes/imagespec/v1"

// New prepares an Attester; a signing key is checked (and its passphrase
// tried) here, so a wrong key fails at startup, not at the first push.
func New(opts Options) (*Attester, error) {
	a := &Attester{opts: opts, layers: newLayerCache(1024), now: time.Now}
	if len(opts.SigningKey) > 0 {
		fp, err := Fingerprint(opts.SigningKey, opts.Passphrase)
		if err != nil {
			return nil, err
		}
		a.fingerprint = fp
	}
	a.workDir = opts.WorkDir
	if a.workDir == "" {
		d, err := os.MkdirTemp("", "imagespec-supply-chain-")
		if err != nil {
			return nil, err
		}
		a.workDir, a.ownWorkDir = d, true
	}
	if err := a.writeConfig(); err != nil {
		_ = a.Close()
		return nil, err
	}
	return a, nil
}

// writeConfig writes the registries.d configuration and the key file.
func (a *Attester) writeConfig() error {
	// Signatures go to the registry as sigstore attachments (what cosign
	// and skopeo read), not to a lookaside server.
	regd := filepath.Join(a.workDir, "registries.d")
	if err := os.MkdirAll(regd, 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(regd, "imagespec.yaml"), []byte("default-docker:\n  use-sigstore-attachments: true\n"), 0o600); err != nil {
		return err
	}
	if len(a.opts.SigningKey) > 0 {
		a.keyFile = filepath.Join(a.workDir, "signing.key")
		return os.WriteFile(a.keyFile, a.opts.SigningKey, 0o600)
	}
	return nil
}

// Close removes the private temporary directory New made (with the key
// file in it); the Attester must not be used afterwards.
func (a *Attester) Close() error {
	if !a.ownWorkDir {
		return nil
	}
	return os.RemoveAll(a.workDir)
}

// Signs reports whether images get a signature, and by which key.
func (a *Attester) Signs() (bool, string) { return a.keyFile != "", a.fingerprint }

// Fingerprint checks an encrypted sigstore private key against its
// passphrase and returns "sha256:<hex>" of its public key (DER).
func Fingerprint(key, passphrase []byte) (string, error) {
	block, _ := pem.Decode(key)
	if block == nil {
		return "", errors.New("signing key: not PEM")
	}
	if !strings.HasPrefix(block.Type, "ENCRYPTED ") {
		return "", fmt.Errorf("signing key: a %q block; want an encrypted sigstore or cosign private key", block.Type)
	}
	der, err := encrypted.Decrypt(block.Bytes, passphrase)
	if err != nil {
		// The library's message says nothing of the key itself.
		return "", errors.New("signing key: cannot decrypt it with the passphrase given")
	}
	priv, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return "", fmt.Errorf("signing key: %w", err)
	}
	signer, ok := priv.(crypto.Signer)
	if !ok {
		return "", errors.New("signing key: not a signing key")
	}
	pub, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		return "", fmt.Errorf("signing key: %w", err)
	}
	sum := sha256.Sum256(pub)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

func (a *Attester) sys(named reference.Named) *types.SystemContext {
	sys := a.opts.Auths.SystemContext(named, a.opts.CertDir, a.opts.Insecure, UserAgent)
	sys.RegistriesDirPath = filepath.Join(a.workDir, "registries.d")
	return sys
}

// Attest reads the image s names, then attaches its SBOM and provenance
// and signs it when a key is set.
func (a *Attester) Attest(ctx context.Context, s Subject) (Result, error) {
	named, err := reference.ParseNormalizedNamed(s.Image)
	if err != nil {
		return Result{}, fmt.Errorf("image %q: %w", s.Image, err)
	}
	dig, err := digest.Parse(s.Digest)
	if err != nil {
		return Result{}, fmt.Errorf("image digest %q: %w", s.Digest, err)
	}
	repo := reference.TrimNamed(named)
	byDigest, err := reference.WithDigest(repo, dig)
	if err != nil {
		return Result{}, err
	}
	sys := a.sys(named)
	ref, err := docker.NewReference(byDigest)
	if err != nil {
		return Result{}, err
	}
	src, err := ref.NewImageSource(ctx, sys)
	if err != nil {
		return Result{}, fmt.Errorf("reading %s: %w", byDigest, err)
	}
	defer src.Close()
	raw, mimeType, err := src.GetManifest(ctx, nil)
	if err != nil {
		return Result{}, fmt.Errorf("reading %s: %w", byDigest, err)
	}
	if manifest.MIMETypeIsMultiImage(mimeType) {
		return Result{}, fmt.Errorf("%s is an image index; builds push single images", byDigest)
	}
	m, err := manifest.FromBlob(raw, mimeType)
	if err != nil {
		return Result{}, err
	}
	var layers []types.BlobInfo
	for _, l := range m.LayerInfos() {
		layers = append(layers, l.BlobInfo)
	}
	inv, err := a.scanImage(ctx, src, layers, max(len(layers)-s.AddedLayers, 0))
	if err != nil {
		return Result{}, fmt.Errorf("reading the package records of %s: %w", byDigest, err)
	}
	inv.markRequested(s.Apt, s.Pip, s.Conda)

	now := a.now()
	doc, err := sbom(s, inv, a.opts.Tool, now)
	if err != nil {
		return Result{}, err
	}
	subject := descriptor{MediaType: mimeType, Digest: dig, Size: int64(len(raw))}
	sbomDesc, err := a.attach(ctx, sys, repo, subject, ArtifactTypeSBOM, "sbom", doc, now)
	if err != nil {
		return Result{}, fmt.Errorf("attaching the SBOM: %w", err)
	}
	prov, err := provenance(s, inv, a.opts.BuilderID, sbomDesc)
	if err != nil {
		return Result{}, err
	}
	provDesc, err := a.attach(ctx, sys, repo, subject, ArtifactTypeProvenance, "provenance", prov, now)
	if err != nil {
		return Result{}, fmt.Errorf("attaching the provenance: %w", err)
	}
	if err := a.updateReferrersTag(ctx, sys, repo, dig, sbomDesc, provDesc); err != nil {
		return Result{}, fmt.Errorf("writing the referrers tag: %w", err)
	}
	res := Result{SBOM: sbomDesc.Digest.String(), Packages: len(inv.Packages), Provenance: provDesc.Digest.String()}
	if a.keyFile != "" {
		tagged, ok := named.(reference.NamedTagged)
		if !ok {
			return Result{}, fmt.Errorf("image %q has no tag to sign", s.Image)
		}
		if err := a.sign(ctx, sys, byDigest, tagged); err != nil {
			return Result{}, fmt.Errorf("signing: %w", err)
		}
		res.SignedBy = a.fingerprint
	}
	return res, nil
}
