package buildahpod

// buildScript runs in the builder container. It is a constant: every value
// of the build (images, paths, the base image's user) arrives as an
// environment variable or a file and is only ever expanded inside double
// quotes or passed as one argument, so no value is parsed as shell code.
//
// Stages and what the container reports:
//   - success: exit 0; the termination message holds "digest=sha256:..."
//     and "baseDigest=sha256:..." lines, and "started=", "pulled=",
//     "built=" and "finished=" with the script's start, the ends of its
//     pull and build stages and its end (Unix seconds, to the nanosecond
//     where date has %N; the kubelet's own times have whole seconds), for
//     measuring where a build's time goes.
//   - failure: exit code of the stage (exitSetup, exitPull, exitBuild,
//     exitPush: 10 to 13); the termination message holds "stage=<stage>",
//     "exit=<buildah's exit code>" and "error=<the last error line>".
//
// Both buildah 1.28 (Debian) and current upstream images run it: it uses
// POSIX sh, awk, tee, tail, grep, cut, cp and date only.
const buildScript = `set -u
started=$(date +%s.%N 2>/dev/null || true)
msg=${IMAGESPEC_TERMINATION_LOG:-/dev/termination-log}
work=$(mktemp -d)

# A base-store container next to this one starts its work once this script
# is done, so the two do not compete for the node.
done_mark() {
  if [ -n "${IMAGESPEC_BUILD_DONE_MARKER:-}" ]; then : >"$IMAGESPEC_BUILD_DONE_MARKER" || true; fi
}

fail() {
  # $1 stage, $2 exit code of this script, $3 exit code of the command, $4 log
  err=''
  if [ -s "$4" ]; then
    err=$(grep -E '^(Error|error|ERRO|fatal)' "$4" | tail -n 1 | cut -c 1-1000)
    if [ -z "$err" ]; then err=$(grep -v '^[[:space:]]*$' "$4" | tail -n 1 | cut -c 1-1000); fi
  fi
  printf 'stage=%s\nexit=%s\nerror=%s\n' "$1" "$3" "$err" >"$msg"
  done_mark
  echo "imagespec: $1 failed (exit $3)"
  exit "$2"
}

# stage NAME CODE COMMAND...: runs COMMAND with its output in the pod log and
# in a file, and fails the build with CODE when COMMAND fails.
stage() {
  name=$1 code=$2
  shift 2
  { "$@"; echo "$?" >"$work/rc"; } 2>&1 | tee "$work/$name.log"
  rc=$(cat "$work/rc" 2>/dev/null || echo 255)
  if [ "$rc" != 0 ]; then
    # The build pushes its layer cache: a push refused there is the push
    # stage's failure (credentials), whatever step met it.
    if [ "$name" = build ] && grep -q 'failed pushing cache to' "$work/$name.log"; then
      fail push 13 "$rc" "$work/$name.log"
    fi
    fail "$name" "$code" "$rc" "$work/$name.log"
  fi
}

for v in IMAGESPEC_BASE_IMAGE IMAGESPEC_TARGET_IMAGE IMAGESPEC_DOCKERFILE_DIR; do
  eval "val=\${$v:-}"
  if [ -z "$val" ]; then
    printf 'stage=setup\nexit=2\nerror=%s is not set\n' "$v" >"$msg"
    exit 10
  fi
done

# The backend names the pull authfile (the pull Secret, or the push Secret
# where the pull scope allows); without one the base is pulled anonymously.
pull_auth=''
if [ -f "${IMAGESPEC_PULL_AUTHFILE:-}" ]; then pull_auth=$IMAGESPEC_PULL_AUTHFILE; fi
push_auth=''
if [ -f "${IMAGESPEC_PUSH_AUTHFILE:-}" ]; then push_auth=$IMAGESPEC_PUSH_AUTHFILE; fi

# A base store mounted by the backend: buildah finds the base's layers in it
# and copies none; the pull still checks the tag.
if [ -n "${IMAGESPEC_BASE_STORE:-}" ] && [ -d "$IMAGESPEC_BASE_STORE/overlay-images" ]; then
  { cat "${CONTAINERS_STORAGE_CONF:-/etc/containers/storage.conf}"
    printf '\n[storage.options]\nadditionalimagestores = ["%s"]\n' "$IMAGESPEC_BASE_STORE"
  } >"$work/storage.conf"
  CONTAINERS_STORAGE_CONF=$work/storage.conf
  export CONTAINERS_STORAGE_CONF
  # Its blob info cache says which compressed blobs the base's layers came
  # from: without it, pushing the layer cache would compress them again.
  bic=blob-info-cache-v1.sqlite
  if [ -f "$IMAGESPEC_BASE_STORE/$bic" ] && [ -n "${IMAGESPEC_BLOB_INFO_CACHE_DIR:-}" ] && [ ! -e "$IMAGESPEC_BLOB_INFO_CACHE_DIR/$bic" ]; then
    mkdir -p "$IMAGESPEC_BLOB_INFO_CACHE_DIR" && cp "$IMAGESPEC_BASE_STORE/$bic" "$IMAGESPEC_BLOB_INFO_CACHE_DIR/$bic" || true
  fi
  echo "imagespec: using the base store at $IMAGESPEC_BASE_STORE"
fi

# With a base store the image is already there, and buildah pull's default
# policy (missing) would not ask the registry: always does, so the tag is
# checked and this build's own pull credentials decide access.
set --
if [ -n "${IMAGESPEC_BASE_STORE:-}" ]; then set -- --policy always; fi
echo "imagespec: pulling base image $IMAGESPEC_BASE_IMAGE"
if [ -n "$pull_auth" ]; then
  stage pull 11 buildah pull --quiet "$@" --authfile "$pull_auth" "$IMAGESPEC_BASE_IMAGE"
else
  stage pull 11 buildah pull --quiet "$@" "$IMAGESPEC_BASE_IMAGE"
fi
# Prefixed lines, so a warning buildah prints around them is never taken
# for a value.
stage pull 11 buildah inspect --type image --format 'imagespec-digest={{.FromImageDigest}}' "$IMAGESPEC_BASE_IMAGE"
base_digest=$(grep '^imagespec-digest=' "$work/pull.log" | tail -n 1)
base_digest=${base_digest#imagespec-digest=}
stage pull 11 buildah inspect --type image --format 'imagespec-user={{.OCIv1.Config.User}}' "$IMAGESPEC_BASE_IMAGE"
base_user=$(grep '^imagespec-user=' "$work/pull.log" | tail -n 1)
base_user=${base_user#imagespec-user=}
echo "imagespec: base image $IMAGESPEC_BASE_IMAGE@$base_digest, user '$base_user'"
pulled=$(date +%s.%N 2>/dev/null || true)

# The user variant restores the base image's user from a build argument, so
# the user reaches buildah as data, never as Dockerfile text.
dockerfile=$IMAGESPEC_DOCKERFILE_DIR/Dockerfile
if [ -n "$base_user" ]; then dockerfile=$IMAGESPEC_DOCKERFILE_DIR/Dockerfile.user; fi
echo "imagespec: building $IMAGESPEC_TARGET_IMAGE from $dockerfile:"
cat "$dockerfile"
mkdir -p "$work/context"
# Pass the container's own hard limits explicitly: newer buildahs otherwise
# raise RLIMIT_NPROC/NOFILE, which needs CAP_SYS_RESOURCE, and older ones
# default RUN steps to nproc=32768, which may exceed the container's limit.
nproc=$(awk '/^Max processes/ { print $4 }' /proc/self/limits)
nofile=$(awk '/^Max open files/ { print $5 }' /proc/self/limits)
set --
# The revision label (key=value), by which the controller knows the image.
if [ -n "${IMAGESPEC_IMAGE_LABEL:-}" ]; then set -- --label "$IMAGESPEC_IMAGE_LABEL"; fi
case $nproc in ''|unlimited) ;; *) set -- "$@" --ulimit "nproc=$nproc:$nproc" ;; esac
case $nofile in ''|unlimited) ;; *) set -- "$@" --ulimit "nofile=$nofile:$nofile" ;; esac
# The layer cache in the registry: steps whose cache image is there are
# pulled instead of run, and new ones pushed. The base image is already
# local (--pull=never), so the push credentials serve only the cache.
if [ -n "${IMAGESPEC_CACHE_REPO:-}" ] && [ -n "$push_auth" ]; then
  set -- "$@" --authfile "$push_auth" --cache-from "$IMAGESPEC_CACHE_REPO" --cache-to "$IMAGESPEC_CACHE_REPO"
fi
stage build 12 buildah bud "$@" --layers --pull=never --isolation chroot --format oci \
  --build-arg "IMAGESPEC_BASE_USER=$base_user" -f "$dockerfile" -t "$IMAGESPEC_TARGET_IMAGE" "$work/context"
built=$(date +%s.%N 2>/dev/null || true)

echo "imagespec: pushing $IMAGESPEC_TARGET_IMAGE"
if [ -n "$push_auth" ]; then
  stage push 13 buildah push --authfile "$push_auth" --format oci --digestfile "$work/digest" "$IMAGESPEC_TARGET_IMAGE" "docker://$IMAGESPEC_TARGET_IMAGE"
else
  stage push 13 buildah push --format oci --digestfile "$work/digest" "$IMAGESPEC_TARGET_IMAGE" "docker://$IMAGESPEC_TARGET_IMAGE"
fi
digest=$(cat "$work/digest")
printf 'digest=%s\nbaseDigest=%s\nstarted=%s\npulled=%s\nbuilt=%s\nfinished=%s\n' "$digest" "$base_digest" "$started" "$pulled" "$built" "$(date +%s.%N 2>/dev/null || true)" >"$msg"
echo "imagespec: pushed $IMAGESPEC_TARGET_IMAGE@$digest"
done_mark
`

