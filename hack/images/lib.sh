# Shared by the image recipes in this directory. Sourced, not run.
#
# A recipe is run as `sh NAME.sh OUT` and writes an OCI archive to OUT.
# Environment (set by test/framework/images or by hand):
#   WORK          scratch dir, removed by the caller
#   BUILDAH_ROOT  private containers-storage root; the host's default storage
#                 is never touched
#   BASE_ARCHIVE  OCI archive of the base image, for recipes that have one
#   MIRROR        Debian mirror for debootstrap
set -eu

: "${WORK:?}" "${BUILDAH_ROOT:?}"
IMAGES_DIR=$(cd "$(dirname "$0")" && pwd)
OUT=${1:?usage: $0 OUT.oci.tar}

# vfs: nothing stays mounted after a failed build, so the caller can simply
# remove the storage root.
bah() {
	buildah --root "$BUILDAH_ROOT/root" --runroot "$BUILDAH_ROOT/run" \
		--storage-driver vfs "$@"
}

# Copy the host's apt sources and the apt settings that decide how the
# mirror is reached (proxy, validity checks, index format), so that
# `apt-get update` works in builds on this machine as it does on the host.
copy_apt_config() {
	root=$1
	mkdir -p "$root/etc/apt/sources.list.d" "$root/etc/apt/apt.conf.d"
	rm -f "$root/etc/apt/sources.list"
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		case $f in
		/etc/apt/sources.list) cp "$f" "$root/etc/apt/sources.list" ;;
		*) cp "$f" "$root/etc/apt/sources.list.d/" ;;
		esac
	done
	for f in /etc/apt/apt.conf.d/*; do
		[ -f "$f" ] || continue
		if grep -qiE 'proxy|Acquire::Check-|Acquire::Languages|Acquire::GzipIndexes|Dir::Cache' "$f"; then
			cp "$f" "$root/etc/apt/apt.conf.d/"
		fi
	done
	# Sources that need keyrings or https transports absent from minbase
	# would break `apt-get update`: keep only those whose keyring is there.
	for f in "$root"/etc/apt/sources.list.d/*; do
		[ -f "$f" ] || continue
		key=$(sed -n 's/^Signed-By: *//p' "$f" | head -n1)
		if [ -n "$key" ] && [ ! -e "$root$key" ]; then
			rm -f "$f"
		fi
	done
}

# Run a shell command as root inside a working container, whatever user the
# base image sets (host network, chroot isolation: no runtime, no CNI).
run_in() {
	ctr=$1
	shift
	bah run --isolation chroot --network host --user 0:0 "$ctr" -- sh -euc "$*"
}

commit() {
	ctr=$1
	rm -f "$OUT"
	# Compressed layers in the archive: pushes upload them as they are, so
	# the pushed digest equals the archive's and nothing is recompressed.
	bah commit --quiet --format oci --disable-compression=false --rm "$ctr" "oci-archive:$OUT" >/dev/null
}
