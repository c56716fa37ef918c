package inprocess

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containers/buildah"
	"github.com/containers/buildah/define"
	"github.com/containers/buildah/imagebuildah"
	"github.com/containers/common/libimage"
	"github.com/containers/common/pkg/config"
	"github.com/containers/image/v5/docker"
	"github.com/containers/image/v5/docker/reference"
	is "github.com/containers/image/v5/storage"
	"github.com/containers/image/v5/transports/alltransports"
	"github.com/containers/image/v5/types"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/backend"
	"github.com/imagespec/imagespec-controller/pkg/credentials"
	"github.com/imagespec/imagespec-controller/pkg/dockerfile"
)

// startLocked starts the job's build in a goroutine; b.mu is held.
func (b *Backend) startLocked(job *v1alpha1.ImageSpecJob) *build {
	ctx, cancel := context.WithCancel(context.Background())
	bd := &build{
		key:     keyOf(job),
		uid:     job.UID,
		cancel:  cancel,
		done:    make(chan struct{}),
		logPath: b.LogPath(job.Namespace, job.Name),
	}
	bd.status = backend.Status{Phase: v1alpha1.JobPending, Message: "Starting the build in process; log: " + bd.logPath}
	b.builds[bd.key] = bd
	job = job.DeepCopy()
	go func() {
		defer close(bd.done)
		defer cancel()
		b.run(ctx, bd, job)
	}()
	return bd
}

// failure is a build error with its reason.
type failure struct {
	reason string
	err    error
}

func (f *failure) Error() string { return f.err.Error() }

func fail(reason string, format string, args ...any) error {
	return &failure{reason: reason, err: fmt.Errorf(format, args...)}
}

func (b *Backend) run(ctx context.Context, bd *build, job *v1alpha1.ImageSpecJob) {
	log, err := openBuildLog(bd.logPath)
	if err != nil {
		b.set(bd, backend.Status{Phase: v1alpha1.JobFailed, Reason: v1alpha1.ReasonBackendError,
			Message: fmt.Sprintf("Opening the build log: %v", err)})
		return
	}
	bd.mu.Lock()
	bd.log = log
	bd.mu.Unlock()
	defer log.Close()

	if b.slots != nil {
		select {
		case b.slots <- struct{}{}:
			defer func() { <-b.slots }()
		default:
			b.set(bd, backend.Status{Phase: v1alpha1.JobPending, Reason: v1alpha1.ReasonQueued,
				Message: fmt.Sprintf("Waiting for one of %d in-process build slots", cap(b.slots))})
			select {
			case b.slots <- struct{}{}:
				defer func() { <-b.slots }()
			case <-ctx.Done():
				return
			}
		}
	}

	start := metav1.Now()
	running := backend.Status{Phase: v1alpha1.JobRunning, StartTime: &start,
		Message: "Building in process; log: " + bd.logPath}
	b.set(bd, running)
	b.logf("Build started: job %s, target %s, log %s", bd.key, job.Spec.TargetImage, bd.logPath)

	res, err := b.buildAndPush(ctx, bd, job, log)
	st := backend.Status{StartTime: &start, BaseImageDigest: res.baseDigest}
	if ctx.Err() != nil {
		// Cancelled: the controller records the final phase; report
		// nothing new so no notification races its status update.
		if b.isolation == define.IsolationOCI {
			cleanup, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			b.deleteStoppedRuntimeContainers(cleanup, log)
			cancel()
		}
		log.Printf("build cancelled after %s", time.Since(start.Time).Round(time.Millisecond))
		b.logf("Build cancelled: job %s", bd.key)
		return
	}
	if err != nil {
		reason := v1alpha1.ReasonBuildFailed
		var f *failure
		if errors.As(err, &f) {
			reason = f.reason
		}
		msg := log.Scrub(firstLine(err.Error(), 600))
		log.Printf("%s: %s", reason, msg)
		st.Phase = v1alpha1.JobFailed
		st.Reason = reason
		st.Message = fmt.Sprintf("%s; log: %s", msg, bd.logPath)
		b.logf("Build failed: job %s, reason %s", bd.key, reason)
	} else {
		summary := log.CacheSummary()
		log.Printf("pushed %s@%s in %s; %s", job.Spec.TargetImage, res.digest, time.Since(start.Time).Round(time.Millisecond), summary)
		st.Phase = v1alpha1.JobSucceeded
		st.Reason = v1alpha1.ReasonSucceeded
		st.Digest = res.digest
		st.Message = fmt.Sprintf("Pushed %s@%s; %s; log: %s", job.Spec.TargetImage, res.digest, summary, bd.logPath)
		b.logf("Build succeeded: job %s, %s@%s, %s; pull %s, build %s, push %s", bd.key, job.Spec.TargetImage, res.digest, summary,
			res.pull.Round(time.Millisecond), res.build.Round(time.Millisecond), res.push.Round(time.Millisecond))
	}
	st.LogTail = log.Tail(v1alpha1.MaxLogTailBytes)
	b.set(bd, st)
}

