package buildahpod

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
	"github.com/imagespec/imagespec-controller/pkg/backend"
	"github.com/imagespec/imagespec-controller/pkg/dockerfile"
	"github.com/imagespec/imagespec-controller/pkg/names"
)

const (
	// JobLabel names the pod's job (shortened with a hash past 63 bytes).
	JobLabel = "primehub.io/imagespecjob"
	// ContainerName is the builder container, for kubectl logs -c.
	ContainerName = "build"
	// BaseStoreContainerName makes the namespace's base store, in the
	// pods of builds that make one (see basestore.go).
	BaseStoreContainerName = "base-store"

	nameSuffix    = "-build"
	maxNameLength = 253 // DNS subdomain: pod and ConfigMap names
	maxLabelValue = 63

	// Keys of the job's ConfigMap.
	keyScript         = "build.sh"
	keyDockerfile     = "Dockerfile"
	keyDockerfileUser = "Dockerfile.user"
	keyStorageConf    = "storage.conf"
	keyBaseStore      = "base-store.sh"

	// Paths in the builder container.
	buildDir    = "/imagespec/build"
	pushAuthDir = "/imagespec/push"
	pullAuthDir = "/imagespec/pull"
	storageDir  = "/var/lib/containers"
	graphRoot   = storageDir + "/storage"
	// blobInfoCacheDir is where buildah keeps its blob info cache for
	// root, next to the store on the storage volume.
	blobInfoCacheDir = storageDir + "/cache"
	// baseStoreRoot holds the base-store container's own stores.
	baseStoreRoot = storageDir + "/base-store"
	// buildDoneMarker, on the shared storage volume, tells the base-store
	// container the build script is done.
	buildDoneMarker = storageDir + "/imagespec-build-done"
	certsDir        = "/etc/containers/certs.d"
	authFileName    = "auth.json"
	// pushAuthVolume holds the push Secret in a build pod.
	pushAuthVolume = "push-auth"

	// The Dockerfile variant for bases with a user restores it from this
	// build argument; see userDockerfile.
	userArg      = "IMAGESPEC_BASE_USER"
	userSentinel = "imagespec-base-user"
)

// Exit codes of the build script per stage.
const (
	exitSetup = 10
	exitPull  = 11
	exitBuild = 12
	exitPush  = 13
)

// PodName is the pod's and the ConfigMap's name for a job: "<job>-build", or
// a prefix of it with a hash of the job's name when that would pass 253
// bytes. It depends on the job's name only, so every retry and restart
// finds the same pod.
func PodName(jobName string) string {
	return boundedName(jobName, nameSuffix, maxNameLength)
}

// jobLabelValue is the job's name as a label value.
func jobLabelValue(jobName string) string {
	return boundedName(jobName, "", maxLabelValue)
}

func boundedName(base, suffix string, max int) string {
	if len(base)+len(suffix) <= max {
		return base + suffix
	}
	sum := sha256.Sum256([]byte(base))
	h := "-" + hex.EncodeToString(sum[:])[:10]
	keep := max - len(suffix) - len(h)
	prefix := strings.TrimRight(base[:keep], "-.")
	return prefix + h + suffix
}

// labels are the job's labels plus the managed-by and job labels.
func labels(job *v1alpha1.ImageSpecJob) map[string]string {
	out := map[string]string{}
	for k, v := range job.Labels {
		out[k] = v
	}
	out[names.ManagedByLabel] = names.ComponentName
	out[JobLabel] = jobLabelValue(job.Name)
	out[JobNamespaceLabel] = job.Namespace
	if job.UID != "" {
		out[JobUIDLabel] = string(job.UID)
	}
	return out
}

// ownerRefs make the job own its pod and ConfigMap, for garbage collection
// and kubectl; none in the build namespace, where the job cannot be an
// owner (Cancel removes them).
func (b *Backend) ownerRefs(job *v1alpha1.ImageSpecJob) []metav1.OwnerReference {
	if b.opts.BuildNamespace != "" {
		return nil
	}
	return []metav1.OwnerReference{*metav1.NewControllerRef(job, v1alpha1.SchemeGroupVersion.WithKind("ImageSpecJob"))}
}

