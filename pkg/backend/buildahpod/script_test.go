package buildahpod

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// stubBuildah records each call's argv (NUL-separated, one file per call)
// and answers like buildah: inspect prints the prefixed values, push writes
// the digest file. STUB_FAIL=<subcommand> makes that subcommand fail the
// way buildah does.
const stubBuildah = `#!/bin/sh
n=$(ls "$STUB_LOG" | wc -l)
for a in "$@"; do printf '%s\000' "$a"; done >"$STUB_LOG/$n"
if [ -n "${STUB_CONF:-}" ]; then cat "${CONTAINERS_STORAGE_CONF:-/dev/null}" >>"$STUB_CONF"; fi
vfs=''
while [ "${1#--}" != "$1" ]; do vfs=$vfs$2; shift 2; done
if [ -n "${STUB_MARKED:-}" ] && [ -e "${IMAGESPEC_BUILD_DONE_MARKER:-/nonexistent}" ]; then echo "$1" >>"$STUB_MARKED"; fi
if [ -n "$vfs" ] && [ "$STUB_FAIL" = vfs ]; then echo 'Error: vfs failed' >&2; exit 125; fi
if [ "$1" = pull ] && [ "$STUB_FAIL" = pull ]; then echo 'Error: pull failed' >&2; exit 125; fi
case $1 in
pull)
  if [ -n "$vfs" ]; then echo 'sha256:storeimageid'; fi ;;
inspect)
  case $5 in
  *Digest*) echo 'WARN[0000] a warning on stderr' >&2; echo 'imagespec-digest=sha256:base' ;;
  *User*) echo "imagespec-user=$STUB_USER" ;;
  esac ;;
push)
  if [ "$STUB_FAIL" = push ]; then echo 'Error: pushing: unauthorized: authentication required' >&2; exit 125; fi
  prev=''
  for a in "$@"; do if [ "$prev" = --digestfile ]; then printf 'sha256:pushed' >"$a"; fi; prev=$a; done ;;
bud)
  if [ "$STUB_FAIL" = bud ]; then echo 'STEP 2/3: RUN apt-get'; echo 'error building at STEP "RUN": exit status 100' >&2; exit 1; fi ;;
esac
exit 0
`

type scriptRun struct {
	calls [][]string
	msg   string
	out   string
	code  int
}

// runScript runs the build script on this machine with the stub buildah and
// the given environment (values that would break a script pasting them).
func runScript(t *testing.T, env map[string]string) scriptRun {
	t.Helper()
	return runScriptText(t, buildScript, env)
}

