package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/imagespec/imagespec-controller/test/framework/controlplane"
)

// klog's logging flags, which the README's reference leaves out (but --v).
var klogFlags = map[string]bool{
	"add_dir_header": true, "alsologtostderr": true, "alsologtostderrthreshold": true, "log_backtrace_at": true,
	"log_dir": true, "log_file": true, "log_file_max_size": true, "logtostderr": true, "one_output": true,
	"skip_headers": true, "skip_log_headers": true, "stderrthreshold": true, "vmodule": true, "legacy_stderr_threshold_behavior": true,
}

// TestReadmeFlagReference checks the README's configuration reference
// against `controller --help`: every flag is listed, with the default the
// binary prints, and the README lists no flag the binary lacks.
func TestReadmeFlagReference(t *testing.T) {
	bin := buildController(t)
	// Outside a cluster, so --leader-elect prints its out-of-cluster default.
	cmd := exec.Command(bin, "--help")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	out, _ := cmd.CombinedOutput() // --help exits 0 or 2 depending on the flag package; the text is what counts
	help := map[string]string{}
	flagLine := regexp.MustCompile(`^  -([a-z0-9_-]+)`)
	defaultRE := regexp.MustCompile(`\(default (.+)\)$`)
	var current string
	for _, line := range strings.Split(string(out), "\n") {
		if m := flagLine.FindStringSubmatch(line); m != nil {
			current = m[1]
			help[current] = "—"
			continue
		}
		if m := defaultRE.FindStringSubmatch(strings.TrimSpace(line)); m != nil && current != "" {
			help[current] = m[1]
		}
	}
	if len(help) < 20 {
		t.Fatalf("read only %d flags from --help:\n%s", len(help), out)
	}

	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	section := string(readme)
	start := strings.Index(section, "### Configuration reference")
	if start < 0 {
		t.Fatal("README has no Configuration reference section")
	}
	section = section[start:]
	if end := strings.Index(section[4:], "\n### "); end >= 0 {
		section = section[:end+4]
	}
	row := regexp.MustCompile("(?m)^\\| `--([a-z0-9_-]+)` \\| ([^|]*) \\|")
	documented := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(section, -1) {
		documented[m[1]] = strings.TrimSpace(m[2])
	}
	for name, def := range help {
		if klogFlags[name] {
			continue
		}
		got, ok := documented[name]
		switch {
		case !ok:
			t.Errorf("--%s (default %s) is not in the README's configuration reference", name, def)
		case got != def:
			t.Errorf("--%s: the README says default %s, --help says %s", name, got, def)
		}
	}
	for name := range documented {
		if _, ok := help[name]; !ok {
			t.Errorf("the README documents --%s, which the binary does not have", name)
		}
	}
}
