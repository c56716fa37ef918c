package dockerfile

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

var goldenCases = []struct {
	name string
	in   Inputs
}{
	{"base_only", Inputs{BaseImage: "ubuntu:22.04"}},
	{"base_only_user", Inputs{BaseImage: "jupyter/base-notebook", User: "jovyan"}},
	{"apt_only", Inputs{
		BaseImage: "localhost:5000/team/base:1.0",
		Packages:  Packages{Apt: []string{"curl", "libc6:amd64", "tzdata=1:2.3-4~deb12u1", "curl/bookworm-backports"}},
	}},
	{"pip_only", Inputs{
		BaseImage: "python:3.12-slim",
		Packages: Packages{Pip: []string{
			"requests[socks]>=2.31,<3", "numpy==1.26.*", `pywin32>=1.0; sys_platform == "win32"`,
			"pkg @ https://example.com/pkg-1.0.whl",
		}},
	}},
	{"conda_only", Inputs{
		BaseImage: "continuumio/miniconda3:24.1.2-0",
		Packages:  Packages{Conda: []string{"tensorflow=1.13*", "conda-forge::numpy>=1.26", "numpy>=1.26,<2"}},
	}},
	{"mixed", Inputs{
		BaseImage: "gcr.io/my-private-repo/base@sha256:" + strings.Repeat("ab", 32),
		Packages: Packages{
			Apt:   []string{"git", "build-essential"},
			Pip:   []string{"requests>=2.31", "scikit-learn"},
			Conda: []string{"numpy", "pandas>=2"},
		},
	}},
	{"user_restore", Inputs{
		BaseImage: "jupyter/base-notebook:2024-01-01",
		User:      "1000:100",
		Packages: Packages{
			Apt: []string{"vim"},
			Pip: []string{"requests"},
		},
	}},
	{"package_sources", Inputs{
		BaseImage: "registry.internal:5000/ml/base:2",
		User:      "jovyan",
		Packages: Packages{
			Apt:   []string{"curl"},
			Pip:   []string{"requests>=2.31"},
			Conda: []string{"numpy"},
		},
		Sources: Sources{
			AptMirror:         "http://apt.internal/",
			PipIndexURL:       "https://pypi.internal/simple",
			PipExtraIndexURLs: []string{"https://extra.internal/simple"},
			PipTrustedHosts:   []string{"pypi.internal", "extra.internal"},
			CondaChannels:     []string{"https://conda.internal/ml", "conda-forge"},
		},
	}},
}

func TestRenderGolden(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Render(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", tc.name+".Dockerfile")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./pkg/dockerfile -run TestRenderGolden -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Render output differs from %s (rerun with -update if the change is intended):\n%s", path, got)
			}
			// The golden file is what buildah reads: it must parse, and its
			// RUNs must carry the packages as separate argv elements.
			runs := parseRuns(t, got)
			checkRunPackages(t, runs, Normalize(tc.in).Packages)
		})
	}
}

// checkRunPackages asserts each section's argv ends with "--"-free package
// entries in normalized order, the way render lays them out.
func checkRunPackages(t *testing.T, runs []recordedRun, p Packages) {
	t.Helper()
	var want [][]string
	for _, list := range [][]string{p.Apt, p.Conda, p.Pip} {
		if len(list) > 0 {
			want = append(want, list)
		}
	}
	if len(runs) != len(want) {
		t.Fatalf("got %d RUN instructions, want %d", len(runs), len(want))
	}
	for i, r := range runs {
		if r.shell {
			t.Errorf("RUN %d is in shell form", i)
		}
		if len(r.args) < len(want[i]) {
			t.Fatalf("RUN %d has too few arguments: %q", i, r.args)
		}
		tail := r.args[len(r.args)-len(want[i]):]
		if strings.Join(tail, "\x00") != strings.Join(want[i], "\x00") {
			t.Errorf("RUN %d ends with %q, want %q", i, tail, want[i])
		}
	}
}

