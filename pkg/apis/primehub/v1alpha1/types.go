package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Limits on package lists. The controller validates every entry against its
// package manager's grammar; the schema only enforces what bounds the size of
// an object and the cost of its CEL rules.
const (
	MaxPackagesPerList = 256
	MaxPackageLength   = 512
	MaxLogTailBytes    = 4096
)

// Packages lists what to install on top of the base image, by package
// manager. They are installed in the order apt, conda, pip, so that system
// libraries exist before Python packages that link against them.
type Packages struct {
	// Apt lists Debian or Ubuntu packages, one per entry: "name",
	// "name=version", "name:arch" or "name/release". Installed with
	// apt-get install --no-install-recommends.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="self.all(p, !p.startsWith('-'))",message="an entry is a package, not a command-line flag; package sources such as mirrors are controller settings"
	Apt []string `json:"apt,omitempty"`

	// Pip lists Python requirement specifiers (PEP 508), one per entry, for
	// example "requests>=2.31" or "requests[socks]>=2.31,<3". Installed with
	// pip install --no-cache-dir.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="self.all(p, !p.startsWith('-'))",message="an entry is a requirement, not a command-line flag; index URLs are controller settings"
	Pip []string `json:"pip,omitempty"`

	// Conda lists conda match specs, one per entry, for example
	// "numpy>=1.26" or "conda-forge::numpy>=1.26" (a channel goes before
	// "::"). Installed with conda install --yes.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="self.all(p, !p.startsWith('-'))",message="an entry is a match spec, not a command-line flag; write a channel as channel::name"
	Conda []string `json:"conda,omitempty"`
}

// ImageSpecSpec is what image to build.
type ImageSpecSpec struct {
	// BaseImage is the image to extend, for example "python:3.11-slim" or
	// "registry.example.com/team/base:1.0".
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	BaseImage string `json:"baseImage"`

	// PullSecret names a kubernetes.io/dockerconfigjson Secret in the same
	// namespace used to pull a private base image.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	PullSecret string `json:"pullSecret,omitempty"`

	// Packages to install on top of the base image.
	// +optional
	Packages Packages `json:"packages,omitempty"`

	// UpdateTime is an opaque value; changing it builds the image again
	// even when nothing else changed (for example to pick up new package
	// versions). PrimeHub sets it to the time of the last edit.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	UpdateTime string `json:"updateTime,omitempty"`

	// TrackBaseImage rebuilds the image when the base image's tag moves to
	// a new digest (a patched base). The controller checks the tag at its
	// --base-image-check-interval. Unset follows the controller's
	// --track-base-images default.
	// +optional
	TrackBaseImage *bool `json:"trackBaseImage,omitempty"`
}

// TrackedBaseImage is what base image tracking knows of an ImageSpec's base.
type TrackedBaseImage struct {
	// Image is the base image reference checked, fully qualified.
	Image string `json:"image"`

	// Digest is the manifest digest the tag pointed at when last checked.
	// +optional
	Digest string `json:"digest,omitempty"`

	// RevisionDigest, when set, is the base digest the current revision
	// was made for: part of the revision's identity, so a moved tag builds
	// exactly one new revision. Empty while the tag has not moved since
	// tracking started.
	// +optional
	RevisionDigest string `json:"revisionDigest,omitempty"`
}

