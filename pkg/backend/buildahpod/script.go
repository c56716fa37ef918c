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
//     measuring where a build's time goes; "baseStore=" with the digest
//     reference of the base store it pushed, if it made one.
//   - failure: exit code of the stage (exitSetup, exitPull, exitBuild,
//     exitPush: 10 to 13); the termination message holds "stage=<stage>",
//     "exit=<buildah's exit code>" and "error=<the last error line>".
//
// Both buildah 1.28 (Debian) and current upstream images run it: it uses
// POSIX sh, awk, tee, tail, grep, cut and date only; making a base store
// (see basestore.go) also uses cp -al, tar with --xattrs, sha256sum, wc
// and uname.
const buildScript = `set -u
started=$(date +%s.%N 2>/dev/null || true)
msg=${IMAGESPEC_TERMINATION_LOG:-/dev/termination-log}
work=$(mktemp -d)

fail() {
  # $1 stage, $2 exit code of this script, $3 exit code of the command, $4 log
  err=''
  if [ -s "$4" ]; then
    err=$(grep -E '^(Error|error|ERRO|fatal)' "$4" | tail -n 1 | cut -c 1-1000)
    if [ -z "$err" ]; then err=$(grep -v '^[[:space:]]*$' "$4" | tail -n 1 | cut -c 1-1000); fi
  fi
  printf 'stage=%s\nexit=%s\nerror=%s\n' "$1" "$3" "$err" >"$msg"
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
# and copies none; the pull still checks the tag. bic is the blob info
# cache's file, next to the store (<graphroot>/../cache) as buildah keeps it
# for root.
bic=blob-info-cache-v1.sqlite
if [ -n "${IMAGESPEC_BASE_STORE:-}" ] && [ -d "$IMAGESPEC_BASE_STORE/overlay-images" ]; then
  { cat "${CONTAINERS_STORAGE_CONF:-/etc/containers/storage.conf}"
    printf '\n[storage.options]\nadditionalimagestores = ["%s"]\n' "$IMAGESPEC_BASE_STORE"
  } >"$work/storage.conf"
  CONTAINERS_STORAGE_CONF=$work/storage.conf
  export CONTAINERS_STORAGE_CONF
  # Its blob info cache says which compressed blobs the base's layers came
  # from: without it, pushing the layer cache would compress them again.
  if [ -f "$IMAGESPEC_BASE_STORE/$bic" ] && [ -n "${IMAGESPEC_GRAPHROOT:-}" ] && [ ! -e "${IMAGESPEC_GRAPHROOT%/*}/cache/$bic" ]; then
    mkdir -p "${IMAGESPEC_GRAPHROOT%/*}/cache" && cp "$IMAGESPEC_BASE_STORE/$bic" "${IMAGESPEC_GRAPHROOT%/*}/cache/$bic" || true
  fi
  echo "imagespec: using the base store at $IMAGESPEC_BASE_STORE"
fi

echo "imagespec: pulling base image $IMAGESPEC_BASE_IMAGE"
if [ -n "$pull_auth" ]; then
  stage pull 11 buildah pull --quiet --authfile "$pull_auth" "$IMAGESPEC_BASE_IMAGE"
else
  stage pull 11 buildah pull --quiet "$IMAGESPEC_BASE_IMAGE"
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

# Making the namespace's base store: the store as the pull left it, packed
# before any build step runs, then made a one-layer image and pushed to the
# cache repository while the build goes on. Its failure never fails the
# build.
pack_store() {
  set -e
  diff=$(sha256sum "$layout/layer" | cut -d ' ' -f 1)
  size=$(wc -c <"$layout/layer" | tr -d ' ')
  mv "$layout/layer" "$layout/blobs/sha256/$diff"
  case $(uname -m) in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; *) arch=$(uname -m) ;; esac
  printf '{"architecture":"%s","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$arch" "$diff" >"$layout/config"
  cfg=$(sha256sum "$layout/config" | cut -d ' ' -f 1)
  cfg_size=$(wc -c <"$layout/config" | tr -d ' ')
  mv "$layout/config" "$layout/blobs/sha256/$cfg"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "$cfg" "$cfg_size" "$diff" "$size" >"$layout/manifest"
  man=$(sha256sum "$layout/manifest" | cut -d ' ' -f 1)
  man_size=$(wc -c <"$layout/manifest" | tr -d ' ')
  mv "$layout/manifest" "$layout/blobs/sha256/$man"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s}]}' "$man" "$man_size" >"$layout/index.json"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
  # Through a vfs store of its own, so the layer's whiteout devices stay
  # files and the pushed layer is the packed one, uncompressed.
  vfs pull --quiet "oci:$layout" >"$work/store.id"
  vfs push --quiet --authfile "$push_auth" --disable-compression --digestfile "$work/store.digest" \
    "$(cat "$work/store.id")" "docker://$IMAGESPEC_BASE_STORE_PUSH"
}
vfs() {
  buildah --root "$snap.vfs/root" --runroot "$snap.vfs/run" --storage-driver vfs "$@"
}
store_pid=''
if [ -n "${IMAGESPEC_BASE_STORE_PUSH:-}" ] && [ -n "$push_auth" ] && [ -n "${IMAGESPEC_GRAPHROOT:-}" ]; then
  snap=$IMAGESPEC_GRAPHROOT.base-store
  layout=$snap.oci
  set -- -C "$IMAGESPEC_GRAPHROOT" overlay overlay-images overlay-layers
  if [ -f "${IMAGESPEC_GRAPHROOT%/*}/cache/$bic" ]; then set -- "$@" -C "${IMAGESPEC_GRAPHROOT%/*}/cache" "$bic"; fi
  if mkdir -p "$layout/blobs/sha256" &&
    tar --numeric-owner --xattrs --xattrs-include='*' -cf "$layout/layer" "$@" 2>"$work/store.log"; then
    echo "imagespec: making the base store $IMAGESPEC_BASE_STORE_PUSH"
    pack_store >>"$work/store.log" 2>&1 &
    store_pid=$!
  else
    echo "imagespec: cannot pack the store, so no base store this time:"
    tail -n 3 "$work/store.log"
  fi
fi

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
base_store=''
if [ -n "$store_pid" ]; then
  if wait "$store_pid" && [ -s "$work/store.digest" ]; then
    base_store="${IMAGESPEC_BASE_STORE_PUSH%:*}@$(cat "$work/store.digest")"
    echo "imagespec: pushed the base store $base_store"
  else
    echo "imagespec: making the base store failed (the build did not):"
    tail -n 5 "$work/store.log"
  fi
fi
printf 'digest=%s\nbaseDigest=%s\nstarted=%s\npulled=%s\nbuilt=%s\nfinished=%s\nbaseStore=%s\n' "$digest" "$base_digest" "$started" "$pulled" "$built" "$(date +%s.%N 2>/dev/null || true)" "$base_store" >"$msg"
echo "imagespec: pushed $IMAGESPEC_TARGET_IMAGE@$digest"
`
