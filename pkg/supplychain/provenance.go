package supplychain

import (
	"encoding/json"
	"strings"
	"time"
)

// in-toto Statement v1 with a SLSA v1 provenance predicate
// (https://slsa.dev/spec/v1.0/provenance).
type statement struct {
	Type          string              `json:"_type"`
	Subject       []resourceDesc      `json:"subject"`
	PredicateType string              `json:"predicateType"`
	Predicate     provenancePredicate `json:"predicate"`
}

type resourceDesc struct {
	URI       string            `json:"uri,omitempty"`
	Name      string            `json:"name,omitempty"`
	Digest    map[string]string `json:"digest,omitempty"`
	MediaType string            `json:"mediaType,omitempty"`
}

type provenancePredicate struct {
	BuildDefinition struct {
		BuildType            string         `json:"buildType"`
		ExternalParameters   map[string]any `json:"externalParameters"`
		InternalParameters   map[string]any `json:"internalParameters,omitempty"`
		ResolvedDependencies []resourceDesc `json:"resolvedDependencies,omitempty"`
	} `json:"buildDefinition"`
	RunDetails struct {
		Builder struct {
			ID string `json:"id"`
		} `json:"builder"`
		Metadata struct {
			InvocationID string `json:"invocationId,omitempty"`
			StartedOn    string `json:"startedOn,omitempty"`
			FinishedOn   string `json:"finishedOn,omitempty"`
		} `json:"metadata"`
		Byproducts []resourceDesc `json:"byproducts,omitempty"`
	} `json:"runDetails"`
}

// Statement and predicate types.
const (
	StatementType      = "https://in-toto.io/Statement/v1"
	SLSAProvenanceType = "https://slsa.dev/provenance/v1"
)

// digestMap turns "sha256:<hex>" into {"sha256": "<hex>"}.
func digestMap(d string) map[string]string {
	alg, hex, ok := strings.Cut(d, ":")
	if !ok {
		return nil
	}
	return map[string]string{alg: hex}
}

// provenance says who built the image from what: the spec's inputs, the
// base image by digest, the package sources, every package the build
// added (resolved, by package URL) and the SBOM as a byproduct.
func provenance(s Subject, inv *Inventory, builderID string, sbomDesc descriptor) ([]byte, error) {
	st := statement{
		Type:          StatementType,
		Subject:       []resourceDesc{{Name: s.Repository(), Digest: digestMap(s.Digest)}},
		PredicateType: SLSAProvenanceType,
	}
	p := &st.Predicate
	p.BuildDefinition.BuildType = BuildType
	p.BuildDefinition.ExternalParameters = s.ExternalParameters
	if p.BuildDefinition.ExternalParameters == nil {
		p.BuildDefinition.ExternalParameters = map[string]any{}
	}
	p.BuildDefinition.InternalParameters = s.InternalParameters
	base := resourceDesc{URI: "oci://" + s.BaseImage, Name: "baseImage"}
	if s.BaseDigest != "" {
		base.Digest = digestMap(s.BaseDigest)
	}
	deps := []resourceDesc{base}
	for _, src := range s.Sources {
		deps = append(deps, resourceDesc{URI: src, Name: "packageSource"})
	}
	for _, pkg := range inv.Packages {
		if !pkg.InBase {
			deps = append(deps, resourceDesc{URI: purl(pkg, inv), Name: pkg.Name})
		}
	}
	p.BuildDefinition.ResolvedDependencies = deps
	p.RunDetails.Builder.ID = builderID
	p.RunDetails.Metadata.InvocationID = s.InvocationID
	if !s.Started.IsZero() {
		p.RunDetails.Metadata.StartedOn = s.Started.UTC().Format(time.RFC3339)
	}
	if !s.Finished.IsZero() {
		p.RunDetails.Metadata.FinishedOn = s.Finished.UTC().Format(time.RFC3339)
	}
	p.RunDetails.Byproducts = []resourceDesc{{Name: "sbom", Digest: digestMap(sbomDesc.Digest.String()), MediaType: sbomDesc.MediaType}}
	return json.MarshalIndent(st, "", "  ")
}