func firstLine(s string, max int) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > max {
		s = s[:max] + "..."
	}
	return s
}

type result struct {
	baseDigest string
	digest     string
	// Durations of the phases, for the log.
	pull, build, push time.Duration
}

// buildAndPush is one build: credentials, base image, Dockerfile, build,
// push. Every file it writes lives in a private temp dir removed at return.
func (b *Backend) buildAndPush(ctx context.Context, bd *build, job *v1alpha1.ImageSpecJob, log *buildLog) (res result, err error) {
	tmp, err := os.MkdirTemp(b.opts.StorageDir, "build-")
	if err != nil {
		return res, fail(v1alpha1.ReasonBackendError, "creating a build dir: %v", err)
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o700); err != nil {
		return res, fail(v1alpha1.ReasonBackendError, "%v", err)
	}

	// Credentials. The push credentials reach every tenant's images, so
	// pulls use them only where the pull scope allows (the spec's own
	// images, shared bases), with the pull Secret's entries on top.
	var push, pull credentials.Auths
	if name := job.Spec.PushSecret; name != "" {
		if push, err = credentials.Read(ctx, b.kube, job.Namespace, name); err != nil {
			return res, fail(v1alpha1.ReasonPushFailed, "push credentials: %v", err)
		}
	}
	if name := job.Spec.PullSecret; name != "" {
		if pull, err = credentials.Read(ctx, b.kube, job.Namespace, name); err != nil {
			return res, fail(v1alpha1.ReasonBaseImagePullFailed, "pull credentials: %v", err)
		}
	}
	log.setSecrets(append(push.Secrets(), pull.Secrets()...))
	pushAuth, err := writeAuthFile(tmp, "push-auth.json", push)
	if err != nil {
		return res, fail(v1alpha1.ReasonBackendError, "writing an authfile: %v", err)
	}
	in := backend.JobInputs(job)
	base := dockerfile.Normalize(in).BaseImage
	pullAuth, err := writeAuthFile(tmp, "pull-auth.json", b.opts.Pulls.Pull(job.Spec.TargetImage, base, push, pull))
	if err != nil {
		return res, fail(v1alpha1.ReasonBackendError, "writing an authfile: %v", err)
	}
	pullSC := b.systemContext(pullAuth)

	// Base image: pulled first, since the Dockerfile needs its user.
	log.Printf("pulling base image %s", base)
	t0 := time.Now()
	baseID, err := b.pull(ctx, base, pullSC, log)
	if err != nil {
		if why := b.opts.Pulls.Explain(job.Spec.TargetImage, base); why != "" {
			return res, fail(v1alpha1.ReasonBaseImagePullFailed, "pulling base image %s: %s; %v", base, why, err)
		}
		return res, fail(v1alpha1.ReasonBaseImagePullFailed, "pulling base image %s: %v", base, err)
	}
	img, err := b.store.Image(baseID)
	if err != nil {
		return res, fail(v1alpha1.ReasonBaseImagePullFailed, "base image %s: %v", base, err)
	}
	res.baseDigest = b.pulledDigest(ctx, base, pullSC, img.Digest, img.Digests)
	user, err := b.imageUser(ctx, baseID)
	if err != nil {
		return res, fail(v1alpha1.ReasonBaseImagePullFailed, "reading the config of base image %s: %v", base, err)
	}
	res.pull = time.Since(t0)
	log.Printf("base image %s@%s (user %q) ready in %s", base, res.baseDigest, user, res.pull.Round(time.Millisecond))

	in.User = user
	df, err := dockerfile.Render(in)
	if err != nil {
		return res, fail(v1alpha1.ReasonInvalidSpec, "rendering the Dockerfile: %v", err)
	}
	dfPath := filepath.Join(tmp, "Dockerfile")
	if err := os.WriteFile(dfPath, df, 0o600); err != nil {
		return res, fail(v1alpha1.ReasonBackendError, "%v", err)
	}
	ctxDir := filepath.Join(tmp, "context")
	if err := os.Mkdir(ctxDir, 0o700); err != nil {
		return res, fail(v1alpha1.ReasonBackendError, "%v", err)
	}
	log.Printf("Dockerfile:\n%s", strings.TrimRight(string(df), "\n"))

	// Build into local storage under the target's name.
	t0 = time.Now()
	imageID, err := b.build(ctx, dfPath, ctxDir, job.Spec.TargetImage, backend.ImageLabel(job), pullSC, log)
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	if err != nil {
		return res, fail(v1alpha1.ReasonBuildFailed, "build failed: %v", err)
	}
	res.build = time.Since(t0)
	log.Printf("built image %s in %s; %s", shortID(imageID), res.build.Round(time.Millisecond), log.CacheSummary())

	// Push. A cancelled build never gets here.
	dest, err := alltransports.ParseImageName("docker://" + job.Spec.TargetImage)
	if err != nil {
		return res, fail(v1alpha1.ReasonPushFailed, "target image %q: %v", job.Spec.TargetImage, err)
	}
	t0 = time.Now()
	log.Printf("pushing %s", job.Spec.TargetImage)
	_, dgst, err := buildah.Push(ctx, imageID, dest, buildah.PushOptions{
		Store:         b.store,
		SystemContext: b.systemContext(pushAuth),
		ReportWriter:  log,
		ManifestType:  define.OCIv1ImageManifest,
		MaxRetries:    2,
		RetryDelay:    time.Second,
	})
	if err != nil {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		return res, fail(v1alpha1.ReasonPushFailed, "pushing %s: %v", job.Spec.TargetImage, err)
	}
	res.push = time.Since(t0)
	log.Printf("pushed in %s", res.push.Round(time.Millisecond))
	res.digest = dgst.String()
	return res, nil
}

