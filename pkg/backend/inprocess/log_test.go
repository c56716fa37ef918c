package inprocess

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagespec/imagespec-controller/pkg/credentials"
)

func TestBuildLogRedactsAcrossWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ns", "job.log")
	l, err := openBuildLog(path)
	if err != nil {
		t.Fatal(err)
	}
	const pw = `{"type":"service_account","private_key":"s3cr3t"}`
	l.setSecrets(credentials.Auths{"reg.example:5000": {Username: "_json_key", Password: pw}}.Secrets())
	// The password arrives split over writes, and once without a newline.
	half := len(pw) / 2
	for _, chunk := range []string{"token " + pw[:half], pw[half:] + " used\n", "tail " + pw} {
		if _, err := l.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
	}
	if tail := l.Tail(4096); strings.Contains(tail, pw) || strings.Contains(tail, "s3cr3t") {
		t.Errorf("tail holds the password: %q", tail)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "s3cr3t") || strings.Count(string(b), "[redacted]") != 2 {
		t.Errorf("log file:\n%s", b)
	}
	if got := l.Scrub("error: " + pw); got != "error: [redacted]" {
		t.Errorf("Scrub: %q", got)
	}
}

func TestBuildLogCountsCachedSteps(t *testing.T) {
	l := &buildLog{}
	for _, line := range []string{
		"STEP 1/5: FROM reg/base:latest",
		"STEP 2/5: USER 0:0",
		"--> Using cache 4068714d9023",
		"--> 4068714d9023",
		"STEP 3/5: RUN [\"/bin/sh\", \"-c\", \"apt-get\"]",
		"--> Using cache 1111",
		"STEP 4/5: RUN [\"/bin/sh\", \"-c\", \"pip\"]",
		"Collecting x",
	} {
		if _, err := l.Write([]byte(line + "\n")); err != nil {
			t.Fatal(err)
		}
	}
	if !l.running() {
		t.Error("not in a RUN step while pip runs")
	}
	if _, err := l.Write([]byte("STEP 5/5: USER app\nCOMMIT reg/x:1\n")); err != nil {
		t.Fatal(err)
	}
	if l.running() {
		t.Error("still in a RUN step after it ended")
	}
	if got := l.CacheSummary(); got != "2 of 4 steps from cache" {
		t.Errorf("CacheSummary() = %q", got)
	}
}

func TestBuildLogTailStartsAtALine(t *testing.T) {
	l := &buildLog{}
	for i := 0; i < 2000; i++ {
		_, _ = l.Write([]byte("line of the build log é\n"))
	}
	tail := l.Tail(100)
	if len(tail) > 100 || !strings.HasPrefix(tail, "line of") {
		t.Errorf("tail %q", tail)
	}
}
