# imagespec-controller
SHELL := /bin/bash
GO ?= go
BUILD_TAGS := containers_image_openpgp exclude_graphdriver_btrfs exclude_graphdriver_devicemapper
PKGS_NOT_GENERATED = $(shell $(GO) list ./... | grep -v /pkg/generated/)
GOFILES_NOT_GENERATED = $(shell git ls-files --cached --others --exclude-standard '*.go' | grep -v '^pkg/generated/' | grep -v '^hack/kube-tools/' )
# A count, not a duration: with a duration Go 1.26's fuzz coordinator can
# report its own stop deadline as a failure (golang/go#75804, fixed in 1.27).
FUZZTIME ?= 3000x

# Unit and integration tests: they run under the race detector.
RACE_PKGS := ./pkg/... ./cmd/... ./test/integration/... ./test/framework/...
# Builds with real buildah, which the race detector slows several-fold
# without covering more of our code: the e2e suite and the make dev path.
E2E_PKGS := ./test/e2e/... ./hack/...
# The inprocess backend's documented --isolation=oci, run on the tests that
# exercise RUN steps and their cleanup.
OCI_TESTS := ^TestInprocess(BuildAptAndPip|CancelMidBuild)$$

.PHONY: all build image generate verify verify-codegen fmt vet deps test test-unit test-go test-race test-e2e test-oci verify-cold fuzz dev clean

all: build

build:
	$(GO) build -tags '$(BUILD_TAGS)' -o bin/ ./cmd/...

# The controller image, built with buildah (root): an OCI archive in
# _output by default. BASE_IMAGE=local builds on the local `debian` test
# image (no internet); OUTPUT=docker://host/repo:tag pushes instead. See
# hack/build-image.sh.
image:
	GO=$(GO) hack/build-image.sh

generate:
	hack/update-codegen.sh

verify: verify-codegen fmt vet

verify-codegen:
	hack/verify-codegen.sh

fmt:
	@out=$$(gofmt -l $(GOFILES_NOT_GENERATED)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet -tags '$(BUILD_TAGS)' ./...

# Everything the tests run against: Debian packages (registry, buildah,
# containerd, ...), the pinned Kubernetes and etcd binaries and the buildah
# command of the test builder image, built once and cached by version.
deps:
	hack/install-test-deps.sh
	hack/install-kube-binaries.sh >/dev/null
	hack/install-container-runtime.sh >/dev/null
	hack/images/buildah/install.sh >/dev/null

# All tests: generated code and formatting checks, unit, integration
# (real kube-apiserver + etcd) under the race detector, end-to-end (real
# registry, buildah, kubelet), the e2e tests again with oci isolation, and a
# bounded fuzz run. Needs root.
test: deps verify test-go fuzz

test-go: test-race test-e2e test-oci

test-race:
	$(GO) test -race -tags '$(BUILD_TAGS)' -timeout 60m -count=1 $(RACE_PKGS)

test-e2e:
	$(GO) test -tags '$(BUILD_TAGS)' -timeout 60m -count=1 $(E2E_PKGS)

test-oci:
	E2E_ISOLATION=oci $(GO) test -tags '$(BUILD_TAGS)' -timeout 30m -count=1 ./test/e2e -run '$(OCI_TESTS)'

# make verify against an empty Go module cache: every script must download
# what it uses (a warm cache hides a missing download). -trimpath keeps the
# build cache usable across cache directories.
verify-cold:
	@cold=$$(mktemp -d); trap 'chmod -R u+w "$$cold"; rm -rf "$$cold"' EXIT; \
	echo "== make verify with an empty module cache ($$cold)"; \
	GOMODCACHE=$$cold GOFLAGS="$$($(GO) env GOFLAGS) -trimpath" $(MAKE) --no-print-directory verify

# Fast tests only: no control plane, registry or builds.
test-unit:
	$(GO) test -tags '$(BUILD_TAGS)' ./pkg/...

fuzz:
	$(GO) test ./pkg/dockerfile -run '^$$' -fuzz FuzzRenderArgv -fuzztime $(FUZZTIME)

# The main job: a local control plane, registry and base images, the
# controller in dev mode (inprocess backend), and the example built. Needs
# root. DEV_FLAGS=--exit-after-build stops once the image is pushed.
dev:
	$(GO) run ./hack/local-up $(DEV_FLAGS)

clean:
	rm -rf bin/ _output/
