//go:build tools

// Package tools pins the buildah command that the test builder image runs:
// the version the shipped default builder image (quay.io/buildah/stable)
// runs, built from the Go module proxy by install.sh beside this file.
package tools

import _ "github.com/containers/buildah/cmd/buildah"
