// Package backend defines what the controller asks of a build backend. A
// backend turns one ImageSpecJob into a pushed image: the buildahpod backend
// runs a buildah pod on the cluster, the inprocess backend calls the buildah
// library inside the controller.
package backend

import (
	"context"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
)

// DefaultPushSecretRecheck is how long the one push Secret of a build
// namespace, once read (or written), counts as current where no informer
// watches it: the controller restores a missing or changed push Secret at
// most this long after the change, and the pod backend mounts a read of it
// into the builds of the same span, so a fan-out of hundreds of builds
// reads it once. Both take it from their options, which default to it.
const DefaultPushSecretRecheck = 30 * time.Second

// Notify tells the controller that the build of the job with this
// namespace/name key changed state, so it syncs the job again. Backends call
// it from their watches; the controller never polls them.
type Notify func(jobKey string)

// Backend builds jobs. Every method must be safe to call again with the same
// job: the controller retries after errors and restarts, and a retry must
// never start a second build of the same job.
type Backend interface {
	// Name is recorded in status.backend of every job the backend starts.
	Name() string

	// Run starts whatever watches the backend needs and returns once they are
	// ready. notify must be called whenever a build's state changes.
	Run(ctx context.Context, notify Notify) error

	// Ensure starts the job's build if it is not running and reports its
	// current state. A build that was started before a controller restart
	// is picked up, not started again, where the backend can observe it.
	Ensure(ctx context.Context, job *v1alpha1.ImageSpecJob) (Status, error)

	// Cancel stops the job's build and releases what it holds (pods,
	// mounts, containers); nothing is pushed after Cancel returns. It is a
	// no-op for a job without a build.
	Cancel(ctx context.Context, job *v1alpha1.ImageSpecJob) error
}

// Status is a backend's view of one build.
type Status struct {
	// Phase is Pending (accepted, waiting for a node or resources), Running,
	// Succeeded or Failed. A backend never reports Cancelled: cancelling is
	// the controller's decision.
	Phase v1alpha1.ImageSpecJobPhase
	// Reason is one of the v1alpha1.Reason* constants when Phase is Failed,
	// and may explain Pending.
	Reason  string
	Message string
	// StartTime is when the build started running.
	StartTime *metav1.Time
	// PodName is set by backends that build in pods.
	PodName         string
	Digest          string
	BaseImageDigest string
	LogTail         string
}
