// Package buildahpod is the backend that builds each ImageSpecJob in a pod
// on the cluster: buildah pulls the base image, builds the rendered
// Dockerfile and pushes the result.
//
// # Objects
//
// A job gets one ConfigMap and one pod, both named PodName(job) ("<job>-build",
// hashed down when longer than 253 bytes), so a retried or restarted
// controller finds them instead of making more. Both carry the job's labels,
// app.kubernetes.io/managed-by=imagespec-controller (the controller's pod
// informer watches only that label) and primehub.io/imagespecjob, and a
// controller ownerReference to the job: deleting the job deletes them
// (through the garbage collector, and directly when the controller syncs the
// deletion). A finished pod stays for kubectl logs until its job is removed
// from the history.
//
// The ConfigMap holds the build script, the Dockerfile (two variants: for
// bases running as root, and for bases with a user, which is restored from
// the build argument IMAGESPEC_BASE_USER so the user never becomes
// Dockerfile text), a storage.conf and registry CA certificates. The script
// takes every value (base image, target, paths) from the environment and
// only ever quotes it; package entries reach it only inside the Dockerfile,
// which is injection-proof (see package dockerfile).
//
// Credentials reach the pod only as Secret volumes: spec.pushSecret at
// /imagespec/push/auth.json and spec.pullSecret at /imagespec/pull/auth.json
// (mode 0400), used with --authfile. With a build namespace the pull
// authfile is a per-build copy: the pull Secret's entries over the push
// credentials where Options.Pulls allows them (the spec's own images,
// shared repositories); without a pull Secret the push authfile where
// allowed, else an anonymous pull. Without a build namespace, PrimeHub's
// way: the pull Secret when the job has one, the push Secret otherwise.
// Nothing secret is in the pod's environment, the ConfigMap, the status or
// the logs.
//
// # Stages and status
//
// The script runs pull, build and push, each with its own exit code, and
// writes the outcome to the termination message: digest= and baseDigest= on
// success, stage=, exit= and error= (the last error line) on failure. The
// backend maps them to Succeeded with the digest, or Failed with
// BaseImagePullFailed, BuildFailed or PushFailed. From the pod itself:
// a builder image that cannot be pulled fails the job at once with
// BuilderImagePullFailed (ImagePullBackOff, InvalidImageName, or ErrImagePull
// saying not found or unauthorized); OOMKilled, Evicted (also a pod deleted
// by a drain), and activeDeadlineSeconds (set from the build timeout) as
// Timeout. The controller's own timeout counts from job creation, so time
// Pending without a node counts too. When the pod ends, the last lines of
// its log become status.logTail. Pod changes come from an informer; nothing
// polls.
//
// # Privilege
//
// By default the builder runs as root in the container with capabilities
// dropped to SETUID, SETGID and SETFCAP and allowPrivilegeEscalation false:
// buildah's chroot isolation creates a user namespace and writes its
// uid_map/gid_map (SETUID, SETGID), and package installs set file
// capabilities (SETFCAP). It needs a seccomp profile that allows
// unshare(CLONE_NEWUSER): leave it unset on kubelets without seccompDefault,
// or set Options.SeccompProfile to a Localhost profile (or Unconfined);
// RuntimeDefault refuses it. Where AppArmor confines containers, the default
// profile may refuse buildah's mounts too. Pod Security "baseline" admits
// this pod (without HostNetwork); "restricted" admits no buildah pod.
// Options.Privileged (--builder-privileged) runs a privileged container
// instead, for nodes where the above is not possible; the API server must
// allow privileged pods.
//
// # User namespace
//
// With Options.UserNamespaces auto (the default) the pod gets hostUsers:
// false whenever every schedulable node it may land on reports user
// namespace support for its default runtime handler (Node
// status.runtimeHandlers; looked at once a minute at most): the kubelet
// maps the pod's IDs 0-65535 to an unprivileged range of the node's and
// mounts its volumes idmapped, so the capabilities above act only on the
// pod's own namespaces. Needs Kubernetes >= 1.33, containerd >= 2.0 with
// runc >= 1.2 (or CRI-O with crun >= 1.9) and Linux >= 6.3. Privileged
// builders, the host network and a host path cache exclude it. The Pod
// Security level stays baseline: restricted waives its non-root checks for
// such pods but still forbids the three capabilities.
//
// # Storage
//
// buildah's store is /var/lib/containers on an emptyDir: native overlay
// works there (on the container's own root it would need fuse-overlayfs and
// /dev/fuse). With Options.Cache it is a PVC or a host path instead, so base
// images and layers survive between builds. Builds on one node may share a
// host path (containers/storage locks its files); a PVC shared across nodes
// must support overlay and file locks, so a ReadWriteOnce volume per node
// pool is the safe choice. The cache is not pruned.
//
// # Base store
//
// With an emptyDir every pod would pull its base image from scratch. The
// pod of the first build of a base in a namespace instead runs a second
// container that pulls the base into a store of its own and pushes that
// store as a one-layer image to the namespace's cache repository; the
// following builds mount it read-only by digest as an image volume
// (additionalimagestores): the node pulls it once, the pod copies no base
// layer (see basestore.go). That container, which runs no build step, gets
// DAC_OVERRIDE to read the whole store. Once it reports the store, a short
// unprivileged pod on its node mounts the store, so that node pulls it
// before its next build needs it (see nodewarm.go). Only with a build namespace and
// user-namespaced pods in auto mode, on nodes with kubelet >= 1.35 and
// containerd >= 2.2.9, overlay and no Cache.
//
// # Cancel
//
// Cancel deletes the pod with a one-second grace period and returns when
// the pod object is gone, which the API server allows only after the
// kubelet has stopped the container: nothing is pushed after that. A pod
// killed during a push may have uploaded blobs but not the manifest, so the
// tag never points at a partial image; the registry's garbage collection
// removes the blobs.
package buildahpod
