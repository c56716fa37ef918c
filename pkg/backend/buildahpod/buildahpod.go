package buildahpod

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/backend"
	"github.com/imagespec/imagespec-controller/pkg/names"
)

// Name is recorded in status.backend of the jobs this backend builds.
const Name = "buildahpod"

// Backend builds each job in a pod. It implements backend.Backend.
type Backend struct {
	opts Options
	kube kubernetes.Interface

	// ownFactory watches the build namespace, when there is one.
	ownFactory  informers.SharedInformerFactory
	podInformer cache.SharedIndexInformer
	pods        corelisters.PodLister
	cmInformer  cache.SharedIndexInformer
	configMaps  corelisters.ConfigMapLister

	mu     sync.Mutex
	notify backend.Notify
	// gone wakes Cancel calls waiting for a pod (namespace/name) to be
	// deleted.
	gone map[string][]chan struct{}
	// tails caches the log tails of finished pods, so a retried status
	// write does not read the log again.
	tails map[types.UID]string
	// pushRead is the build namespace's push Secret as last read, at
	// pushReadAt (see pushSecret).
	pushRead   *corev1.Secret
	pushReadAt time.Time
	// survey is the last look at the nodes for user namespace support.
	survey nodeSurvey
	// baseStores are the base stores builds have pushed, as digest
	// references, storesMaking those being made since when, storesSeen
	// the pods whose base-store container was looked at (see basestore.go).
	baseStores   map[baseStoreKey]string
	storesMaking map[baseStoreKey]time.Time
	storesSeen   map[types.UID]bool
	// warmTasks feeds the worker that creates and deletes the pods that
	// have a node pull a base store (see nodewarm.go).
	warmTasks chan warmTask
}

// New prepares the backend. managed must be the informer factory restricted
// to the controller's managed-by label, not yet started: the backend
// registers its Pod and ConfigMap informers on it, so the controller caches
// only its own pods.
func New(opts Options, kube kubernetes.Interface, managed informers.SharedInformerFactory) (*Backend, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	if _, err := opts.securityContext(false); err != nil {
		return nil, err
	}
	b := &Backend{
		opts:         opts,
		kube:         kube,
		gone:         map[string][]chan struct{}{},
		tails:        map[types.UID]string{},
		baseStores:   map[baseStoreKey]string{},
		storesMaking: map[baseStoreKey]time.Time{},
		storesSeen:   map[types.UID]bool{},
		warmTasks:    make(chan warmTask, 64),
	}
	if opts.BuildNamespace != "" {
		// The controller's factory may watch one tenant namespace only.
		selector := names.ManagedSelector()
		if opts.WatchNamespace != "" {
			selector += "," + JobNamespaceLabel + "=" + opts.WatchNamespace
		}
		b.ownFactory = informers.NewSharedInformerFactoryWithOptions(kube, 0,
			informers.WithNamespace(opts.BuildNamespace),
			informers.WithTweakListOptions(func(lo *metav1.ListOptions) { lo.LabelSelector = selector }))
		managed = b.ownFactory
	}
	pods := managed.Core().V1().Pods()
	b.podInformer = pods.Informer()
	b.pods = pods.Lister()
	cms := managed.Core().V1().ConfigMaps()
	b.cmInformer = cms.Informer()
	b.configMaps = cms.Lister()
	return b, nil
}

// Name implements backend.Backend.
func (b *Backend) Name() string { return Name }

// Options returns the options in effect, defaults applied.
func (b *Backend) Options() Options { return b.opts }

// Run implements backend.Backend: pod events notify the owning job.
func (b *Backend) Run(ctx context.Context, notify backend.Notify) error {
	b.mu.Lock()
	b.notify = notify
	b.mu.Unlock()
	_, err := b.podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: b.podChanged,
		UpdateFunc: func(oldObj, newObj interface{}) {
			o, ok1 := oldObj.(*corev1.Pod)
			n, ok2 := newObj.(*corev1.Pod)
			if ok1 && ok2 && o.ResourceVersion == n.ResourceVersion {
				return
			}
			b.podChanged(newObj)
		},
		DeleteFunc: b.podDeleted,
	})
	if err != nil {
		return err
	}
	if b.ownFactory != nil {
		b.ownFactory.Start(ctx.Done())
	}
	if !cache.WaitForCacheSync(ctx.Done(), b.podInformer.HasSynced, b.cmInformer.HasSynced) {
		return errors.New("buildahpod: waiting for the pod and ConfigMap caches to sync")
	}
	go b.warmNodes(ctx)
	return nil
}

