package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/containers/image/v5/signature/sigstore"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/app"
	"github.com/imagespec/imagespec-controller/pkg/controller"
	"github.com/imagespec/imagespec-controller/pkg/supplychain"
	"github.com/imagespec/imagespec-controller/test/framework/images"
	"github.com/imagespec/imagespec-controller/test/framework/secretscan"
	"github.com/imagespec/imagespec-controller/test/framework/skopeo"
)

// The apt + pip build with a signing key: the job's status says where
// the SBOM and provenance are and who signed; both are found from the
// image digest alone with skopeo, through the referrers tag; the SBOM
// lists exactly the packages dpkg and pip report inside the built image,
// the requested ones marked, the base image's contained by the base; the
// provenance names the inputs and the base digest; the signature verifies
// with the public key under a sigstoreSigned policy, and an image pushed
// over the tag by someone else does not.
func testSupplyChain(t *testing.T, b Backend) {
	env := SharedEnv(t)
	ns := NewNamespace(t)
	passphrase := []byte("e2e passphrase")
	keys, err := sigstore.GenerateKeyPair(passphrase)
	if err != nil {
		t.Fatal(err)
	}
	fingerprint, err := supplychain.Fingerprint(keys.PrivateKey, passphrase)
	if err != nil {
		t.Fatal(err)
	}
	c := b.Start(t, ns, ControllerConfig{Tweak: func(o *app.Options) {
		o.Controller.SupplyChainSigning = controller.SigningKey{Key: keys.PrivateKey, Passphrase: passphrase}
	}})
	// A name of its own per backend: the prefix layout would give both
	// backends' runs one target.
	name := "sbom-" + b.Name
	createSpec(t, c, ns, name, baseSpec(env))
	job := WaitJob(t, c, ns, name, "", buildTimeout)
	requireBuiltBy(t, job, b.Name, v1alpha1.JobSucceeded, v1alpha1.ReasonSucceeded)
	sc := job.Status.SupplyChain
	if sc == nil || sc.SBOM == "" || sc.Provenance == "" || sc.SBOMPackages == 0 {
		t.Fatalf("status.supplyChain = %+v, want the SBOM and provenance digests and a package count", sc)
	}
	if sc.SignedBy != fingerprint {
		t.Errorf("status.supplyChain.signedBy = %q, want the key's %q", sc.SignedBy, fingerprint)
	}

	repo, _, _ := strings.Cut(job.Status.Image, "@")
	repo = repo[:strings.LastIndex(repo, ":")]
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// From the digest alone: the referrers tag lists the artifacts.
	raw, err := env.Skopeo(ctx, env.Registry, "", "inspect", "--raw", "docker://"+repo+":"+strings.Replace(job.Status.Digest, ":", "-", 1))
	if err != nil {
		t.Fatal(err)
	}
	var index struct {
		Manifests []struct {
			Digest       string
			ArtifactType string
		}
	}
	if err := json.Unmarshal(raw, &index); err != nil {
		t.Fatal(err)
	}
	found := map[string]string{}
	for _, m := range index.Manifests {
		found[m.ArtifactType] = m.Digest
	}
	if found[supplychain.ArtifactTypeSBOM] != sc.SBOM || found[supplychain.ArtifactTypeProvenance] != sc.Provenance {
		t.Fatalf("referrers of %s: %s; want SBOM %s and provenance %s", job.Status.Digest, raw, sc.SBOM, sc.Provenance)
	}
	sbomDoc := fetchArtifact(t, ctx, env, repo, sc.SBOM, job.Status.Digest)
	provDoc := fetchArtifact(t, ctx, env, repo, sc.Provenance, job.Status.Digest)

	// What the package managers say inside the image.
	out := env.RunInImage(t, env.Registry, job.Status.Image, `
dpkg-query -W -f 'deb ${Package} ${Version} ${db:Status-Status}\n'
python3 -m pip list --format=freeze --disable-pip-version-check 2>/dev/null | sed 's/^/pypi /'
`)
	inImage := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 4 && f[0] == "deb" && f[3] == "installed":
			inImage["deb "+f[1]+" "+f[2]] = true
		case len(f) == 2 && f[0] == "pypi":
			n, v, _ := strings.Cut(f[1], "==")
			inImage["pypi "+strings.ToLower(strings.ReplaceAll(n, "_", "-"))+" "+v] = true
		}
	}
	var doc struct {
		Packages []struct {
			SPDXID       string
			Name         string
			VersionInfo  string
			ExternalRefs []struct {
				ReferenceLocator string
			}
			Annotations []struct{ Comment string }
		}
		Relationships []struct {
			SPDXElementID      string `json:"spdxElementId"`
			RelationshipType   string
			RelatedSPDXElement string `json:"relatedSpdxElement"`
		}
	}
	if err := json.Unmarshal(sbomDoc, &doc); err != nil {
		t.Fatal(err)
	}
	inSBOM := map[string]bool{}
	requested := map[string]string{}
	ids := map[string]string{}
	for _, p := range doc.Packages {
		if len(p.ExternalRefs) == 0 {
			continue
		}
		kind := strings.TrimPrefix(strings.SplitN(p.ExternalRefs[0].ReferenceLocator, "/", 2)[0], "pkg:")
		if kind != "deb" && kind != "pypi" {
			continue
		}
		key := kind + " " + strings.ToLower(strings.ReplaceAll(p.Name, "_", "-")) + " " + p.VersionInfo
		inSBOM[key] = true
		ids[p.SPDXID] = key
		for _, a := range p.Annotations {
			if strings.HasPrefix(a.Comment, supplychain.RequestedPrefix) {
				requested[key] = a.Comment
			}
		}
	}
	if missing, extra := setDiff(inImage, inSBOM), setDiff(inSBOM, inImage); len(missing) > 0 || len(extra) > 0 {
		t.Errorf("the SBOM and the package managers in the image disagree:\nonly in the image: %v\nonly in the SBOM: %v", missing, extra)
	}
	if int(sc.SBOMPackages) != len(inSBOM) {
		t.Errorf("status.supplyChain.sbomPackages = %d, the SBOM lists %d packages", sc.SBOMPackages, len(inSBOM))
	}
	var reqKeys []string
	for k := range requested {
		reqKeys = append(reqKeys, k)
	}
	sort.Strings(reqKeys)
	if len(reqKeys) != 2 || !strings.HasPrefix(reqKeys[0], "deb "+aptPackage+" ") || !strings.HasPrefix(reqKeys[1], "pypi e2e-hello 1.0") {
		t.Errorf("packages marked requested: %v, want %s and e2e-hello 1.0", requested, aptPackage)
	}
	fromBase := map[string]bool{}
	for _, r := range doc.Relationships {
		if r.SPDXElementID == "SPDXRef-BaseImage" && r.RelationshipType == "CONTAINS" {
			fromBase[ids[r.RelatedSPDXElement]] = true
		}
	}
	if len(fromBase) == 0 || fromBase[reqKeys[0]] || fromBase[reqKeys[1]] {
		t.Errorf("base image packages: %d, including the requested ones: %v", len(fromBase), fromBase[reqKeys[0]] || fromBase[reqKeys[1]])
	}
	if !strings.Contains(string(sbomDoc), env.BaseDigest) {
		t.Errorf("the SBOM does not name the base digest %s", env.BaseDigest)
	}

	var st struct {
		Type          string `json:"_type"`
		PredicateType string
		Subject       []struct{ Digest map[string]string }
		Predicate     struct {
			BuildDefinition struct {
				ExternalParameters struct {
					BaseImage string
					Packages  v1alpha1.Packages
				}
				ResolvedDependencies []struct {
					URI    string
					Name   string
					Digest map[string]string
				}
			}
			RunDetails struct {
				Builder struct{ ID string }
			}
		}
	}
	if err := json.Unmarshal(provDoc, &st); err != nil {
		t.Fatal(err)
	}
	bd := st.Predicate.BuildDefinition
	if st.PredicateType != supplychain.SLSAProvenanceType || len(st.Subject) != 1 || "sha256:"+st.Subject[0].Digest["sha256"] != job.Status.Digest {
		t.Errorf("provenance: type %s, subject %v; want %s of %s", st.PredicateType, st.Subject, supplychain.SLSAProvenanceType, job.Status.Digest)
	}
	if bd.ExternalParameters.BaseImage != env.BaseImage || strings.Join(bd.ExternalParameters.Packages.Apt, ",") != aptPackage || strings.Join(bd.ExternalParameters.Packages.Pip, ",") != "e2e-hello==1.0" {
		t.Errorf("provenance inputs: %+v", bd.ExternalParameters)
	}
	if len(bd.ResolvedDependencies) == 0 || "sha256:"+bd.ResolvedDependencies[0].Digest["sha256"] != env.BaseDigest {
		t.Errorf("provenance dependencies %+v, want the base image at %s first", bd.ResolvedDependencies, env.BaseDigest)
	}
	if st.Predicate.RunDetails.Builder.ID != controller.BuilderID(b.Name) {
		t.Errorf("builder.id %q, want %q", st.Predicate.RunDetails.Builder.ID, controller.BuilderID(b.Name))
	}

	// The signature, with skopeo and a policy that trusts only the key.
	dir := t.TempDir()
	pub := filepath.Join(dir, "cosign.pub")
	policy := filepath.Join(dir, "policy.json")
	regd := filepath.Join(dir, "registries.d")
	writeFile(t, pub, string(keys.PublicKey))
	writeFile(t, filepath.Join(regd, "sigstore.yaml"), "default-docker:\n  use-sigstore-attachments: true\n")
	writeFile(t, policy, fmt.Sprintf(`{"default":[{"type":"reject"}],"transports":{"docker":{%q:[{"type":"sigstoreSigned","keyPath":%q,"signedIdentity":{"type":"matchRepoDigestOrExact"}}]}}}`, repo, pub))
	verify := func() error {
		bin, err := skopeo.Ensure(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return skopeoCopy(ctx, env, bin, []string{"--policy", policy, "--registries.d", regd}, "docker://"+job.Status.Image, "dir:"+t.TempDir())
	}
	if err := verify(); err != nil {
		t.Errorf("the signed image does not verify: %v", err)
	}
	// Neither the passphrase nor the private key's body reaches logs,
	// events or the namespace's objects.
	keyBody := strings.Split(strings.TrimSpace(string(keys.PrivateKey)), "\n")[1]
	env.ScanSecrets(t, c, ns, nil, RegistryCredential(env.Registry),
		secretscan.Credential{User: "passphrase", Password: string(passphrase)},
		secretscan.Credential{User: "key", Password: keyBody})
	if _, _, err := images.Push(ctx, images.Busybox, env.Registry, strings.TrimPrefix(job.Status.Image, env.Registry.Host+"/")); err != nil {
		t.Fatal(err)
	}
	if err := verify(); err == nil {
		t.Errorf("an image pushed over %s verifies with the controller's key", job.Status.Image)
	}
}

