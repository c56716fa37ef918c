// Command controller runs the imagespec-controller: it watches ImageSpecs,
// creates an ImageSpecJob for each revision and builds it with the
// configured backend.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/containers/buildah"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/imagespec/imagespec-controller/pkg/app"
	"github.com/imagespec/imagespec-controller/pkg/backend"
	"github.com/imagespec/imagespec-controller/pkg/backend/buildahpod"
	"github.com/imagespec/imagespec-controller/pkg/backend/inprocess"
	"github.com/imagespec/imagespec-controller/pkg/config"
	"github.com/imagespec/imagespec-controller/pkg/controller"
	"github.com/imagespec/imagespec-controller/pkg/credentials"
	"github.com/imagespec/imagespec-controller/pkg/dockerfile"
	"github.com/imagespec/imagespec-controller/pkg/revision"
)

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

type flags struct {
	kubeconfig, masterURL string
	envFile               string
	backendName           string
	namespace             string
	workers               int
	qps                   float64
	burst                 int

	pushSecretName        string
	repositoryLayout      string
	sharedRepositories    stringList
	useExistingPushSecret bool
	buildTimeout          time.Duration
	cancelTimeout         time.Duration
	maxConcurrentBuilds   int
	succeededHistory      int
	failedHistory         int
	trackBaseImages       bool
	buildExisting         bool
	baseImageInterval     time.Duration

	aptMirror, pipIndexURL             string
	pipExtraIndexURLs, pipTrustedHosts stringList
	condaChannels                      stringList

	supplyChain      bool
	signingKeySecret string

	inprocess  inprocessFlags
	buildahpod buildahpodFlags
}

// buildahpodFlags configure the buildahpod backend.
type buildahpodFlags struct {
	image, pullPolicy       string
	privileged              bool
	seccompProfile          string
	userNamespaces          string
	storageDriver           string
	cachePVC, cacheHostPath string
	hostNetwork             bool
	registryCache           bool
	baseStore               bool
	buildNamespace          string
	registryCertsDir        string
	podConfigFile           string
	serviceAccount          string
	priorityClass           string
	imagePullSecrets        stringList
	nodeSelector            stringList
}

// inprocessFlags configure the inprocess backend.
type inprocessFlags struct {
	storageDir, storageDriver string
	logDir                    string
	isolation, runtime        string
	registryCertsDir          string
	insecureRegistries        stringList
	maxBuilds                 int
	reproducible              bool
	allowInCluster            bool
}

