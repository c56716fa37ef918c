# busybox: Debian's static busybox alone, about 1 MB, for fast tests.
. "$(dirname "$0")/lib.sh"

bb=/bin/busybox
[ -x "$bb" ] || { echo "busybox-static is not installed" >&2; exit 1; }
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