// userDockerfile renders the Dockerfile for a base image with a configured
// user: the user is restored from a build argument, so it reaches buildah
// as data and never becomes Dockerfile text.
func userDockerfile(in dockerfile.Inputs) ([]byte, error) {
	in.User = userSentinel
	df, err := dockerfile.Render(in)
	if err != nil {
		return nil, err
	}
	last := "USER " + userSentinel + "\n"
	s := string(df)
	if !strings.HasSuffix(s, last) {
		// No package steps: nothing to run as root, nothing to restore.
		return df, nil
	}
	return []byte(strings.TrimSuffix(s, last) + "ARG " + userArg + "\nUSER ${" + userArg + "}\n"), nil
}

// caKey is the ConfigMap key of a registry's CA; keys allow neither ':' nor
// '/', so the host goes into the mount path only.
func caKey(i int) string { return fmt.Sprintf("ca-%d.crt", i) }

func sortedHosts(cas map[string][]byte) []string {
	hosts := make([]string, 0, len(cas))
	for h := range cas {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	return hosts
}

// configMap holds what the pod reads: the script, both Dockerfiles, the
// storage configuration and registry CAs. Nothing in it is secret.
func (b *Backend) configMap(job *v1alpha1.ImageSpecJob) (*corev1.ConfigMap, error) {
	in := backend.JobInputs(job)
	root, err := dockerfile.Render(in)
	if err != nil {
		return nil, err
	}
	user, err := userDockerfile(in)
	if err != nil {
		return nil, err
	}
	data := map[string]string{
		keyScript:         buildScript,
		keyDockerfile:     string(root),
		keyDockerfileUser: string(user),
		keyStorageConf:    storageConf(b.opts.StorageDriver),
		keyBaseStore:      baseStoreScript,
	}
	for i, h := range sortedHosts(b.opts.RegistryCAs) {
		data[caKey(i)] = string(b.opts.RegistryCAs[h])
	}
	ns, name := b.podRef(job)
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name:            name,
			Namespace:       ns,
			Labels:          labels(job),
			Annotations:     jobAnnotations(job),
			OwnerReferences: b.ownerRefs(job),
		},
		Data: data,
	}, nil
}

// storageConf replaces the builder image's storage.conf, whatever it says
// (the upstream image points overlay at fuse-overlayfs, which needs
// /dev/fuse): native overlay works on an emptyDir.
func storageConf(driver string) string {
	return fmt.Sprintf("[storage]\ndriver = %q\nrunroot = \"/run/containers/storage\"\ngraphroot = %q\n", driver, graphRoot)
}

