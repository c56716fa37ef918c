package pypi

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagespec/imagespec-controller/test/framework/images"
	"github.com/imagespec/imagespec-controller/test/framework/registry"
)

var testPackages = []Package{
	{Name: "Greet_Tool", Version: "1.0"},
	{Name: "Greet_Tool", Version: "2.0", Requires: []string{"tiny-util>=0.2"}, Files: map[string]string{
		"greet_tool/__init__.py": "from tiny_util import shout\n__version__ = '2.0'\ndef hello():\n    return shout('hello')\n",
	}},
	{Name: "tiny-util", Version: "0.1"},
	{Name: "tiny-util", Version: "0.3", Files: map[string]string{
		"tiny_util/__init__.py": "__version__ = '0.3'\ndef shout(s):\n    return s.upper()\n",
	}},
}

func TestIndexPages(t *testing.T) {
	ix, err := New(testPackages...)
	if err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	get := func(url string) (int, string) {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(ix.URL()); code != 200 || !strings.Contains(body, `href="/simple/greet-tool/"`) {
		t.Errorf("root: %d %s", code, body)
	}
	code, body := get(ix.URL() + "greet-tool/")
	if code != 200 || !strings.Contains(body, "Greet_Tool-2.0-py3-none-any.whl#sha256=") {
		t.Errorf("project page: %d %s", code, body)
	}
	// Unnormalized names are redirected to the normalized page.
	if code, body := get(ix.URL() + "GREET.tool"); code != 200 || !strings.Contains(body, "Greet_Tool-1.0") {
		t.Errorf("unnormalized: %d %s", code, body)
	}
	if code, _ := get(ix.URL() + "missing/"); code != 404 {
		t.Errorf("missing project: %d", code)
	}

	// Packages added to a running index are served at once.
	if err := ix.Add(Package{Name: "late", Version: "1"}); err != nil {
		t.Fatal(err)
	}
	if code, body := get(ix.URL() + "late/"); code != 200 || !strings.Contains(body, "late-1-py3-none-any.whl") {
		t.Errorf("added package: %d %s", code, body)
	}

	wide, err := Listen("0.0.0.0:0", testPackages[0])
	if err != nil {
		t.Fatal(err)
	}
	defer wide.Close()
	if code, _ := get(wide.URL() + "greet-tool/"); !strings.HasPrefix(wide.URL(), "http://127.0.0.1:") || code != 200 {
		t.Errorf("wildcard listener: URL %s, code %d", wide.URL(), code)
	}
}

// pip checks what it installs against RECORD; check the wheel ourselves.
func TestWheelContents(t *testing.T) {
	name, data, err := Wheel(testPackages[1])
	if err != nil {
		t.Fatal(err)
	}
	if name != "Greet_Tool-2.0-py3-none-any.whl" {
		t.Errorf("filename %s", name)
	}
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, f := range zr.File {
		rc, _ := f.Open()
		b, _ := io.ReadAll(rc)
		rc.Close()
		files[f.Name] = string(b)
	}
	meta := files["Greet_Tool-2.0.dist-info/METADATA"]
	for _, want := range []string{"Name: Greet_Tool\n", "Version: 2.0\n", "Requires-Dist: tiny-util>=0.2\n"} {
		if !strings.Contains(meta, want) {
			t.Errorf("METADATA lacks %q:\n%s", want, meta)
		}
	}
	if !strings.Contains(files["Greet_Tool-2.0.dist-info/WHEEL"], "Tag: py3-none-any\n") {
		t.Error("WHEEL lacks the tag")
	}
	record := files["Greet_Tool-2.0.dist-info/RECORD"]
	for path, content := range files {
		if strings.HasSuffix(path, "/RECORD") {
			continue
		}
		sum := sha256.Sum256([]byte(content))
		line := fmt.Sprintf("%s,sha256=%s,%d\n", path, base64.RawURLEncoding.EncodeToString(sum[:]), len(content))
		if !strings.Contains(record, line) {
			t.Errorf("RECORD lacks %q", line)
		}
	}
	if _, again, _ := Wheel(testPackages[1]); !bytes.Equal(again, data) {
		t.Error("wheels of the same package differ")
	}
}

// pip in a venv on this machine installs from the index, resolving a
// dependency from it too.
func TestPipInstallsFromIndex(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		if err := registry.EnsureTools(context.Background(), "python3"); err != nil {
			t.Fatal(err)
		}
		python = "python3"
	}
	ix, err := New(testPackages...)
	if err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	venv := filepath.Join(t.TempDir(), "venv")
	run := func(name string, args ...string) string {
		cmd := exec.Command(name, args...)
		cmd.Env = append(os.Environ(), "PIP_CONFIG_FILE=/dev/null", "PIP_NO_CACHE_DIR=1", "PIP_DISABLE_PIP_VERSION_CHECK=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return string(out)
	}
	run(python, "-m", "venv", venv)
	pip := filepath.Join(venv, "bin", "pip")
	run(pip, "install", "--index-url", ix.URL(), "greet-tool==2.0")
	out := run(filepath.Join(venv, "bin", "python"), "-c", "import greet_tool, tiny_util; print(greet_tool.__version__, tiny_util.__version__, greet_tool.hello())")
	if strings.TrimSpace(out) != "2.0 0.3 HELLO" {
		t.Errorf("imported %q", out)
	}
	if n := ix.Downloads("tiny_util-0.3-py3-none-any.whl"); n != 1 {
		t.Errorf("tiny_util 0.3 downloaded %d times", n)
	}
	// An unknown version fails: the index is what pip sees, nothing else.
	cmd := exec.Command(pip, "install", "--index-url", ix.URL(), "greet-tool==9.9")
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("installing a missing version succeeded: %s", out)
	}
}

