#!/usr/bin/env bash
# Measures the inprocess backend end to end (real apiserver, registry with
# auth and TLS, Debian mirror, local pip index) and prints the figures:
#   BenchmarkInprocessVsBuildahCLI: ImageSpec created -> job Succeeded, against
#     `buildah bud` + `buildah push` (Debian CLI) on the same Dockerfile; the
#     inprocess/cli column is the ratio.
#   BenchmarkInprocessRebuildAddPip: cold build vs the rebuild after adding one
#     pip package.
# Usage: hack/bench-inprocess.sh [iterations, default 3, at most 5] [extra go test args]
# Runs as root (buildah). Figures only: nothing here asserts a time.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-3}
shift || true
tags='containers_image_openpgp exclude_graphdriver_btrfs exclude_graphdriver_devicemapper'
hack/install-test-deps.sh >/dev/null
exec go test -tags "$tags" ./test/e2e -run '^$' -bench 'BenchmarkInprocess' \
	-benchtime "${n}x" -timeout 60m "$@"