// pod is the build pod of job; userns gives it a user namespace of its own,
// store says what it does with its base store.
func (b *Backend) pod(job *v1alpha1.ImageSpecJob, userns bool, store baseStorePlan) (*corev1.Pod, error) {
	o := &b.opts
	ns, name := b.podRef(job)
	base := dockerfile.Normalize(backend.JobInputs(job)).BaseImage

	env := []corev1.EnvVar{
		{Name: "IMAGESPEC_BASE_IMAGE", Value: base},
		{Name: "IMAGESPEC_TARGET_IMAGE", Value: job.Spec.TargetImage},
		{Name: "IMAGESPEC_DOCKERFILE_DIR", Value: buildDir},
		{Name: "CONTAINERS_STORAGE_CONF", Value: buildDir + "/" + keyStorageConf},
		{Name: "BUILDAH_ISOLATION", Value: "chroot"},
		{Name: "HOME", Value: "/tmp"},
	}
	if l := backend.ImageLabel(job); l != "" {
		env = append(env, corev1.EnvVar{Name: "IMAGESPEC_IMAGE_LABEL", Value: l})
	}
	if repo := b.CacheRepository(job); repo != "" {
		env = append(env, corev1.EnvVar{Name: "IMAGESPEC_CACHE_REPO", Value: repo})
	}
	mounts := []corev1.VolumeMount{
		{Name: "build", MountPath: buildDir, ReadOnly: true},
		{Name: "storage", MountPath: storageDir},
	}
	volumes := []corev1.Volume{{
		Name: "build",
		VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: name},
			Items: []corev1.KeyToPath{
				{Key: keyScript, Path: keyScript},
				{Key: keyDockerfile, Path: keyDockerfile},
				{Key: keyDockerfileUser, Path: keyDockerfileUser},
				{Key: keyStorageConf, Path: keyStorageConf},
				{Key: keyBaseStore, Path: keyBaseStore},
			},
		}},
	}}
	switch {
	case o.Cache != nil && o.Cache.PVC != "":
		volumes = append(volumes, corev1.Volume{Name: "storage", VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: o.Cache.PVC}}})
	case o.Cache != nil && o.Cache.HostPath != "":
		volumes = append(volumes, corev1.Volume{Name: "storage", VolumeSource: corev1.VolumeSource{
			HostPath: &corev1.HostPathVolumeSource{Path: o.Cache.HostPath, Type: ptr.To(corev1.HostPathDirectoryOrCreate)}}})
	default:
		volumes = append(volumes, corev1.Volume{Name: "storage", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	}
	// Credentials reach the pod only as files of mounted Secrets, readable
	// by root alone.
	secretVolume := func(volName, secret, dir, envName string) {
		volumes = append(volumes, corev1.Volume{Name: volName, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName:  secret,
			Items:       []corev1.KeyToPath{{Key: corev1.DockerConfigJsonKey, Path: authFileName}},
			DefaultMode: ptr.To[int32](0o400),
		}}})
		mounts = append(mounts, corev1.VolumeMount{Name: volName, MountPath: dir, ReadOnly: true})
		env = append(env, corev1.EnvVar{Name: envName, Value: dir + "/" + authFileName})
	}
	if job.Spec.PushSecret != "" {
		secretVolume(pushAuthVolume, job.Spec.PushSecret, pushAuthDir, "IMAGESPEC_PUSH_AUTHFILE")
	}
	if pull := b.pullSecretName(job); pull != "" {
		secretVolume("pull-auth", pull, pullAuthDir, "IMAGESPEC_PULL_AUTHFILE")
	} else if job.Spec.PushSecret != "" && b.pullsWithPush(job) {
		env = append(env, corev1.EnvVar{Name: "IMAGESPEC_PULL_AUTHFILE", Value: pushAuthDir + "/" + authFileName})
	}
	if len(o.RegistryCAs) > 0 {
		var items []corev1.KeyToPath
		for i, h := range sortedHosts(o.RegistryCAs) {
			items = append(items, corev1.KeyToPath{Key: caKey(i), Path: h + "/ca.crt"})
		}
		volumes = append(volumes, corev1.Volume{Name: "registry-cas", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: name},
			Items:                items,
		}}})
		mounts = append(mounts, corev1.VolumeMount{Name: "registry-cas", MountPath: certsDir, ReadOnly: true})
	}

	pullSecrets := o.Pod.ImagePullSecrets
	switch {
	case store.mount != "":
		// The kubelet pulls the store from the cache repository with the
		// push credentials, which live in the pod's namespace.
		volumes = append(volumes, corev1.Volume{Name: baseStoreVolume, VolumeSource: corev1.VolumeSource{
			Image: &corev1.ImageVolumeSource{Reference: store.mount, PullPolicy: corev1.PullIfNotPresent}}})
		mounts = append(mounts, corev1.VolumeMount{Name: baseStoreVolume, MountPath: baseStoreDir, ReadOnly: true})
		env = append(env, corev1.EnvVar{Name: "IMAGESPEC_BASE_STORE", Value: baseStoreDir},
			corev1.EnvVar{Name: "IMAGESPEC_BLOB_INFO_CACHE_DIR", Value: blobInfoCacheDir})
		pullSecrets = append(append([]corev1.LocalObjectReference(nil), pullSecrets...), corev1.LocalObjectReference{Name: job.Spec.PushSecret})
	case store.produce != "":
		env = append(env, corev1.EnvVar{Name: "IMAGESPEC_BUILD_DONE_MARKER", Value: buildDoneMarker})
	}

	// Both containers run the builder image with one of the ConfigMap's
	// scripts, on the same volumes.
	container := func(name, script string, env []corev1.EnvVar, packsStore bool) (corev1.Container, error) {
		sc, err := o.securityContext(packsStore)
		return corev1.Container{
			Name:                     name,
			Image:                    o.BuilderImage,
			ImagePullPolicy:          o.BuilderImagePullPolicy,
			Command:                  []string{"/bin/sh", buildDir + "/" + script},
			Env:                      env,
			VolumeMounts:             mounts,
			Resources:                o.Pod.Resources,
			SecurityContext:          sc,
			TerminationMessagePath:   corev1.TerminationMessagePathDefault,
			TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		}, err
	}
	build, err := container(ContainerName, keyScript, env, false)
	if err != nil {
		return nil, err
	}
	containers := []corev1.Container{build}
	if store.produce != "" {
		// Next to the build, on the same storage volume, with what it
		// needs to pull the base and push the store; DAC_OVERRIDE (to read
		// the whole store) only here, where no build step runs.
		maker, err := container(BaseStoreContainerName, keyBaseStore, append(append([]corev1.EnvVar(nil), env...),
			corev1.EnvVar{Name: "IMAGESPEC_BASE_STORE_PUSH", Value: store.produce},
			corev1.EnvVar{Name: "IMAGESPEC_BASE_STORE_ROOT", Value: baseStoreRoot},
			corev1.EnvVar{Name: "IMAGESPEC_BLOB_INFO_CACHE_DIR", Value: blobInfoCacheDir}), true)
		if err != nil {
			return nil, err
		}
		containers = append(containers, maker)
	}
	annotations := jobAnnotations(job)
	for k, v := range o.Pod.Annotations {
		annotations[k] = v
	}
	// kubectl logs and exec pick the build without -c.
	annotations["kubectl.kubernetes.io/default-container"] = ContainerName
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:            name,
			Namespace:       ns,
			Labels:          labels(job),
			Annotations:     annotations,
			OwnerReferences: b.ownerRefs(job),
		},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			// The builder talks to registries, never to the API server.
			AutomountServiceAccountToken: ptr.To(false),
			EnableServiceLinks:           ptr.To(false),
			// A cancelled build stops at once: the script holds no state
			// worth a graceful shutdown.
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			ServiceAccountName:            o.Pod.ServiceAccountName,
			PriorityClassName:             o.Pod.PriorityClassName,
			NodeSelector:                  o.Pod.NodeSelector,
			Tolerations:                   o.Pod.Tolerations,
			ImagePullSecrets:              pullSecrets,
			HostNetwork:                   o.HostNetwork,
			NodeName:                      o.Pod.NodeName,
			Containers:                    containers,
			Volumes:                       volumes,
		},
	}
	if userns {
		// Root in the pod is an unprivileged user of the node; its
		// capabilities act only inside the pod's own namespaces.
		pod.Spec.HostUsers = ptr.To(false)
	}
	if o.HostNetwork {
		pod.Spec.DNSPolicy = corev1.DNSClusterFirstWithHostNet
	}
	if o.BuildTimeout > 0 {
		pod.Spec.ActiveDeadlineSeconds = ptr.To(int64(math.Ceil(o.BuildTimeout.Seconds())))
	}
	return pod, nil
}

