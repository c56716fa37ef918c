package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"

	"github.com/imagespec/imagespec-controller/pkg/metrics"
)

// LeaderElection makes replicas take turns: only the holder of a
// coordination.k8s.io Lease runs the controller, the others wait as standbys.
type LeaderElection struct {
	// Namespace and Name of the Lease.
	Namespace, Name string
	// Identity of this replica in the Lease; default hostname_<random>, so
	// a restarted pod never mistakes its predecessor's lease for its own.
	Identity string
	// LeaseDuration is how long standbys wait after the last renewal
	// before taking over; RenewDeadline is how long the leader retries
	// renewing before it stops acting; RetryPeriod is the pace of tries.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

// Defaults of the leader election, as Kubernetes' own controllers use.
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
	DefaultLeaseName     = "imagespec-controller"
)

// ErrLostLease is returned by Run when another replica took the lease over
// (for example after this one could not reach the API server for longer
// than the renew deadline). The process should exit and restart as a
// standby.
var ErrLostLease = errors.New("lost the leader lease")

// probes is the state /healthz and /readyz report.
type probes struct {
	// synced: this replica acts and its caches have synced.
	synced atomic.Bool
	// standby: leader election runs and another replica holds the lease.
	standby  atomic.Bool
	watchdog *leaderelection.HealthzAdaptor
}

func (p *probes) ready() bool { return p.synced.Load() || p.standby.Load() }

// runLeaderElected runs run while this replica holds the lease. On ctx done
// it stops run first, waits for it, and only then releases the lease, so
// the next leader never overlaps with syncs still in flight here.
func runLeaderElected(ctx context.Context, clients *Clients, le LeaderElection, p *probes, run func(context.Context) error) error {
	logger := klog.FromContext(ctx)
	if le.Identity == "" {
		host, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("leader election identity: %w", err)
		}
		le.Identity = host + "_" + string(uuid.NewUUID())
	}
	if le.Name == "" {
		le.Name = DefaultLeaseName
	}
	if le.LeaseDuration <= 0 {
		le.LeaseDuration = DefaultLeaseDuration
	}
	if le.RenewDeadline <= 0 {
		le.RenewDeadline = DefaultRenewDeadline
	}
	if le.RetryPeriod <= 0 {
		le.RetryPeriod = DefaultRetryPeriod
	}
	if le.Namespace == "" {
		return errors.New("leader election needs the Lease's namespace")
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: le.Namespace, Name: le.Name},
		Client:     clients.Kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: le.Identity},
	}

	// The elector's context is cancelled by us, after run returned, never
	// directly by ctx.
	leCtx, cancelLE := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelLE()
	var (
		mu       sync.Mutex
		leading  bool
		stopping bool
		runErr   error
		ran      = make(chan struct{})
	)
	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   le.LeaseDuration,
		RenewDeadline:   le.RenewDeadline,
		RetryPeriod:     le.RetryPeriod,
		ReleaseOnCancel: true,
		WatchDog:        p.watchdog,
		Name:            le.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(leaderCtx context.Context) {
				mu.Lock()
				if stopping {
					mu.Unlock()
					return
				}
				leading = true
				mu.Unlock()
				defer close(ran)
				// Lease release waits for this: cancelLE runs only
				// after run returned.
				defer cancelLE()
				p.standby.Store(false)
				metrics.Leader.Set(1)
				defer metrics.Leader.Set(0)
				logger.Info("Acting as leader", "lease", le.Namespace+"/"+le.Name, "identity", le.Identity)
				runCtx, cancel := context.WithCancel(leaderCtx)
				defer cancel()
				stop := context.AfterFunc(ctx, cancel)
				defer stop()
				runErr = run(runCtx)
			},
			OnStoppedLeading: func() {},
			OnNewLeader: func(identity string) {
				if identity != le.Identity {
					logger.Info("Standing by", "leader", identity)
					p.standby.Store(true)
				}
			},
		},
	})
	if err != nil {
		return err
	}
	p.watchdog.SetLeaderElection(elector)
	electorDone := make(chan struct{})
	go func() {
		defer close(electorDone)
		elector.Run(leCtx)
	}()

	lost := false
	select {
	case <-ctx.Done():
	case <-electorDone:
		lost = ctx.Err() == nil
	}
	mu.Lock()
	stopping = true
	wasLeading := leading
	mu.Unlock()
	if wasLeading {
		<-ran
	}
	cancelLE()
	<-electorDone
	p.standby.Store(false)
	if wasLeading && runErr != nil {
		return runErr
	}
	if lost && ctx.Err() == nil {
		return ErrLostLease
	}
	return nil
}

// serveProbes serves /metrics on metricsAddr and /healthz and /readyz on
// healthAddr ("" disables each; equal addresses share one server) until the
// returned stop is called.
func serveProbes(ctx context.Context, metricsAddr, healthAddr string, p *probes) (stop func(), err error) {
	logger := klog.FromContext(ctx)
	health := http.NewServeMux()
	health.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := p.watchdog.Check(r); err != nil {
			http.Error(w, "leader election: "+err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	health.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !p.ready() {
			http.Error(w, "caches not synced and not a standby", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	muxes := map[string]*http.ServeMux{}
	if healthAddr != "" {
		muxes[healthAddr] = health
	}
	if metricsAddr != "" {
		m, ok := muxes[metricsAddr]
		if !ok {
			m = http.NewServeMux()
			muxes[metricsAddr] = m
		}
		m.Handle("/metrics", metrics.Handler())
	}
	var servers []*http.Server
	stop = func() {
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		for _, s := range servers {
			_ = s.Shutdown(shutdownCtx)
		}
	}
	for addr, mux := range muxes {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			stop()
			return nil, fmt.Errorf("listening on %s: %w", addr, err)
		}
		s := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, s)
		logger.Info("Serving", "address", ln.Addr().String(), "metrics", addr == metricsAddr, "probes", addr == healthAddr)
		go func() {
			if err := s.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error(err, "HTTP server stopped", "address", addr)
			}
		}()
	}
	return stop, nil
}

// Idle serves the probes and metrics of a controller that has nothing to do
// (the feature is off) until ctx is done, so its Deployment stays healthy.
func Idle(ctx context.Context, metricsAddr, healthAddr string) error {
	metrics.Register()
	p := &probes{watchdog: leaderelection.NewLeaderHealthzAdaptor(0)}
	p.standby.Store(true)
	stop, err := serveProbes(ctx, metricsAddr, healthAddr, p)
	if err != nil {
		return err
	}
	defer stop()
	<-ctx.Done()
	return nil
}