// ImageSpecStatus is what the controller last observed and built.
type ImageSpecStatus struct {
	// Phase is the phase of the job that builds the current revision:
	// Pending, Running, Succeeded, Failed or Cancelled.
	// +optional
	Phase ImageSpecJobPhase `json:"phase,omitempty"`

	// JobName is the ImageSpecJob that builds the current revision.
	// +optional
	JobName string `json:"jobName,omitempty"`

	// Image is the last image pushed for this ImageSpec, by tag. It keeps
	// its value while a newer revision builds or after one fails, so
	// whoever uses it always gets a working image.
	// +optional
	Image string `json:"image,omitempty"`

	// PinnedImage is Image pinned by digest (repository@sha256:...), for
	// consumers that must not follow a tag that moves.
	// +optional
	PinnedImage string `json:"pinnedImage,omitempty"`

	// Revision identifies the current spec; it is the tag of the image and
	// the suffix of the job that build it.
	// +optional
	Revision string `json:"revision,omitempty"`

	// ObservedGeneration is the generation of the spec this status is for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// TrackedBaseImage is what base image tracking saw of the base image.
	// It stays when tracking is turned off, so the revision does not
	// switch back to an image of an older base.
	// +optional
	TrackedBaseImage *TrackedBaseImage `json:"trackedBaseImage,omitempty"`

	// Conditions: Ready is True when Image holds a pushed image of the
	// current spec; its reason says why not otherwise (InvalidSpec,
	// Building, BuildFailed, ...).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// +genclient
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ispec,categories=imagespecs
// +kubebuilder:printcolumn:name="Phase",type="string",JSONPath=".status.phase",description="Phase of the job that builds the current revision"
// +kubebuilder:printcolumn:name="Reason",type="string",JSONPath=".status.conditions[?(@.type==\"Ready\")].reason",description="Reason of the Ready condition"
// +kubebuilder:printcolumn:name="Image",type="string",JSONPath=".status.image",description="Last pushed image"
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"

// ImageSpec describes an image: a base image plus packages. Every revision of
// it is built by an ImageSpecJob and pushed as <repo prefix>/<name>:<revision>.
type ImageSpec struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec ImageSpecSpec `json:"spec"`
	// +optional
	Status ImageSpecStatus `json:"status,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true

// ImageSpecList is a list of ImageSpecs.
type ImageSpecList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ImageSpec `json:"items"`
}

// PackageSources are the package sources a build used. They come from the
// controller's configuration (for air-gapped clusters) and are recorded on
// the job so a job alone says exactly what was built.
type PackageSources struct {
	// AptMirror replaces the archive URL of the base image's apt sources.
	// +optional
	AptMirror string `json:"aptMirror,omitempty"`
	// PipIndexURL replaces PyPI.
	// +optional
	PipIndexURL string `json:"pipIndexURL,omitempty"`
	// PipExtraIndexURLs are searched besides the index.
	// +optional
	// +listType=atomic
	PipExtraIndexURLs []string `json:"pipExtraIndexURLs,omitempty"`
	// PipTrustedHosts are hosts pip may reach without valid TLS.
	// +optional
	// +listType=atomic
	PipTrustedHosts []string `json:"pipTrustedHosts,omitempty"`
	// CondaChannels are searched, in order, before the defaults.
	// +optional
	// +listType=atomic
	CondaChannels []string `json:"condaChannels,omitempty"`
}

// ImageSpecJobSpec is one revision of an ImageSpec to build. Its build inputs
// are fixed once created; only cancel may change.
// +kubebuilder:validation:XValidation:rule="self.baseImage == oldSelf.baseImage && self.targetImage == oldSelf.targetImage",message="baseImage and targetImage are immutable: a job is one revision; change the ImageSpec instead"
// +kubebuilder:validation:XValidation:rule="has(self.packages) == has(oldSelf.packages) && (!has(self.packages) || self.packages == oldSelf.packages)",message="packages are immutable: a job is one revision; change the ImageSpec instead"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.cancel) || !oldSelf.cancel || (has(self.cancel) && self.cancel)",message="a cancelled job cannot be resumed; change the ImageSpec's updateTime to build again"
type ImageSpecJobSpec struct {
	// BaseImage is the image to extend.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	BaseImage string `json:"baseImage"`

	// PullSecret names a kubernetes.io/dockerconfigjson Secret used to pull
	// the base image.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	PullSecret string `json:"pullSecret,omitempty"`

	// Packages to install on top of the base image.
	// +optional
	Packages Packages `json:"packages,omitempty"`

	// PackageSources the build uses, from the controller's configuration.
	// +optional
	PackageSources *PackageSources `json:"packageSources,omitempty"`

	// TargetImage is where the result is pushed: <repoPrefix>/<name>:<tag>.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	TargetImage string `json:"targetImage"`

	// PushSecret names a kubernetes.io/dockerconfigjson Secret with
	// credentials for the target registry.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	PushSecret string `json:"pushSecret,omitempty"`

	// RepoPrefix is the registry and path the target image was placed under.
	// +optional
	RepoPrefix string `json:"repoPrefix,omitempty"`

	// UpdateTime is copied from the ImageSpec revision this job builds.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	UpdateTime string `json:"updateTime,omitempty"`

	// Cancel stops the build. The job and its status stay, with phase
	// Cancelled, so the history is kept.
	// +optional
	Cancel bool `json:"cancel,omitempty"`

	// Cause is why the controller created the job: FirstBuild,
	// SpecChange, Rebuild (updateTime), RepositoryChange, BaseImageUpdate
	// or Retry (see the Cause* constants).
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Cause string `json:"cause,omitempty"`

	// CauseMessage says what changed against the previous revision, for
	// example "pip: +requests>=2.31; apt: -vim".
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	CauseMessage string `json:"causeMessage,omitempty"`
}

// ImageSpecJobPhase is where a job is in its life.
// +kubebuilder:validation:Enum=Pending;Running;Succeeded;Failed;Cancelled
type ImageSpecJobPhase string

// Job phases. Succeeded, Failed and Cancelled are final.
const (
	JobPending   ImageSpecJobPhase = "Pending"
	JobRunning   ImageSpecJobPhase = "Running"
	JobSucceeded ImageSpecJobPhase = "Succeeded"
	JobFailed    ImageSpecJobPhase = "Failed"
	JobCancelled ImageSpecJobPhase = "Cancelled"
)

// IsFinal reports whether a job in this phase will never change again.
func (p ImageSpecJobPhase) IsFinal() bool {
	return p == JobSucceeded || p == JobFailed || p == JobCancelled
}

// Condition types.
const (
	// ConditionReady (on ImageSpec): status.image is a pushed image of the
	// current spec.
	ConditionReady = "Ready"
	// ConditionSucceeded (on ImageSpecJob): Unknown while the build runs,
	// then True or False with the reason.
	ConditionSucceeded = "Succeeded"
)

// ImageSpecJobStatus is what happened to the build.
type ImageSpecJobStatus struct {
	// Phase: Pending, Running, Succeeded, Failed or Cancelled.
	// +optional
	Phase ImageSpecJobPhase `json:"phase,omitempty"`

	// PodName is the build pod, when the build runs in a pod; read its log
	// with kubectl logs.
	// +optional
	PodName string `json:"podName,omitempty"`

	// StartTime is when the build started running (after any wait for a
	// node or a free build slot).
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// FinishTime is when the job reached a final phase.
	// +optional
	FinishTime *metav1.Time `json:"finishTime,omitempty"`

	// Image is the pushed image, by tag.
	// +optional
	Image string `json:"image,omitempty"`

	// Digest is the manifest digest of the pushed image (sha256:...).
	// +optional
	Digest string `json:"digest,omitempty"`

	// BaseImageDigest is the digest of the base image the build used, so a
	// build can be traced to the exact base even when its tag moved.
	// +optional
	BaseImageDigest string `json:"baseImageDigest,omitempty"`

	// SupplyChain says where the image's SBOM, provenance and signature
	// are: artifacts attached to status.digest in the image's repository.
	// +optional
	SupplyChain *SupplyChainStatus `json:"supplyChain,omitempty"`

	// Reason is a machine-readable cause of the current phase, for example
	// Queued, BuildFailed, PushFailed, Timeout, Cancelled or Superseded.
	// +optional
	Reason string `json:"reason,omitempty"`

	// Message explains Reason for humans.
	// +optional
	Message string `json:"message,omitempty"`

	// LogTail is the last lines of the build log (at most 4 KiB).
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	LogTail string `json:"logTail,omitempty"`

	// Backend that ran the build: buildahpod or inprocess.
	// +optional
	Backend string `json:"backend,omitempty"`

	// ObservedGeneration is the generation of the spec this status is for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Succeeded is Unknown while the job runs, then True or
	// False with the same reason as Reason.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// SupplyChainStatus locates what the controller attached to a pushed image.
// Each artifact is an OCI manifest whose subject is the image, pushed to the
// image's repository: registries with the OCI 1.1 referrers API list it
// there, others under the fallback tag sha256-<image digest hex>.
type SupplyChainStatus struct {
	// SBOM is the manifest digest of the SPDX 2.3 JSON document listing
	// every package in the image, read from dpkg's, pip's and conda's own
	// records.
	// +optional
	SBOM string `json:"sbom,omitempty"`

	// SBOMPackages is how many packages the SBOM lists.
	// +optional
	SBOMPackages int32 `json:"sbomPackages,omitempty"`

	// Provenance is the manifest digest of the in-toto statement with a
	// SLSA v1 provenance predicate.
	// +optional
	Provenance string `json:"provenance,omitempty"`

	// SignedBy is the SHA-256 fingerprint of the public key whose sigstore
	// signature the image carries; empty when no signing key is set.
	// +optional
	SignedBy string `json:"signedBy,omitempty"`
}

// +genclient
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ispecjob,categories=imagespecs
// +kubebuilder:printcolumn:name="Phase",type="string",JSONPath=".status.phase"
// +kubebuilder:printcolumn:name="Image",type="string",JSONPath=".spec.targetImage"
// +kubebuilder:printcolumn:name="Reason",type="string",JSONPath=".status.reason"
// +kubebuilder:printcolumn:name="Cause",type="string",JSONPath=".spec.cause",description="Why the job was created"
// +kubebuilder:printcolumn:name="Age",type="date",JSONPath=".metadata.creationTimestamp"
// +kubebuilder:printcolumn:name="Change",type="string",JSONPath=".spec.causeMessage",priority=1,description="What changed"
// +kubebuilder:printcolumn:name="Packages",type="integer",JSONPath=".status.supplyChain.sbomPackages",priority=1,description="Packages the SBOM lists"
// +kubebuilder:printcolumn:name="Signed",type="string",JSONPath=".status.supplyChain.signedBy",priority=1,description="Fingerprint of the signing key"

// ImageSpecJob builds one revision of an ImageSpec and pushes it.
type ImageSpecJob struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec ImageSpecJobSpec `json:"spec"`
	// +optional
	Status ImageSpecJobStatus `json:"status,omitempty"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true

// ImageSpecJobList is a list of ImageSpecJobs.
type ImageSpecJobList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ImageSpecJob `json:"items"`
}
