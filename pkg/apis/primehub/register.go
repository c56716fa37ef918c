// Package primehub holds the API group name shared by every version.
package primehub

// GroupName is PrimeHub's API group; keeping it lets existing ImageSpec
// manifests apply unchanged.
const GroupName = "primehub.io"
