package v1alpha1

// Every reason the controller writes, in one place: job status reasons
// (status.reason and the Succeeded condition), the ImageSpec's Ready
// condition (which carries its job's reason, or InvalidSpec), event
// reasons, and job causes. Reasons documents each; the README's lists are
// checked against it.

// Status reasons of jobs, also the reasons of their Succeeded condition and
// of the ImageSpec's Ready condition.
const (
	ReasonQueued                 = "Queued"
	ReasonBuilding               = "Building"
	ReasonSucceeded              = "Succeeded"
	ReasonInvalidSpec            = "InvalidSpec"
	ReasonBaseImagePullFailed    = "BaseImagePullFailed"
	ReasonBuilderImagePullFailed = "BuilderImagePullFailed"
	ReasonBuildFailed            = "BuildFailed"
	ReasonPushFailed             = "PushFailed"
	ReasonTimeout                = "Timeout"
	ReasonCancelled              = "Cancelled"
	ReasonSuperseded             = "Superseded"
	ReasonOOMKilled              = "OOMKilled"
	ReasonEvicted                = "Evicted"
	ReasonBackendError           = "BackendError"
	ReasonPushSecretFailed       = "PushSecretFailed"
	ReasonImageSpecDeleted       = "ImageSpecDeleted"
	ReasonCancelIncomplete       = "CancelIncomplete"
	ReasonRejected               = "Rejected"
	ReasonAlreadyBuilt           = "AlreadyBuilt"
	ReasonSupplyChainFailed      = "SupplyChainFailed"
)

// Event reasons besides the status reasons that are also events
// (InvalidSpec, BuildFailed, BackendError, PushSecretFailed,
// CancelIncomplete).
const (
	EventJobCreated     = "JobCreated"
	EventJobNameTaken   = "JobNameTaken"
	EventBuildQueued    = "BuildQueued"
	EventBuildStarted   = "BuildStarted"
	EventBuildSucceeded = "BuildSucceeded"
	EventBuildFailed    = ReasonBuildFailed
	EventBuildCancelled = "BuildCancelled"
)

// Causes: why a job was created (spec.cause).
const (
	CauseFirstBuild       = "FirstBuild"
	CauseSpecChange       = "SpecChange"
	CauseRebuild          = "Rebuild"
	CauseRepositoryChange = "RepositoryChange"
	CauseBaseImageUpdate  = "BaseImageUpdate"
	CauseRetry            = "Retry"
)

// ReasonKind says where a reason appears.
type ReasonKind string

// Kinds of reasons.
const (
	KindStatus ReasonKind = "status" // job status.reason and conditions
	KindEvent  ReasonKind = "event"
	KindCause  ReasonKind = "cause" // job spec.cause
)

// ReasonDoc documents one reason.
// +k8s:deepcopy-gen=false
type ReasonDoc struct {
	Name    string
	Kinds   []ReasonKind
	Meaning string
}

// Reasons is the table of every reason the controller writes.
var Reasons = []ReasonDoc{
	{ReasonQueued, []ReasonKind{KindStatus}, "Pending: waiting for a free build slot (--max-concurrent-builds)"},
	{ReasonBuilding, []ReasonKind{KindStatus}, "Running: the backend builds"},
	{ReasonSucceeded, []ReasonKind{KindStatus}, "Succeeded: pushed, status.digest set"},
	{ReasonInvalidSpec, []ReasonKind{KindStatus, KindEvent}, "the spec fails validation; nothing builds until it changes"},
	{ReasonBaseImagePullFailed, []ReasonKind{KindStatus}, "Failed: the base image cannot be pulled (or its pull Secret is missing)"},
	{ReasonBuilderImagePullFailed, []ReasonKind{KindStatus}, "Failed: the buildahpod builder image cannot be pulled"},
	{ReasonBuildFailed, []ReasonKind{KindStatus, KindEvent}, "Failed: a build step failed; see status.logTail. As an event: the build failed, with the status reason"},
	{ReasonPushFailed, []ReasonKind{KindStatus}, "Failed: the push was refused or the push Secret is missing"},
	{ReasonTimeout, []ReasonKind{KindStatus}, "Failed: not finished --build-timeout after the job was created"},
	{ReasonCancelled, []ReasonKind{KindStatus}, "Cancelled: spec.cancel was set"},
	{ReasonSuperseded, []ReasonKind{KindStatus}, "Cancelled: the ImageSpec changed while it built"},
	{ReasonOOMKilled, []ReasonKind{KindStatus}, "Failed: the build pod ran out of memory"},
	{ReasonEvicted, []ReasonKind{KindStatus}, "Failed: the build pod was evicted or drained"},
	{ReasonBackendError, []ReasonKind{KindStatus, KindEvent}, "Pending: the backend cannot start the build (retried); Failed: the backend lost the build"},
	{ReasonPushSecretFailed, []ReasonKind{KindStatus, KindEvent}, "Pending: the push Secret cannot be written (retried)"},
	{ReasonImageSpecDeleted, []ReasonKind{KindStatus}, "Cancelled: the ImageSpec was deleted; stopped before garbage collection"},
	{ReasonCancelIncomplete, []ReasonKind{KindStatus, KindEvent}, "Cancelled (Failed after a timeout): stopping was not confirmed within --cancel-timeout; the event names what may be left"},
	{ReasonAlreadyBuilt, []ReasonKind{KindStatus}, "Succeeded without a build: the target image was already in the registry with this revision's label (a recreated job, a reverted spec, a push whose status was not written); status.digest is the registry's"},
	{ReasonSupplyChainFailed, []ReasonKind{KindStatus}, "Failed: the image was pushed, but its SBOM, provenance or signature could not be made or attached (see status.message); the image stays in the registry, a new job of the revision attaches them without a build"},
	{ReasonRejected, []ReasonKind{KindStatus}, "Failed: the job is not one the controller made for its ImageSpec (owner, target image, push Secret or repository prefix differ); never built"},
	{EventJobCreated, []ReasonKind{KindEvent}, "a job was created, with its cause"},
	{EventJobNameTaken, []ReasonKind{KindEvent}, "a job of the deterministic name exists and is not the ImageSpec's"},
	{EventBuildQueued, []ReasonKind{KindEvent}, "the job waits for a build slot"},
	{EventBuildStarted, []ReasonKind{KindEvent}, "the build runs"},
	{EventBuildSucceeded, []ReasonKind{KindEvent}, "the image was pushed"},
	{EventBuildCancelled, []ReasonKind{KindEvent}, "the build was cancelled, with the status reason"},
	{CauseFirstBuild, []ReasonKind{KindCause}, "the ImageSpec's first job"},
	{CauseSpecChange, []ReasonKind{KindCause}, "baseImage or packages changed; causeMessage holds the diff"},
	{CauseRebuild, []ReasonKind{KindCause}, "only updateTime changed"},
	{CauseRepositoryChange, []ReasonKind{KindCause}, "same inputs, new target repository (repo prefix or registry)"},
	{CauseBaseImageUpdate, []ReasonKind{KindCause}, "base image tracking saw the base tag move to a new digest; causeMessage holds old -> new"},
	{CauseRetry, []ReasonKind{KindCause}, "an edit landed on a revision whose job failed or was cancelled"},
}