func main() {
	// RUN steps of in-process builds re-execute this binary; those child
	// processes must be dispatched before anything else runs.
	if buildah.InitReexec() {
		return
	}
	klog.InitFlags(nil)
	var ops opsFlags
	ops.register(flag.CommandLine)
	var f flags
	flag.StringVar(&f.kubeconfig, "kubeconfig", "", "Path to a kubeconfig. Only required if out-of-cluster.")
	flag.StringVar(&f.masterURL, "master", "", "The address of the Kubernetes API server. Overrides any value in kubeconfig. Only required if out-of-cluster.")
	flag.StringVar(&f.envFile, "env-file", "", "A dotenv file with the PRIMEHUB_* settings (PrimeHub's .env). Environment variables override it.")
	flag.StringVar(&f.backendName, "backend", "buildahpod", "Build backend: buildahpod (a buildah pod per build on the cluster) or inprocess (the buildah library inside this process).")
	flag.StringVar(&f.namespace, "namespace", "", "Watch only this namespace; empty watches all.")
	flag.IntVar(&f.workers, "workers", app.DefaultWorkers, "Workers per queue (ImageSpecs and ImageSpecJobs).")
	flag.Float64Var(&f.qps, "kube-api-qps", app.DefaultQPS, "Client-side limit on API requests per second; negative disables it.")
	flag.IntVar(&f.burst, "kube-api-burst", app.DefaultBurst, "Burst above --kube-api-qps.")
	flag.StringVar(&f.repositoryLayout, "repository-layout", string(revision.LayoutPrefix), "How built images are named under PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX: prefix (<prefix>/<name>:<tag>, PrimeHub's), namespaced (<prefix>/<namespace>/<name>:<tag>, no repository shared between namespaces) or single (<prefix>:<name>-<tag>, one repository for every image).")
	flag.Var(&f.sharedRepositories, "shared-repository", "A repository, or repository path prefix (registry.example.com/bases), that every ImageSpec may build on through the push credentials (repeatable). Other base images are pulled with the push credentials only when they are the ImageSpec's own (its earlier revisions; with the namespaced layout, any image of its namespace), else with its pull Secret alone.")
	flag.StringVar(&f.pushSecretName, "push-secret-name", controller.DefaultPushSecretName, "The dockerconfigjson Secret with push credentials that build jobs reference.")
	flag.BoolVar(&f.useExistingPushSecret, "use-existing-push-secret", false, "--push-secret-name names a Secret you manage in each namespace; the controller does not write it from the PRIMEHUB_CUSTOM_IMAGE_REGISTRY_* settings.")
	flag.DurationVar(&f.buildTimeout, "build-timeout", time.Hour, "A job fails with reason Timeout when it has not finished this long after it was created (time spent queued or pending counts). 0 disables.")
	flag.DurationVar(&f.cancelTimeout, "cancel-timeout", controller.DefaultCancelTimeout, "A cancelled, superseded or timed-out build whose stop the backend cannot confirm this long (a node that is down) is finalized anyway with reason CancelIncomplete, freeing its build slot; an event names what may be left.")
	flag.IntVar(&f.maxConcurrentBuilds, "max-concurrent-builds", 10, "At most this many builds run at once; the rest wait Pending with reason Queued. The default keeps a change that touches every ImageSpec (a new repository prefix or registry) from starting hundreds of builds at once; 0 means no limit.")
	flag.IntVar(&f.succeededHistory, "succeeded-history-limit", 5, "Succeeded jobs kept per ImageSpec (the one that built status.image is always kept).")
	flag.IntVar(&f.failedHistory, "failed-history-limit", 5, "Failed and cancelled jobs kept per ImageSpec.")
	flag.BoolVar(&f.buildExisting, "build-existing-images", false, "Build every job even when its target image is already in the registry with its revision's label; by default such a job ends Succeeded (reason AlreadyBuilt) after one manifest read, without a build.")
	flag.BoolVar(&f.supplyChain, "supply-chain", true, "Attach to every pushed image an SPDX 2.3 SBOM read from its dpkg, pip and conda records and an in-toto SLSA v1 provenance statement, as OCI artifacts whose subject is the image (referrers API, or the tag sha256-<digest hex> where the registry lacks it); status.supplyChain says where. A job whose attachments fail ends Failed (reason SupplyChainFailed).")
	flag.StringVar(&f.signingKeySecret, "signing-key-secret", "", "[namespace/]name of a Secret with a sigstore (cosign) private key under cosign.key and its passphrase under cosign.password (as cosign generate-key-pair k8s://<namespace>/<name> or hack/signing-key write it): every pushed image gets a sigstore signature, stored as a cosign-compatible attachment. The namespace defaults to $POD_NAMESPACE. Empty signs nothing.")
	flag.BoolVar(&f.trackBaseImages, "track-base-images", false, "Track the base image of every ImageSpec that leaves spec.trackBaseImage unset: when its tag moves to a new digest, build one new revision (cause BaseImageUpdate).")
	flag.DurationVar(&f.baseImageInterval, "base-image-check-interval", time.Hour, "How often base image tracking checks a base image tag: one manifest request per distinct base image (and pull Secret) however many ImageSpecs use it; failed checks back off up to 8 intervals. 0 turns tracking off, also for ImageSpecs that ask for it.")
	flag.StringVar(&f.aptMirror, "apt-mirror", "", "Replace the archive URL of base images' apt sources, for clusters without internet access.")
	flag.StringVar(&f.pipIndexURL, "pip-index-url", "", "A PyPI-compatible index used instead of PyPI.")
	flag.Var(&f.pipExtraIndexURLs, "pip-extra-index-url", "An extra pip index (repeatable).")
	flag.Var(&f.pipTrustedHosts, "pip-trusted-host", "A host pip may reach without valid TLS (repeatable).")
	flag.Var(&f.condaChannels, "conda-channel", "A conda channel searched before the defaults (repeatable, in order).")
	flag.StringVar(&f.inprocess.storageDir, "inprocess-storage-dir", "/var/lib/imagespec-controller/storage", "inprocess backend: image store and layer cache, kept between builds and restarts (put it on a persistent volume).")
	flag.StringVar(&f.inprocess.storageDriver, "inprocess-storage-driver", "overlay", "inprocess backend: storage driver, overlay or vfs (slower, works on any file system).")
	flag.StringVar(&f.inprocess.logDir, "inprocess-log-dir", "", "inprocess backend: build logs are written to <dir>/<namespace>/<job>.log; a job's status.message names its log and status.logTail holds its end. Default: <inprocess-storage-dir>/logs.")
	flag.StringVar(&f.inprocess.isolation, "isolation", "chroot", "inprocess backend: isolation of RUN steps, chroot or oci (runs --oci-runtime).")
	flag.StringVar(&f.inprocess.runtime, "oci-runtime", "runc", "inprocess backend: OCI runtime for --isolation=oci.")
	flag.StringVar(&f.inprocess.registryCertsDir, "registry-certs-dir", "", "Registry CAs of the controller process (inprocess builds, base image checks, the already-built check): a dir with ca.crt trusted for every registry, or a certs.d-style tree of <host[:port]>/ca.crt. The system's CAs are trusted too.")
	flag.Var(&f.inprocess.insecureRegistries, "insecure-registry", "A registry host[:port] that inprocess builds and the controller's own registry reads reach without TLS verification or over plain http (repeatable). TLS is verified for every other registry.")
	flag.IntVar(&f.inprocess.maxBuilds, "inprocess-max-builds", 0, "inprocess backend: at most this many builds run at once in this process (besides --max-concurrent-builds). 0 means no limit of its own.")
	flag.BoolVar(&f.inprocess.allowInCluster, "inprocess-allow-in-cluster", false, "inprocess backend: run it inside a cluster (KUBERNETES_SERVICE_HOST set) all the same. Its builds run package scripts as root in the controller's own process, next to the controller's credentials: it is no security boundary between tenants. Without this flag the controller refuses to start so.")
	flag.BoolVar(&f.inprocess.reproducible, "reproducible", false, "inprocess backend: stamp images and new files with the Unix epoch and build with SOURCE_DATE_EPOCH=0, so the same inputs give the same image; pip layers are then reproducible, apt layers are not (dpkg logs wall-clock times).")
	flag.StringVar(&f.buildahpod.image, "builder-image", buildahpod.DefaultBuilderImage, "buildahpod backend: the image build pods run; it needs buildah and a POSIX shell.")
	flag.StringVar(&f.buildahpod.pullPolicy, "builder-image-pull-policy", string(corev1.PullIfNotPresent), "buildahpod backend: pull policy of the builder image (Always, IfNotPresent, Never).")
	flag.BoolVar(&f.buildahpod.privileged, "builder-privileged", false, "buildahpod backend: run build pods privileged, for nodes whose seccomp or AppArmor profile forbids the user namespaces of the default least-privilege pod (root with SETUID/SETGID/SETFCAP only).")
	flag.StringVar(&f.buildahpod.seccompProfile, "builder-seccomp-profile", "", "buildahpod backend: seccomp profile of build pods: empty leaves it to the kubelet, Unconfined, or Localhost/<path> (a profile that allows unshare(CLONE_NEWUSER)). RuntimeDefault cannot work.")
	flag.StringVar(&f.buildahpod.userNamespaces, "builder-user-namespaces", "auto", "buildahpod backend: run build pods in a user namespace of their own (hostUsers: false), so root in the pod is an unprivileged user on the node: auto when every node build pods may land on reports support (Kubernetes >= 1.33, containerd >= 2.0 with runc >= 1.2, Linux >= 6.3; needs the right to list nodes), on, or off for older clusters.")
	flag.StringVar(&f.buildahpod.storageDriver, "builder-storage-driver", "overlay", "buildahpod backend: buildah storage driver in build pods, overlay or vfs.")
	flag.StringVar(&f.buildahpod.cachePVC, "builder-cache-pvc", "", "buildahpod backend: a PersistentVolumeClaim (in each namespace that builds) mounted at /var/lib/containers, so layers survive between builds. Default: an emptyDir per build.")
	flag.StringVar(&f.buildahpod.cacheHostPath, "builder-cache-host-path", "", "buildahpod backend: a node directory mounted at /var/lib/containers, so layers survive between builds on that node.")
	flag.StringVar(&f.buildahpod.buildNamespace, "build-namespace", "", "buildahpod backend: build pods, their ConfigMaps, the push Secret and per-build copies of pull Secrets live in this namespace only (tenants get no access to it; artifacts/deploy uses imagespec-builds). Empty builds in each ImageSpec's namespace and writes the push Secret there.")
	flag.BoolVar(&f.buildahpod.registryCache, "builder-registry-cache", true, "buildahpod backend: keep a layer cache in the registry, one repository per namespace (<prefix>/imagespec_cache/<namespace>), so a build on any node reuses the steps earlier builds of its namespace ran; the push credentials must be able to push there. Off with the single repository layout.")
	flag.BoolVar(&f.buildahpod.baseStore, "builder-base-store", true, "buildahpod backend: the first build of a base image in a namespace also packs the base, pulled into a store of its own by a second container, into a read-only store image in the namespace's cache repository (<prefix>/imagespec_cache/<namespace>:base-<hash>); later builds mount it as an image volume, so the node pulls it once and a build pod copies no base layer. Needs a build namespace, the registry cache, the overlay driver without --builder-cache-*, and user-namespaced build pods in auto mode on nodes with kubelet >= 1.35 and containerd >= 2.2.9.")
	flag.BoolVar(&f.buildahpod.hostNetwork, "builder-host-network", false, "buildahpod backend: run build pods in the node's network namespace, for registries or package indexes reachable only from nodes.")
	flag.StringVar(&f.buildahpod.registryCertsDir, "builder-registry-certs-dir", "", "buildahpod backend: a certs.d tree (<host[:port]>/*.crt) of registry CAs that build pods trust besides the builder image's.")
	flag.StringVar(&f.buildahpod.podConfigFile, "builder-pod-config", "", "buildahpod backend: a JSON or YAML file with resources, nodeSelector, tolerations, serviceAccountName, priorityClassName, imagePullSecrets, nodeName and annotations of build pods. The single flags override it.")
	flag.StringVar(&f.buildahpod.serviceAccount, "builder-service-account", "", "buildahpod backend: service account of build pods (its token is never mounted).")
	flag.StringVar(&f.buildahpod.priorityClass, "builder-priority-class", "", "buildahpod backend: priority class of build pods.")
	flag.Var(&f.buildahpod.imagePullSecrets, "builder-image-pull-secret", "buildahpod backend: a Secret (in each namespace that builds) to pull the builder image with (repeatable).")
	flag.Var(&f.buildahpod.nodeSelector, "builder-node-selector", "buildahpod backend: key=value a node must carry to run build pods (repeatable).")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := klog.FromContext(ctx)
	if err := run(ctx, f, ops); err != nil {
		logger.Error(err, "Controller failed")
		klog.FlushAndExit(klog.ExitFlushTimeout, 1)
	}
	klog.Flush()
}

