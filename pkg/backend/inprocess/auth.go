package inprocess

import (
	"os"
	"path/filepath"

	"github.com/imagespec/imagespec-controller/pkg/credentials"
)

// writeAuthFile writes a as a containers auth.json with mode 0600 in dir,
// which the caller created private and removes after the build.
func writeAuthFile(dir, name string, a credentials.Auths) (string, error) {
	b, err := a.ConfigJSON()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return "", err
	}
	return path, f.Close()
}
