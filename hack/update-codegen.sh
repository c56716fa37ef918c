#!/usr/bin/env bash
# Regenerates everything derived from the API types: deepcopy functions,
# the typed clientset, listers, informers and apply configurations
# (k8s.io/code-generator) and the CRD manifests (controller-gen).
# Both generators are pinned in hack/tools/go.mod.
set -o errexit -o nounset -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODULE=github.com/imagespec/imagespec-controller
BOILERPLATE="${ROOT}/hack/boilerplate.go.txt"
cd "${ROOT}"

# Generator binaries go into the project, not the user's GOPATH.
export GOBIN="${ROOT}/bin/tools"
mkdir -p "${GOBIN}"

CODEGEN_PKG=$(cd "${ROOT}/hack/tools" && go list -m -f '{{.Dir}}' k8s.io/code-generator)
# shellcheck source=/dev/null
source "${CODEGEN_PKG}/kube_codegen.sh"

kube::codegen::gen_helpers \
    --boilerplate "${BOILERPLATE}" \
    "${ROOT}/pkg/apis"

kube::codegen::gen_client \
    --with-watch \
    --with-applyconfig \
    --output-dir "${ROOT}/pkg/generated" \
    --output-pkg "${MODULE}/pkg/generated" \
    --boilerplate "${BOILERPLATE}" \
    "${ROOT}/pkg/apis"

(cd "${ROOT}/hack/tools" && go build -o "${GOBIN}/controller-gen" sigs.k8s.io/controller-tools/cmd/controller-gen)
rm -rf "${ROOT}/artifacts/crds"
(cd "${ROOT}" && "${GOBIN}/controller-gen" crd paths=./pkg/apis/... output:crd:dir=./artifacts/crds)