func run(ctx context.Context, f flags, ops opsFlags) error {
	logger := klog.FromContext(ctx)
	if f.backendName == inprocess.Name && os.Getenv("KUBERNETES_SERVICE_HOST") != "" && !f.inprocess.allowInCluster {
		return fmt.Errorf("--backend=inprocess inside a cluster runs every tenant's package scripts as root in this process, " +
			"which holds the controller's credentials: use --backend=buildahpod, or set --inprocess-allow-in-cluster to accept that it is no security boundary")
	}
	settings, err := loadSettings(f.envFile)
	if err != nil {
		return err
	}
	if !settings.FeatureEnabled {
		// Idle but alive: a Deployment with the feature off must not crash-loop.
		logger.Info("Custom image builds are disabled: set " + config.EnvFeatureCustomImage + "=true to enable them. Building nothing.")
		return app.Idle(ctx, ops.metricsAddr, ops.healthAddr)
	}
	sources := dockerfile.Sources{
		AptMirror:         f.aptMirror,
		PipIndexURL:       f.pipIndexURL,
		PipExtraIndexURLs: f.pipExtraIndexURLs,
		PipTrustedHosts:   f.pipTrustedHosts,
		CondaChannels:     f.condaChannels,
	}
	pulls, err := pullScope(f)
	if err != nil {
		return err
	}
	if errs := dockerfile.ValidateSources(sources, nil); len(errs) > 0 {
		return fmt.Errorf("package source flags: %v", errs.ToAggregate())
	}
	restCfg, err := clientcmd.BuildConfigFromFlags(f.masterURL, f.kubeconfig)
	if err != nil {
		return fmt.Errorf("building kubeconfig: %w", err)
	}
	opts := app.Options{
		Namespace: f.namespace,
		Workers:   f.workers,
		QPS:       float32(f.qps),
		Burst:     f.burst,
		// Operations: leader election and the metrics and probe server.
		LeaderElection: ops.leaderElection(),
		MetricsAddr:    ops.metricsAddr,
		HealthAddr:     ops.healthAddr,
		Controller: controller.Options{
			Registry:              settings.Registry,
			Layout:                pulls.Layout,
			SharedRepositories:    pulls.Shared,
			PushSecretName:        f.pushSecretName,
			PushSecretNamespace:   pushSecretNamespace(f),
			ExistingPushSecret:    f.useExistingPushSecret,
			Sources:               sources,
			BuildTimeout:          f.buildTimeout,
			CancelTimeout:         f.cancelTimeout,
			MaxConcurrentBuilds:   f.maxConcurrentBuilds,
			SucceededHistoryLimit: f.succeededHistory,
			FailedHistoryLimit:    f.failedHistory,
			RegistryCertDir:       f.inprocess.registryCertsDir,
			InsecureRegistries:    f.inprocess.insecureRegistries,
			BuildExisting:         f.buildExisting,
			BaseImages: controller.BaseImageTracking{
				Default:  f.trackBaseImages,
				Interval: f.baseImageInterval,
			},
		},
	}
	clients, err := app.NewClients(restCfg, opts)
	if err != nil {
		return err
	}
	opts.Controller.SupplyChain = f.supplyChain
	if f.signingKeySecret != "" {
		if !f.supplyChain {
			return fmt.Errorf("--signing-key-secret needs --supply-chain")
		}
		key, err := app.ReadSigningKey(ctx, clients.Kube, f.signingKeySecret)
		if err != nil {
			return fmt.Errorf("--signing-key-secret: %w", err)
		}
		opts.Controller.SupplyChainSigning = key
	}
	be, err := newBackend(ctx, f, clients, pulls)
	if err != nil {
		return err
	}
	logger.Info("Configuration", "backend", be.Name(), "repoPrefix", settings.Registry.RepoPrefix, "repositoryLayout", pulls.Layout, "sharedRepositories", pulls.Shared,
		"registry", settings.Registry.Host, "authenticated", settings.Registry.HasCredentials())
	err = app.Run(ctx, clients, be, opts)
	// The process exits when run returns: a backend that holds resources
	// (the inprocess store's mounts, running builds) releases them first.
	if closer, ok := be.(io.Closer); ok {
		if cerr := closer.Close(); cerr != nil {
			logger.Error(cerr, "Closing the backend")
		}
	}
	return err
}

