// Package controller turns ImageSpecs into ImageSpecJobs and ImageSpecJobs
// into builds. It follows kubernetes/sample-controller: informer event
// handlers only enqueue keys, two rate-limited workqueues (one per kind) feed
// sync handlers that read through listers, never mutate cached objects, and
// write status through the status subresource only when it changed.
package controller

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/backend"
	"github.com/imagespec/imagespec-controller/pkg/basetrack"
	"github.com/imagespec/imagespec-controller/pkg/builtimage"
	"github.com/imagespec/imagespec-controller/pkg/config"
	"github.com/imagespec/imagespec-controller/pkg/credentials"
	"github.com/imagespec/imagespec-controller/pkg/dockerfile"
	clientset "github.com/imagespec/imagespec-controller/pkg/generated/clientset/versioned"
	primehubscheme "github.com/imagespec/imagespec-controller/pkg/generated/clientset/versioned/scheme"
	informers "github.com/imagespec/imagespec-controller/pkg/generated/informers/externalversions/primehub/v1alpha1"
	listers "github.com/imagespec/imagespec-controller/pkg/generated/listers/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/names"
	"github.com/imagespec/imagespec-controller/pkg/revision"
	"github.com/imagespec/imagespec-controller/pkg/supplychain"
)

// The names the controller puts on objects live in pkg/names, which the
// backends share; these are kept for callers of this package.
const (
	ComponentName             = names.ComponentName
	ManagedByLabel            = names.ManagedByLabel
	ImageSpecLabel            = names.ImageSpecLabel
	RevisionLabel             = names.RevisionLabel
	SpecGenerationAnnotation  = names.SpecGenerationAnnotation
	AttemptAnnotation         = names.AttemptAnnotation
	BaseImageDigestAnnotation = names.BaseImageDigestAnnotation
	// DefaultPushSecretName is the Secret the controller keeps in every
	// namespace that builds, holding the registry credentials.
	DefaultPushSecretName = "imagespec-push-credentials"

	jobsByOwnerIndex = "imagespec-owner"
)

// ManagedSelector selects objects the controller owns.
func ManagedSelector() string { return names.ManagedSelector() }

// Options configure the controller.
type Options struct {
	Registry config.Registry
	// Layout names target images under Registry.RepoPrefix; zero is
	// PrimeHub's <prefix>/<name>:<tag>.
	Layout revision.Layout
	// SharedRepositories are the repositories every ImageSpec may build
	// on with the push credentials (credentials.PullScope); base image
	// tracking checks bases the way builds pull them.
	SharedRepositories []string
	// RegistryCertDir holds ca.crt trusted for every registry, or a
	// certs.d tree of <host[:port]>/ca.crt, for the controller's own
	// registry reads (base image checks, already built images); the
	// system's CAs are trusted too. InsecureRegistries are reached
	// without TLS verification.
	RegistryCertDir    string
	InsecureRegistries []string
	// BuildExisting turns off the check for already built images: every
	// job builds, even when its target is in the registry with its
	// revision's label.
	BuildExisting bool
	// FindBuilt replaces the registry read of that check (tests).
	FindBuilt func(ctx context.Context, target string) (builtimage.Image, bool, error)
	// SupplyChain attaches an SBOM and SLSA provenance to every pushed
	// image, and a sigstore signature when SupplyChainSigning has a key.
	SupplyChain        bool
	SupplyChainSigning SigningKey
	// Attest replaces the registry work of the supply chain (tests).
	Attest func(ctx context.Context, s supplychain.Subject) (supplychain.Result, error)
	// PushSecretName is the Secret holding push credentials. The controller
	// writes it into every namespace that builds, unless ExistingPushSecret.
	PushSecretName string
	// PushSecretNamespace, when set, is the one namespace the push Secret
	// lives in (the buildahpod backend's build namespace): tenants never
	// get a copy, and the controller needs no Secret informer. Empty
	// writes it into each namespace that builds.
	PushSecretNamespace string
	// PushSecretRecheck is how long the push Secret, read or written
	// without an informer (PushSecretNamespace), counts as current; zero
	// is backend.DefaultPushSecretRecheck.
	PushSecretRecheck time.Duration
	// ExistingPushSecret: PushSecretName names a Secret the user manages;
	// the controller only references it.
	ExistingPushSecret bool
	// Sources are package sources for air-gapped clusters.
	Sources dockerfile.Sources
	// BuildTimeout counts from job creation, so time spent queued or
	// waiting for a node counts. Zero means no timeout.
	BuildTimeout time.Duration
	// MaxConcurrentBuilds bounds running builds; the rest wait, Pending
	// with reason Queued. Zero means no limit.
	MaxConcurrentBuilds int
	// SucceededHistoryLimit and FailedHistoryLimit are how many finished
	// jobs to keep per ImageSpec (Cancelled counts as failed).
	SucceededHistoryLimit int
	FailedHistoryLimit    int
	// CancelTimeout bounds how long cancelling a build may stay
	// unconfirmed (a node that is down) before the job is finalized
	// anyway, with reason CancelIncomplete. Zero means
	// DefaultCancelTimeout.
	CancelTimeout time.Duration
	// BaseImages configures base image tracking (off by default).
	BaseImages BaseImageTracking
}

