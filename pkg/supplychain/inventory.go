package supplychain

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/containers/image/v5/pkg/blobinfocache/none"
	"github.com/containers/image/v5/pkg/compression"
	"github.com/containers/image/v5/types"
	digest "github.com/opencontainers/go-digest"
)

// Package managers an inventory knows, named as package URL types.
const (
	ManagerDeb   = "deb"
	ManagerPyPI  = "pypi"
	ManagerConda = "conda"
)

// Package is one installed package, as its package manager recorded it.
type Package struct {
	Manager string
	Name    string
	Version string
	// Arch is dpkg's architecture; Build, Channel and Subdir are conda's.
	Arch    string
	Build   string
	Channel string
	Subdir  string
	// InBase: the base image already had this package at this version.
	InBase bool
	// Requested is the spec entry that asked for the package, as
	// "spec.packages.<manager>[i]: <entry>"; empty for dependencies and
	// the base image's packages.
	Requested string
}

// Inventory is what an image holds, by its package managers' records.
type Inventory struct {
	// OS is the ID and VERSION_ID of /etc/os-release ("debian", "12").
	OSID, OSVersion string
	Packages        []Package
}

// Interesting files: dpkg's database, pip's installed distributions (any
// Python prefix), conda's environment records (any prefix), os-release.
var (
	dpkgStatus = "var/lib/dpkg/status"
	osRelease  = []string{"etc/os-release", "usr/lib/os-release"}
	// dist-info (wheels, pip) and egg-info, a directory with PKG-INFO or
	// one file (setuptools, Debian's python3-* packages): pip lists both.
	pipMetadata  = regexp.MustCompile(`(^|/)(site|dist)-packages/[^/]+(\.dist-info/METADATA|\.egg-info/PKG-INFO|\.egg-info)$`)
	condaMeta    = regexp.MustCompile(`(^|/)conda-meta/[^/]+\.json$`)
	maxFileBytes = int64(64 << 20)
)

func interesting(name string) bool {
	if name == dpkgStatus || name == osRelease[0] || name == osRelease[1] {
		return true
	}
	return pipMetadata.MatchString(name) || condaMeta.MatchString(name)
}

// layerFiles is what one layer adds and removes of the interesting files.
type layerFiles struct {
	files   map[string][]byte
	removed []string // whiteouts: a path and everything under it
	opaque  []string // opaque directories: everything under them below
}

// layerCache keeps the scan of each layer by digest: layers are content
// addressed, so a base image's layers are read once per process however
// many images build on it. Entries are small (package records only).
type layerCache struct {
	mu    sync.Mutex
	max   int
	order []digest.Digest
	byDig map[digest.Digest]*layerFiles
}

func newLayerCache(max int) *layerCache {
	return &layerCache{max: max, byDig: map[digest.Digest]*layerFiles{}}
}

func (c *layerCache) get(d digest.Digest) *layerFiles {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byDig[d]
}

func (c *layerCache) put(d digest.Digest, lf *layerFiles) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.byDig[d]; ok {
		return
	}
	c.byDig[d] = lf
	c.order = append(c.order, d)
	for len(c.order) > c.max {
		delete(c.byDig, c.order[0])
		c.order = c.order[1:]
	}
}

// scanLayer reads one layer blob (any compression) and keeps the
// interesting files and whiteouts.
func scanLayer(blob io.Reader) (*layerFiles, error) {
	rd, _, err := compression.AutoDecompress(blob)
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	lf := &layerFiles{files: map[string][]byte{}}
	tr := tar.NewReader(rd)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return lf, nil
		}
		if err != nil {
			return nil, err
		}
		name := strings.TrimPrefix(path.Clean("/"+hdr.Name), "/")
		dir, base := path.Split(name)
		dir = strings.TrimSuffix(dir, "/")
		switch {
		case base == ".wh..wh..opq":
			lf.opaque = append(lf.opaque, dir)
			continue
		case strings.HasPrefix(base, ".wh."):
			lf.removed = append(lf.removed, path.Join(dir, strings.TrimPrefix(base, ".wh.")))
			continue
		}
		if !interesting(name) {
			continue
		}
		switch hdr.Typeflag {
		case tar.TypeReg:
			if hdr.Size > maxFileBytes {
				return nil, fmt.Errorf("%s is %d bytes, more than a package record should be", name, hdr.Size)
			}
			data, err := io.ReadAll(tr)
			if err != nil {
				return nil, err
			}
			lf.files[name] = data
		case tar.TypeLink:
			target := strings.TrimPrefix(path.Clean("/"+hdr.Linkname), "/")
			if data, ok := lf.files[target]; ok {
				lf.files[name] = data
			}
		case tar.TypeSymlink:
			// /etc/os-release -> ../usr/lib/os-release: the other name is
			// read as well.
		}
	}
}

