# imagespec-controller
SHELL := /bin/bash
GO ?= go
BUILD_TAGS := containers_image_openpgp exclude_graphdriver_btrfs exclude_graphdriver_devicemapper
PKGS_NOT_GENERATED = $(shell $(GO) list ./... | grep -v /pkg/generated/)
GOFILES_NOT_GENERATED = $(shell git ls-files --cached --others --exclude-standard '*.go' | grep -v '^pkg/generated/' | grep -v '^hack/kube-tools/' )
FUZZTIME ?= 30s

.PHONY: all build image generate verify verify-codegen fmt vet deps test test-unit test-go fuzz dev clean

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
# containerd, ...) and the pinned Kubernetes and etcd binaries, built once
# and cached by version.
deps:
	hack/install-test-deps.sh
	hack/install-kube-binaries.sh >/dev/null

# All tests: generated code and formatting checks, unit, integration
# (real kube-apiserver + etcd), end-to-end (real registry, buildah, kubelet)
# and a bounded fuzz run. Needs root.
test: deps verify test-go fuzz

test-go:
	$(GO) test -tags '$(BUILD_TAGS)' -timeout 60m -count=1 ./...

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