// ownAuths are the controller's push credentials, for its own registry
// reads.
func (o Options) ownAuths() credentials.Auths {
	own := credentials.Auths{}
	if r := o.Registry; r.HasCredentials() {
		own[r.Host] = credentials.Entry{Username: r.Username, Password: r.Password.Reveal()}
	}
	return own
}

// SigningKey is a sigstore (cosign) encrypted private key in PEM and its
// passphrase.
type SigningKey struct {
	Key, Passphrase []byte
}

// BuilderID is the SLSA builder.id of the controller's builds with a
// backend.
func BuilderID(backendName string) string {
	return "https://github.com/imagespec/imagespec-controller/backends/" + backendName
}

// PullScope is how builds pull base images under these options: the push
// credentials only for an ImageSpec's own images and the shared
// repositories. The backends take the same value.
func (o Options) PullScope() credentials.PullScope {
	return credentials.PullScope{Layout: o.Layout, Shared: o.SharedRepositories}
}

// Controller is the ImageSpec and ImageSpecJob controller.
type Controller struct {
	kube    kubernetes.Interface
	client  clientset.Interface
	backend backend.Backend
	opts    Options

	specLister   listers.ImageSpecLister
	jobLister    listers.ImageSpecJobLister
	jobIndexer   cache.Indexer
	secretLister corelisters.SecretLister
	synced       []cache.InformerSynced

	specQueue workqueue.TypedRateLimitingInterface[cache.ObjectName]
	jobQueue  workqueue.TypedRateLimitingInterface[cache.ObjectName]

	recorder record.EventRecorder
	slots    *buildSlots
	now      func() time.Time

	// cancelling: when this process first tried to cancel a job's build.
	cancelling jobMarks[time.Time]
	// errorWrites: when an error was last written to a job's status.
	errorWrites jobMarks[time.Time]
	// baseTracker checks tracked base images; nil when tracking is off.
	baseTracker *basetrack.Tracker
	// findBuilt reads a target image from the registry; nil with
	// Options.BuildExisting. builtChecked: the job (by UID) whose target
	// this process already looked for, so each job costs one read.
	findBuilt    func(ctx context.Context, target string) (builtimage.Image, bool, error)
	builtChecked jobMarks[types.UID]
	// pushSecretChecked: when this process last read or wrote the push
	// Secret of a namespace, without an informer.
	pushSecretChecked jobMarks[time.Time]
	// attestImage attaches a pushed image's SBOM, provenance and
	// signature; nil without Options.SupplyChain. attested: what was
	// attached for a job (by UID and image digest), so a status write that
	// conflicts does not attach and sign again on the retry.
	attestImage func(ctx context.Context, s supplychain.Subject) (supplychain.Result, error)
	attested    jobMarks[attestation]
	// attester made attestImage, when New made it; Run closes it.
	attester *supplychain.Attester
}