// runScriptText runs script as runScript runs the build script.
func runScriptText(t *testing.T, script string, env map[string]string) scriptRun {
	t.Helper()
	dir := t.TempDir()
	bin, log, df := filepath.Join(dir, "bin"), filepath.Join(dir, "log"), filepath.Join(dir, "df")
	for _, d := range []string{bin, log, df} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(bin, "buildah"), []byte(stubBuildah), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{keyDockerfile, keyDockerfileUser} {
		if err := os.WriteFile(filepath.Join(df, f), []byte("FROM x\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	msg := filepath.Join(dir, "termination-log")
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Dir = dir
	cmd.Env = []string{
		"PATH=" + bin + ":/usr/bin:/bin",
		"STUB_LOG=" + log,
		"IMAGESPEC_TERMINATION_LOG=" + msg,
		"IMAGESPEC_DOCKERFILE_DIR=" + df,
		"TMPDIR=" + dir,
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	run := scriptRun{out: string(out)}
	if ee, ok := err.(*exec.ExitError); ok {
		run.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(msg)
	run.msg = string(b)
	entries, err := os.ReadDir(log)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(entries, func(a, b os.DirEntry) int { return len(a.Name()) - len(b.Name()) })
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(log, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		run.calls = append(run.calls, strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00"))
	}
	if _, err := os.Stat(filepath.Join(dir, "pwned")); err == nil {
		t.Errorf("a value ran as shell code:\n%s", out)
	}
	return run
}

func findCall(calls [][]string, sub string) []string {
	for _, c := range calls {
		if c[0] == sub {
			return c
		}
	}
	return nil
}

// Every value reaches buildah as one argument, byte for byte, and none is
// ever run as shell code, whatever it holds.
func TestScriptTakesValuesAsData(t *testing.T) {
	nasty := `reg.local/a:b $(touch pwned) ` + "`touch pwned`" + ` ; touch pwned "' *`
	user := `app $(touch pwned) ;touch pwned`
	run := runScript(t, map[string]string{
		"IMAGESPEC_BASE_IMAGE":    nasty + "-base",
		"IMAGESPEC_TARGET_IMAGE":  nasty + "-target",
		"IMAGESPEC_PUSH_AUTHFILE": "/nonexistent/push.json",
		"STUB_USER":               user,
	})
	if run.code != 0 {
		t.Fatalf("exit %d:\n%s", run.code, run.out)
	}
	pull := findCall(run.calls, "pull")
	if pull == nil || pull[len(pull)-1] != nasty+"-base" || slices.Contains(pull, "--authfile") {
		t.Errorf("pull argv %q (a missing authfile is not passed)", pull)
	}
	bud := findCall(run.calls, "bud")
	if bud == nil || !slices.Contains(bud, "IMAGESPEC_BASE_USER="+user) || !slices.Contains(bud, nasty+"-target") ||
		!slices.Contains(bud, "--pull=never") || !strings.HasSuffix(bud[slices.Index(bud, "-f")+1], "/"+keyDockerfileUser) {
		t.Errorf("bud argv %q", bud)
	}
	push := findCall(run.calls, "push")
	if push == nil || push[len(push)-1] != "docker://"+nasty+"-target" || push[len(push)-2] != nasty+"-target" {
		t.Errorf("push argv %q", push)
	}
	if !regexp.MustCompile(`^digest=sha256:pushed\nbaseDigest=sha256:base\nstarted=[0-9]+\.[0-9]{9}\npulled=[0-9]+\.[0-9]{9}\nbuilt=[0-9]+\.[0-9]{9}\nfinished=[0-9]+\.[0-9]{9}\n$`).MatchString(run.msg) {
		t.Errorf("termination message %q", run.msg)
	}
}

// A base without a user builds the root Dockerfile; authfiles that exist
// are passed with --authfile, the pull Secret's before the push Secret's.
func TestScriptAuthfilesAndRootBase(t *testing.T) {
	dir := t.TempDir()
	push, pull := filepath.Join(dir, "push.json"), filepath.Join(dir, "pull.json")
	for _, f := range []string{push, pull} {
		if err := os.WriteFile(f, []byte(`{"auths":{}}`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	run := runScript(t, map[string]string{
		"IMAGESPEC_BASE_IMAGE": "reg.local/base:1", "IMAGESPEC_TARGET_IMAGE": "reg.local/t:1",
		"IMAGESPEC_PUSH_AUTHFILE": push, "IMAGESPEC_PULL_AUTHFILE": pull,
	})
	if run.code != 0 {
		t.Fatalf("exit %d:\n%s", run.code, run.out)
	}
	argAfter := func(call []string, flag string) string {
		if i := slices.Index(call, flag); i >= 0 && i+1 < len(call) {
			return call[i+1]
		}
		return ""
	}
	if got := argAfter(findCall(run.calls, "pull"), "--authfile"); got != pull {
		t.Errorf("pull authfile %q, want %q", got, pull)
	}
	if got := argAfter(findCall(run.calls, "push"), "--authfile"); got != push {
		t.Errorf("push authfile %q, want %q", got, push)
	}
	if got := argAfter(findCall(run.calls, "bud"), "-f"); !strings.HasSuffix(got, "/"+keyDockerfile) {
		t.Errorf("bud Dockerfile %q, want the root variant", got)
	}
}

// A failing stage exits with its code and writes stage, buildah's exit
// code and its last error line, which classify turns into the reason.
func TestScriptReportsTheFailedStage(t *testing.T) {
	for _, c := range []struct {
		fail, stage, errLine string
		code                 int
	}{
		{"push", "push", "Error: pushing: unauthorized: authentication required", exitPush},
		{"bud", "build", `error building at STEP "RUN": exit status 100`, exitBuild},
	} {
		run := runScript(t, map[string]string{
			"IMAGESPEC_BASE_IMAGE": "reg.local/base:1", "IMAGESPEC_TARGET_IMAGE": "reg.local/t:1", "STUB_FAIL": c.fail,
		})
		want := "stage=" + c.stage + "\n"
		if run.code != c.code || !strings.HasPrefix(run.msg, want) || !strings.Contains(run.msg, "error="+c.errLine+"\n") {
			t.Errorf("%s: exit %d, message %q; want exit %d, %q and the error line", c.fail, run.code, run.msg, c.code, want)
		}
		if c.fail == "bud" && findCall(run.calls, "push") != nil {
			t.Error("pushed after a failed build")
		}
	}
	run := runScript(t, map[string]string{"IMAGESPEC_TARGET_IMAGE": "reg.local/t:1"})
	if run.code != exitSetup || !strings.Contains(run.msg, "IMAGESPEC_BASE_IMAGE is not set") || len(run.calls) != 0 {
		t.Errorf("without a base image: exit %d, message %q, %d buildah calls", run.code, run.msg, len(run.calls))
	}
}

// The base-store container pulls the base into its own store, packs that
// store and the blob info cache as a one-layer OCI image, pushes it
// zstd-compressed through a vfs store of its own to the tag it was given, and
// reports the pushed digest by repository; it exits 0 whatever fails.
func TestBaseStoreScript(t *testing.T) {
	for _, fail := range []string{"", "vfs", "pull"} {
		dir := t.TempDir()
		root := filepath.Join(dir, "base-store")
		graph := filepath.Join(root, "storage")
		for _, d := range []string{"overlay/abc/diff/etc", "overlay-images", "overlay-layers", "overlay/l"} {
			if err := os.MkdirAll(filepath.Join(graph, d), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(graph, "overlay/abc/diff/etc/os-release"), []byte("ID=debian\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, "cache"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "cache", "blob-info-cache-v1.sqlite"), []byte("bic"), 0o600); err != nil {
			t.Fatal(err)
		}
		push := filepath.Join(dir, "push.json")
		if err := os.WriteFile(push, []byte(`{"auths":{}}`), 0o600); err != nil {
			t.Fatal(err)
		}
		run := runScriptText(t, baseStoreScript, map[string]string{
			"IMAGESPEC_BASE_IMAGE": "reg.local/base:1", "IMAGESPEC_PUSH_AUTHFILE": push,
			"IMAGESPEC_BASE_STORE_ROOT": root, "IMAGESPEC_BLOB_INFO_CACHE_DIR": filepath.Join(dir, "cache"),
			"IMAGESPEC_BASE_STORE_PUSH": "reg.local:5000/imagespec_cache/team:base-0123", "STUB_FAIL": fail,
			"IMAGESPEC_BUILD_DONE_MARKER": push, // there already: no wait
		})
		if run.code != 0 {
			t.Fatalf("fail=%q: exit %d:\n%s", fail, run.code, run.out)
		}
		t2 := parseTermination(run.msg)
		if fail != "" {
			if t2.baseStore != "" || t2.err == "" {
				t.Errorf("fail=%q: termination message %q, want no store and the error", fail, run.msg)
			}
			continue
		}
		if t2.baseStore != "reg.local:5000/imagespec_cache/team@sha256:pushed" {
			t.Errorf("termination message %q", run.msg)
		}
		var storePull, storePush []string
		for _, c := range run.calls {
			switch {
			case slices.Contains(c, "overlay") && slices.Contains(c, "pull"):
				storePull = c
			case slices.Contains(c, "vfs") && slices.Contains(c, "push"):
				storePush = c
			}
		}
		if storePull == nil || storePull[len(storePull)-1] != "reg.local/base:1" || storePull[1] != graph {
			t.Errorf("store pull argv %q", storePull)
		}
		if storePush == nil || storePush[len(storePush)-1] != "docker://reg.local:5000/imagespec_cache/team:base-0123" ||
			!slices.Contains(storePush, "--force-compression") || storePush[slices.Index(storePush, "--compression-format")+1] != "zstd" || storePush[len(storePush)-2] != "sha256:storeimageid" {
			t.Errorf("store push argv %q", storePush)
		}
		// The packed layout: index -> manifest -> one uncompressed layer
		// holding the store and the blob info cache.
		layout := filepath.Join(root, "oci")
		index, err := os.ReadFile(filepath.Join(layout, "index.json"))
		if err != nil {
			t.Fatal(err)
		}
		var idx struct{ Manifests []struct{ Digest string } }
		if err := json.Unmarshal(index, &idx); err != nil || len(idx.Manifests) != 1 {
			t.Fatalf("index.json %s: %v", index, err)
		}
		blob := func(d string) []byte {
			b, err := os.ReadFile(filepath.Join(layout, "blobs", "sha256", strings.TrimPrefix(d, "sha256:")))
			if err != nil {
				t.Fatal(err)
			}
			if sum := sha256.Sum256(b); "sha256:"+hex.EncodeToString(sum[:]) != d {
				t.Fatalf("blob %s has another digest", d)
			}
			return b
		}
		var man struct {
			Config struct{ Digest string }
			Layers []struct{ MediaType, Digest string }
		}
		if err := json.Unmarshal(blob(idx.Manifests[0].Digest), &man); err != nil || len(man.Layers) != 1 || man.Layers[0].MediaType != "application/vnd.oci.image.layer.v1.tar" {
			t.Fatalf("manifest %+v: %v", man, err)
		}
		var cfg struct {
			RootFS struct {
				DiffIDs []string `json:"diff_ids"`
			} `json:"rootfs"`
		}
		if err := json.Unmarshal(blob(man.Config.Digest), &cfg); err != nil || len(cfg.RootFS.DiffIDs) != 1 || cfg.RootFS.DiffIDs[0] != man.Layers[0].Digest {
			t.Fatalf("config %+v: %v", cfg, err)
		}
		files := map[string]string{}
		tr := tar.NewReader(bytes.NewReader(blob(man.Layers[0].Digest)))
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(tr)
			files[h.Name] = string(data)
		}
		if files["overlay/abc/diff/etc/os-release"] != "ID=debian\n" || files["blob-info-cache-v1.sqlite"] != "bic" {
			t.Errorf("layer files %v", files)
		}
	}
}

// A build with a base store lists it as an additional image store and
// starts from its blob info cache.
func TestScriptUsesBaseStore(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "base-store")
	if err := os.MkdirAll(filepath.Join(store, "overlay-images"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(store, "blob-info-cache-v1.sqlite"), []byte("bic"), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "conf-seen")
	marker, marked := filepath.Join(dir, "build-done"), filepath.Join(dir, "marked-during")
	run := runScript(t, map[string]string{
		"IMAGESPEC_BASE_IMAGE": "reg.local/base:1", "IMAGESPEC_TARGET_IMAGE": "reg.local/t:1",
		"IMAGESPEC_BASE_STORE": store, "IMAGESPEC_BLOB_INFO_CACHE_DIR": filepath.Join(dir, "lib", "cache"), "STUB_CONF": conf,
		"IMAGESPEC_BUILD_DONE_MARKER": marker, "STUB_MARKED": marked,
	})
	// The base-store container starts when the build is done, not before.
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("the build did not mark itself done: %v", err)
	}
	if during, err := os.ReadFile(marked); err == nil {
		t.Errorf("marked done while buildah still ran: %q", during)
	}
	// The base is in the store already: only the always policy makes the
	// pull ask the registry (a moved tag, this build's credentials).
	if pull := findCall(run.calls, "pull"); pull == nil || !slices.Contains(pull, "always") || pull[slices.Index(pull, "always")-1] != "--policy" {
		t.Errorf("pull argv %q, want --policy always", pull)
	}
	if run.code != 0 {
		t.Fatalf("exit %d:\n%s", run.code, run.out)
	}
	seen, _ := os.ReadFile(conf)
	if !strings.Contains(string(seen), "additionalimagestores = [\""+store+"\"]") {
		t.Errorf("buildah saw storage.conf %q, want the base store listed", seen)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "lib", "cache", "blob-info-cache-v1.sqlite")); err != nil || string(b) != "bic" {
		t.Errorf("blob info cache not copied: %q, %v", b, err)
	}
}
