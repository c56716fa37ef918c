#!/bin/sh
# Installs the Debian packages the tests and `make dev` run for real:
# a registry, image tools, debootstrap for base images, runc for buildah's
# oci isolation, and what hack/install-container-runtime.sh builds with.
# Idempotent: when everything is present it only checks and exits.
set -eu

PKGS="
docker-registry
skopeo
buildah
runc
containernetworking-plugins
iptables
libseccomp-dev
pkg-config
uidmap
debootstrap
busybox-static
python3-venv
python3-pip
ca-certificates
"

missing=""
for p in $PKGS; do
	# dpkg -s exits 0 for half-removed packages too, so check the status line.
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
		missing="$missing $p"
	fi
done

if [ -z "$missing" ]; then
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	SUDO=sudo
else
	SUDO=
fi

echo "install-test-deps: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# Test binaries may run this at the same time: wait for apt's lock rather
# than fail on it.
$SUDO apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
# shellcheck disable=SC2086
$SUDO apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends $missing >&2
echo "install-test-deps: done" >&2