// A chroot-isolated buildah build, as the controller runs it, reaches the
// index on 127.0.0.1 and pip installs into the Debian python image.
func TestPipInChrootBuild(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	base, err := images.Ensure(ctx, images.DebianPython)
	if err != nil {
		t.Fatal(err)
	}
	ix, err := New(testPackages...)
	if err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	dir := t.TempDir()
	containerfile := `FROM oci-archive:` + base + `
USER root
RUN pip install --break-system-packages --no-cache-dir --index-url ` + ix.URL() + ` greet-tool==2.0
USER app
RUN python3 -c 'import greet_tool; print(greet_tool.hello())' > /home/app/out
`
	if err := os.WriteFile(filepath.Join(dir, "Containerfile"), []byte(containerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	s := images.NewStorage(t.TempDir())
	defer func() {
		if err := s.Remove(); err != nil {
			t.Error(err)
		}
	}()
	if _, err := s.Buildah(ctx, "bud", "--isolation", "chroot", "--network", "host", "-t", "pip-test", dir); err != nil {
		t.Fatal(err)
	}
	ctr, err := s.Buildah(ctx, "from", "--quiet", "--pull-never", "pip-test")
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.Buildah(ctx, "run", "--isolation", "chroot", strings.TrimSpace(ctr), "--", "cat", "/home/app/out")
	if err != nil || strings.TrimSpace(out) != "HELLO" {
		t.Errorf("built image says %q (%v)", out, err)
	}
	if ix.Downloads("Greet_Tool-2.0-py3-none-any.whl") != 1 {
		t.Error("the build did not download from the index")
	}
}

// The conda stand-in of the debian-conda image installs from an http
// channel (the index) into /opt/conda and records every call.
func TestCondaStandInInstallsFromIndex(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	base, err := images.Ensure(ctx, images.DebianConda)
	if err != nil {
		t.Fatal(err)
	}
	ix, err := New(testPackages...)
	if err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	dir := t.TempDir()
	containerfile := `FROM oci-archive:` + base + `
RUN conda install --yes -c ` + ix.URL() + ` -c conda-forge greet-tool=2.0 && conda clean -afy
RUN python -c 'import greet_tool; print(greet_tool.hello())' > /home/app/out && conda list > /home/app/list
`
	if err := os.WriteFile(filepath.Join(dir, "Containerfile"), []byte(containerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	s := images.NewStorage(t.TempDir())
	defer func() {
		if err := s.Remove(); err != nil {
			t.Error(err)
		}
	}()
	if _, err := s.Buildah(ctx, "bud", "--isolation", "chroot", "--network", "host", "-t", "conda-test", dir); err != nil {
		t.Fatal(err)
	}
	ctr, err := s.Buildah(ctx, "from", "--quiet", "--pull-never", "conda-test")
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.Buildah(ctx, "run", "--isolation", "chroot", strings.TrimSpace(ctr), "--", "sh", "-c", "cat /home/app/out /home/app/list")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"HELLO\n", "install --yes -c " + ix.URL() + " -c conda-forge greet-tool=2.0\n", "clean -afy\n", "tiny-util  0.3"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
}