// baseStoreScript runs in the base-store container of a pod that makes its
// namespace's base store (see basestore.go), next to the build and sharing
// its storage volume: once the build script is done, it pulls the base into
// a store of its own, packs that store and the blob info cache into a
// one-layer image, and pushes it to IMAGESPEC_BASE_STORE_PUSH through a vfs
// store, so the layer's whiteout devices stay files. The layer goes out
// zstd-compressed: a push to a registry compresses anyway (buildah's
// --disable-compression leaves that to the destination, which asks for
// gzip), and zstd is smaller and cheaper to make. Its work runs at the
// lowest CPU priority, and it always exits 0: the build never waits for it or fails
// by it. The termination message holds "baseStore=" with the pushed digest
// reference, or "error=" with why there is none. Every value comes from
// the environment and is only expanded inside double quotes.
const baseStoreScript = `set -u
msg=${IMAGESPEC_TERMINATION_LOG:-/dev/termination-log}
work=$(mktemp -d)
root=${IMAGESPEC_BASE_STORE_ROOT:-}
bic=blob-info-cache-v1.sqlite
finish() {
  printf 'baseStore=%s\nerror=%s\n' "$1" "$2" >"$msg"
  if [ -n "$1" ]; then echo "imagespec: pushed the base store $1"; else echo "imagespec: no base store: $2"; fi
  exit 0
}
last_line() { grep -v '^[[:space:]]*$' "$1" | tail -n 1 | cut -c 1-500; }
for v in IMAGESPEC_BASE_IMAGE IMAGESPEC_BASE_STORE_PUSH IMAGESPEC_BASE_STORE_ROOT IMAGESPEC_PUSH_AUTHFILE; do
  eval "val=\${$v:-}"
  if [ -z "$val" ]; then finish '' "$v is not set"; fi
done
if [ ! -f "$IMAGESPEC_PUSH_AUTHFILE" ]; then finish '' 'no push credentials'; fi
store() { nice -n 19 buildah --root "$root/storage" --runroot "$root/run" --storage-driver overlay "$@"; }
vfs() { nice -n 19 buildah --root "$root/vfs" --runroot "$root/vfs-run" --storage-driver vfs "$@"; }

# After the build (running next to it cost the first build of a namespace
# 0.7 s in BackendsCold), or ten minutes, should the build container have
# died before saying so.
if [ -n "${IMAGESPEC_BUILD_DONE_MARKER:-}" ]; then
  i=0
  while [ ! -e "$IMAGESPEC_BUILD_DONE_MARKER" ] && [ "$i" -lt 3000 ]; do sleep 0.2; i=$((i + 1)); done
fi
echo "imagespec: making the base store $IMAGESPEC_BASE_STORE_PUSH of $IMAGESPEC_BASE_IMAGE"
if [ -f "${IMAGESPEC_PULL_AUTHFILE:-}" ]; then
  store pull --quiet --authfile "$IMAGESPEC_PULL_AUTHFILE" "$IMAGESPEC_BASE_IMAGE" >"$work/log" 2>&1 || finish '' "pulling the base: $(last_line "$work/log")"
else
  store pull --quiet "$IMAGESPEC_BASE_IMAGE" >"$work/log" 2>&1 || finish '' "pulling the base: $(last_line "$work/log")"
fi
layout=$root/oci
mkdir -p "$layout/blobs/sha256" || finish '' "cannot write $layout"
set -- -C "$root/storage" overlay overlay-images overlay-layers
if [ -f "${IMAGESPEC_BLOB_INFO_CACHE_DIR:-}/$bic" ]; then set -- "$@" -C "$IMAGESPEC_BLOB_INFO_CACHE_DIR" "$bic"; fi
nice -n 19 tar --numeric-owner --xattrs --xattrs-include='*' -cf "$layout/layer" "$@" 2>"$work/log" || finish '' "packing the store: $(last_line "$work/log")"
blob() { # file -> its digest (hex), the file moved into the layout's blobs
  d=$(nice -n 19 sha256sum "$1" | cut -d ' ' -f 1)
  mv "$1" "$layout/blobs/sha256/$d" && echo "$d"
}
size() { wc -c <"$layout/blobs/sha256/$1" | tr -d ' '; }
diff=$(blob "$layout/layer") || finish '' 'hashing the layer'
case $(uname -m) in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; *) arch=$(uname -m) ;; esac
printf '{"architecture":"%s","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$arch" "$diff" >"$layout/config"
cfg=$(blob "$layout/config") || finish '' 'hashing the config'
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
  "$cfg" "$(size "$cfg")" "$diff" "$(size "$diff")" >"$layout/manifest"
man=$(blob "$layout/manifest") || finish '' 'hashing the manifest'
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s}]}' "$man" "$(size "$man")" >"$layout/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
vfs pull --quiet "oci:$layout" >"$work/id" 2>"$work/log" || finish '' "loading the store image: $(last_line "$work/log")"
vfs push --quiet --authfile "$IMAGESPEC_PUSH_AUTHFILE" --compression-format zstd --force-compression --digestfile "$work/digest" \
  "$(tail -n 1 "$work/id")" "docker://$IMAGESPEC_BASE_STORE_PUSH" >"$work/log" 2>&1 || finish '' "pushing: $(last_line "$work/log")"
finish "${IMAGESPEC_BASE_STORE_PUSH%:*}@$(cat "$work/digest")" ''
`
