package supplychain

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// SPDX 2.3 JSON, the parts an image SBOM uses.
type spdxDocument struct {
	SPDXVersion       string             `json:"spdxVersion"`
	DataLicense       string             `json:"dataLicense"`
	SPDXID            string             `json:"SPDXID"`
	Name              string             `json:"name"`
	DocumentNamespace string             `json:"documentNamespace"`
	CreationInfo      spdxCreationInfo   `json:"creationInfo"`
	Packages          []spdxPackage      `json:"packages"`
	Relationships     []spdxRelationship `json:"relationships"`
}

type spdxCreationInfo struct {
	Created  string   `json:"created"`
	Creators []string `json:"creators"`
}

type spdxPackage struct {
	SPDXID                string            `json:"SPDXID"`
	Name                  string            `json:"name"`
	VersionInfo           string            `json:"versionInfo,omitempty"`
	Supplier              string            `json:"supplier,omitempty"`
	DownloadLocation      string            `json:"downloadLocation"`
	FilesAnalyzed         bool              `json:"filesAnalyzed"`
	PrimaryPackagePurpose string            `json:"primaryPackagePurpose,omitempty"`
	Checksums             []spdxChecksum    `json:"checksums,omitempty"`
	ExternalRefs          []spdxExternalRef `json:"externalRefs,omitempty"`
	Comment               string            `json:"comment,omitempty"`
	Annotations           []spdxAnnotation  `json:"annotations,omitempty"`
}

type spdxChecksum struct {
	Algorithm     string `json:"algorithm"`
	ChecksumValue string `json:"checksumValue"`
}

type spdxExternalRef struct {
	ReferenceCategory string `json:"referenceCategory"`
	ReferenceType     string `json:"referenceType"`
	ReferenceLocator  string `json:"referenceLocator"`
}

type spdxAnnotation struct {
	AnnotationType string `json:"annotationType"`
	Annotator      string `json:"annotator"`
	AnnotationDate string `json:"annotationDate"`
	Comment        string `json:"comment"`
}

type spdxRelationship struct {
	SPDXElementID      string `json:"spdxElementId"`
	RelationshipType   string `json:"relationshipType"`
	RelatedSPDXElement string `json:"relatedSpdxElement"`
}

// SPDX identifiers of the two images the document describes.
const (
	spdxImageID = "SPDXRef-Image"
	spdxBaseID  = "SPDXRef-BaseImage"
)

// RequestedPrefix starts the annotation comment of a package the spec asked
// for; the rest names the spec entry ("spec.packages.pip[0]: requests").
const RequestedPrefix = "imagespec.requested: "

