package supplychain

import (
	"context"

	"github.com/containers/image/v5/copy"
	"github.com/containers/image/v5/docker"
	"github.com/containers/image/v5/docker/reference"
	"github.com/containers/image/v5/signature"
	"github.com/containers/image/v5/signature/signer"
	"github.com/containers/image/v5/signature/sigstore"
	"github.com/containers/image/v5/types"
)

// sign adds a sigstore signature of the image at byDigest, for the
// identity tagged (what `skopeo copy docker://<tagged>` and a
// sigstoreSigned policy check). The image is copied onto itself: every
// blob is already there, so the copy costs a few HEAD requests, and the
// signature is written as a sigstore attachment.
func (a *Attester) sign(ctx context.Context, sys *types.SystemContext, byDigest reference.Canonical, tagged reference.NamedTagged) error {
	ref, err := docker.NewReference(byDigest)
	if err != nil {
		return err
	}
	s, err := sigstore.NewSigner(sigstore.WithPrivateKeyFile(a.keyFile, a.opts.Passphrase))
	if err != nil {
		return err
	}
	defer s.Close()
	// The source is the image just pushed with the controller's own
	// credentials: nothing to verify.
	policy, err := signature.NewPolicyContext(&signature.Policy{Default: signature.PolicyRequirements{signature.NewPRInsecureAcceptAnything()}})
	if err != nil {
		return err
	}
	defer func() { _ = policy.Destroy() }()
	_, err = copy.Image(ctx, policy, ref, ref, &copy.Options{
		SourceCtx:        sys,
		DestinationCtx:   sys,
		Signers:          []*signer.Signer{s},
		SignIdentity:     tagged,
		RemoveSignatures: true,
	})
	return err
}
