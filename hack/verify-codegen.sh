#!/usr/bin/env bash
# Fails when the committed generated code or CRDs differ from what the
# generators make of the current API types. It regenerates in a copy of the
# tree so the working tree is never touched.
set -o errexit -o nounset -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "${TMP}"' EXIT

# Copy what git knows about (tracked and untracked-not-ignored), as it is in
# the working tree.
(cd "${ROOT}" && git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    [ -e "$f" ] && printf '%s\0' "$f"
done | xargs -0 cp --parents -t "${TMP}")
# Reuse built generator binaries when present.
[ -d "${ROOT}/bin/tools" ] && mkdir -p "${TMP}/bin" && cp -r "${ROOT}/bin/tools" "${TMP}/bin/"

"${TMP}/hack/update-codegen.sh" >/dev/null

status=0
for d in pkg/generated artifacts/crds; do
    if ! diff -ruN "${ROOT}/${d}" "${TMP}/${d}"; then status=1; fi
done
while IFS= read -r -d '' f; do
    rel=${f#"${TMP}/"}
    if ! diff -uN "${ROOT}/${rel}" "${f}"; then status=1; fi
done < <(find "${TMP}/pkg/apis" -name 'zz_generated.*.go' -print0)
# A generated file that no longer has a source shows up as missing in TMP.
while IFS= read -r -d '' f; do
    rel=${f#"${ROOT}/"}
    [ -e "${TMP}/${rel}" ] || { echo "stale generated file: ${rel}"; status=1; }
done < <(find "${ROOT}/pkg/apis" -name 'zz_generated.*.go' -print0)

if [ "${status}" -ne 0 ]; then
    echo "Generated code is out of date: run hack/update-codegen.sh and commit the result." >&2
    exit 1
fi
echo "Generated code and CRDs are up to date."