func (b *Backend) podChanged(obj interface{}) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	if pod.Labels[StoreWarmLabel] != "" {
		b.warmPodChanged(pod)
		return
	}
	b.learnBaseStore(pod)
	b.notifyJob(pod)
}

// notifyJob tells the controller that pod's job may have changed state.
func (b *Backend) notifyJob(pod *corev1.Pod) {
	key, ok := jobKeyOf(pod)
	if !ok {
		return
	}
	b.mu.Lock()
	notify := b.notify
	b.mu.Unlock()
	if notify != nil {
		notify(key)
	}
}

func (b *Backend) podDeleted(obj interface{}) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	key := pod.Namespace + "/" + pod.Name
	b.mu.Lock()
	waiters := b.gone[key]
	delete(b.gone, key)
	delete(b.tails, pod.UID)
	delete(b.storesSeen, pod.UID)
	b.mu.Unlock()
	for _, ch := range waiters {
		close(ch)
	}
	// Not podChanged: a deleted pod teaches nothing, and learning from it
	// would mark it seen again after its entry was dropped.
	b.notifyJob(pod)
}

func (b *Backend) logf(format string, args ...any) {
	if b.opts.Logf != nil {
		b.opts.Logf(format, args...)
		return
	}
	klog.InfoS(fmt.Sprintf(format, args...), "backend", Name)
}

// ownedBy: obj is job's, by its owner reference or, in the build
// namespace, its job UID label.
func ownedBy(obj metav1.Object, job *v1alpha1.ImageSpecJob) bool {
	if ref := metav1.GetControllerOf(obj); ref != nil {
		return ref.Kind == "ImageSpecJob" && ref.Name == job.Name && ref.UID == job.UID
	}
	return job.UID != "" && obj.GetLabels()[JobUIDLabel] == string(job.UID) && obj.GetNamespace() != job.Namespace
}

// Ensure implements backend.Backend. The pod's name depends on the job's
// name only and creation tolerates AlreadyExists, so retries and restarts
// find the pod they made instead of making another.
func (b *Backend) Ensure(ctx context.Context, job *v1alpha1.ImageSpecJob) (backend.Status, error) {
	ns, name := b.podRef(job)
	pod, err := b.getPod(ctx, ns, name, job.Status.PodName == name)
	if err != nil {
		return backend.Status{}, err
	}
	if pod != nil && !ownedBy(pod, job) {
		return b.replaceStale(ctx, pod)
	}
	if pod != nil {
		st := classify(pod)
		if st.Phase == v1alpha1.JobSucceeded {
			st.Message = fmt.Sprintf("Pushed %s@%s", job.Spec.TargetImage, st.Digest)
		}
		if st.Phase == v1alpha1.JobFailed && (st.Reason == v1alpha1.ReasonBuilderImagePullFailed || st.Reason == v1alpha1.ReasonBackendError) {
			b.forgetBaseStore(pod)
		}
		if st.Reason == v1alpha1.ReasonBaseImagePullFailed && !b.pullsWithPush(job) {
			if why := b.opts.Pulls.Explain(job.Spec.TargetImage, job.Spec.BaseImage); why != "" {
				st.Message = "Pulling the base image failed: " + why + "; " + st.Message
			}
		}
		// Only a container that ran has a log; the pod stays until its job
		// leaves the history.
		if _, ctr := podContainer(pod, ContainerName); st.Phase.IsFinal() && ctr != nil && ctr.State.Terminated != nil {
			st.LogTail = b.logTail(ctx, pod)
			if pod.DeletionTimestamp == nil {
				st.Message += fmt.Sprintf("; log: kubectl logs -n %s %s", pod.Namespace, pod.Name)
			}
		}
		return st, nil
	}
	if job.Status.PodName == name {
		// This job's pod existed and is gone without a final state.
		return backend.Status{Phase: v1alpha1.JobFailed, Reason: v1alpha1.ReasonBackendError, PodName: name,
			Message: fmt.Sprintf("Build pod %s was deleted before the build finished; change the ImageSpec's updateTime to build again", name)}, nil
	}
	return b.create(ctx, job)
}

