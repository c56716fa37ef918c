package controller

import (
	"context"
	"errors"
	"strings"
	"testing"

	core "k8s.io/client-go/testing"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/backend"
	"github.com/imagespec/imagespec-controller/pkg/builtimage"
	"github.com/imagespec/imagespec-controller/pkg/supplychain"
)

// A pushed image gets its SBOM, provenance and signature before the job
// succeeds: status.supplyChain says where they are. The subject carries
// the inputs, the base digest and how many layers the build added. When
// they cannot be attached, the job fails SupplyChainFailed naming the
// pushed image, without the registry password. An already built image is
// attested too. A job synced again is not attested again.
func TestSupplyChain(t *testing.T) {
	const digest = "sha256:" + "cd34cd34cd34cd34cd34cd34cd34cd34cd34cd34cd34cd34cd34cd34cd34cd34"
	for _, c := range []struct {
		name    string
		err     error
		already bool
	}{
		{name: "attached"},
		{name: "failed", err: errors.New("registry said no to " + testPassword)},
		{name: "already-built", already: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := newSpec("app", v1alpha1.Packages{Apt: []string{"curl"}, Pip: []string{"requests"}})
			var got []supplychain.Subject
			opts := defaultOptions()
			opts.SupplyChain = true
			opts.Attest = func(ctx context.Context, s supplychain.Subject) (supplychain.Result, error) {
				if _, bounded := ctx.Deadline(); !bounded {
					t.Error("attaching has no deadline")
				}
				got = append(got, s)
				return supplychain.Result{SBOM: "sha256:5b", Packages: 42, Provenance: "sha256:9a", SignedBy: "sha256:ke"}, c.err
			}
			if c.already {
				opts.BuildExisting = false
				opts.FindBuilt = func(context.Context, string) (builtimage.Image, bool, error) {
					return builtimage.Image{Digest: digest, BaseDigest: baseDigest1}, true, nil
				}
			}
			f0 := newFixture(t, opts, spec)
			job := f0.jobFor(spec, "")
			if !c.already {
				markStarted(job)
			}
			f := newFixture(t, opts, spec, job)
			f.backend.Set(keyOf(job).String(), backend.Status{Phase: v1alpha1.JobSucceeded, Digest: digest, BaseImageDigest: baseDigest1})
			f.syncJob(job)
			st := statusUpdate[*v1alpha1.ImageSpecJob](t, f.writes(), "imagespecjobs").Status
			if len(got) != 1 {
				t.Fatalf("%d attestations, want 1", len(got))
			}
			s := got[0]
			if s.Image != job.Spec.TargetImage || s.Digest != digest || s.BaseDigest != baseDigest1 || s.AddedLayers != 2 ||
				strings.Join(s.Apt, ",") != "curl" || strings.Join(s.Pip, ",") != "requests" || s.InvocationID != string(job.UID) {
				t.Errorf("subject %+v", s)
			}
			if c.err != nil {
				if st.Phase != v1alpha1.JobFailed || st.Reason != v1alpha1.ReasonSupplyChainFailed || st.SupplyChain != nil ||
					!strings.Contains(st.Message, job.Spec.TargetImage+"@"+digest) || strings.Contains(st.Message, testPassword) {
					t.Errorf("status %+v", st)
				}
				return
			}
			want := v1alpha1.SupplyChainStatus{SBOM: "sha256:5b", SBOMPackages: 42, Provenance: "sha256:9a", SignedBy: "sha256:ke"}
			if st.Phase != v1alpha1.JobSucceeded || st.SupplyChain == nil || *st.SupplyChain != want {
				t.Errorf("status %+v, supplyChain %+v", st, st.SupplyChain)
			}
			if c.already {
				return
			}
			// The same job synced again, as after a status write that
			// conflicted: written with the same attachments, not attached
			// (and signed) again.
			f.syncJob(job)
			if len(got) != 1 {
				t.Errorf("%d attestations after a second sync of the same job, want 1", len(got))
			}
			var writes []*v1alpha1.ImageSpecJob
			for _, a := range f.writes() {
				if a.GetVerb() == "update" && a.GetSubresource() == "status" && a.GetResource().Resource == "imagespecjobs" {
					writes = append(writes, a.(core.UpdateAction).GetObject().(*v1alpha1.ImageSpecJob))
				}
			}
			if last := writes[len(writes)-1].Status; len(writes) != 2 || last.SupplyChain == nil || *last.SupplyChain != want {
				t.Errorf("%d status writes, the last with supplyChain %+v; want 2, both with %+v", len(writes), last.SupplyChain, want)
			}
		})
	}
}