func loadSettings(envFile string) (config.Settings, error) {
	lookup := config.Lookup(os.LookupEnv)
	if envFile != "" {
		vars, err := config.ReadEnvFile(envFile)
		if err != nil {
			return config.Settings{}, fmt.Errorf("--env-file: %w", err)
		}
		lookup = config.Layered(os.LookupEnv, config.MapLookup(vars))
	}
	return config.Load(lookup)
}

// pullScope is the repository layout and the shared repositories: which
// base images builds pull with the push credentials.
func pullScope(f flags) (credentials.PullScope, error) {
	layout, err := revision.ParseLayout(f.repositoryLayout)
	if err != nil {
		return credentials.PullScope{}, fmt.Errorf("--repository-layout: %w", err)
	}
	shared, err := credentials.ParseShared(f.sharedRepositories)
	if err != nil {
		return credentials.PullScope{}, fmt.Errorf("--shared-repository: %w", err)
	}
	return credentials.PullScope{Layout: layout, Shared: shared}, nil
}

// newBackend makes the backend f names; pulls is the controller's pull
// scope, so builds pull exactly as base image tracking checks.
func newBackend(ctx context.Context, f flags, clients *app.Clients, pulls credentials.PullScope) (backend.Backend, error) {
	switch f.backendName {
	case inprocess.Name:
		be, err := inprocess.New(inprocess.Options{
			StorageDir:          f.inprocess.storageDir,
			StorageDriver:       f.inprocess.storageDriver,
			LogDir:              f.inprocess.logDir,
			Isolation:           f.inprocess.isolation,
			Runtime:             f.inprocess.runtime,
			RegistryCertDir:     f.inprocess.registryCertsDir,
			InsecureRegistries:  f.inprocess.insecureRegistries,
			MaxConcurrentBuilds: f.inprocess.maxBuilds,
			Reproducible:        f.inprocess.reproducible,
			Pulls:               pulls,
		}, clients.Kube)
		if err != nil {
			return nil, err
		}
		// run closes it (io.Closer) once the controller stopped: running
		// builds stop, nothing is pushed after that, the store is released.
		return be, nil
	case buildahpod.Name:
		opts, err := buildahpodOptions(f)
		if err != nil {
			return nil, err
		}
		opts.Pulls = pulls
		return buildahpod.New(opts, clients.Kube, clients.Managed)
	default:
		return nil, fmt.Errorf("--backend=%q: this build has no such backend", f.backendName)
	}
}