// New wires the controller to its informers. secretInformer must come from a
// factory restricted to ManagedSelector(); it may be nil when
// opts.ExistingPushSecret is set.
func New(ctx context.Context,
	kube kubernetes.Interface,
	client clientset.Interface,
	specInformer informers.ImageSpecInformer,
	jobInformer informers.ImageSpecJobInformer,
	secretInformer coreinformers.SecretInformer,
	be backend.Backend,
	opts Options,
) (*Controller, error) {
	logger := klog.FromContext(ctx)
	if opts.PushSecretName == "" {
		opts.PushSecretName = DefaultPushSecretName
	}
	if opts.CancelTimeout <= 0 {
		opts.CancelTimeout = DefaultCancelTimeout
	}
	if opts.PushSecretRecheck <= 0 {
		opts.PushSecretRecheck = backend.DefaultPushSecretRecheck
	}
	RegisterScheme()

	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartStructuredLogging(0)
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events("")})
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: ComponentName})

	rateLimiter := func() workqueue.TypedRateLimiter[cache.ObjectName] {
		return workqueue.NewTypedItemExponentialFailureRateLimiter[cache.ObjectName](5*time.Millisecond, 5*time.Minute)
	}
	c := &Controller{
		kube:       kube,
		client:     client,
		backend:    be,
		opts:       opts,
		specLister: specInformer.Lister(),
		jobLister:  jobInformer.Lister(),
		jobIndexer: jobInformer.Informer().GetIndexer(),
		specQueue: workqueue.NewTypedRateLimitingQueueWithConfig(rateLimiter(),
			workqueue.TypedRateLimitingQueueConfig[cache.ObjectName]{Name: "ImageSpecs"}),
		jobQueue: workqueue.NewTypedRateLimitingQueueWithConfig(rateLimiter(),
			workqueue.TypedRateLimitingQueueConfig[cache.ObjectName]{Name: "ImageSpecJobs"}),
		recorder: recorder,
		slots:    newBuildSlots(opts.MaxConcurrentBuilds, jobInformer.Informer().GetIndexer()),
		now:      time.Now,
	}
	c.baseTracker = c.newBaseTracker()
	if !opts.BuildExisting {
		c.findBuilt = opts.FindBuilt
		if c.findBuilt == nil {
			r := &builtimage.Registry{Auths: opts.ownAuths(), CertDir: opts.RegistryCertDir, Insecure: opts.InsecureRegistries}
			c.findBuilt = r.Find
		}
	}
	c.synced = append(c.synced, specInformer.Informer().HasSynced, jobInformer.Informer().HasSynced)
	if opts.PushSecretNamespace != "" {
		// One Secret, read and written with direct requests.
	} else if secretInformer != nil {
		c.secretLister = secretInformer.Lister()
		c.synced = append(c.synced, secretInformer.Informer().HasSynced)
	} else if !opts.ExistingPushSecret && opts.Registry.HasCredentials() {
		return nil, fmt.Errorf("a Secret informer is needed to manage the push Secret")
	}

	if err := jobInformer.Informer().AddIndexers(cache.Indexers{jobsByOwnerIndex: indexJobByOwner, jobsByStateIndex: indexJobByState}); err != nil {
		return nil, err
	}

	logger.Info("Setting up event handlers")
	if _, err := specInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: c.enqueueSpec,
		UpdateFunc: func(oldObj, newObj interface{}) {
			if sameVersion(oldObj, newObj) {
				return
			}
			c.enqueueSpec(newObj)
		},
		DeleteFunc: c.enqueueSpec,
	}); err != nil {
		return nil, err
	}
	if _, err := jobInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: c.handleJob,
		UpdateFunc: func(oldObj, newObj interface{}) {
			if sameVersion(oldObj, newObj) {
				return
			}
			c.handleJob(newObj)
			if holdsSlot(oldObj) && !holdsSlot(newObj) {
				c.wakeWaiting()
			}
		},
		DeleteFunc: func(obj interface{}) {
			c.handleJob(obj)
			c.wakeWaiting()
		},
	}); err != nil {
		return nil, err
	}
	// Last: nothing after it fails, so the directory it makes is always
	// Run's to remove.
	if opts.SupplyChain {
		c.attestImage = opts.Attest
		if c.attestImage == nil {
			a, err := supplychain.New(supplychain.Options{
				Auths:      opts.ownAuths(),
				CertDir:    opts.RegistryCertDir,
				Insecure:   opts.InsecureRegistries,
				BuilderID:  BuilderID(be.Name()),
				Tool:       ComponentName,
				SigningKey: opts.SupplyChainSigning.Key,
				Passphrase: opts.SupplyChainSigning.Passphrase,
			})
			if err != nil {
				return nil, fmt.Errorf("supply chain: %w", err)
			}
			if signs, fp := a.Signs(); signs {
				logger.Info("Signing pushed images", "key", fp)
			}
			c.attester = a
			c.attestImage = a.Attest
		}
	}
	return c, nil
}

