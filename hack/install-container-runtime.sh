#!/usr/bin/env bash
# Builds the test node's container runtime from the Go module proxy at pinned
# versions: containerd 2.x (containerd, its runc shim and ctr) and runc, and
# caches them under
# ${IMAGESPEC_CACHE_DIR:-$HOME/.cache/imagespec-controller}/runtime/<key>/bin.
# Debian 12's containerd 1.6 and runc 1.1 cannot run user-namespaced pods:
# that needs containerd >= 2.0 and a runc with idmapped mounts (>= 1.2).
#
# runc needs cgo and libseccomp (Debian's libseccomp-dev and pkg-config,
# which hack/install-test-deps.sh installs).
#
# Usage: hack/install-container-runtime.sh
# The last line on stdout is the bin directory.
set -euo pipefail

containerd_version=v2.4.2
runc_version=v1.5.3
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${IMAGESPEC_CACHE_DIR:-${HOME}/.cache/imagespec-controller}"
# The recipe takes part in the cache key: changing flags means new binaries.
recipe="containerd ${containerd_version} tags=no_btrfs,no_devmapper,no_zfs shim-static; runc ${runc_version} tags=seccomp,urfave_cli_no_docs; -trimpath v1"
key="containerd-${containerd_version}_runc-${runc_version}_$(echo "${recipe}" | sha256sum | cut -c1-12)"
bin_dir="${cache}/runtime/${key}/bin"
want=(containerd containerd-shim-runc-v2 ctr runc)

complete() {
	local b
	for b in "${want[@]}"; do
		[[ -x "${bin_dir}/${b}" ]] || return 1
	done
}

if complete; then
	echo "${bin_dir}"
	exit 0
fi
mkdir -p "${cache}/runtime"
# Two test packages may start at once: one builds, the other waits.
exec 9>"${cache}/runtime/${key}.lock"
flock 9
if complete; then
	echo "${bin_dir}"
	exit 0
fi

"${root}/hack/install-test-deps.sh"
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	PATH="/usr/local/go/bin:${PATH}"
fi
export GOWORK=off GOFLAGS=-mod=mod
download() { # module@version -> its directory in the module cache
	go mod download -json "$1" | awk -F'"' '$2=="Dir" {print $4}'
}

tmp="${bin_dir}.tmp"
rm -rf "${tmp}"
mkdir -p "${tmp}"

echo "install-container-runtime: building containerd ${containerd_version} from the module proxy" >&2
dir="$(download "github.com/containerd/containerd/v2@${containerd_version}")"
if [[ -z "${dir}" ]]; then
	echo "install-container-runtime: cannot download containerd ${containerd_version}" >&2
	exit 1
fi
pkg=github.com/containerd/containerd/v2
ldflags="-X ${pkg}/version.Version=${containerd_version} -X ${pkg}/version.Package=github.com/containerd/containerd/v2 -s -w"
(
	cd "${dir}"
	# The module zip has no vendor tree: dependencies come from the proxy,
	# checked against containerd's own go.sum.
	go build -trimpath -tags "no_btrfs no_devmapper no_zfs" -ldflags "${ldflags}" -o "${tmp}/containerd" ./cmd/containerd
	go build -trimpath -tags "no_btrfs no_devmapper no_zfs" -ldflags "${ldflags}" -o "${tmp}/ctr" ./cmd/ctr
	# The shim outlives containerd restarts; upstream builds it static.
	CGO_ENABLED=0 go build -trimpath -ldflags "${ldflags}" -o "${tmp}/containerd-shim-runc-v2" ./cmd/containerd-shim-runc-v2
)

echo "install-container-runtime: building runc ${runc_version} from the module proxy" >&2
dir="$(download "github.com/opencontainers/runc@${runc_version}")"
if [[ -z "${dir}" ]]; then
	echo "install-container-runtime: cannot download runc ${runc_version}" >&2
	exit 1
fi
(
	cd "${dir}"
	CGO_ENABLED=1 go build -trimpath -buildmode=pie -tags "seccomp urfave_cli_no_docs" \
		-ldflags "-X main.version=${runc_version#v} -s -w" -o "${tmp}/runc" .
)

"${tmp}/containerd" --version >&2
"${tmp}/runc" --version >&2
rm -rf "${bin_dir}"
mv "${tmp}" "${bin_dir}"
echo "install-container-runtime: done" >&2
echo "${bin_dir}"