// pushSecretNamespace: with a build namespace the one push Secret lives
// there; the inprocess backend reads it from the job's namespace.
func pushSecretNamespace(f flags) string {
	if f.backendName == buildahpod.Name {
		return f.buildahpod.buildNamespace
	}
	return ""
}

func buildahpodOptions(f flags) (buildahpod.Options, error) {
	p := f.buildahpod
	opts := buildahpod.Options{
		BuilderImage:           p.image,
		BuilderImagePullPolicy: corev1.PullPolicy(p.pullPolicy),
		Privileged:             p.privileged,
		SeccompProfile:         p.seccompProfile,
		StorageDriver:          p.storageDriver,
		BuildTimeout:           f.buildTimeout,
		HostNetwork:            p.hostNetwork,
		NoRegistryCache:        !p.registryCache,
		NoBaseStore:            !p.baseStore,
		BuildNamespace:         p.buildNamespace,
		WatchNamespace:         f.namespace,
	}
	userns, err := buildahpod.ParseUserNamespaceMode(p.userNamespaces)
	if err != nil {
		return opts, fmt.Errorf("--builder-user-namespaces: %w", err)
	}
	opts.UserNamespaces = userns
	switch opts.BuilderImagePullPolicy {
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		return opts, fmt.Errorf("--builder-image-pull-policy=%q: use Always, IfNotPresent or Never", p.pullPolicy)
	}
	if p.cachePVC != "" || p.cacheHostPath != "" {
		opts.Cache = &buildahpod.CacheVolume{PVC: p.cachePVC, HostPath: p.cacheHostPath}
	}
	if p.registryCertsDir != "" {
		cas, err := buildahpod.LoadRegistryCAs(p.registryCertsDir)
		if err != nil {
			return opts, fmt.Errorf("--builder-registry-certs-dir: %w", err)
		}
		opts.RegistryCAs = cas
	}
	if p.podConfigFile != "" {
		pc, err := buildahpod.LoadPodConfig(p.podConfigFile)
		if err != nil {
			return opts, fmt.Errorf("--builder-pod-config: %w", err)
		}
		opts.Pod = pc
	}
	if p.serviceAccount != "" {
		opts.Pod.ServiceAccountName = p.serviceAccount
	}
	if p.priorityClass != "" {
		opts.Pod.PriorityClassName = p.priorityClass
	}
	for _, name := range p.imagePullSecrets {
		opts.Pod.ImagePullSecrets = append(opts.Pod.ImagePullSecrets, corev1.LocalObjectReference{Name: name})
	}
	for _, kv := range p.nodeSelector {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return opts, fmt.Errorf("--builder-node-selector=%q: want key=value", kv)
		}
		if opts.Pod.NodeSelector == nil {
			opts.Pod.NodeSelector = map[string]string{}
		}
		opts.Pod.NodeSelector[k] = v
	}
	return opts, nil
}