// securityContext is the least privilege buildah's chroot isolation works
// with (see the package doc), or a privileged container on request. The
// container that makes a base store also gets DAC_OVERRIDE, to read the
// whole store (the base's own files, some private to users such as _apt)
// when it packs it; Pod Security baseline allows it.
func (o *Options) securityContext(packsStore bool) (*corev1.SecurityContext, error) {
	if o.Privileged {
		return &corev1.SecurityContext{
			Privileged: ptr.To(true),
			RunAsUser:  ptr.To[int64](0),
			RunAsGroup: ptr.To[int64](0),
		}, nil
	}
	seccomp, err := o.seccomp()
	if err != nil {
		return nil, err
	}
	return &corev1.SecurityContext{
		RunAsUser:  ptr.To[int64](0),
		RunAsGroup: ptr.To[int64](0),
		Capabilities: &corev1.Capabilities{
			Drop: []corev1.Capability{"ALL"},
			Add:  addedCapabilities(packsStore),
		},
		AllowPrivilegeEscalation: ptr.To(false),
		SeccompProfile:           seccomp,
	}, nil
}

func addedCapabilities(packsStore bool) []corev1.Capability {
	caps := []corev1.Capability{"SETUID", "SETGID", "SETFCAP"}
	if packsStore {
		caps = append(caps, "DAC_OVERRIDE")
	}
	return caps
}
