# pause: the kubelet's sandbox image, a static program that sleeps until
# it is told to stop.
. "$(dirname "$0")/lib.sh"

(cd "$IMAGES_DIR/pause" && CGO_ENABLED=0 go build -trimpath -ldflags=-s -o "$WORK/pause" .)
ctr=$(bah from scratch)
bah add --quiet "$ctr" "$WORK/pause" /pause >/dev/null
bah config --os linux --arch amd64 --entrypoint '["/pause"]' --cmd '[]' "$ctr"
commit "$ctr"
