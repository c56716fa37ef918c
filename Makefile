# imagespec-controller
SHELL := /bin/bash
GO ?= go
BUILD_TAGS := containers_image_openpgp exclude_graphdriver_btrfs exclude_graphdriver_devicemapper
PKGS_NOT_GENERATED = $(shell $(GO) list ./... | grep -v /pkg/generated/)
GOFILES_NOT_GENERATED = $(shell git ls-files --cached --others --exclude-standard '*.go' | grep -v '^pkg/generated/' | grep -v '^hack/kube-tools/' )
FUZZTIME ?= 30s

.PHONY: all build generate verify verify-codegen fmt vet test test-unit fuzz dev clean

all: build

build:
	$(GO) build -tags '$(BUILD_TAGS)' -o bin/ ./cmd/...

generate:
	hack/update-codegen.sh

verify: verify-codegen fmt vet

verify-codegen:
	hack/verify-codegen.sh

fmt:
	@out=$$(gofmt -l $(GOFILES_NOT_GENERATED)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet -tags '$(BUILD_TAGS)' ./...

# Fast tests only: no control plane, registry or builds.
test-unit:
	$(GO) test -tags '$(BUILD_TAGS)' ./pkg/...

fuzz:
	$(GO) test ./pkg/dockerfile -run '^$$' -fuzz FuzzRenderArgv -fuzztime $(FUZZTIME)

clean:
	rm -rf bin/
