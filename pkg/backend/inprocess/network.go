package inprocess

import (
	"errors"

	nettypes "github.com/containers/common/libnetwork/types"
)

// hostNetwork is the network backend handed to buildah. RUN steps use the
// host's network (package mirrors and indexes are often on the host or its
// network), so buildah never sets a network up; without this it would
// look for netavark or CNI binaries it does not need.
type hostNetwork struct{}

var errNoNetworks = errors.New("the inprocess backend runs build steps in the host network and manages no networks")

func (hostNetwork) NetworkCreate(nettypes.Network, *nettypes.NetworkCreateOptions) (nettypes.Network, error) {
	return nettypes.Network{}, errNoNetworks
}
func (hostNetwork) NetworkUpdate(string, nettypes.NetworkUpdateOptions) error { return errNoNetworks }
func (hostNetwork) NetworkRemove(string) error                                { return errNoNetworks }
func (hostNetwork) NetworkList(...nettypes.FilterFunc) ([]nettypes.Network, error) {
	return nil, nil
}
func (hostNetwork) NetworkInspect(string) (nettypes.Network, error) {
	return nettypes.Network{}, errNoNetworks
}
func (hostNetwork) Setup(string, nettypes.SetupOptions) (map[string]nettypes.StatusBlock, error) {
	return nil, errNoNetworks
}
func (hostNetwork) Teardown(string, nettypes.TeardownOptions) error { return nil }
func (hostNetwork) RunInRootlessNetns(toRun func() error) error     { return errNoNetworks }
func (hostNetwork) RootlessNetnsInfo() (*nettypes.RootlessNetnsInfo, error) {
	return nil, errNoNetworks
}
func (hostNetwork) Drivers() []string                 { return nil }
func (hostNetwork) DefaultNetworkName() string        { return "host" }
func (hostNetwork) NetworkInfo() nettypes.NetworkInfo { return nettypes.NetworkInfo{Backend: "none"} }