// sbom renders the SPDX document of an image: the image, its base image
// (by digest) and every package, each contained by the image, those the
// base image had also by the base image.
func sbom(s Subject, inv *Inventory, tool string, now time.Time) ([]byte, error) {
	created := now.UTC().Format(time.RFC3339)
	repo := s.Repository()
	doc := spdxDocument{
		SPDXVersion:       "SPDX-2.3",
		DataLicense:       "CC0-1.0",
		SPDXID:            "SPDXRef-DOCUMENT",
		Name:              repo + "@" + s.Digest,
		DocumentNamespace: "urn:imagespec:spdx:" + repo + "@" + s.Digest + ":" + created,
		CreationInfo:      spdxCreationInfo{Created: created, Creators: []string{"Tool: " + tool}},
	}
	doc.Packages = append(doc.Packages, imagePackage(spdxImageID, s.Image, s.Digest, "the built image"))
	doc.Relationships = append(doc.Relationships, spdxRelationship{"SPDXRef-DOCUMENT", "DESCRIBES", spdxImageID})
	if s.BaseDigest != "" {
		doc.Packages = append(doc.Packages, imagePackage(spdxBaseID, s.BaseImage, s.BaseDigest, "the base image ("+s.BaseImage+")"))
		doc.Relationships = append(doc.Relationships, spdxRelationship{spdxImageID, "DESCENDANT_OF", spdxBaseID})
	}
	for i, p := range inv.Packages {
		id := fmt.Sprintf("SPDXRef-Package-%s-%d", p.Manager, i)
		sp := spdxPackage{
			SPDXID:                id,
			Name:                  p.Name,
			VersionInfo:           p.Version,
			Supplier:              "NOASSERTION",
			DownloadLocation:      "NOASSERTION",
			PrimaryPackagePurpose: "LIBRARY",
			ExternalRefs:          []spdxExternalRef{{"PACKAGE-MANAGER", "purl", purl(p, inv)}},
			Comment:               "recorded by " + map[string]string{ManagerDeb: "dpkg", ManagerPyPI: "pip", ManagerConda: "conda"}[p.Manager],
		}
		if p.Requested != "" {
			sp.Annotations = []spdxAnnotation{{AnnotationType: "OTHER", Annotator: "Tool: " + tool, AnnotationDate: created, Comment: RequestedPrefix + p.Requested}}
		}
		doc.Packages = append(doc.Packages, sp)
		doc.Relationships = append(doc.Relationships, spdxRelationship{spdxImageID, "CONTAINS", id})
		if p.InBase && s.BaseDigest != "" {
			doc.Relationships = append(doc.Relationships, spdxRelationship{spdxBaseID, "CONTAINS", id})
		}
	}
	return json.MarshalIndent(doc, "", "  ")
}

func imagePackage(id, ref, dig, comment string) spdxPackage {
	name := ref
	if i := strings.LastIndex(name, "@"); i >= 0 {
		name = name[:i]
	}
	p := spdxPackage{
		SPDXID:                id,
		Name:                  name,
		VersionInfo:           dig,
		DownloadLocation:      "NOASSERTION",
		PrimaryPackagePurpose: "CONTAINER",
		Comment:               comment,
		ExternalRefs:          []spdxExternalRef{{"PACKAGE-MANAGER", "purl", ociPurl(name, dig)}},
	}
	if hex, ok := strings.CutPrefix(dig, "sha256:"); ok {
		p.Checksums = []spdxChecksum{{"SHA256", hex}}
	}
	return p
}

// ociPurl is pkg:oci/<last path element>@<digest>?repository_url=<repo>.
func ociPurl(ref, dig string) string {
	repo := ref
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo = repo[:i]
	}
	name := repo[strings.LastIndex(repo, "/")+1:]
	return "pkg:oci/" + url.PathEscape(name) + "@" + url.QueryEscape(dig) + "?repository_url=" + url.QueryEscape(repo)
}

// purl is the package URL of a package (github.com/package-url/purl-spec).
func purl(p Package, inv *Inventory) string {
	name, version := url.PathEscape(p.Name), url.PathEscape(p.Version)
	q := url.Values{}
	switch p.Manager {
	case ManagerDeb:
		ns := inv.OSID
		if ns == "" {
			ns = "debian"
		}
		if p.Arch != "" {
			q.Set("arch", p.Arch)
		}
		if inv.OSID != "" && inv.OSVersion != "" {
			q.Set("distro", inv.OSID+"-"+inv.OSVersion)
		}
		return "pkg:deb/" + url.PathEscape(ns) + "/" + name + "@" + version + query(q)
	case ManagerPyPI:
		return "pkg:pypi/" + url.PathEscape(normalizePip(p.Name)) + "@" + version
	case ManagerConda:
		if p.Build != "" {
			q.Set("build", p.Build)
		}
		if p.Channel != "" {
			q.Set("channel", p.Channel)
		}
		if p.Subdir != "" {
			q.Set("subdir", p.Subdir)
		}
		return "pkg:conda/" + name + "@" + version + query(q)
	}
	return "pkg:generic/" + name + "@" + version
}

func query(q url.Values) string {
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}
