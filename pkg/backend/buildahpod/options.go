package buildahpod

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/imagespec/imagespec-controller/pkg/backend"
	"github.com/imagespec/imagespec-controller/pkg/credentials"
)

// DefaultBuilderImage is the upstream buildah image at a pinned version.
const DefaultBuilderImage = "quay.io/buildah/stable:v1.40.1"

// Options configure the backend.
type Options struct {
	// BuilderImage runs the builds; it needs buildah, sh, awk, tee, grep,
	// tail and cut. DefaultBuilderImage when empty.
	BuilderImage string
	// BuilderImagePullPolicy; IfNotPresent when empty.
	BuilderImagePullPolicy corev1.PullPolicy
	// Privileged runs the builder as a privileged container instead of the
	// least-privilege form (see the package doc): for nodes where the
	// seccomp or AppArmor profile forbids user namespaces.
	Privileged bool
	// SeccompProfile of the builder: "" leaves it unset (the kubelet's
	// default), "Unconfined", or "Localhost/<path>" for a profile on the
	// node that allows unshare(CLONE_NEWUSER). RuntimeDefault does not.
	SeccompProfile string
	// UserNamespaces: whether build pods run with hostUsers: false (see
	// UserNamespaceMode); UserNamespacesAuto when empty.
	UserNamespaces UserNamespaceMode
	// StorageDriver of buildah in the pod: overlay (default) or vfs.
	StorageDriver string
	// Cache keeps /var/lib/containers between builds; nil uses an emptyDir.
	Cache *CacheVolume
	// BuildTimeout sets the pod's activeDeadlineSeconds; 0 sets none.
	BuildTimeout time.Duration
	// BuildNamespace, when set, is the one namespace where build pods,
	// their ConfigMaps, the push Secret and per-build copies of pull
	// Secrets live, out of tenants' reach (see buildns.go). Empty builds
	// in each job's own namespace.
	BuildNamespace string
	// WatchNamespace, with BuildNamespace, is the only namespace whose
	// jobs' pods this backend sees there (the controller's --namespace):
	// a controller for one namespace must not take another's builds for
	// orphans. Empty sees all.
	WatchNamespace string
	// HostNetwork runs the pod in the node's network namespace, for
	// registries or package indexes reachable only from the node.
	HostNetwork bool
	// RegistryCAs are CA certificates (PEM) trusted per registry
	// host[:port]; they reach the pod through the job's ConfigMap, as
	// /etc/containers/certs.d/<host>/ca.crt.
	RegistryCAs map[string][]byte
	// Pod holds the scheduling and resource settings of build pods.
	Pod PodConfig
	// LogTailLines is how many lines of a finished pod's log are read for
	// status.logTail; 60 when zero.
	LogTailLines int64
	// PushSecretRecheck: with a build namespace, how long one read of the
	// push Secret serves new builds; zero is
	// backend.DefaultPushSecretRecheck, the controller's own recheck of
	// the same Secret.
	PushSecretRecheck time.Duration
	// CancelWait bounds how long Cancel waits for a deleted pod to be gone
	// (its containers stopped); 30s when zero.
	CancelWait time.Duration
	// NoRegistryCache turns off the layer cache in the registry (see
	// CacheRepository), which is on by default.
	NoRegistryCache bool
	// NoBaseStore turns off base stores (see basestore.go), which are on
	// by default where they can work: the registry cache is on, the
	// overlay driver without a Cache volume, user-namespaced pods in auto
	// mode on nodes that mount image volumes into them.
	NoBaseStore bool
	// Pulls says which base images are pulled with the push credentials
	// (credentials.PullScope) when BuildNamespace is set; the zero value
	// allows a spec's own images only. Without BuildNamespace the pod
	// pulls as PrimeHub's did: with the pull Secret as it is, else with
	// the push Secret.
	Pulls credentials.PullScope
	// Logf, when set, receives one line per build event; klog otherwise.
	Logf func(format string, args ...any)
}

// CacheVolume is where buildah keeps images and layers between builds.
// Exactly one field is set.
type CacheVolume struct {
	// PVC names a PersistentVolumeClaim in each namespace that builds.
	PVC string `json:"pvc,omitempty"`
	// HostPath is a directory on the node.
	HostPath string `json:"hostPath,omitempty"`
}

