#!/bin/sh
# Builds the controller image with the buildah CLI (no Docker daemon): the Go
# binary with cgo and the buildah build tags (it links only libc), on a base
# with glibc, running as uid 65532 (the Deployment's runAsUser).
#
#   hack/build-image.sh                      # or: make image
#   BASE_IMAGE=local hack/build-image.sh     # no internet: the test `debian` image
#
# Environment:
#   BASE_IMAGE   base image, any buildah transport (default
#                docker.io/library/debian:bookworm-slim). "local" uses the
#                `debian` image of hack/images (built and cached on first use).
#   OUTPUT       where the image goes (default
#                oci-archive:_output/imagespec-controller.oci.tar); any
#                buildah push destination, e.g. docker://host:5000/imagespec-controller:dev
#   PUSH_FLAGS   extra `buildah push` flags, e.g. "--cert-dir DIR --creds USER:PASS"
#   IMAGE        name of the image in the build's storage (default imagespec-controller:dev)
#   BUILDAH_ROOT private storage root (default _output/image-build); the
#                host's containers storage is never touched.
# Needs root (buildah with a private storage root).
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
GO=${GO:-go}
BASE_IMAGE=${BASE_IMAGE:-docker.io/library/debian:bookworm-slim}
IMAGE=${IMAGE:-imagespec-controller:dev}
OUTPUT=${OUTPUT:-oci-archive:$ROOT/_output/imagespec-controller.oci.tar}
BUILDAH_ROOT=${BUILDAH_ROOT:-$ROOT/_output/image-build}
PUSH_FLAGS=${PUSH_FLAGS:-}
TAGS="containers_image_openpgp exclude_graphdriver_btrfs exclude_graphdriver_devicemapper"

# vfs: nothing stays mounted when a build is interrupted.
bah() {
	buildah --root "$BUILDAH_ROOT/root" --runroot "$BUILDAH_ROOT/run" --storage-driver vfs "$@"
}

if [ "$BASE_IMAGE" = local ]; then
	archive=$($GO run ./hack/images/ensure debian | awk -F '\t' '$1 == "debian" { print $2 }')
	[ -n "$archive" ] || { echo "hack/images/ensure printed no debian archive" >&2; exit 1; }
	BASE_IMAGE=oci-archive:$archive
fi

work=$(mktemp -d)
ctr=
cleanup() {
	[ -z "$ctr" ] || bah rm "$ctr" >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then revision="$revision-dirty"; fi

echo "building the controller binary ($revision)"
CGO_ENABLED=1 $GO build -tags "$TAGS" -ldflags "-s -w" -o "$work/imagespec-controller" ./cmd/controller

echo "assembling $IMAGE on $BASE_IMAGE"
mkdir -p "$BUILDAH_ROOT"
ctr=$(bah from --quiet "$BASE_IMAGE")
bah copy --chown 0:0 --chmod 0755 "$ctr" "$work/imagespec-controller" /usr/local/bin/imagespec-controller >/dev/null
# The base's CMD (bash) would become the controller's argument.
bah config --cmd '[]' "$ctr"
bah config \
	--entrypoint '["/usr/local/bin/imagespec-controller"]' \
	--user 65532:65532 --workingdir / \
	--port 8080 --port 8081 \
	--label org.opencontainers.image.title=imagespec-controller \
	--label org.opencontainers.image.revision="$revision" \
	--label org.opencontainers.image.base.name="$BASE_IMAGE" \
	"$ctr"
# The binary must start on this base (its libc) as the image's user.
bah run --isolation chroot --user 65532:65532 "$ctr" -- /usr/local/bin/imagespec-controller --help >"$work/help" 2>&1 ||
	{ cat "$work/help" >&2; echo "the controller does not run on $BASE_IMAGE" >&2; exit 1; }
bah commit --quiet --format oci --rm "$ctr" "$IMAGE" >/dev/null
ctr=

case $OUTPUT in
oci-archive:*) mkdir -p "$(dirname "${OUTPUT#oci-archive:}")"; rm -f "${OUTPUT#oci-archive:}" ;;
esac
# shellcheck disable=SC2086 # PUSH_FLAGS holds several flags
bah push --quiet $PUSH_FLAGS "$IMAGE" "$OUTPUT"
echo "image $IMAGE written to $OUTPUT"
