# busybox: Debian's static busybox alone, about 1 MB, for fast tests.
. "$(dirname "$0")/lib.sh"

bb=/bin/busybox
# The image has no libc: a dynamically linked busybox (Debian's "busybox"
# package) would not run in it.
if [ ! -x "$bb" ] || ! dpkg -S "$bb" 2>/dev/null | grep -q '^busybox-static:'; then
	echo "$bb is not Debian's busybox-static (run hack/install-test-deps.sh)" >&2
	exit 1
fi
root=$WORK/rootfs
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root"
chmod 1777 "$root/tmp"
cp "$bb" "$root/bin/busybox"
for app in $("$bb" --list); do
	[ "$app" = busybox ] || ln -s busybox "$root/bin/$app"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"

ctr=$(bah from scratch)
bah add --quiet "$ctr" "$root/" / >/dev/null
bah config --os linux --arch amd64 --env PATH=/bin --cmd '["sh"]' "$ctr"
commit "$ctr"
