package supplychain

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containers/image/v5/signature/sigstore"
)

type entry struct {
	name, body string
}

func layer(t *testing.T, entries ...entry) *layerFiles {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	lf, err := scanLayer(&buf)
	if err != nil {
		t.Fatal(err)
	}
	return lf
}

const baseStatus = `Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9+deb12u4
Description: GNU C Library
 continuation: not a field

Package: removed-one
Status: deinstall ok config-files
Version: 1.0
`

const builtStatus = baseStatus + `
Package: curl
Status: install ok installed
Architecture: amd64
Version: 7.88.1-10+deb12u5
`

func pipMeta(name, version string) string {
	return "Metadata-Version: 2.1\nName: " + name + "\nVersion: " + version + "\n\nVersion: 9.9 in the body is not a header\n"
}

// Layers bottom to top: the base has dpkg's database, os-release and a
// pip package; the build replaces the database (apt), adds a pip package,
// deletes the base's pip package by a whiteout and adds a conda record
// under a directory the next layer makes opaque and refills.
func TestScanImageLayers(t *testing.T) {
	layers := []*layerFiles{
		layer(t,
			entry{"./etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n"},
			entry{"var/lib/dpkg/status", baseStatus},
			entry{"usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA", pipMeta("six", "1.16.0")},
			entry{"usr/lib/python3/dist-packages/six-1.16.0.dist-info/RECORD", "ignored"},
			entry{"usr/lib/python3/dist-packages/setuptools-66.1.1.egg-info/PKG-INFO", pipMeta("setuptools", "66.1.1")},
			entry{"usr/lib/python3/dist-packages/wheel-0.38.4.egg-info", pipMeta("wheel", "0.38.4")},
			entry{"usr/share/doc/README", "ignored"},
		),
		layer(t,
			entry{"var/lib/dpkg/status", builtStatus},
			entry{"usr/local/lib/python3.11/dist-packages/Requests_Toolbelt-1.0.0.dist-info/METADATA", pipMeta("Requests_Toolbelt", "1.0.0")},
			entry{"usr/lib/python3/dist-packages/.wh.six-1.16.0.dist-info", ""},
			entry{"opt/conda/conda-meta/old-1.0-0.json", `{"name":"old","version":"1.0","build":"0"}`},
		),
		layer(t,
			entry{"opt/conda/conda-meta/.wh..wh..opq", ""},
			entry{"opt/conda/conda-meta/tensorflow-1.13.1-0.json", `{"name":"tensorflow","version":"1.13.1","build":"0","channel":"http://127.0.0.1/idx","subdir":"linux-64"}`},
			entry{"opt/conda/conda-meta/history", "not json"},
		),
	}
	inv := inventoryOf(layers, 1)
	inv.markRequested([]string{"curl=7.88.1-10+deb12u5"}, []string{"requests-toolbelt>=1"}, []string{"conda-forge::tensorflow=1.13*"})

	var got []string
	for _, p := range inv.Packages {
		s := p.Manager + " " + p.Name + " " + p.Version
		if p.InBase {
			s += " base"
		}
		if p.Requested != "" {
			s += " <- " + p.Requested
		}
		got = append(got, s)
	}
	want := []string{
		"conda tensorflow 1.13.1 <- spec.packages.conda[0]: conda-forge::tensorflow=1.13*",
		"deb curl 7.88.1-10+deb12u5 <- spec.packages.apt[0]: curl=7.88.1-10+deb12u5",
		"deb libc6 2.36-9+deb12u4 base",
		"pypi Requests_Toolbelt 1.0.0 <- spec.packages.pip[0]: requests-toolbelt>=1",
		"pypi setuptools 66.1.1 base",
		"pypi wheel 0.38.4 base",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("inventory:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if inv.OSID != "debian" || inv.OSVersion != "12" {
		t.Errorf("os-release: %q %q", inv.OSID, inv.OSVersion)
	}

	s := Subject{Image: "reg.example/team/app:abc", Digest: "sha256:" + strings.Repeat("a", 64), BaseImage: "reg.example/base:12", BaseDigest: "sha256:" + strings.Repeat("b", 64)}
	doc, err := sbom(s, inv, "imagespec-controller", time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	var parsed spdxDocument
	if err := json.Unmarshal(doc, &parsed); err != nil {
		t.Fatal(err)
	}
	purls := map[string]string{}
	for _, p := range parsed.Packages {
		purls[p.Name] = p.ExternalRefs[0].ReferenceLocator
	}
	for name, want := range map[string]string{
		"curl":                     "pkg:deb/debian/curl@7.88.1-10+deb12u5?arch=amd64&distro=debian-12",
		"Requests_Toolbelt":        "pkg:pypi/requests-toolbelt@1.0.0",
		"tensorflow":               "pkg:conda/tensorflow@1.13.1?build=0&channel=http%3A%2F%2F127.0.0.1%2Fidx&subdir=linux-64",
		"reg.example/team/app:abc": "pkg:oci/app@sha256%3A" + strings.Repeat("a", 64) + "?repository_url=reg.example%2Fteam%2Fapp",
	} {
		if purls[name] != want {
			t.Errorf("purl of %s = %q, want %q", name, purls[name], want)
		}
	}
	rels := map[string]int{}
	for _, r := range parsed.Relationships {
		rels[r.SPDXElementID+" "+r.RelationshipType]++
	}
	if rels["SPDXRef-Image CONTAINS"] != 6 || rels["SPDXRef-BaseImage CONTAINS"] != 3 || rels["SPDXRef-Image DESCENDANT_OF"] != 1 || rels["SPDXRef-DOCUMENT DESCRIBES"] != 1 {
		t.Errorf("relationships: %v", rels)
	}
}

func TestRequestedName(t *testing.T) {
	for _, c := range []struct{ manager, entry, want string }{
		{ManagerDeb, "curl", "curl"},
		{ManagerDeb, "libssl3:amd64=3.0", "libssl3"},
		{ManagerDeb, "vim/bookworm-backports", "vim"},
		{ManagerPyPI, "Scikit_Learn[alldeps]>=1.0; python_version>'3'", "scikit-learn"},
		{ManagerPyPI, "e2e-hello==1.0", "e2e-hello"},
		{ManagerConda, "pandas>=2", "pandas"},
		{ManagerConda, "conda-forge::numpy 1.26.*", "numpy"},
	} {
		if got := requestedName(c.manager, c.entry); got != c.want {
			t.Errorf("requestedName(%s, %q) = %q, want %q", c.manager, c.entry, got, c.want)
		}
	}
}

func TestFingerprint(t *testing.T) {
	keys, err := sigstore.GenerateKeyPair([]byte("right"))
	if err != nil {
		t.Fatal(err)
	}
	fp, err := Fingerprint(keys.PrivateKey, []byte("right"))
	if err != nil || !strings.HasPrefix(fp, "sha256:") || len(fp) != len("sha256:")+64 {
		t.Fatalf("Fingerprint = %q, %v", fp, err)
	}
	block, _ := pem.Decode(keys.PublicKey)
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(pub)
	if sum := sha256.Sum256(der); fp != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Errorf("fingerprint %s is not the public key's", fp)
	}
	_, err = Fingerprint(keys.PrivateKey, []byte("wrong"))
	if err == nil || strings.Contains(err.Error(), "wrong") {
		t.Errorf("wrong passphrase: %v", err)
	}
	if _, err := Fingerprint(keys.PublicKey, []byte("right")); err == nil {
		t.Error("a public key was taken for a private key")
	}
}

// The private directory New makes (it holds the key file) is gone after
// Close, and after a New that failed; a directory the caller gave stays.
func TestWorkDirRemoved(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	keys, err := sigstore.GenerateKeyPair([]byte("right"))
	if err != nil {
		t.Fatal(err)
	}
	left := func() []os.DirEntry {
		entries, err := os.ReadDir(tmp)
		if err != nil {
			t.Fatal(err)
		}
		return entries
	}
	if _, err := New(Options{SigningKey: keys.PrivateKey, Passphrase: []byte("wrong")}); err == nil {
		t.Fatal("New took a wrong passphrase")
	}
	if got := left(); len(got) != 0 {
		t.Errorf("a failed New left %v", got)
	}
	a, err := New(Options{SigningKey: keys.PrivateKey, Passphrase: []byte("right")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(a.keyFile); err != nil || len(left()) != 1 {
		t.Fatalf("key file %v, entries %v", err, left())
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if got := left(); len(got) != 0 {
		t.Errorf("Close left %v", got)
	}
	given := t.TempDir()
	b, err := New(Options{WorkDir: given})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(given, "registries.d")); err != nil {
		t.Errorf("Close removed a directory it was given: %v", err)
	}
}