// pull brings the base image up to date in the store. libimage directly
// rather than buildah.Pull: it honours ctx (a cancel stops a pull) and
// needs no network backend.
func (b *Backend) pull(ctx context.Context, name string, sc *types.SystemContext, log *buildLog) (string, error) {
	rt, err := libimage.RuntimeFromStore(b.store, &libimage.RuntimeOptions{SystemContext: sc})
	if err != nil {
		return "", err
	}
	retries := uint(2)
	delay := time.Second
	opts := &libimage.PullOptions{}
	opts.Writer = log
	opts.MaxRetries = &retries
	opts.RetryDelay = &delay
	imgs, err := rt.Pull(ctx, name, config.PullPolicyAlways, opts)
	if err != nil {
		return "", err
	}
	if len(imgs) == 0 {
		return "", fmt.Errorf("no image pulled")
	}
	return imgs[0].ID(), nil
}

// pulledDigest is the registry's manifest digest of the base image just
// pulled. An image that was already in the store (the shared store holds
// what earlier builds made, and a spec may build on one) keeps its first
// digest as primary, which need not be the registry's; the registry's,
// read with one HEAD request, is then among all. Falls back to primary
// when the tag moved in between.
func (b *Backend) pulledDigest(ctx context.Context, base string, sc *types.SystemContext, primary digest.Digest, all []digest.Digest) string {
	named, err := reference.ParseNormalizedNamed(base)
	if err != nil {
		return primary.String()
	}
	if pinned, ok := named.(reference.Canonical); ok {
		return pinned.Digest().String()
	}
	if len(all) <= 1 {
		return primary.String()
	}
	ref, err := docker.NewReference(reference.TagNameOnly(named))
	if err != nil {
		return primary.String()
	}
	d, err := docker.GetDigest(ctx, sc, ref)
	if err != nil || !slices.Contains(all, d) {
		return primary.String()
	}
	return d.String()
}

// imageUser reads the configured user of an image in the store.
func (b *Backend) imageUser(ctx context.Context, id string) (string, error) {
	ref, err := is.Transport.NewStoreReference(b.store, nil, id)
	if err != nil {
		return "", err
	}
	img, err := ref.NewImage(ctx, b.systemContext(""))
	if err != nil {
		return "", err
	}
	defer img.Close()
	cfg, err := img.OCIConfig(ctx)
	if err != nil {
		return "", err
	}
	return cfg.Config.User, nil
}

func (b *Backend) build(ctx context.Context, dfPath, ctxDir, output, label string, sc *types.SystemContext, log *buildLog) (string, error) {
	jobs := 1
	opts := define.BuildOptions{
		ContextDirectory: ctxDir,
		// The base was just pulled; the build uses exactly that image, the
		// one whose digest is reported.
		PullPolicy:       define.PullNever,
		Isolation:        b.isolation,
		Runtime:          b.opts.Runtime,
		CommonBuildOpts:  &define.CommonBuildOptions{Ulimit: b.ulimits},
		NamespaceOptions: define.NamespaceOptions{{Name: string(specs.NetworkNamespace), Host: true}},
		ConfigureNetwork: define.NetworkDefault,
		NetworkInterface: hostNetwork{},
		Output:           output,
		OutputFormat:     define.OCIv1ImageManifest,
		Layers:           true,
		// Failed and cancelled builds leave no containers (and so no
		// mounts) behind.
		RemoveIntermediateCtrs:  true,
		ForceRmIntermediateCtrs: true,
		Out:                     log,
		Err:                     log,
		ReportWriter:            log,
		Jobs:                    &jobs,
		MaxPullPushRetries:      2,
		PullPushRetryDelay:      time.Second,
	}
	opts.SystemContext = sc
	if label != "" {
		opts.Labels = []string{label}
	}
	if b.opts.Reproducible {
		epoch := time.Unix(0, 0).UTC()
		opts.Timestamp = &epoch
		// Timestamp fixes file times in layers, not times that tools
		// write into files: Python's byte-compiler embeds source mtimes
		// in .pyc files unless SOURCE_DATE_EPOCH asks for hash-based
		// ones. RUN steps see it; the image does not keep it.
		opts.Envs = []string{"SOURCE_DATE_EPOCH=0"}
		opts.UnsetEnvs = []string{"SOURCE_DATE_EPOCH"}
	}
	id, _, err := imagebuildah.BuildDockerfiles(ctx, b.store, opts, dfPath)
	return id, err
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