// getPod reads the pod from the cache, then, when the job has recorded it
// (recorded), from the API server: the cache may not have a pod created a
// moment ago yet, and a recorded pod missing from both is gone. A pod the
// job never recorded is not read live: creating it tolerates one that
// exists, so a new build costs no GET that answers 404.
func (b *Backend) getPod(ctx context.Context, namespace, name string, recorded bool) (*corev1.Pod, error) {
	pod, err := b.pods.Pods(namespace).Get(name)
	if err == nil {
		return pod, nil
	}
	if !apierrors.IsNotFound(err) || !recorded {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, err
	}
	pod, err = b.kube.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return pod, err
}

// replaceStale deletes a pod left by an earlier job of the same name; its
// deletion event brings this job back here.
func (b *Backend) replaceStale(ctx context.Context, pod *corev1.Pod) (backend.Status, error) {
	if err := b.deleteStale(ctx, pod); err != nil {
		return backend.Status{}, err
	}
	return backend.Status{Phase: v1alpha1.JobPending,
		Message: fmt.Sprintf("Waiting for pod %s of an earlier job of the same name to be deleted", pod.Name)}, nil
}

func (b *Backend) deleteStale(ctx context.Context, pod *corev1.Pod) error {
	if pod.DeletionTimestamp != nil {
		return nil
	}
	err := b.kube.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To[int64](1),
		Preconditions:      &metav1.Preconditions{UID: &pod.UID},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("deleting stale build pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}

// create checks the job's Secrets, writes its ConfigMap and creates its pod.
func (b *Backend) create(ctx context.Context, job *v1alpha1.ImageSpecJob) (backend.Status, error) {
	ns, name := b.podRef(job)
	// A missing Secret would leave the pod ContainerCreating until the
	// timeout: fail now, with the reason of the stage that needs it. The
	// push Secret is in the pod's namespace; the pull Secret is always
	// read from the job's own.
	push, st, done, err := b.pushSecret(ctx, ns, job.Spec.PushSecret)
	if done || err != nil {
		return st, err
	}
	if b.opts.BuildNamespace == "" {
		if _, st, done, err := b.checkSecret(ctx, ns, job.Spec.PullSecret, v1alpha1.ReasonBaseImagePullFailed, "pull"); done || err != nil {
			return st, err
		}
	} else if st, done, err := b.copyPullSecret(ctx, job, push); done || err != nil {
		return st, err
	}

	cm, err := b.configMap(job)
	if err != nil {
		return backend.Status{Phase: v1alpha1.JobFailed, Reason: v1alpha1.ReasonInvalidSpec,
			Message: fmt.Sprintf("Rendering the Dockerfile: %v", err)}, nil
	}
	existing, err := b.configMaps.ConfigMaps(ns).Get(name)
	if apierrors.IsNotFound(err) {
		existing, err = b.kube.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			existing, err = b.kube.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
		}
		if err != nil {
			return backend.Status{}, fmt.Errorf("creating ConfigMap %s/%s: %w", ns, name, err)
		}
	}
	switch {
	case err != nil:
		return backend.Status{}, err
	case !ownedBy(existing, job) || !maps.Equal(existing.Data, cm.Data):
		// Left by an earlier job of the same name, or by an attempt before
		// a restart with other settings (a new registry CA): the pod about
		// to start must read the current ones. Deleted, then made again on
		// the retry (the controller's role may create and delete them).
		// An earlier job's pod, which the cache may not show yet (Ensure
		// reads new pods from the cache only), goes first.
		if !ownedBy(existing, job) {
			pod, err := b.kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			if err == nil && !ownedBy(pod, job) {
				return b.replaceStale(ctx, pod)
			}
			if err != nil && !apierrors.IsNotFound(err) {
				return backend.Status{}, err
			}
		}
		err := b.kube.CoreV1().ConfigMaps(ns).Delete(ctx, name, metav1.DeleteOptions{
			Preconditions: &metav1.Preconditions{UID: &existing.UID}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return backend.Status{}, err
		}
		return backend.Status{}, fmt.Errorf("ConfigMap %s/%s was stale (an earlier job's, or other settings); deleted it, will retry", ns, name)
	}

	userns, imageVolumes, err := b.userNamespace(ctx)
	if err != nil {
		return backend.Status{}, err
	}
	store := b.baseStorePlan(job, userns, imageVolumes)
	pod, err := b.pod(job, userns, store)
	if err != nil {
		return backend.Status{}, err
	}
	created, err := b.kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		if created, err = b.kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{}); err != nil {
			return backend.Status{}, err
		}
		if !ownedBy(created, job) {
			return b.replaceStale(ctx, created)
		}
		return classify(created), nil
	}
	if err != nil {
		if apierrors.IsForbidden(err) || apierrors.IsInvalid(err) {
			// Admission (Pod Security, quota) or validation refused it:
			// retrying the same pod cannot help.
			return backend.Status{Phase: v1alpha1.JobFailed, Reason: v1alpha1.ReasonBackendError,
				Message: fmt.Sprintf("Creating build pod %s: %v", name, err)}, nil
		}
		return backend.Status{}, fmt.Errorf("creating pod %s/%s: %w", ns, name, err)
	}
	b.logf("Build pod created: job %s/%s, pod %s/%s, target %s, user namespace %t%s", job.Namespace, job.Name, ns, name, job.Spec.TargetImage, userns, store)
	return classify(created), nil
}

