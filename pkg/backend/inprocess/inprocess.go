// Package inprocess is the backend that builds images with the buildah
// library inside the controller process and pushes them to the registry.
//
// Builds share one containers/storage store, kept between builds, so
// unchanged steps are taken from the layer cache. Every build writes its log
// to <LogDir>/<namespace>/<job>.log; the tail lands in the job's status.
//
// The process must call buildah.InitReexec() first thing in main (and in
// TestMain of tests that build), since RUN steps re-execute the binary.
package inprocess

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containers/buildah/define"
	"github.com/containers/storage"
	ktypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/backend"
	"github.com/imagespec/imagespec-controller/pkg/credentials"
)

// Name is recorded in status.backend of the jobs this backend builds.
const Name = "inprocess"

// Options configure the backend.
type Options struct {
	// StorageDir holds the image store and the layer cache. Keep it between
	// restarts: a cold store pulls base images again and rebuilds every step.
	StorageDir string
	// StorageDriver is "overlay" (default) or "vfs" (slower; for file
	// systems without overlay support).
	StorageDriver string
	// LogDir receives one build log per job: <LogDir>/<namespace>/<job>.log.
	// Defaults to <StorageDir>/logs.
	LogDir string
	// Isolation of RUN steps: "chroot" (default) or "oci" (runs Runtime).
	Isolation string
	// Runtime is the OCI runtime for Isolation "oci"; "runc" by default.
	Runtime string
	// RegistryCertDir holds ca.crt (trusted for every registry) or a
	// certs.d-style tree with one <host[:port]>/ca.crt per registry.
	RegistryCertDir string
	// InsecureRegistries are hosts reached without TLS verification (or
	// over plain http). Every other registry must present a certificate the
	// system or RegistryCertDir trusts; there is no fallback.
	InsecureRegistries []string
	// MaxConcurrentBuilds bounds builds running at once in this process;
	// others wait Pending. Zero means no limit.
	MaxConcurrentBuilds int
	// Reproducible stamps images, history and the files of new layers with
	// the Unix epoch (buildah 1.40's Timestamp option; SourceDateEpoch and
	// RewriteTimestamp only arrive in 1.41) and sets SOURCE_DATE_EPOCH=0
	// for RUN steps only, so Python writes hash-based .pyc files. Pip
	// layers are then reproducible; apt layers are not (dpkg and apt log
	// wall-clock times). The layer cache works as without it.
	Reproducible bool
	// Pulls says which base images are pulled with the push credentials
	// (credentials.PullScope); the zero value allows a spec's own images
	// only.
	Pulls credentials.PullScope
	// Logf, when set, receives one line per build event; klog otherwise.
	Logf func(format string, args ...any)
}

// Backend builds jobs with the buildah library. It implements backend.Backend.
type Backend struct {
	opts      Options
	kube      kubernetes.Interface
	store     storage.Store
	isolation define.Isolation
	ulimits   []string
	confDir   string // policy.json and registries.conf of this backend
	slots     chan struct{}

	mu     sync.Mutex
	notify backend.Notify
	builds map[string]*build
	closed bool
}

// build is one job's build, from Ensure to its final state.
type build struct {
	key     string
	uid     ktypes.UID
	cancel  context.CancelFunc
	done    chan struct{}
	logPath string
	log     *buildLog

	mu       sync.Mutex
	status   backend.Status
	finished time.Time
}

// New opens the store in opts.StorageDir and prepares the backend. Close it
// when the controller stops.
func New(opts Options, kube kubernetes.Interface) (*Backend, error) {
	if opts.StorageDir == "" {
		return nil, errors.New("inprocess backend: a storage dir is required")
	}
	dir, err := filepath.Abs(opts.StorageDir)
	if err != nil {
		return nil, err
	}
	opts.StorageDir = dir
	if opts.LogDir == "" {
		opts.LogDir = filepath.Join(dir, "logs")
	}
	if opts.LogDir, err = filepath.Abs(opts.LogDir); err != nil {
		return nil, err
	}
	if opts.StorageDriver == "" {
		opts.StorageDriver = "overlay"
	}
	b := &Backend{opts: opts, kube: kube, builds: map[string]*build{}}
	switch opts.Isolation {
	case "", "chroot":
		b.isolation = define.IsolationChroot
	case "oci":
		b.isolation = define.IsolationOCI
		if b.opts.Runtime == "" {
			b.opts.Runtime = "runc"
		}
	default:
		return nil, fmt.Errorf("inprocess backend: isolation %q: use chroot or oci", opts.Isolation)
	}
	for _, h := range opts.InsecureRegistries {
		if h == "" || strings.ContainsAny(h, "/ \t\"'[]") {
			return nil, fmt.Errorf("inprocess backend: insecure registry %q: want host[:port]", h)
		}
	}
	if b.ulimits, err = currentUlimits(); err != nil {
		return nil, err
	}
	for _, d := range []string{dir, opts.LogDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	if b.confDir, err = writeConfig(dir, opts.InsecureRegistries); err != nil {
		return nil, err
	}
	if b.store, err = openStore(dir, opts.StorageDriver); err != nil {
		return nil, err
	}
	if opts.MaxConcurrentBuilds > 0 {
		b.slots = make(chan struct{}, opts.MaxConcurrentBuilds)
	}
	return b, nil
}

// Name implements backend.Backend.
func (b *Backend) Name() string { return Name }

// Store is the backend's image store, for inspection.
func (b *Backend) Store() storage.Store { return b.store }

// LogPath is where the build log of a job is written.
func (b *Backend) LogPath(namespace, job string) string {
	return filepath.Join(b.opts.LogDir, namespace, job+".log")
}

// Run implements backend.Backend.
func (b *Backend) Run(_ context.Context, notify backend.Notify) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.notify = notify
	return nil
}

