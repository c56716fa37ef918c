package dockerfile

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"unicode/utf8"

	docker "github.com/fsouza/go-dockerclient"
	"github.com/openshift/imagebuilder"
)

// recordedRun is one RUN as buildah's Dockerfile evaluator hands it to the
// executor.
type recordedRun struct {
	shell bool
	args  []string
	user  string
}

type recorder struct{ runs []recordedRun }

func (r *recorder) Preserve(string) error                                    { return nil }
func (r *recorder) EnsureContainerPath(string) error                         { return nil }
func (r *recorder) EnsureContainerPathAs(string, string, *os.FileMode) error { return nil }
func (r *recorder) Copy([]string, ...imagebuilder.Copy) error                { return nil }
func (r *recorder) UnrecognizedInstruction(step *imagebuilder.Step) error {
	return &unrecognized{step.Original}
}
func (r *recorder) Run(run imagebuilder.Run, config docker.Config) error {
	r.runs = append(r.runs, recordedRun{shell: run.Shell, args: append([]string(nil), run.Args...), user: config.User})
	return nil
}

type unrecognized struct{ line string }

func (u *unrecognized) Error() string { return "unrecognized instruction: " + u.line }

// parseRuns evaluates a Dockerfile with imagebuilder, the library buildah
// builds Dockerfiles with, and returns the RUN argv it would execute. The
// base image's environment defines variables that an unwanted expansion
// would substitute.
func parseRuns(t testing.TB, dockerfile []byte) []recordedRun {
	t.Helper()
	node, err := imagebuilder.ParseDockerfile(bytes.NewReader(dockerfile))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, dockerfile)
	}
	stages, err := imagebuilder.NewStages(node, imagebuilder.NewBuilder(map[string]string{"id": "ARG-EXPANDED"}))
	if err != nil {
		t.Fatalf("stages: %v", err)
	}
	if len(stages) != 1 {
		t.Fatalf("got %d stages, want 1", len(stages))
	}
	b := stages[0].Builder
	if _, err := b.From(stages[0].Node); err != nil {
		t.Fatalf("FROM: %v", err)
	}
	err = b.FromImage(&docker.Image{Config: &docker.Config{
		Image: "base",
		Env:   []string{"PATH=/usr/bin:/bin", "HOME=/ENV-EXPANDED", "id=ENV-EXPANDED", "IFS=x"},
	}}, stages[0].Node)
	if err != nil {
		t.Fatalf("FromImage: %v", err)
	}
	rec := &recorder{}
	for _, child := range stages[0].Node.Children {
		step := b.Step()
		if err := step.Resolve(child); err != nil {
			t.Fatalf("resolve %q: %v", child.Original, err)
		}
		if err := b.Run(step, rec, false); err != nil {
			t.Fatalf("run %q: %v", child.Original, err)
		}
	}
	return rec.runs
}

// stubEnv is a directory of stand-ins for the package managers and for the
// few commands the scripts would otherwise run against the host (rm,
// mktemp). Each stub appends its argv, NUL-separated, to its own file.
type stubEnv struct {
	bin, log string
	// standin, when set, is a second environment whose conda is the
	// stand-in of the test images (hack/images/conda/conda), so every
	// validated rendering is also parsed by a conda command line.
	standin *stubEnv
	// calls is the stand-in's record of what it parsed.
	calls string
}

// standinPath is the conda stand-in the test images ship.
const standinPath = "../../hack/images/conda/conda"

const stubScript = `#!/bin/sh
for a in "${0##*/}" "$@"; do printf '%s\000' "$a"; done >"$ARGV_DIR/${0##*/}.$$"
`

