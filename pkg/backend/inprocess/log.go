package inprocess

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// tailBytes is how much of the log end is kept in memory; the controller
// keeps the last 4 KiB of it in status.logTail.
const tailBytes = 8 << 10

// buildLog is one build's log: the file on disk, the tail in memory, and the
// step and cache counts read from buildah's output. Credentials of the
// build are replaced before anything is written. buildah writes from
// several goroutines, hence the lock.
type buildLog struct {
	mu       sync.Mutex
	f        *os.File
	redact   *strings.Replacer
	partial  []byte // an incomplete last line, held for redaction
	tail     []byte
	steps    int // non-FROM steps started
	cached   int // of them, taken from the layer cache
	inRun    bool
	runStart time.Time
}

// openBuildLog creates the log readable by its owner only: a build log
// shows what a tenant built and how, which other users of the machine have
// no business reading.
func openBuildLog(path string) (*buildLog, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	return &buildLog{f: f}, nil
}

// setSecrets makes the log replace these strings by [redacted].
func (l *buildLog) setSecrets(secrets []string) {
	// Longest first, so a password inside "user:password" cannot leave
	// the user part's neighbour unredacted.
	sort.Slice(secrets, func(i, j int) bool { return len(secrets[i]) > len(secrets[j]) })
	var pairs []string
	for _, s := range secrets {
		if len(s) >= 4 {
			pairs = append(pairs, s, "[redacted]")
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(pairs) > 0 {
		l.redact = strings.NewReplacer(pairs...)
	}
}

// Scrub returns s with the build's credentials replaced.
func (l *buildLog) Scrub(s string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.redact == nil {
		return s
	}
	return l.redact.Replace(s)
}

// Write takes whole lines only, so a credential split across two writes is
// still redacted.
func (l *buildLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	i := bytes.LastIndexByte(l.partial, '\n')
	if i < 0 && len(l.partial) < 64<<10 {
		return len(p), nil
	}
	var chunk []byte
	if i < 0 {
		chunk, l.partial = l.partial, nil
	} else {
		chunk = append([]byte(nil), l.partial[:i+1]...)
		l.partial = append(l.partial[:0], l.partial[i+1:]...)
	}
	l.emit(chunk)
	return len(p), nil
}

func (l *buildLog) emit(chunk []byte) {
	text := string(chunk)
	if l.redact != nil {
		text = l.redact.Replace(text)
	}
	for _, line := range strings.Split(text, "\n") {
		l.scan(line)
	}
	if l.f != nil {
		_, _ = l.f.WriteString(text)
	}
	l.tail = append(l.tail, text...)
	if len(l.tail) > 2*tailBytes {
		l.tail = append([]byte(nil), l.tail[len(l.tail)-tailBytes:]...)
	}
}

// scan follows buildah's progress lines ("STEP 2/4: RUN ...", "--> Using
// cache ...").
func (l *buildLog) scan(line string) {
	if strings.HasPrefix(line, "STEP ") || strings.HasPrefix(line, "COMMIT") || strings.HasPrefix(line, "--> ") {
		l.inRun = false
	}
	if strings.HasPrefix(line, "STEP ") {
		_, instr, _ := strings.Cut(line, ": ")
		if !strings.HasPrefix(instr, "FROM ") {
			l.steps++
		}
		if strings.HasPrefix(instr, "RUN ") {
			l.inRun = true
			l.runStart = time.Now()
		}
	}
	if strings.HasPrefix(line, "--> Using cache ") {
		l.cached++
	}
}

// Printf writes a line of the backend's own (marked with "imagespec:").
func (l *buildLog) Printf(format string, args ...any) {
	_, _ = fmt.Fprintf(l, "imagespec: "+format+"\n", args...)
}

// Tail returns the end of the log, at most n bytes, from a line start.
func (l *buildLog) Tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := l.tail
	if len(l.partial) > 0 {
		p := string(l.partial)
		if l.redact != nil {
			p = l.redact.Replace(p)
		}
		t = append(append([]byte(nil), t...), p...)
	}
	if len(t) > n {
		t = t[len(t)-n:]
		if i := bytes.IndexByte(t, '\n'); i >= 0 && i < 256 {
			t = t[i+1:]
		}
		for len(t) > 0 && !utf8.RuneStart(t[0]) {
			t = t[1:]
		}
	}
	return string(t)
}

// CacheSummary says how many steps came from the layer cache.
func (l *buildLog) CacheSummary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprintf("%d of %d steps from cache", l.cached, l.steps)
}

// Counts returns the steps started and those taken from the cache.
func (l *buildLog) Counts() (steps, cached int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.steps, l.cached
}

func (l *buildLog) running() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inRun
}

// Close flushes a pending partial line and closes the file.
func (l *buildLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) > 0 {
		l.emit(append(l.partial, '\n'))
		l.partial = nil
	}
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