var schemeOnce sync.Once

// RegisterScheme adds the ImageSpec types to client-go's global scheme, which
// the event recorder needs, once per process. Changing the scheme races with
// every request in flight (it is read to encode parameters), so callers that
// send requests before New (leader election) call it first.
func RegisterScheme() {
	schemeOnce.Do(func() { utilruntime.Must(primehubscheme.AddToScheme(scheme.Scheme)) })
}

// holdsSlot: the job's build is in flight, as the cache shows it.
func holdsSlot(obj interface{}) bool {
	job, ok := obj.(*v1alpha1.ImageSpecJob)
	return ok && started(job) && !job.Status.Phase.IsFinal()
}

func sameVersion(oldObj, newObj interface{}) bool {
	o, ok1 := oldObj.(metav1.Object)
	n, ok2 := newObj.(metav1.Object)
	return ok1 && ok2 && o.GetResourceVersion() == n.GetResourceVersion()
}

func indexJobByOwner(obj interface{}) ([]string, error) {
	job, ok := obj.(*v1alpha1.ImageSpecJob)
	if !ok {
		return nil, nil
	}
	if ref := metav1.GetControllerOf(job); ref != nil && ref.Kind == "ImageSpec" {
		return []string{job.Namespace + "/" + ref.Name}, nil
	}
	return nil, nil
}

func (c *Controller) enqueueSpec(obj interface{}) {
	if name, err := cache.DeletionHandlingObjectToName(obj); err == nil {
		c.specQueue.Add(name)
	} else {
		utilruntime.HandleError(err)
	}
}

func (c *Controller) enqueueJob(obj interface{}) {
	if name, err := cache.DeletionHandlingObjectToName(obj); err == nil {
		c.jobQueue.Add(name)
	} else {
		utilruntime.HandleError(err)
	}
}

// handleJob syncs the job and the ImageSpec that owns it, whose status
// follows its newest job.
func (c *Controller) handleJob(obj interface{}) {
	c.enqueueJob(obj)
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	job, ok := obj.(*v1alpha1.ImageSpecJob)
	if !ok {
		return
	}
	if ref := metav1.GetControllerOf(job); ref != nil && ref.Kind == "ImageSpec" {
		c.specQueue.Add(cache.NewObjectName(job.Namespace, ref.Name))
	}
}

// notifyJob is the backend's callback.
func (c *Controller) notifyJob(key string) {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		utilruntime.HandleError(err)
		return
	}
	c.jobQueue.Add(cache.NewObjectName(ns, name))
}