func newStubEnv(t testing.TB) *stubEnv {
	t.Helper()
	dir := t.TempDir()
	s := &stubEnv{bin: filepath.Join(dir, "bin"), log: filepath.Join(dir, "log")}
	for _, d := range []string{s.bin, s.log} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"apt-get", "conda", "pip", "rm"} {
		if err := os.WriteFile(filepath.Join(s.bin, name), []byte(stubScript), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The mirror script needs a scratch directory and real mkdir and awk;
	// its rm stays a stub so nothing on the host is removed.
	mkdir, err := exec.LookPath("mkdir")
	if err != nil {
		t.Fatal(err)
	}
	awk, err := exec.LookPath("awk")
	if err != nil {
		t.Fatal(err)
	}
	scratch := filepath.Join(dir, "scratch")
	helpers := map[string]string{
		"mktemp": "#!/bin/sh\n" + mkdir + " -p " + scratch + ".$$ && echo " + scratch + ".$$\n",
		"mkdir":  "#!/bin/sh\nexec " + mkdir + " \"$@\"\n",
		"awk":    "#!/bin/sh\nexec " + awk + " \"$@\"\n",
	}
	for name, body := range helpers {
		if err := os.WriteFile(filepath.Join(s.bin, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// newStandinEnv is a stub environment whose conda is the images' stand-in,
// with its root prefix (the directory above bin/) made a conda environment.
// Its pip stays a stub: a channel URL makes the stand-in call it.
func newStandinEnv(t testing.TB) *stubEnv {
	t.Helper()
	s := newStubEnv(t)
	script, err := os.ReadFile(standinPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.bin, "conda"), script, 0o755); err != nil {
		t.Fatal(err)
	}
	meta := filepath.Join(filepath.Dir(s.bin), "conda-meta")
	if err := os.Mkdir(meta, 0o755); err != nil {
		t.Fatal(err)
	}
	s.calls = filepath.Join(meta, "standin-calls")
	return s
}

// newStubEnvs is a stub environment with a stand-in environment beside it.
func newStubEnvs(t testing.TB) *stubEnv {
	s := newStubEnv(t)
	s.standin = newStandinEnv(t)
	return s
}

// standinCall is one call the conda stand-in parsed.
type standinCall struct {
	cmd, prefix string
	options     []string
	channels    []string
	specs       []string
}

// standinCalls executes the RUNs in the stand-in environment and returns
// what the stand-in made of each conda call.
func (s *stubEnv) standinCalls(t testing.TB, runs []recordedRun) []standinCall {
	t.Helper()
	if err := os.WriteFile(s.calls, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s.execute(t, runs)
	data, err := os.ReadFile(s.calls)
	if err != nil {
		t.Fatal(err)
	}
	var calls []standinCall
	var cur *standinCall
	for len(data) > 0 {
		i := bytes.IndexByte(data, 0)
		if i < 0 {
			t.Fatalf("stand-in record not NUL-terminated: %q", data)
		}
		field := string(data[:i])
		data = data[i+1:]
		if field == "" {
			if cur == nil {
				t.Fatal("empty stand-in record")
			}
			calls = append(calls, *cur)
			cur = nil
			continue
		}
		if cur == nil {
			cur = &standinCall{}
		}
		key, val, _ := strings.Cut(field, "=")
		switch key {
		case "cmd":
			cur.cmd = val
		case "prefix":
			cur.prefix = val
		case "option":
			cur.options = append(cur.options, val)
		case "channel":
			cur.channels = append(cur.channels, val)
		case "spec":
			cur.specs = append(cur.specs, val)
		default:
			t.Fatalf("unknown stand-in field %q", field)
		}
	}
	if cur != nil {
		t.Fatalf("unterminated stand-in record %+v", *cur)
	}
	return calls
}

// checkStandin runs the rendering against the conda stand-in: conda's own
// command-line grammar must read the channels and every entry back, one
// spec per entry byte for byte, and the clean call must parse too.
func checkStandin(t testing.TB, s *stubEnv, runs []recordedRun, n Inputs) {
	t.Helper()
	calls := s.standinCalls(t, runs)
	if len(n.Packages.Conda) == 0 {
		if len(calls) != 0 {
			t.Errorf("conda ran without conda packages: %+v", calls)
		}
		return
	}
	if len(calls) != 2 {
		t.Fatalf("the stand-in parsed %d calls, want install and clean: %+v", len(calls), calls)
	}
	install, clean := calls[0], calls[1]
	if install.cmd != "install" || !sameArgs(install.options, []string{"--yes"}) ||
		!sameArgs(install.channels, n.Sources.CondaChannels) || !sameArgs(install.specs, n.Packages.Conda) {
		t.Errorf("the stand-in read the install as %+v\nwant channels %q and specs %q", install, n.Sources.CondaChannels, n.Packages.Conda)
	}
	if clean.cmd != "clean" || !sameArgs(clean.options, []string{"--all", "--yes"}) || len(clean.specs) != 0 {
		t.Errorf("the stand-in read the clean as %+v", clean)
	}
}

// invocation is one recorded stub call: the command name, then its arguments.
type invocation []string

// execute runs each RUN argv exactly as given (no shell of ours in between)
// and returns the stub calls, sorted by command name then arguments.
func (s *stubEnv) execute(t testing.TB, runs []recordedRun) []invocation {
	t.Helper()
	entries, _ := os.ReadDir(s.log)
	for _, e := range entries {
		os.Remove(filepath.Join(s.log, e.Name()))
	}
	for _, r := range runs {
		if r.shell || len(r.args) == 0 || r.args[0] != "/bin/sh" {
			t.Fatalf("RUN is not exec form with /bin/sh: shell=%v args=%q", r.shell, r.args)
		}
		cmd := exec.Command(r.args[0], r.args[1:]...)
		cmd.Env = []string{"PATH=" + s.bin, "ARGV_DIR=" + s.log, "HOME=/nonexistent"}
		cmd.Dir = s.log
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("running the RUN with arguments %q: %v\n%s", r.args[3:], err, out)
		}
	}
	entries, err := os.ReadDir(s.log)
	if err != nil {
		t.Fatal(err)
	}
	var calls []invocation
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(s.log, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if len(data) == 0 || data[len(data)-1] != 0 {
			t.Fatalf("malformed stub log %s: %q", e.Name(), data)
		}
		calls = append(calls, invocation(strings.Split(string(data[:len(data)-1]), "\x00")))
	}
	sort.Slice(calls, func(i, j int) bool {
		return strings.Join(calls[i], "\x00") < strings.Join(calls[j], "\x00")
	})
	return calls
}

// find returns the calls of name whose argument list starts with prefix.
func find(calls []invocation, name string, prefix ...string) []invocation {
	var out []invocation
	for _, c := range calls {
		if c[0] == name && len(c) > len(prefix) && strings.Join(c[1:1+len(prefix)], "\x00") == strings.Join(prefix, "\x00") {
			out = append(out, c)
		}
	}
	return out
}

func sameArgs(a, b []string) bool {
	return len(a) == len(b) && strings.Join(a, "\x00") == strings.Join(b, "\x00")
}

// checkDelivery renders in (validated or not), evaluates it the way buildah
// does, executes the RUNs against the stubs and checks that each package
// manager's install call has exactly the expected argv: the fixed options,
// the sources one value per argument, "--" and the normalized list.
func checkDelivery(t testing.TB, s *stubEnv, in Inputs, validated bool) {
	t.Helper()
	var out []byte
	if validated {
		var err error
		if out, err = Render(in); err != nil {
			t.Fatalf("Render: %v", err)
		}
	} else {
		out = render(Normalize(in))
	}
	runs := parseRuns(t, out)
	calls := s.execute(t, runs)
	n := Normalize(in)
	if validated && s.standin != nil {
		checkStandin(t, s.standin, runs, n)
	}

	var aptCalls []invocation
	for _, c := range calls {
		if c[0] == "apt-get" && slices.Contains(c, "install") {
			aptCalls = append(aptCalls, c)
		}
	}
	aptWant := append([]string{"apt-get", "install", "-y", "--no-install-recommends", "--"}, n.Packages.Apt...)
	if n.Sources.AptMirror != "" {
		// apt-get -o Dir::Etc::SourceList=<tmp> -o Dir::Etc::SourceParts=<tmp> install ...
		for i, c := range aptCalls {
			if len(c) < 5 || c[1] != "-o" || !strings.HasPrefix(c[2], "Dir::Etc::SourceList=") || c[3] != "-o" || !strings.HasPrefix(c[4], "Dir::Etc::SourceParts=") {
				t.Fatalf("apt-get install not pointed at rewritten sources: %q", c)
			}
			aptCalls[i] = append(invocation{"apt-get"}, c[5:]...)
		}
	}
	checkCall(t, "apt-get install", aptCalls, n.Packages.Apt, aptWant)

	condaWant := []string{"conda", "install", "--yes"}
	for _, c := range n.Sources.CondaChannels {
		condaWant = append(condaWant, "-c", c)
	}
	condaWant = append(append(condaWant, "--"), n.Packages.Conda...)
	checkCall(t, "conda install", find(calls, "conda", "install"), n.Packages.Conda, condaWant)

	pipWant := []string{"pip", "install", "--no-cache-dir"}
	if n.Sources.PipIndexURL != "" {
		pipWant = append(pipWant, "--index-url", n.Sources.PipIndexURL)
	}
	for _, u := range n.Sources.PipExtraIndexURLs {
		pipWant = append(pipWant, "--extra-index-url", u)
	}
	for _, h := range n.Sources.PipTrustedHosts {
		pipWant = append(pipWant, "--trusted-host", h)
	}
	pipWant = append(append(pipWant, "--"), n.Packages.Pip...)
	checkCall(t, "pip install", find(calls, "pip", "install"), n.Packages.Pip, pipWant)
}

func checkCall(t testing.TB, what string, calls []invocation, packages, want []string) {
	t.Helper()
	if len(packages) == 0 {
		if len(calls) != 0 {
			t.Errorf("%s ran without packages: %q", what, calls)
		}
		return
	}
	if len(calls) != 1 {
		t.Fatalf("%s ran %d times, want once: %q", what, len(calls), calls)
	}
	if !sameArgs(calls[0], want) {
		t.Errorf("%s received\n%q\nwant\n%q", what, calls[0], want)
	}
}

// argvSeeds are the spec's examples plus strings a shell or a Dockerfile
// parser would treat specially.
var argvSeeds = []string{
	"requests>=2.31", "requests[socks]>=2.31,<3", "numpy==1.26.*",
	`pywin32>=1.0; sys_platform == "win32"`, "pkg @ https://example.com/pkg-1.0.whl",
	"tensorflow=1.13*", "conda-forge::numpy>=1.26", "numpy>=1.26,<2",
	"curl", "libc6:amd64", "curl/bookworm-backports", "tzdata=1:2.3-4~deb12u1",
	"$(id)", "`id`", ";rm -rf /", "'", `"`, `\`, "a\nb", "a\r\nb", "ünïcödé", "\u2028", "${HOME}", "$id", "${id}",
	"-c conda-forge", "--index-url https://evil/simple", "-r req.txt", "*", "a b", " ", "",
	"x \\", "x\\\n", "<<EOF", "# comment", "\t", "]", `", "evil`, "\\\"", "%", "a\x00b",
	`shell; sys_platform == "$(touch /tmp/pwned)` + "`id`" + `;echo >~/x|&"`,
}

func TestArgvSeedsUnvalidated(t *testing.T) {
	s := newStubEnvs(t)
	for _, seed := range argvSeeds {
		if strings.IndexByte(seed, 0) >= 0 {
			continue // argv cannot carry NUL
		}
		in := Inputs{
			BaseImage: "ubuntu",
			User:      "jovyan",
			Packages:  Packages{Apt: []string{seed, "z"}, Conda: []string{seed}, Pip: []string{"a", seed}},
			Sources:   Sources{PipIndexURL: seed, CondaChannels: []string{seed, "x"}},
		}
		checkDelivery(t, s, in, false)
	}
}

func TestArgvWithMirrorAndSources(t *testing.T) {
	s := newStubEnvs(t)
	in := goldenCases[len(goldenCases)-1].in
	checkDelivery(t, s, in, true)
	calls := s.execute(t, parseRuns(t, mustRender(t, in)))
	update := find(calls, "apt-get", "-o")
	if len(update) != 2 {
		t.Fatalf("want apt-get update and install with -o options, got %q", update)
	}
	for _, c := range update {
		if !strings.HasPrefix(c[2], "Dir::Etc::SourceList=") || !strings.HasPrefix(c[4], "Dir::Etc::SourceParts=") {
			t.Errorf("apt-get not pointed at the rewritten sources: %q", c)
		}
	}
}

func mustRender(t testing.TB, in Inputs) []byte {
	t.Helper()
	out, err := Render(in)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// FuzzRenderArgv: every entry is either rejected by validation or arrives at
// its package manager as exactly one argument, byte for byte, after
// rendering, parsing with imagebuilder and executing with /bin/sh. The
// unvalidated renderer is held to the same property for any UTF-8 string
// without NUL, so the guarantee does not rest on validation alone.
func FuzzRenderArgv(f *testing.F) {
	for _, seed := range argvSeeds {
		for m := byte(0); m < 3; m++ {
			f.Add(m, seed)
		}
	}
	s := newStubEnvs(f)
	f.Fuzz(func(t *testing.T, manager byte, entry string) {
		var p Packages
		switch manager % 3 {
		case 0:
			p.Apt = []string{"zz-neighbour", entry}
		case 1:
			p.Conda = []string{"zz-neighbour", entry}
		default:
			p.Pip = []string{"zz-neighbour", entry}
		}
		in := Inputs{BaseImage: "ubuntu:22.04", User: "1000", Packages: p}
		if errs := Validate(in); len(errs) == 0 {
			checkDelivery(t, s, in, true)
		} else if len(errs) != 1 || !strings.HasSuffix(errs[0].Field, "[1]") {
			t.Fatalf("want one error for the entry at index 1, got %v", errs)
		}
		if !utf8.ValidString(entry) || strings.IndexByte(entry, 0) >= 0 || len(entry) > 4096 {
			return
		}
		in.Sources = Sources{PipIndexURL: entry, PipExtraIndexURLs: []string{entry}, CondaChannels: []string{entry}}
		in.Packages.Apt = append(in.Packages.Apt, entry)
		in.Packages.Pip = append(in.Packages.Pip, entry)
		in.Packages.Conda = append(in.Packages.Conda, entry)
		checkDelivery(t, s, in, false)
	})
}

// Every golden rendering reaches the stubs and the conda stand-in intact.
func TestArgvGolden(t *testing.T) {
	s := newStubEnvs(t)
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) { checkDelivery(t, s, tc.in, true) })
	}
}