// fetchArtifact copies the artifact manifest at digest with skopeo and
// returns its one layer: the document. The manifest's subject must be the
// image, and the document must hash to what the manifest says, so a
// changed document is detected from the digest in status alone.
func fetchArtifact(t *testing.T, ctx context.Context, env *Env, repo, digest, subject string) []byte {
	t.Helper()
	raw, err := env.Skopeo(ctx, env.Registry, "", "inspect", "--raw", "docker://"+repo+"@"+digest)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(raw); "sha256:"+hex.EncodeToString(sum[:]) != digest {
		t.Fatalf("manifest %s hashes to %x", digest, sum)
	}
	var m struct {
		Subject struct{ Digest string }
		Layers  []struct{ Digest string }
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if m.Subject.Digest != subject || len(m.Layers) != 1 {
		t.Fatalf("artifact %s: %s; want one layer and subject %s", digest, raw, subject)
	}
	dir := t.TempDir()
	// Debian's skopeo, as the README shows.
	if err := skopeoCopy(ctx, env, "skopeo", []string{"--insecure-policy"}, "docker://"+repo+"@"+digest, "dir:"+dir); err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(dir, strings.TrimPrefix(m.Layers[0].Digest, "sha256:")))
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(doc); "sha256:"+hex.EncodeToString(sum[:]) != m.Layers[0].Digest {
		t.Fatalf("document of %s hashes to %x, not %s", digest, sum, m.Layers[0].Digest)
	}
	return doc
}

// skopeoCopy copies from env's registry with the skopeo binary bin, global
// flags (policy, registries.d) before the command. Debian's skopeo cannot
// verify sigstore signatures: verifying takes skopeo.Ensure's.
func skopeoCopy(ctx context.Context, env *Env, bin string, global []string, src, dst string) error {
	args := append(global, "copy", "--src-cert-dir", filepath.Join(env.CertsDir, env.Registry.Host), "--src-authfile", env.Registry.AuthFile, src, dst)
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("skopeo copy %s: %w: %s", src, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func setDiff(a, b map[string]bool) []string {
	var out []string
	for k := range a {
		if !b[k] {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
