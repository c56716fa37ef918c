package inprocess

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/containers/image/v5/types"
	"github.com/containers/storage"
	"golang.org/x/sys/unix"

	"github.com/imagespec/imagespec-controller/pkg/credentials"
)

// Stores opened by backends of this process, by storage dir. containers/
// storage keeps one store per graph root per process, so two backends on
// the same dir (tests run several controllers) share it; the last Close
// shuts it down.
var (
	storesMu sync.Mutex
	stores   = map[string]*sharedStore{}
)

type sharedStore struct {
	store storage.Store
	refs  int
}

func openStore(dir, driver string) (storage.Store, error) {
	storesMu.Lock()
	defer storesMu.Unlock()
	if s, ok := stores[dir]; ok {
		s.refs++
		return s.store, nil
	}
	st, err := storage.GetStore(storage.StoreOptions{
		GraphRoot:       filepath.Join(dir, "root"),
		RunRoot:         filepath.Join(dir, "runroot"),
		GraphDriverName: driver,
	})
	if err != nil {
		return nil, fmt.Errorf("opening image store in %s: %w", dir, err)
	}
	stores[dir] = &sharedStore{store: st, refs: 1}
	return st, nil
}

func closeStore(dir string) error {
	storesMu.Lock()
	defer storesMu.Unlock()
	s, ok := stores[dir]
	if !ok {
		return nil
	}
	if s.refs--; s.refs > 0 {
		return nil
	}
	delete(stores, dir)
	_, err := s.store.Shutdown(false)
	return err
}

// currentUlimits passes the process's hard limits to RUN steps. buildah
// otherwise raises nproc and nofile to 1048576, which fails without
// CAP_SYS_RESOURCE.
func currentUlimits() ([]string, error) {
	var out []string
	for _, l := range []struct {
		name string
		res  int
	}{{"nproc", unix.RLIMIT_NPROC}, {"nofile", unix.RLIMIT_NOFILE}} {
		var r unix.Rlimit
		if err := unix.Getrlimit(l.res, &r); err != nil {
			return nil, fmt.Errorf("reading RLIMIT_%s: %w", strings.ToUpper(l.name), err)
		}
		v := "-1"
		if r.Max != unix.RLIM_INFINITY {
			v = strconv.FormatUint(r.Max, 10)
		}
		out = append(out, l.name+"="+v+":"+v)
	}
	return out, nil
}

// writeConfig writes the backend's own signature policy and registries.conf,
// so builds depend on neither /etc/containers (absent in a controller image)
// nor settings an administrator made for other tools. Only the listed hosts
// are insecure. containers/image caches a registries.conf by its path for
// the life of the process, so the directory is named after the content:
// backends with other settings never read a stale one.
func writeConfig(storageDir string, insecure []string) (string, error) {
	var b strings.Builder
	// Base images are rendered fully qualified; short names never reach a
	// registry, so no search list.
	b.WriteString("unqualified-search-registries = []\nshort-name-mode = \"disabled\"\n")
	for _, h := range insecure {
		fmt.Fprintf(&b, "\n[[registry]]\nlocation = %q\ninsecure = true\n", h)
	}
	conf := b.String()
	sum := sha256.Sum256([]byte(conf))
	dir := filepath.Join(storageDir, "config", hex.EncodeToString(sum[:8]))
	if err := os.MkdirAll(filepath.Join(dir, "registries.conf.d"), 0o700); err != nil {
		return "", err
	}
	// Signatures are not checked: images come from the registries the
	// administrator configured, over verified TLS.
	policy := `{"default":[{"type":"insecureAcceptAnything"}]}` + "\n"
	if err := os.WriteFile(filepath.Join(dir, "policy.json"), []byte(policy), 0o600); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "registries.conf"), []byte(conf), 0o600); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "no-auth.json"), []byte(`{"auths":{}}`+"\n"), 0o600); err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Join(storageDir, "blob-info-cache"), 0o700); err != nil {
		return "", err
	}
	return dir, nil
}

// systemContext is what containers/image needs for one registry operation:
// credentials (authFile, may be ""), certificates, this backend's policy and
// registries.conf, and a blob-info cache that lets pushes skip layers the
// registry already has.
func (b *Backend) systemContext(authFile string) *types.SystemContext {
	sc := &types.SystemContext{
		AuthFilePath:                authFile,
		SignaturePolicyPath:         filepath.Join(b.confDir, "policy.json"),
		SystemRegistriesConfPath:    filepath.Join(b.confDir, "registries.conf"),
		SystemRegistriesConfDirPath: filepath.Join(b.confDir, "registries.conf.d"),
		BlobInfoCacheDir:            filepath.Join(b.opts.StorageDir, "blob-info-cache"),
	}
	if authFile == "" {
		// No fallback to ~/.docker/config.json or $XDG_RUNTIME_DIR: a job
		// only ever uses the credentials its Secrets give it.
		sc.AuthFilePath = filepath.Join(b.confDir, "no-auth.json")
	}
	credentials.TrustCertDir(sc, b.opts.RegistryCertDir)
	return sc
}
