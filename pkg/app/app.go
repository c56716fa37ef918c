// Package app wires clients, informers, a backend and the controller
// together. cmd/controller calls it; so do the integration tests, so the
// code under test is the code users run.
package app

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubeinformers "k8s.io/client-go/informers"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/klog/v2"

	"github.com/imagespec/imagespec-controller/pkg/backend"
	"github.com/imagespec/imagespec-controller/pkg/controller"
	clientset "github.com/imagespec/imagespec-controller/pkg/generated/clientset/versioned"
	informers "github.com/imagespec/imagespec-controller/pkg/generated/informers/externalversions"
	"github.com/imagespec/imagespec-controller/pkg/metrics"
)

// Defaults of cmd/controller's flags. The client limits let a burst of a
// thousand ImageSpecs through without client-side throttling; the API
// server's priority and fairness still protects it.
const (
	DefaultQPS     = 1000
	DefaultBurst   = 2000
	DefaultWorkers = 16
)

// Clients are the API clients a controller and its backend share.
type Clients struct {
	Kube   kubernetes.Interface
	Client clientset.Interface
	// Managed is an informer factory restricted to objects the controller
	// labels as its own (push Secrets, build pods and ConfigMaps), so the
	// controller does not cache every Secret and Pod of the cluster.
	Managed kubeinformers.SharedInformerFactory
}

// Options for Run.
type Options struct {
	Controller controller.Options
	// Namespace restricts the controller to one namespace; "" watches all.
	Namespace string
	Workers   int
	// QPS and Burst bound the controller's API client; QPS < 0 disables
	// client-side throttling.
	QPS   float32
	Burst int
	// LeaderElection, when set, runs the controller only while this
	// replica holds the Lease; nil runs it at once.
	LeaderElection *LeaderElection
	// MetricsAddr serves /metrics and HealthAddr /healthz and /readyz
	// ("" disables; the same address serves all three).
	MetricsAddr, HealthAddr string
}

// NewClients builds the clients for cfg with the options' rate limits.
func NewClients(cfg *rest.Config, opts Options) (*Clients, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS = opts.QPS
	cfg.Burst = opts.Burst
	cfg.UserAgent = controller.ComponentName
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("building kubernetes clientset: %w", err)
	}
	client, err := clientset.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("building imagespec clientset: %w", err)
	}
	managed := kubeinformers.NewSharedInformerFactoryWithOptions(kube, 0,
		kubeinformers.WithNamespace(opts.Namespace),
		kubeinformers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = controller.ManagedSelector() }),
		kubeinformers.WithTransform(stripManagedFields))
	return &Clients{Kube: kube, Client: client, Managed: managed}, nil
}

// stripManagedFields drops server-side-apply bookkeeping from cached
// objects: the controller never reads it, and it is often the largest part
// of a small object. Updates built from a cached copy omit managedFields,
// which the API server treats as unchanged.
func stripManagedFields(obj interface{}) (interface{}, error) {
	if m, err := meta.Accessor(obj); err == nil && m.GetManagedFields() != nil {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// Run runs the controller with the backend until ctx is done. The backend
// must be built from the same Clients (it registers its informers on
// Managed before Run starts the factories).
func Run(ctx context.Context, clients *Clients, be backend.Backend, opts Options) error {
	// Before controller.New: its workqueues pick the metrics provider up
	// when they are made.
	metrics.Register()
	controller.RegisterScheme()
	p := &probes{watchdog: leaderelection.NewLeaderHealthzAdaptor(20 * time.Second)}
	stopServing, err := serveProbes(ctx, opts.MetricsAddr, opts.HealthAddr, p)
	if err != nil {
		return err
	}
	defer stopServing()
	run := func(ctx context.Context) error { return runController(ctx, clients, be, opts, p) }
	if opts.LeaderElection == nil {
		metrics.Leader.Set(1)
		defer metrics.Leader.Set(0)
		return run(ctx)
	}
	return runLeaderElected(ctx, clients, *opts.LeaderElection, p, run)
}

func runController(ctx context.Context, clients *Clients, be backend.Backend, opts Options, p *probes) error {
	logger := klog.FromContext(ctx)
	if opts.Workers <= 0 {
		opts.Workers = 1
	}
	// No periodic resync: every change arrives as an event and timeouts
	// are scheduled, so an idle controller sends no requests.
	factory := informers.NewSharedInformerFactoryWithOptions(clients.Client, 0,
		informers.WithNamespace(opts.Namespace), informers.WithTransform(stripManagedFields))
	// Only a push Secret per namespace needs the Secret informer (list and
	// watch of Secrets); with a build namespace there is one, read directly.
	var secrets coreinformers.SecretInformer
	if opts.Controller.PushSecretNamespace == "" {
		secrets = clients.Managed.Core().V1().Secrets()
	}
	c, err := controller.New(ctx, clients.Kube, clients.Client,
		factory.Primehub().V1alpha1().ImageSpecs(),
		factory.Primehub().V1alpha1().ImageSpecJobs(),
		secrets, be, opts.Controller)
	if err != nil {
		return err
	}
	factory.Start(ctx.Done())
	clients.Managed.Start(ctx.Done())
	defer factory.Shutdown()
	defer clients.Managed.Shutdown()
	go func() {
		if allSynced(factory.WaitForCacheSync(ctx.Done())) && allSynced(clients.Managed.WaitForCacheSync(ctx.Done())) {
			p.synced.Store(true)
		}
	}()
	defer p.synced.Store(false)
	start := time.Now()
	err = c.Run(ctx, opts.Workers)
	logger.Info("Controller stopped", "ran", time.Since(start).Round(time.Second))
	return err
}

func allSynced[K comparable](synced map[K]bool) bool {
	for _, ok := range synced {
		if !ok {
			return false
		}
	}
	return true
}
