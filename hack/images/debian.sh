# debian: a plain Debian bookworm minbase, root user, with this host's apt
# sources so that apt steps work in builds.
. "$(dirname "$0")/lib.sh"
: "${MIRROR:?}"

# DEBOOTSTRAP_CACHE keeps downloaded .debs between builds.
debs=${DEBOOTSTRAP_CACHE:-$WORK/debs}
mkdir -p "$debs"
ctr=$(bah from scratch)
mnt=$(bah mount "$ctr")
debootstrap --variant=minbase --cache-dir="$debs" \
	bookworm "$mnt" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
	tail -n 30 "$WORK/debootstrap.log" >&2
	exit 1
}
copy_apt_config "$mnt"
rm -rf "$mnt"/var/cache/apt/archives/*.deb "$mnt"/var/lib/apt/lists/* "$mnt"/var/log/*.log
# Device nodes made by debootstrap belong to the runtime, not the image.
find "$mnt/dev" -mindepth 1 -delete
bah umount "$ctr" >/dev/null
bah config --os linux --arch amd64 --env LANG=C.UTF-8 \
	--env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	--cmd '["bash"]' "$ctr"
commit "$ctr"
