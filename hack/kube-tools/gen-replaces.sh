#!/usr/bin/env bash
# Rewrites go.mod for the Kubernetes version given (default: the one pinned
# now). k8s.io/kubernetes replaces its staging modules with local paths, and
# Go ignores a dependency's replaces, so they are restated here at v0.X.Y.
set -euo pipefail
cd "$(dirname "$0")"
version="${1:-$(awk '$1=="k8s.io/kubernetes" {print $2} $1=="require" && $2=="k8s.io/kubernetes" {print $3}' go.mod)}"
staging="v0.${version#v1.}"
GOFLAGS=-mod=mod go mod download "k8s.io/kubernetes@${version}"
kmod="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/${version}.mod"
{
	sed -n '1,/^module /p' go.mod
	echo
	echo 'go 1.26.0'
	echo
	echo 'tool ('
	for t in kube-apiserver kube-scheduler kubectl kubelet; do
		printf '\tk8s.io/kubernetes/cmd/%s\n' "$t"
	done
	echo ')'
	echo
	echo "require k8s.io/kubernetes ${version}"
	echo
	echo 'replace ('
	awk -v v="$staging" '$2=="=>" && $3 ~ /^\.\/staging\/src\// {printf "\t%s => %s %s\n", $1, $1, v}' "$kmod"
	echo ')'
} > go.mod.new
mv go.mod.new go.mod
go mod tidy