// merged applies layers bottom to top: a layer's whiteouts hide what the
// layers below it have, then its own files are added.
type merged map[string][]byte

func (m merged) apply(lf *layerFiles) {
	for _, dir := range lf.opaque {
		for p := range m {
			if strings.HasPrefix(p, dir+"/") {
				delete(m, p)
			}
		}
	}
	for _, gone := range lf.removed {
		for p := range m {
			if p == gone || strings.HasPrefix(p, gone+"/") {
				delete(m, p)
			}
		}
	}
	for p, data := range lf.files {
		m[p] = data
	}
}

func (m merged) clone() merged {
	c := make(merged, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// scanImage reads the layers of an image source, the first baseLayers of
// them being the base image's, and returns the image's inventory.
func (a *Attester) scanImage(ctx context.Context, src types.ImageSource, layers []types.BlobInfo, baseLayers int) (*Inventory, error) {
	scanned := make([]*layerFiles, 0, len(layers))
	for _, l := range layers {
		lf := a.layers.get(l.Digest)
		if lf == nil {
			rc, _, err := src.GetBlob(ctx, l, none.NoCache)
			if err != nil {
				return nil, fmt.Errorf("reading layer %s: %w", l.Digest, err)
			}
			lf, err = scanLayer(rc)
			rc.Close()
			if err != nil {
				return nil, fmt.Errorf("reading layer %s: %w", l.Digest, err)
			}
			a.layers.put(l.Digest, lf)
		}
		scanned = append(scanned, lf)
	}
	return inventoryOf(scanned, baseLayers), nil
}

// inventoryOf merges scanned layers bottom to top and lists the packages of
// the result, marking those the first baseLayers already had.
func inventoryOf(layers []*layerFiles, baseLayers int) *Inventory {
	files := merged{}
	var base merged
	for i, lf := range layers {
		if i == baseLayers {
			base = files.clone()
		}
		files.apply(lf)
	}
	if base == nil {
		base = files.clone()
	}
	inv := packagesOf(files)
	inBase := map[string]bool{}
	for _, p := range packagesOf(base).Packages {
		inBase[p.key()] = true
	}
	for i := range inv.Packages {
		inv.Packages[i].InBase = inBase[inv.Packages[i].key()]
	}
	return inv
}

func (p Package) key() string { return p.Manager + "\x00" + p.Name + "\x00" + p.Version }

// packagesOf parses the package records among files.
func packagesOf(files merged) *Inventory {
	inv := &Inventory{}
	for _, name := range osRelease {
		if data, ok := files[name]; ok {
			kv := keyValues(data)
			inv.OSID, inv.OSVersion = kv["ID"], kv["VERSION_ID"]
			break
		}
	}
	if data, ok := files[dpkgStatus]; ok {
		inv.Packages = append(inv.Packages, parseDpkgStatus(data)...)
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		switch {
		case pipMetadata.MatchString(name):
			if p, ok := parsePipMetadata(files[name]); ok {
				inv.Packages = append(inv.Packages, p)
			}
		case condaMeta.MatchString(name):
			if p, ok := parseCondaMeta(files[name]); ok {
				inv.Packages = append(inv.Packages, p)
			}
		}
	}
	// One entry per package: the same distribution can be recorded twice
	// (a pip package in two prefixes, conda's pip entries).
	seen := map[string]bool{}
	out := inv.Packages[:0]
	for _, p := range inv.Packages {
		if !seen[p.key()] {
			seen[p.key()] = true
			out = append(out, p)
		}
	}
	inv.Packages = out
	sort.SliceStable(inv.Packages, func(i, j int) bool {
		a, b := inv.Packages[i], inv.Packages[j]
		if a.Manager != b.Manager {
			return a.Manager < b.Manager
		}
		return a.Name < b.Name
	})
	return inv
}

// keyValues parses os-release's KEY="value" lines.
func keyValues(data []byte) map[string]string {
	kv := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if ok {
			kv[k] = strings.Trim(v, `"'`)
		}
	}
	return kv
}

// parseDpkgStatus lists the packages dpkg has installed: paragraphs of
// RFC 822 fields, kept when Status is "install ok installed".
func parseDpkgStatus(data []byte) []Package {
	var pkgs []Package
	for _, para := range strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n\n") {
		fields := map[string]string{}
		for _, line := range strings.Split(para, "\n") {
			if line == "" || line[0] == ' ' || line[0] == '\t' {
				continue
			}
			if k, v, ok := strings.Cut(line, ":"); ok {
				fields[k] = strings.TrimSpace(v)
			}
		}
		if fields["Package"] == "" || !strings.HasSuffix(fields["Status"], " installed") {
			continue
		}
		pkgs = append(pkgs, Package{Manager: ManagerDeb, Name: fields["Package"], Version: fields["Version"], Arch: fields["Architecture"]})
	}
	return pkgs
}

