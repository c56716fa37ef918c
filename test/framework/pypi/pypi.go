// Package pypi serves a PEP 503 "simple" package index on 127.0.0.1 with
// pure-python wheels it makes itself, so pip steps are tested for real
// without PyPI.
package pypi

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"html"
	"net"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Package is one release of a distribution.
type Package struct {
	Name    string
	Version string
	// Files maps paths inside the wheel (site-packages relative) to their
	// content. Empty: a module named after the package whose __version__ is
	// Version.
	Files map[string]string
	// Requires are PEP 508 requirements, e.g. "dep>=1.0"; pip resolves them
	// from the same index.
	Requires []string
}

// Index is a running index. Close it when done.
type Index struct {
	srv      *http.Server
	addr     string
	mu       sync.RWMutex
	projects map[string]map[string]wheel // normalized name -> filename -> wheel
	requests map[string]int
}

type wheel struct {
	data   []byte
	sha256 string
}

// New serves pkgs on a free port of 127.0.0.1.
func New(pkgs ...Package) (*Index, error) {
	return Listen("127.0.0.1:0", pkgs...)
}

// Listen serves pkgs on addr ("127.0.0.1:0" for a free port; a wider
// address when builds run in another network namespace).
func Listen(addr string, pkgs ...Package) (*Index, error) {
	ix := &Index{projects: map[string]map[string]wheel{}, requests: map[string]int{}}
	if err := ix.Add(pkgs...); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	ix.addr = l.Addr().String()
	// A wildcard address is no URL a client can use; 127.0.0.1 is, on
	// this host. Clients elsewhere build theirs from the port.
	if tcp, ok := l.Addr().(*net.TCPAddr); ok && tcp.IP.IsUnspecified() {
		ix.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(tcp.Port))
	}
	ix.srv = &http.Server{Handler: http.HandlerFunc(ix.serve), ReadHeaderTimeout: 10 * time.Second}
	go ix.srv.Serve(l)
	return ix, nil
}

// URL is the index URL for pip's --index-url: http://ADDR/simple/.
func (ix *Index) URL() string { return "http://" + ix.addr + "/simple/" }

// Addr is host:port (127.0.0.1 when listening on all addresses).
func (ix *Index) Addr() string { return ix.addr }

// Close stops serving.
func (ix *Index) Close() error { return ix.srv.Close() }

// Downloads counts how often a wheel file was fetched, to tell a cached
// build from one that ran pip.
func (ix *Index) Downloads(filename string) int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.requests[filename]
}

