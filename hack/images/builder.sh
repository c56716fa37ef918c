# builder: debian + Debian's buildah, the image the pod backend runs builds
# in. Chroot isolation needs no runtime and no privileged pod.
. "$(dirname "$0")/lib.sh"
: "${BASE_ARCHIVE:?}"

ctr=$(bah from --quiet --pull-never "oci-archive:$BASE_ARCHIVE")
run_in "$ctr" '
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends buildah ca-certificates >/dev/null
rm -rf /var/lib/apt/lists/*
mkdir -p /etc/containers /var/lib/containers
# overlay wants /var/lib/containers on an emptyDir in a pod; set
# STORAGE_DRIVER=vfs where that is not possible.
cat >/etc/containers/storage.conf <<EOC
[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
EOC
'
bah config --env BUILDAH_ISOLATION=chroot --volume /var/lib/containers \
	--cmd '["buildah","--help"]' "$ctr"
commit "$ctr"
