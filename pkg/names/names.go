// Package names holds the labels, annotations and component name that the
// controller and its backends put on objects. It imports nothing of the
// project, so backends need not import the controller for them.
package names

const (
	// ComponentName is the event source and the managed-by label value.
	ComponentName = "imagespec-controller"
	// ManagedByLabel marks objects the controller owns besides jobs (push
	// Secrets, build pods, ConfigMaps), so its informers watch only those.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	// ImageSpecLabel names a job's ImageSpec, for kubectl -l.
	ImageSpecLabel = "primehub.io/imagespec"
	// RevisionLabel is a job's revision tag, for kubectl -l.
	RevisionLabel = "primehub.io/revision"
	// SpecGenerationAnnotation records on a job the ImageSpec generation it
	// was created for: it orders job history and tells users which edit a
	// job builds.
	SpecGenerationAnnotation = "primehub.io/imagespec-generation"
	// AttemptAnnotation numbers the jobs of one revision (absent: 1); a
	// failed or cancelled revision that an edit lands on again gets a new
	// attempt, <spec>-<tag>-<n>, and the earlier ones stay as history.
	AttemptAnnotation = "primehub.io/attempt"
	// BaseImageDigestAnnotation records on a job the base image digest
	// that base image tracking made part of its revision; absent when the
	// revision is not tied to a digest.
	BaseImageDigestAnnotation = "primehub.io/base-image-digest"
	// ImageRevisionLabel is the image label every build writes: the tag
	// the image is pushed under. An image found at a job's target tag
	// counts as already built only with this label naming that tag, so a
	// tag someone else pushed over is built again.
	ImageRevisionLabel = "io.imagespec.revision"
	// BaseDigestAnnotation is the manifest annotation buildah writes with
	// the base image's digest (OCI image-spec's standard key).
	BaseDigestAnnotation = "org.opencontainers.image.base.digest"
)

// ManagedSelector selects objects the controller owns; give it to the
// informer factory used for Secrets (and for a backend's pods).
func ManagedSelector() string { return ManagedByLabel + "=" + ComponentName }
