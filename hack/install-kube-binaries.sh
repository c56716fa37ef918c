#!/usr/bin/env bash
# Builds the pinned Kubernetes binaries (kube-apiserver, kube-controller-manager,
# kube-proxy, kube-scheduler, kubelet, kubectl) and etcd from the Go module proxy, and caches them under
# ${IMAGESPEC_CACHE_DIR:-$HOME/.cache/imagespec-controller}/kube/<key>/bin.
# Versions are pinned in hack/kube-tools/go.mod and hack/kube-tools/etcd/go.mod;
# the key changes whenever those or the build recipe change.
#
# Usage: hack/install-kube-binaries.sh [binary...]   (default: all)
# The last line on stdout is the bin directory.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${root}/hack/kube-tools"
cache="${IMAGESPEC_CACHE_DIR:-${HOME}/.cache/imagespec-controller}"

# Read the pins without running go, so a warm run stays fast.
modversion() { # file module
	awk -v m="$2" '$1==m {print $2; exit} $1=="require" && $2==m {print $3; exit}' "$1"
}
kube_version="$(modversion "${tools}/go.mod" k8s.io/kubernetes)"
etcd_version="$(modversion "${tools}/etcd/go.mod" go.etcd.io/etcd/server/v3)"
if [[ -z "${kube_version}" || -z "${etcd_version}" ]]; then
	echo "cannot read pinned versions from ${tools}" >&2
	exit 1
fi

# The recipe takes part in the cache key: changing flags means new binaries.
recipe="CGO_ENABLED=0 -trimpath -s -w version-ldflags v1"
key_hash="$(
	{
		echo "${recipe}"
		cat "${tools}/go.mod" "${tools}/go.sum" \
			"${tools}/etcd/go.mod" "${tools}/etcd/go.sum" "${tools}/etcd/main.go"
	} | sha256sum | cut -c1-12
)"
key="${kube_version}_etcd-${etcd_version}_${key_hash}"
bin_dir="${cache}/kube/${key}/bin"

all=(etcd kube-apiserver kube-controller-manager kube-proxy kubectl kube-scheduler kubelet)
if (($# > 0)); then
	wanted=("$@")
else
	wanted=("${all[@]}")
fi
for b in "${wanted[@]}"; do
	case " ${all[*]} " in
	*" ${b} "*) ;;
	*)
		echo "unknown binary ${b}; known: ${all[*]}" >&2
		exit 2
		;;
	esac
done

missing() {
	local b
	for b in "${wanted[@]}"; do
		[[ -x "${bin_dir}/${b}" ]] || echo "${b}"
	done
}

if [[ -z "$(missing)" ]]; then
	echo "${bin_dir}"
	exit 0
fi

mkdir -p "${bin_dir}"
# Two test packages may start at once: one builds, the other waits.
exec 9>"${cache}/kube/${key}.lock"
flock 9

if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	PATH="/usr/local/go/bin:${PATH}"
fi
export GOWORK=off GOFLAGS=-mod=readonly CGO_ENABLED=0

minor="${kube_version#v1.}"
minor="${minor%%.*}"
kube_ldflags="-s -w"
kube_ldflags+=" -X k8s.io/component-base/version.gitVersion=${kube_version}"
kube_ldflags+=" -X k8s.io/component-base/version.gitMajor=1"
kube_ldflags+=" -X k8s.io/component-base/version.gitMinor=${minor}"
kube_ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
# kubectl reports its own version through client-go's copy of the variables.
kube_ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=${kube_version}"
kube_ldflags+=" -X k8s.io/client-go/pkg/version.gitMajor=1"
kube_ldflags+=" -X k8s.io/client-go/pkg/version.gitMinor=${minor}"

# An interrupted build leaves no half-written binary behind.
trap 'rm -f "${bin_dir}"/.*.tmp.$$' EXIT

# One binary at a time: the build machines have two cores and other jobs.
for b in $(missing); do
	start=${SECONDS}
	echo "building ${b} into ${bin_dir} ..." >&2
	tmp="${bin_dir}/.${b}.tmp.$$"
	if [[ "${b}" == etcd ]]; then
		(cd "${tools}/etcd" && go build -trimpath -ldflags "-s -w" -o "${tmp}" .) >&2
	else
		(cd "${tools}" && go build -trimpath -ldflags "${kube_ldflags}" -o "${tmp}" "k8s.io/kubernetes/cmd/${b}") >&2
	fi
	mv -f "${tmp}" "${bin_dir}/${b}"
	echo "built ${b} in $((SECONDS - start))s" >&2
done

echo "${bin_dir}"