func TestRenderDeterministic(t *testing.T) {
	a := Inputs{
		BaseImage: "ubuntu",
		Packages: Packages{
			Apt:   []string{"vim", "curl", "git", "curl"},
			Pip:   []string{"b", "a", "c"},
			Conda: []string{"z", "y"},
		},
		Sources: Sources{CondaChannels: []string{"b", "a"}},
	}
	b := Inputs{
		BaseImage: "docker.io/library/ubuntu:latest",
		Packages: Packages{
			Apt:   []string{"git", "curl", "vim"},
			Pip:   []string{"c", "b", "a"},
			Conda: []string{"y", "z"},
		},
		Sources: Sources{CondaChannels: []string{"b", "a"}},
	}
	ra, err := Render(a)
	if err != nil {
		t.Fatal(err)
	}
	rb, err := Render(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ra, rb) {
		t.Errorf("equivalent inputs rendered differently:\n%s\n---\n%s", ra, rb)
	}
	again, _ := Render(a)
	if !bytes.Equal(ra, again) {
		t.Errorf("rendering is not repeatable")
	}
	// Channel order is priority and must survive.
	if !bytes.Contains(ra, []byte(`"-c", \`+"\n"+`    "b", \`+"\n"+`    "-c", \`+"\n"+`    "a"`)) {
		t.Errorf("conda channels lost their order:\n%s", ra)
	}
}

func TestRenderStructure(t *testing.T) {
	in := Inputs{
		BaseImage: "ubuntu:22.04",
		User:      "jovyan",
		Packages:  Packages{Apt: []string{"curl"}, Pip: []string{"requests"}, Conda: []string{"numpy"}},
	}
	out, err := Render(in)
	if err != nil {
		t.Fatal(err)
	}
	text := string(out)
	if !strings.HasPrefix(text, "FROM docker.io/library/ubuntu:22.04\nUSER 0:0\nRUN [") {
		t.Errorf("unexpected start:\n%s", text)
	}
	if !strings.HasSuffix(text, "]\nUSER jovyan\n") {
		t.Errorf("the base image's user is not restored at the end:\n%s", text)
	}
	apt, conda, pip := strings.Index(text, "apt-get install"), strings.Index(text, "conda install"), strings.Index(text, "pip install")
	if !(apt >= 0 && apt < conda && conda < pip) {
		t.Errorf("sections are not in apt, conda, pip order (%d, %d, %d)", apt, conda, pip)
	}
	// Without a user there are no USER lines at all.
	in.User = ""
	out, _ = Render(in)
	if strings.Contains(string(out), "USER") {
		t.Errorf("USER emitted for a root base image:\n%s", out)
	}
	for _, want := range []string{"--no-install-recommends", "DEBIAN_FRONTEND=noninteractive", "rm -rf /var/lib/apt/lists/*",
		"apt-get clean", "--no-cache-dir", "PIP_BREAK_SYSTEM_PACKAGES=1", "conda clean --all --yes", "conda install --yes"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

func TestRenderRejectsInvalidInputs(t *testing.T) {
	cases := []struct {
		in   Inputs
		want string
	}{
		{Inputs{}, "baseImage: Required"},
		{Inputs{BaseImage: "ubuntu", Packages: Packages{Pip: []string{"ok", "$(id)"}}}, "packages.pip[1]"},
		{Inputs{BaseImage: "ubuntu", User: "$X"}, "user"},
		{Inputs{BaseImage: "ubuntu", Sources: Sources{PipIndexURL: "https://a:b@x/simple"}}, "sources.pipIndexURL"},
	}
	for _, tc := range cases {
		out, err := Render(tc.in)
		if err == nil || out != nil {
			t.Errorf("%+v: want an error and no output, got %q, %v", tc.in, out, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %q does not mention %q", tc.in, err, tc.want)
		}
	}
}

func TestNormalize(t *testing.T) {
	in := Inputs{
		BaseImage: "localhost:5000/x",
		Packages:  Packages{Apt: []string{"b", "a", "b"}, Pip: []string{}},
		Sources:   Sources{AptMirror: "http://m/debian//", CondaChannels: []string{}},
	}
	orig := append([]string(nil), in.Packages.Apt...)
	n := Normalize(in)
	if n.BaseImage != "localhost:5000/x:latest" {
		t.Errorf("base image normalized to %q; localhost:5000 must stay the registry", n.BaseImage)
	}
	if strings.Join(n.Packages.Apt, ",") != "a,b" || n.Packages.Pip != nil || n.Sources.CondaChannels != nil {
		t.Errorf("unexpected normalized packages/sources: %+v", n)
	}
	if n.Sources.AptMirror != "http://m/debian" {
		t.Errorf("mirror = %q", n.Sources.AptMirror)
	}
	if strings.Join(in.Packages.Apt, ",") != strings.Join(orig, ",") {
		t.Errorf("Normalize modified its input")
	}
	if got := Normalize(n); got.BaseImage != n.BaseImage || strings.Join(got.Packages.Apt, ",") != "a,b" {
		t.Errorf("Normalize is not idempotent")
	}
}

func BenchmarkRender(b *testing.B) {
	in := goldenCases[len(goldenCases)-1].in
	in.Packages.Pip = append([]string{}, in.Packages.Pip...)
	for i := 0; i < 50; i++ {
		in.Packages.Pip = append(in.Packages.Pip, "package-"+strconv.Itoa(i)+">=1.0,<2; python_version >= '3.8'")
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Render(in); err != nil {
			b.Fatal(err)
		}
	}
}

func TestAptMirrorRewrite(t *testing.T) {
	awk, err := exec.LookPath("awk")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, in, want string }{
		{"one-line", `# deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm main contrib
deb-src https://deb.debian.org/debian bookworm main
  deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://security.debian.org/debian-security bookworm-security main
deb [ trusted=yes ] http://archive.ubuntu.com/ubuntu jammy main
deb file:/srv/local ./
deb cdrom:[Debian]/ bookworm main
`, `# deb http://deb.debian.org/debian bookworm main
deb http://mirror.internal:8080/apt/debian bookworm main contrib
deb-src http://mirror.internal:8080/apt/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://mirror.internal:8080/apt/debian-security bookworm-security main
deb [ trusted=yes ] http://mirror.internal:8080/apt/ubuntu jammy main
deb file:/srv/local ./
deb cdrom:[Debian]/ bookworm main
`},
		{"deb822", `Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
uris: http://deb.debian.org/debian-security https://other.example.com/debian
 http://third.example.com
Suites: bookworm-security
`, `Types: deb
URIs: http://mirror.internal:8080/apt/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.internal:8080/apt/debian-security http://mirror.internal:8080/apt/debian
 http://mirror.internal:8080/apt
Suites: bookworm-security
`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(awk, aptRewriteAwk)
			cmd.Env = []string{"MIRROR=http://mirror.internal:8080/apt"}
			cmd.Stdin = strings.NewReader(tc.in)
			out, err := cmd.Output()
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tc.want {
				t.Errorf("got:\n%s\nwant:\n%s", out, tc.want)
			}
		})
	}
	// Characters that sed or awk -v would interpret arrive literally.
	cmd := exec.Command(awk, aptRewriteAwk)
	cmd.Env = []string{`MIRROR=http://m/&\1\\n`}
	cmd.Stdin = strings.NewReader("deb http://deb.debian.org/debian bookworm main\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := "deb http://m/&\\1\\\\n/debian bookworm main\n"; string(out) != want {
		t.Errorf("got %q, want %q", out, want)
	}
}
