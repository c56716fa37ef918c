package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/containers/image/v5/signature/sigstore"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/app"
	"github.com/imagespec/imagespec-controller/pkg/backend"
	"github.com/imagespec/imagespec-controller/pkg/controller"
	"github.com/imagespec/imagespec-controller/pkg/credentials"
	"github.com/imagespec/imagespec-controller/pkg/supplychain"
)

// BenchmarkSupplyChain measures what the SBOM, provenance and signature
// add to a build, same run: an apt + pip spec through two inprocess
// controllers, one attaching all three (with a signing key), one nothing,
// from the spec write to the job's final status (after the first
// iteration the controller has the base image's layers cached, as for
// every later build on that base). Then the attaching alone, on the image
// just built: with an empty layer cache (a restarted controller: every
// layer is read from the registry) and again with every layer cached (the
// floor: the registry writes and the signature).
func BenchmarkSupplyChain(b *testing.B) {
	env := SharedEnv(b)
	passphrase := []byte("bench")
	keys, err := sigstore.GenerateKeyPair(passphrase)
	if err != nil {
		b.Fatal(err)
	}
	nsOn, nsOff := NewNamespace(b), NewNamespace(b)
	cOn, _ := StartInprocessController(b, nsOn, ControllerConfig{Tweak: func(o *app.Options) {
		o.Controller.SupplyChainSigning = controller.SigningKey{Key: keys.PrivateKey, Passphrase: passphrase}
	}})
	cOff, _ := StartInprocessController(b, nsOff, ControllerConfig{Tweak: func(o *app.Options) { o.Controller.SupplyChain = false }})
	newAttester := func() *supplychain.Attester {
		r := env.Settings.Registry
		a, err := supplychain.New(supplychain.Options{
			Auths:      credentials.Auths{r.Host: {Username: r.Username, Password: r.Password.Reveal()}},
			CertDir:    env.CertsDir,
			BuilderID:  "bench",
			Tool:       "bench",
			SigningKey: keys.PrivateKey,
			Passphrase: passphrase,
			WorkDir:    b.TempDir(),
		})
		if err != nil {
			b.Fatal(err)
		}
		return a
	}

	var on, off, attestCold, attestWarm time.Duration
	packages := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		apt := benchAptRebuild[nextRebuild%len(benchAptRebuild)]
		nextRebuild++
		spec := v1alpha1.ImageSpecSpec{BaseImage: env.BaseImage, Packages: v1alpha1.Packages{
			Apt: []string{apt},
			Pip: []string{addBenchPackage(b, env, "bench-sbom")},
		}}
		name := fmt.Sprintf("sbom-%d", i)
		var built *v1alpha1.ImageSpecJob
		build := func(c *Controller, ns string, total *time.Duration) *v1alpha1.ImageSpecJob {
			start := time.Now()
			createSpec(b, c, ns, name, spec)
			job := waitFinal(b, c, ns, name, "")
			*total += time.Since(start)
			if job.Status.Phase != v1alpha1.JobSucceeded {
				b.Fatalf("%s/%s: %s %s: %s", ns, job.Name, job.Status.Phase, job.Status.Reason, job.Status.Message)
			}
			return job
		}
		inTurn(i, func() { built = build(cOn, nsOn, &on) }, func() { build(cOff, nsOff, &off) })
		if built.Status.SupplyChain == nil {
			b.Fatalf("%s has no status.supplyChain", built.Name)
		}
		packages += int(built.Status.SupplyChain.SBOMPackages)

		b.StopTimer()
		layers, err := backend.BuildLayers(built)
		if err != nil {
			b.Fatal(err)
		}
		subject := supplychain.Subject{Image: built.Status.Image, Digest: built.Status.Digest, BaseImage: env.BaseImage,
			BaseDigest: built.Status.BaseImageDigest, Apt: spec.Packages.Apt, Pip: spec.Packages.Pip, AddedLayers: layers}
		a := newAttester()
		b.StartTimer()
		for _, d := range []*time.Duration{&attestCold, &attestWarm} {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			start := time.Now()
			_, err := a.Attest(ctx, subject)
			*d += time.Since(start)
			cancel()
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(on.Seconds()/n, "with-s/op")
	b.ReportMetric(off.Seconds()/n, "without-s/op")
	b.ReportMetric((on-off).Seconds()/n, "overhead-s/op")
	b.ReportMetric(attestCold.Seconds()/n, "attest-cold-cache-s/op")
	b.ReportMetric(attestWarm.Seconds()/n, "attest-cached-s/op")
	b.ReportMetric(float64(packages)/n, "packages/op")
}