// opsFlags configure how replicas share the work and how they are watched.
type opsFlags struct {
	leaderElect                  bool
	leaseDuration, renewDeadline time.Duration
	retryPeriod                  time.Duration
	leaseName, leaseNamespace    string
	metricsAddr, healthAddr      string
}

func (o *opsFlags) register(fs *flag.FlagSet) {
	// In a cluster more than one replica may run (a Deployment's rollout
	// overlaps two): only the Lease holder may act there.
	inCluster := os.Getenv("KUBERNETES_SERVICE_HOST") != ""
	fs.BoolVar(&o.leaderElect, "leader-elect", inCluster, "Act only while holding a Lease, so replicas take turns. Default: true in a cluster (KUBERNETES_SERVICE_HOST set), false outside.")
	fs.DurationVar(&o.leaseDuration, "leader-elect-lease-duration", app.DefaultLeaseDuration, "How long standbys wait after the leader's last renewal before taking over.")
	fs.DurationVar(&o.renewDeadline, "leader-elect-renew-deadline", app.DefaultRenewDeadline, "How long the leader tries to renew before it stops acting; below --leader-elect-lease-duration.")
	fs.DurationVar(&o.retryPeriod, "leader-elect-retry-period", app.DefaultRetryPeriod, "How often replicas try to acquire or renew the Lease.")
	fs.StringVar(&o.leaseName, "leader-elect-resource-name", app.DefaultLeaseName, "Name of the Lease.")
	fs.StringVar(&o.leaseNamespace, "leader-elect-resource-namespace", "", "Namespace of the Lease. Default: $POD_NAMESPACE, else the service account's namespace, else imagespec-system.")
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", "Address serving /metrics (Prometheus text format); empty disables it.")
	fs.StringVar(&o.healthAddr, "health-probe-bind-address", ":8081", "Address serving /healthz and /readyz; empty disables them. May equal --metrics-bind-address.")
}

func (o *opsFlags) leaderElection() *app.LeaderElection {
	if !o.leaderElect {
		return nil
	}
	ns := o.leaseNamespace
	if ns == "" {
		ns = os.Getenv("POD_NAMESPACE")
	}
	if ns == "" {
		if b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); err == nil {
			ns = strings.TrimSpace(string(b))
		}
	}
	if ns == "" {
		ns = "imagespec-system"
	}
	return &app.LeaderElection{
		Namespace:     ns,
		Name:          o.leaseName,
		LeaseDuration: o.leaseDuration,
		RenewDeadline: o.renewDeadline,
		RetryPeriod:   o.retryPeriod,
	}
}
