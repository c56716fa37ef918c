#!/usr/bin/env bash
# Builds the pinned skopeo from the Go module proxy and caches it under
# ${IMAGESPEC_CACHE_DIR:-$HOME/.cache/imagespec-controller}/skopeo/<key>/skopeo.
# Debian's skopeo (1.9) is built with sigstore verification disabled; the
# tests verify image signatures with an upstream build. The pinned release
# uses the same containers/image as the controller.
#
# Usage: hack/install-skopeo.sh
# The last line on stdout is the path of the binary.
set -euo pipefail

version=v1.19.0
tags="containers_image_openpgp exclude_graphdriver_btrfs exclude_graphdriver_devicemapper"
cache="${IMAGESPEC_CACHE_DIR:-${HOME}/.cache/imagespec-controller}"
key="${version}_$(echo "${tags} -trimpath v1" | sha256sum | cut -c1-12)"
bin="${cache}/skopeo/${key}/skopeo"

if [[ -x "${bin}" ]]; then
	echo "${bin}"
	exit 0
fi
mkdir -p "$(dirname "${bin}")"
# Two test packages may start at once: one builds, the other waits.
exec 9>"${cache}/skopeo/${key}.lock"
flock 9
if [[ -x "${bin}" ]]; then
	echo "${bin}"
	exit 0
fi

if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	PATH="/usr/local/go/bin:${PATH}"
fi
export GOWORK=off
echo "install-skopeo: building skopeo ${version} from the module proxy" >&2
dir="$(go mod download -json "github.com/containers/skopeo@${version}" | awk -F'"' '$2=="Dir" {print $4}')"
if [[ -z "${dir}" ]]; then
	echo "install-skopeo: cannot download github.com/containers/skopeo@${version}" >&2
	exit 1
fi
# The module zip has no vendor tree: dependencies come from the proxy,
# checked against skopeo's own go.sum.
(cd "${dir}" && GOFLAGS=-mod=mod go build -trimpath -tags "${tags}" -o "${bin}.tmp" ./cmd/skopeo)
mv "${bin}.tmp" "${bin}"
echo "install-skopeo: done" >&2
echo "${bin}"
