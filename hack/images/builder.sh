# builder: debian + the buildah command the shipped default builder image
# (quay.io/buildah/stable) runs, built at the same pinned version from the
# Go module proxy by buildah/install.sh. It is the image the pod
# backend runs builds in; chroot isolation needs no runtime and no
# privileged pod.
. "$(dirname "$0")/lib.sh"
: "${BASE_ARCHIVE:?}"

buildah_bin=$("$IMAGES_DIR/buildah/install.sh" | tail -n 1)
ctr=$(bah from --quiet --pull-never "oci-archive:$BASE_ARCHIVE")
bah copy --quiet --chmod 0755 "$ctr" "$buildah_bin" /usr/bin/buildah >/dev/null
run_in "$ctr" '
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# buildah >= 1.3x sets up its network backend for every build container,
# even when RUN steps share the network of the pod: like the upstream image, ship
# netavark (never run for chroot isolation).
apt-get install -y -qq --no-install-recommends ca-certificates netavark >/dev/null
rm -rf /var/lib/apt/lists/*
mkdir -p /etc/containers /var/lib/containers
# What containers-common gives the upstream image: accept any image (the
# controller pins by digest and verifies TLS), and no short-name search
# (the controller qualifies every image name).
cat >/etc/containers/policy.json <<EOC
{"default": [{"type": "insecureAcceptAnything"}]}
EOC
cat >/etc/containers/registries.conf <<EOC
unqualified-search-registries = []
short-name-mode = "enforcing"
EOC
# overlay wants /var/lib/containers on an emptyDir in a pod; set
# STORAGE_DRIVER=vfs where that is not possible.
cat >/etc/containers/storage.conf <<EOC
[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
EOC
buildah --version
'
bah config --env BUILDAH_ISOLATION=chroot --volume /var/lib/containers \
	--cmd '["buildah","--help"]' "$ctr"
commit "$ctr"