// parsePipMetadata reads Name and Version from a dist-info METADATA or
// egg-info PKG-INFO header (the same format).
func parsePipMetadata(data []byte) (Package, bool) {
	p := Package{Manager: ManagerPyPI}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimRight(line, "\r")
		if line == "" {
			break
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch k {
		case "Name":
			p.Name = strings.TrimSpace(v)
		case "Version":
			p.Version = strings.TrimSpace(v)
		}
	}
	return p, p.Name != "" && p.Version != ""
}

// parseCondaMeta reads a conda-meta/<name>-<version>-<build>.json record.
func parseCondaMeta(data []byte) (Package, bool) {
	var rec struct {
		Name    string `json:"name"`
		Version string `json:"version"`
		Build   string `json:"build"`
		Channel string `json:"channel"`
		Subdir  string `json:"subdir"`
	}
	if err := json.Unmarshal(data, &rec); err != nil || rec.Name == "" || rec.Version == "" {
		return Package{}, false
	}
	return Package{Manager: ManagerConda, Name: rec.Name, Version: rec.Version, Build: rec.Build, Channel: rec.Channel, Subdir: rec.Subdir}, true
}

// Requested names, as each manager compares them: apt entries are
// name[:arch][=version|/release]; pip entries PEP 508 requirements,
// compared by PEP 503 normalized name; conda entries [channel::]name
// followed by a version spec.
var (
	pipName   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*`)
	pipNormal = regexp.MustCompile(`[-_.]+`)
)

func normalizePip(name string) string { return strings.ToLower(pipNormal.ReplaceAllString(name, "-")) }

func requestedName(manager, entry string) string {
	switch manager {
	case ManagerDeb:
		if i := strings.IndexAny(entry, "=/:"); i >= 0 {
			entry = entry[:i]
		}
		return strings.ToLower(strings.TrimSpace(entry))
	case ManagerPyPI:
		return normalizePip(pipName.FindString(strings.TrimSpace(entry)))
	case ManagerConda:
		if i := strings.LastIndex(entry, "::"); i >= 0 {
			entry = entry[i+2:]
		}
		if i := strings.IndexAny(entry, "=<>!~ ["); i >= 0 {
			entry = entry[:i]
		}
		return strings.ToLower(strings.TrimSpace(entry))
	}
	return ""
}

func comparableName(p Package) string {
	if p.Manager == ManagerPyPI {
		return normalizePip(p.Name)
	}
	return strings.ToLower(p.Name)
}

// markRequested sets Requested on the packages the spec asked for.
func (inv *Inventory) markRequested(apt, pip, conda []string) {
	want := map[string]string{}
	for field, list := range map[string]struct {
		manager string
		entries []string
	}{"apt": {ManagerDeb, apt}, "pip": {ManagerPyPI, pip}, "conda": {ManagerConda, conda}} {
		for i, e := range list.entries {
			if e == "" {
				continue
			}
			want[list.manager+"\x00"+requestedName(list.manager, e)] = fmt.Sprintf("spec.packages.%s[%d]: %s", field, i, e)
		}
	}
	for i := range inv.Packages {
		p := &inv.Packages[i]
		p.Requested = want[p.Manager+"\x00"+comparableName(*p)]
	}
}