func (b *Backend) logf(format string, args ...any) {
	if b.opts.Logf != nil {
		b.opts.Logf(format, args...)
		return
	}
	klog.InfoS(fmt.Sprintf(format, args...), "backend", Name)
}

func keyOf(job *v1alpha1.ImageSpecJob) string { return job.Namespace + "/" + job.Name }

// finishedRetention is how long a finished build stays in memory, so the
// controller reads its final state even after a failed status update.
const finishedRetention = 15 * time.Minute

// Ensure implements backend.Backend. A job without a build in memory (new,
// or started before a restart of this process) gets one; the build is
// idempotent: same inputs, same tag, same target.
func (b *Backend) Ensure(_ context.Context, job *v1alpha1.ImageSpecJob) (backend.Status, error) {
	key := keyOf(job)
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return backend.Status{}, errors.New("inprocess backend is closed")
	}
	b.pruneLocked()
	bd, ok := b.builds[key]
	if ok && bd.uid != job.UID {
		// A job of the same name was deleted and created again.
		b.mu.Unlock()
		b.stop(bd)
		b.mu.Lock()
		if b.builds[key] == bd {
			delete(b.builds, key)
		}
		bd, ok = b.builds[key]
	}
	if !ok {
		bd = b.startLocked(job)
	}
	b.mu.Unlock()
	return bd.snapshot(), nil
}

func (b *Backend) pruneLocked() {
	now := time.Now()
	for k, bd := range b.builds {
		bd.mu.Lock()
		old := !bd.finished.IsZero() && now.Sub(bd.finished) > finishedRetention
		bd.mu.Unlock()
		if old {
			delete(b.builds, k)
		}
	}
}

func (bd *build) snapshot() backend.Status {
	bd.mu.Lock()
	defer bd.mu.Unlock()
	st := bd.status
	if st.StartTime != nil {
		st.StartTime = st.StartTime.DeepCopy()
	}
	return st
}

// set records a new state and tells the controller.
func (b *Backend) set(bd *build, st backend.Status) {
	bd.mu.Lock()
	bd.status = st
	if st.Phase.IsFinal() {
		bd.finished = time.Now()
	}
	bd.mu.Unlock()
	b.mu.Lock()
	notify := b.notify
	b.mu.Unlock()
	if notify != nil {
		notify(bd.key)
	}
}

// Cancel implements backend.Backend: it stops the job's build and returns
// once the build has removed its containers and mounts. Nothing is pushed
// after a cancelled build's context is done.
func (b *Backend) Cancel(ctx context.Context, job *v1alpha1.ImageSpecJob) error {
	key := keyOf(job)
	b.mu.Lock()
	bd, ok := b.builds[key]
	if ok && (job.UID == "" || bd.uid == job.UID) {
		delete(b.builds, key)
	} else {
		ok = false
	}
	b.mu.Unlock()
	if !ok {
		return nil
	}
	bd.cancel()
	b.interruptRun(bd)
	select {
	case <-bd.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the build of %s to stop: %w", key, ctx.Err())
	}
}

// stop cancels a build and waits for it, however long cleanup takes.
func (b *Backend) stop(bd *build) {
	bd.cancel()
	b.interruptRun(bd)
	<-bd.done
}

// Close cancels every build, waits for them and releases the store.
func (b *Backend) Close() error {
	b.mu.Lock()
	b.closed = true
	var all []*build
	for _, bd := range b.builds {
		all = append(all, bd)
	}
	b.builds = map[string]*build{}
	b.mu.Unlock()
	for _, bd := range all {
		b.stop(bd)
	}
	return closeStore(b.opts.StorageDir)
}