// getSecret reads a Secret the build needs; a missing one is a failed
// status with reason (done). Errors name the Secret, never its content.
func (b *Backend) getSecret(ctx context.Context, namespace, name, reason, use string) (_ *corev1.Secret, _ backend.Status, done bool, _ error) {
	s, err := b.kube.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, backend.Status{Phase: v1alpha1.JobFailed, Reason: reason,
			Message: fmt.Sprintf("The %s Secret %s/%s does not exist", use, namespace, name)}, true, nil
	}
	if err != nil {
		return nil, backend.Status{}, false, fmt.Errorf("reading the %s Secret %s/%s: %w", use, namespace, name, err)
	}
	return s, backend.Status{}, false, nil
}

// pushSecret is checkSecret for the push Secret; with a build namespace a
// read is reused for Options.PushSecretRecheck.
func (b *Backend) pushSecret(ctx context.Context, namespace, name string) (*corev1.Secret, backend.Status, bool, error) {
	if b.opts.BuildNamespace == "" || name == "" {
		return b.checkSecret(ctx, namespace, name, v1alpha1.ReasonPushFailed, "push")
	}
	b.mu.Lock()
	cached, at := b.pushRead, b.pushReadAt
	b.mu.Unlock()
	if cached != nil && cached.Name == name && time.Since(at) < b.opts.PushSecretRecheck {
		return cached, backend.Status{}, false, nil
	}
	s, st, done, err := b.checkSecret(ctx, namespace, name, v1alpha1.ReasonPushFailed, "push")
	if s != nil {
		b.mu.Lock()
		b.pushRead, b.pushReadAt = s, time.Now()
		b.mu.Unlock()
	}
	return s, st, done, err
}

// checkSecret reads a referenced Secret the pod mounts as it is, and
// reports a failed status when it is missing or is not a docker config.
// No name, no Secret.
func (b *Backend) checkSecret(ctx context.Context, namespace, name, reason, use string) (*corev1.Secret, backend.Status, bool, error) {
	if name == "" {
		return nil, backend.Status{}, false, nil
	}
	s, st, done, err := b.getSecret(ctx, namespace, name, reason, use)
	if done || err != nil {
		return nil, st, done, err
	}
	if _, ok := s.Data[corev1.DockerConfigJsonKey]; !ok {
		return nil, backend.Status{Phase: v1alpha1.JobFailed, Reason: reason,
			Message: fmt.Sprintf("The %s Secret %s/%s has no %s key (want type %s)", use, namespace, name, corev1.DockerConfigJsonKey, corev1.SecretTypeDockerConfigJson)}, true, nil
	}
	return s, backend.Status{}, false, nil
}

// maxLogBytes bounds what is read of a pod's log; status keeps 4 KiB.
const maxLogBytes = 16 << 10

