#!/usr/bin/env bash
# Builds the buildah command pinned in go.mod beside this script (the
# version the default builder image, quay.io/buildah/stable, runs) from the
# Go module proxy, for the test builder image, and caches it under
# ${IMAGESPEC_CACHE_DIR:-$HOME/.cache/imagespec-controller}/buildah/<key>/.
# The last line on stdout is the binary's path.
#
# cgo is on (chroot isolation needs it); the build tags drop gpgme, btrfs and
# devicemapper, so the binary links only libc.
set -euo pipefail

mod="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${IMAGESPEC_CACHE_DIR:-${HOME}/.cache/imagespec-controller}"
tags="containers_image_openpgp exclude_graphdriver_btrfs exclude_graphdriver_devicemapper"
recipe="CGO_ENABLED=1 -trimpath -s -w tags=${tags} v1"

version="$(awk '$1=="require" && $2=="github.com/containers/buildah" {print $3; exit}' "${mod}/go.mod")"
if [[ -z "${version}" ]]; then
	echo "cannot read the pinned buildah version from ${mod}/go.mod" >&2
	exit 1
fi
key_hash="$({
	echo "${recipe}"
	cat "${mod}/go.mod" "${mod}/go.sum"
} | sha256sum | cut -c1-12)"
dir="${cache}/buildah/${version}_${key_hash}"
bin="${dir}/buildah"

if [[ -x "${bin}" ]]; then
	echo "${bin}"
	exit 0
fi
mkdir -p "${dir}"
# Test binaries and image recipes may ask at once: one builds, the others wait.
exec 9>"${dir}.lock"
flock 9
if [[ -x "${bin}" ]]; then
	echo "${bin}"
	exit 0
fi
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	PATH="/usr/local/go/bin:${PATH}"
fi
export GOWORK=off GOFLAGS=-mod=readonly CGO_ENABLED=1
tmp="${dir}/.buildah.tmp.$$"
trap 'rm -f "${tmp}"' EXIT
start=${SECONDS}
echo "building buildah ${version} into ${dir} ..." >&2
(cd "${mod}" && go build -trimpath -tags "${tags}" -ldflags "-s -w" -o "${tmp}" github.com/containers/buildah/cmd/buildah) >&2
mv -f "${tmp}" "${bin}"
echo "built buildah ${version} in $((SECONDS - start))s" >&2
echo "${bin}"