// Run starts the backend and the workers, and blocks until ctx is done.
func (c *Controller) Run(ctx context.Context, workers int) error {
	defer utilruntime.HandleCrash()
	defer c.specQueue.ShutDown()
	defer c.jobQueue.ShutDown()
	logger := klog.FromContext(ctx)

	logger.Info("Starting ImageSpec controller", "backend", c.backend.Name())
	if ok := cache.WaitForCacheSync(ctx.Done(), c.synced...); !ok {
		return fmt.Errorf("failed to wait for caches to sync")
	}
	if err := c.backend.Run(ctx, c.notifyJob); err != nil {
		return fmt.Errorf("starting the %s backend: %w", c.backend.Name(), err)
	}
	if err := c.refreshPushSecrets(ctx); err != nil {
		logger.Error(err, "Refreshing push Secrets; will retry before each build")
	}
	if c.baseTracker != nil {
		// Only while acting: a standby replica checks nothing.
		go c.baseTracker.Run(ctx)
	}

	// Syncs run with a context that outlives ctx: on shutdown a sync in
	// flight finishes its status write (within ShutdownGrace) instead of
	// failing half way, and only then may the caller release the lease.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	var running sync.WaitGroup
	logger.Info("Starting workers", "count", workers)
	for i := 0; i < workers; i++ {
		running.Go(func() { c.runWorker(ctx, workCtx, c.specQueue, c.syncImageSpec) })
		running.Go(func() { c.runWorker(ctx, workCtx, c.jobQueue, c.syncJob) })
	}
	logger.Info("Started workers")
	<-ctx.Done()
	logger.Info("Shutting down workers; waiting for syncs in flight")
	// Queued keys are dropped, not drained: the next leader lists
	// everything again.
	c.specQueue.ShutDown()
	c.jobQueue.ShutDown()
	grace := time.AfterFunc(ShutdownGrace, cancelWork)
	defer grace.Stop()
	running.Wait()
	logger.Info("Workers stopped")
	if c.attester != nil {
		if err := c.attester.Close(); err != nil {
			logger.Error(err, "Removing the supply chain's work directory")
		}
	}
	return nil
}

// ShutdownGrace bounds how long syncs in flight may run after the
// controller was told to stop; below the Deployment's termination grace.
var ShutdownGrace = 20 * time.Second

// runWorker processes items until the queue shuts down or stop is done;
// syncs get ctx.
func (c *Controller) runWorker(stop, ctx context.Context, queue workqueue.TypedRateLimitingInterface[cache.ObjectName], sync func(context.Context, cache.ObjectName) error) {
	defer utilruntime.HandleCrash()
	for stop.Err() == nil && c.processNextItem(stop, ctx, queue, sync) {
	}
}

func (c *Controller) processNextItem(stop, ctx context.Context, queue workqueue.TypedRateLimitingInterface[cache.ObjectName], sync func(context.Context, cache.ObjectName) error) bool {
	key, shutdown := queue.Get()
	if shutdown {
		return false
	}
	defer queue.Done(key)
	if stop.Err() != nil {
		return false
	}
	logger := klog.LoggerWithValues(klog.FromContext(ctx), "key", key.String())
	err := sync(klog.NewContext(ctx, logger), key)
	if err == nil {
		queue.Forget(key)
		return true
	}
	if apierrors.IsConflict(err) {
		// Another writer (a user, the other worker queue) changed the
		// object since the cache saw it: expected, and the retry reads
		// the newer version. Not an error worth an operator's attention.
		logger.V(2).Info("Object changed while syncing; retrying", "err", err)
	} else {
		utilruntime.HandleErrorWithContext(ctx, err, "Error syncing; requeuing for later retry", "key", key)
	}
	queue.AddRateLimited(key)
	return true
}

// Recorder exposes the event recorder (the backends report through it too).
func (c *Controller) Recorder() record.EventRecorder { return c.recorder }