// logTail reads the end of a finished pod's log.
func (b *Backend) logTail(ctx context.Context, pod *corev1.Pod) string {
	b.mu.Lock()
	tail, ok := b.tails[pod.UID]
	b.mu.Unlock()
	if ok {
		return tail
	}
	raw, err := b.kube.CoreV1().Pods(pod.Namespace).GetLogs(pod.Name, &corev1.PodLogOptions{
		Container:  ContainerName,
		TailLines:  ptr.To(b.opts.LogTailLines),
		LimitBytes: ptr.To[int64](maxLogBytes),
	}).DoRaw(ctx)
	if err != nil {
		// The node may be gone; the termination message still tells
		// what failed.
		klog.FromContext(ctx).V(2).Info("Reading the build log", "pod", klog.KObj(pod), "err", err)
		return ""
	}
	tail = string(raw)
	b.mu.Lock()
	if len(b.tails) > 1024 {
		b.tails = map[types.UID]string{}
	}
	b.tails[pod.UID] = tail
	b.mu.Unlock()
	return tail
}

// Cancel implements backend.Backend: it deletes the job's pod and
// ConfigMap and returns once the pod is gone, i.e. the kubelet has stopped
// its container, so nothing is pushed after Cancel returns. A pod killed
// during a push may have uploaded blobs, but not the manifest unless the
// push had finished: the tag is never half-written.
func (b *Backend) Cancel(ctx context.Context, job *v1alpha1.ImageSpecJob) error {
	ns, name := b.podRef(job)
	key := ns + "/" + name
	ch := make(chan struct{})
	b.mu.Lock()
	b.gone[key] = append(b.gone[key], ch)
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		list := b.gone[key]
		for i, c := range list {
			if c == ch {
				b.gone[key] = append(list[:i:i], list[i+1:]...)
				break
			}
		}
		if len(b.gone[key]) == 0 {
			delete(b.gone, key)
		}
		b.mu.Unlock()
	}()

	pod, err := b.kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if err == nil && job.UID != "" && !ownedBy(pod, job) {
		// Another job's pod; not ours to stop.
		pod = nil
	} else if apierrors.IsNotFound(err) {
		pod = nil
	}
	if err := b.deleteConfigMap(ctx, job); err != nil {
		return err
	}
	if err := b.deletePullCopy(ctx, job); err != nil {
		return err
	}
	if pod == nil {
		return nil
	}
	if pod.DeletionTimestamp == nil {
		err = b.kube.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{
			// Not 0: that removes the object at once while the container
			// may still run; with 1 the object goes only after the kubelet
			// has stopped the container.
			GracePeriodSeconds: ptr.To[int64](1),
			Preconditions:      &metav1.Preconditions{UID: &pod.UID},
		})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("deleting build pod %s: %w", key, err)
		}
		b.logf("Build pod deleted: job %s/%s, pod %s", job.Namespace, job.Name, name)
	}
	// The delete event may have come before the waiter was registered;
	// an unscheduled pod is removed at once.
	if _, err := b.kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		return nil
	}
	timer := time.NewTimer(b.opts.CancelWait)
	defer timer.Stop()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return fmt.Errorf("build pod %s is still terminating after %s (is node %s down?); will check again", key, b.opts.CancelWait, pod.Spec.NodeName)
	}
}

func (b *Backend) deleteConfigMap(ctx context.Context, job *v1alpha1.ImageSpecJob) error {
	ns, name := b.podRef(job)
	return deleteJobObject(ctx, b.kube.CoreV1().ConfigMaps(ns), "ConfigMap", ns, name, job)
}

// getDeleter is the part of a typed client deleteJobObject uses.
type getDeleter[T metav1.Object] interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error)
	Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error
}

// deleteJobObject deletes the job's object (kind, in namespace ns) of
// that name, unless it is another job's. A job known by name only (it was
// deleted) takes whatever has the name.
func deleteJobObject[T metav1.Object](ctx context.Context, c getDeleter[T], kind, ns, name string, job *v1alpha1.ImageSpecJob) error {
	opts := metav1.DeleteOptions{}
	if job.UID != "" {
		// From the API server: the cache may lag behind an object made a
		// moment ago.
		obj, err := c.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if !ownedBy(obj, job) {
			return nil
		}
		uid := obj.GetUID()
		opts.Preconditions = &metav1.Preconditions{UID: &uid}
	}
	err := c.Delete(ctx, name, opts)
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("deleting %s %s/%s: %w", kind, ns, name, err)
	}
	return nil
}