// Add publishes more packages; a running index serves them at once.
func (ix *Index) Add(pkgs ...Package) error {
	for _, p := range pkgs {
		if p.Name == "" || p.Version == "" {
			return fmt.Errorf("package needs a name and a version: %+v", p)
		}
		name, data, err := Wheel(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		ix.mu.Lock()
		n := Normalize(p.Name)
		if ix.projects[n] == nil {
			ix.projects[n] = map[string]wheel{}
		}
		ix.projects[n][name] = wheel{data: data, sha256: hex.EncodeToString(sum[:])}
		ix.mu.Unlock()
	}
	return nil
}

var normRE = regexp.MustCompile(`[-_.]+`)

// Normalize is the PEP 503 name normalization.
func Normalize(name string) string {
	return strings.ToLower(normRE.ReplaceAllString(name, "-"))
}

var escapeRE = regexp.MustCompile(`[^\w\d.]+`)

// escape is the wheel filename escaping of names and versions (PEP 427).
func escape(s string) string { return escapeRE.ReplaceAllString(s, "_") }

// WheelFilename is NAME-VERSION-py3-none-any.whl with PEP 427 escaping.
func WheelFilename(p Package) string {
	return escape(p.Name) + "-" + escape(p.Version) + "-py3-none-any.whl"
}

// Wheel builds the wheel of a pure-python package: its files plus
// .dist-info METADATA, WHEEL and RECORD.
func Wheel(p Package) (filename string, data []byte, err error) {
	files := p.Files
	if len(files) == 0 {
		mod := strings.ReplaceAll(Normalize(p.Name), "-", "_")
		files = map[string]string{mod + "/__init__.py": fmt.Sprintf("__version__ = %q\n", p.Version)}
	}
	distInfo := escape(p.Name) + "-" + escape(p.Version) + ".dist-info"
	var meta strings.Builder
	fmt.Fprintf(&meta, "Metadata-Version: 2.1\nName: %s\nVersion: %s\n", p.Name, p.Version)
	for _, r := range p.Requires {
		fmt.Fprintf(&meta, "Requires-Dist: %s\n", r)
	}
	all := map[string]string{}
	for k, v := range files {
		all[k] = v
	}
	all[distInfo+"/METADATA"] = meta.String()
	all[distInfo+"/WHEEL"] = "Wheel-Version: 1.0\nGenerator: imagespec-test-index\nRoot-Is-Purelib: true\nTag: py3-none-any\n"

	paths := make([]string, 0, len(all))
	for k := range all {
		paths = append(paths, k)
	}
	sort.Strings(paths)
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	var record strings.Builder
	// A fixed time keeps the wheel's bytes, and so its hash, reproducible.
	mtime := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	add := func(name, content string) error {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Deflate, Modified: mtime})
		if err != nil {
			return err
		}
		_, err = w.Write([]byte(content))
		return err
	}
	for _, path := range paths {
		if err := add(path, all[path]); err != nil {
			return "", nil, err
		}
		sum := sha256.Sum256([]byte(all[path]))
		fmt.Fprintf(&record, "%s,sha256=%s,%d\n", path, base64.RawURLEncoding.EncodeToString(sum[:]), len(all[path]))
	}
	fmt.Fprintf(&record, "%s/RECORD,,\n", distInfo)
	if err := add(distInfo+"/RECORD", record.String()); err != nil {
		return "", nil, err
	}
	if err := zw.Close(); err != nil {
		return "", nil, err
	}
	return WheelFilename(p), buf.Bytes(), nil
}

func (ix *Index) serve(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	switch {
	case path == "/simple" || path == "/simple/":
		ix.mu.RLock()
		names := make([]string, 0, len(ix.projects))
		for n := range ix.projects {
			names = append(names, n)
		}
		ix.mu.RUnlock()
		sort.Strings(names)
		var b strings.Builder
		b.WriteString("<!DOCTYPE html>\n<html><body>\n")
		for _, n := range names {
			fmt.Fprintf(&b, "<a href=\"/simple/%s/\">%s</a>\n", n, html.EscapeString(n))
		}
		b.WriteString("</body></html>\n")
		writeHTML(w, b.String())
	case strings.HasPrefix(path, "/simple/"):
		name := strings.Trim(strings.TrimPrefix(path, "/simple/"), "/")
		n := Normalize(name)
		if n != name {
			// PEP 503: redirect to the normalized URL.
			http.Redirect(w, r, "/simple/"+n+"/", http.StatusMovedPermanently)
			return
		}
		ix.mu.RLock()
		files := ix.projects[n]
		var b strings.Builder
		b.WriteString("<!DOCTYPE html>\n<html><body>\n")
		fnames := make([]string, 0, len(files))
		for f := range files {
			fnames = append(fnames, f)
		}
		sort.Strings(fnames)
		for _, f := range fnames {
			fmt.Fprintf(&b, "<a href=\"/files/%s#sha256=%s\">%s</a>\n", f, files[f].sha256, html.EscapeString(f))
		}
		ix.mu.RUnlock()
		if files == nil {
			http.NotFound(w, r)
			return
		}
		b.WriteString("</body></html>\n")
		writeHTML(w, b.String())
	case strings.HasPrefix(path, "/files/"):
		f := strings.TrimPrefix(path, "/files/")
		ix.mu.Lock()
		var data []byte
		for _, files := range ix.projects {
			if wh, ok := files[f]; ok {
				data = wh.data
				ix.requests[f]++
			}
		}
		ix.mu.Unlock()
		if data == nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(data)
	default:
		http.NotFound(w, r)
	}
}

func writeHTML(w http.ResponseWriter, s string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write([]byte(s))
}