// PodConfig is the part of a build pod an administrator sets: a JSON or
// YAML file (LoadPodConfig) or single flags.
type PodConfig struct {
	Resources          corev1.ResourceRequirements   `json:"resources,omitempty"`
	NodeSelector       map[string]string             `json:"nodeSelector,omitempty"`
	Tolerations        []corev1.Toleration           `json:"tolerations,omitempty"`
	ServiceAccountName string                        `json:"serviceAccountName,omitempty"`
	PriorityClassName  string                        `json:"priorityClassName,omitempty"`
	ImagePullSecrets   []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`
	// NodeName binds build pods to one node, bypassing the scheduler: for
	// single-node clusters without kube-scheduler, and tests.
	NodeName string `json:"nodeName,omitempty"`
	// Annotations are added to every build pod (e.g. for a mesh to skip it).
	Annotations map[string]string `json:"annotations,omitempty"`
}

// LoadPodConfig reads a PodConfig from a JSON or YAML file; unknown fields
// are errors, so a typo does not silently drop a setting.
func LoadPodConfig(path string) (PodConfig, error) {
	var pc PodConfig
	data, err := os.ReadFile(path)
	if err != nil {
		return pc, err
	}
	if err := yaml.UnmarshalStrict(data, &pc); err != nil {
		return pc, fmt.Errorf("%s: %w", path, err)
	}
	return pc, nil
}

// LoadRegistryCAs reads a certs.d-style tree: <dir>/<host[:port]>/*.crt.
func LoadRegistryCAs(dir string) (map[string][]byte, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, e := range entries {
		// A ConfigMap or Secret volume lays its keys out as symlinks into a
		// "..data" directory: follow the links, skip the "..*" internals.
		if strings.HasPrefix(e.Name(), "..") {
			continue
		}
		if fi, err := os.Stat(filepath.Join(dir, e.Name())); err != nil || !fi.IsDir() {
			continue
		}
		files, err := filepath.Glob(filepath.Join(dir, e.Name(), "*.crt"))
		if err != nil {
			return nil, err
		}
		sort.Strings(files)
		var pem []byte
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, err
			}
			pem = append(pem, b...)
			if len(b) > 0 && b[len(b)-1] != '\n' {
				pem = append(pem, '\n')
			}
		}
		if len(pem) > 0 {
			out[e.Name()] = pem
		}
	}
	return out, nil
}

func (o *Options) setDefaults() error {
	if o.BuilderImage == "" {
		o.BuilderImage = DefaultBuilderImage
	}
	if o.BuilderImagePullPolicy == "" {
		o.BuilderImagePullPolicy = corev1.PullIfNotPresent
	}
	switch o.StorageDriver {
	case "":
		o.StorageDriver = "overlay"
	case "overlay", "vfs":
	default:
		return fmt.Errorf("buildahpod: storage driver %q: use overlay or vfs", o.StorageDriver)
	}
	if _, err := o.seccomp(); err != nil {
		return err
	}
	if o.Privileged && o.SeccompProfile != "" {
		return fmt.Errorf("buildahpod: a seccomp profile and a privileged builder exclude each other")
	}
	switch o.UserNamespaces {
	case "":
		o.UserNamespaces = UserNamespacesAuto
	case UserNamespacesAuto, UserNamespacesOff:
	case UserNamespacesOn:
		if why := o.userNamespaceConflict(); why != "" {
			return fmt.Errorf("buildahpod: a user namespace and %s exclude each other", why)
		}
	default:
		return fmt.Errorf("buildahpod: user namespaces %q: use auto, on or off", o.UserNamespaces)
	}
	if c := o.Cache; c != nil {
		if (c.PVC == "") == (c.HostPath == "") {
			return fmt.Errorf("buildahpod: the cache volume needs exactly one of a PVC name or a host path")
		}
		if c.HostPath != "" && !filepath.IsAbs(c.HostPath) {
			return fmt.Errorf("buildahpod: cache host path %q is not absolute", c.HostPath)
		}
	}
	for host := range o.RegistryCAs {
		if host == "" || strings.ContainsAny(host, "/ \t\"'\\") || host == "." || host == ".." {
			return fmt.Errorf("buildahpod: registry CA for %q: want host[:port]", host)
		}
	}
	if o.LogTailLines <= 0 {
		o.LogTailLines = 60
	}
	if o.PushSecretRecheck <= 0 {
		o.PushSecretRecheck = backend.DefaultPushSecretRecheck
	}
	if o.CancelWait <= 0 {
		o.CancelWait = 30 * time.Second
	}
	return nil
}

// seccomp turns SeccompProfile into the API form; nil leaves it unset.
func (o *Options) seccomp() (*corev1.SeccompProfile, error) {
	p := o.SeccompProfile
	switch {
	case p == "":
		return nil, nil
	case strings.EqualFold(p, "unconfined"):
		return &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeUnconfined}, nil
	case strings.HasPrefix(strings.ToLower(p), "localhost/"):
		path := p[len("localhost/"):]
		if path == "" || filepath.IsAbs(path) {
			return nil, fmt.Errorf("buildahpod: seccomp profile %q: want Localhost/<path relative to the kubelet's seccomp dir>", p)
		}
		return &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost, LocalhostProfile: &path}, nil
	case strings.EqualFold(p, "runtimedefault"):
		return nil, fmt.Errorf("buildahpod: seccomp profile RuntimeDefault forbids unshare(CLONE_NEWUSER), which buildah needs; use a Localhost profile that allows it, Unconfined, or a privileged builder")
	}
	return nil, fmt.Errorf("buildahpod: seccomp profile %q: use Unconfined or Localhost/<path>", p)
}
