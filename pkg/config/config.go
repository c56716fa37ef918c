// Package config reads the controller's registry settings, which keep
// PrimeHub's PRIMEHUB_* names so an existing .env works unchanged.
package config

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/containers/image/v5/docker/reference"
)

// PrimeHub's setting names.
const (
	EnvFeatureCustomImage = "PRIMEHUB_FEATURE_CUSTOM_IMAGE"
	EnvRegistryEndpoint   = "PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT"
	EnvRegistryUsername   = "PRIMEHUB_CUSTOM_IMAGE_REGISTRY_USERNAME"
	EnvRegistryPassword   = "PRIMEHUB_CUSTOM_IMAGE_REGISTRY_PASSWORD"
	EnvRepoPrefix         = "PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX"
)

// Secret holds a credential. It formats as "[redacted]" everywhere (%v, %s,
// %#v, JSON), so logging a struct that holds one cannot leak it; Reveal is
// the only way to read it.
type Secret struct{ value string }

// NewSecret wraps a credential.
func NewSecret(v string) Secret { return Secret{value: v} }

// Reveal returns the credential; call it only where it is written to its
// destination (an authfile, a Secret's data).
func (s Secret) Reveal() string { return s.value }

// IsSet reports whether a credential is present.
func (s Secret) IsSet() bool { return s.value != "" }

func (s Secret) String() string                { return "[redacted]" }
func (s Secret) GoString() string              { return "[redacted]" }
func (s Secret) MarshalJSON() ([]byte, error)  { return []byte(`"[redacted]"`), nil }
func (s Secret) Format(f fmt.State, verb rune) { _, _ = f.Write([]byte("[redacted]")) }

// Registry is where built images are pushed.
type Registry struct {
	// Endpoint as configured, for example https://gcr.io or localhost:5000.
	Endpoint string
	// Host is the registry's host[:port], the key of its credentials.
	Host     string
	Username string
	Password Secret
	// RepoPrefix: images are pushed to <RepoPrefix>/<imagespec>:<tag>.
	RepoPrefix string
}

// HasCredentials reports whether pushes authenticate.
func (r Registry) HasCredentials() bool { return r.Username != "" || r.Password.IsSet() }

// Settings are the PRIMEHUB_* settings.
type Settings struct {
	FeatureEnabled bool
	Registry       Registry
}

// Lookup finds a setting; os.LookupEnv has this shape.
type Lookup func(key string) (string, bool)

// Layered looks keys up in order: the first source that has a key wins. The
// controller puts the process environment before the env file, so a value
// set on the Deployment overrides the file.
func Layered(sources ...Lookup) Lookup {
	return func(key string) (string, bool) {
		for _, src := range sources {
			if v, ok := src(key); ok {
				return v, true
			}
		}
		return "", false
	}
}

// MapLookup looks keys up in a map, as ReadEnvFile returns it.
func MapLookup(m map[string]string) Lookup {
	return func(key string) (string, bool) {
		v, ok := m[key]
		return v, ok
	}
}

// Load reads and checks the settings. Errors name the setting and never
// quote a credential.
func Load(lookup Lookup) (Settings, error) {
	var s Settings
	get := func(k string) string {
		v, _ := lookup(k)
		return strings.TrimSpace(v)
	}
	if v := get(EnvFeatureCustomImage); v != "" {
		on, err := strconv.ParseBool(v)
		if err != nil {
			return s, fmt.Errorf("%s: %q is not a boolean (use true or false)", EnvFeatureCustomImage, v)
		}
		s.FeatureEnabled = on
	}
	if !s.FeatureEnabled {
		return s, nil
	}

	endpoint := get(EnvRegistryEndpoint)
	prefix := strings.TrimSuffix(get(EnvRepoPrefix), "/")
	if prefix == "" {
		return s, fmt.Errorf("%s is required when %s is true: images are pushed to <prefix>/<name>:<tag>", EnvRepoPrefix, EnvFeatureCustomImage)
	}
	if _, err := reference.ParseNormalizedNamed(prefix + "/name:tag"); err != nil {
		return s, fmt.Errorf("%s: %q does not make a valid image reference (<prefix>/<name>:<tag>): %v", EnvRepoPrefix, prefix, err)
	}
	host := ""
	if endpoint != "" {
		h, err := registryHost(endpoint)
		if err != nil {
			return s, fmt.Errorf("%s: %v", EnvRegistryEndpoint, err)
		}
		host = h
	} else {
		// Without an endpoint the credentials belong to the prefix's registry.
		named, _ := reference.ParseNormalizedNamed(prefix + "/name")
		host = reference.Domain(named)
	}
	// The password is not trimmed: it is opaque.
	password, _ := lookup(EnvRegistryPassword)
	s.Registry = Registry{
		Endpoint:   endpoint,
		Host:       host,
		Username:   get(EnvRegistryUsername),
		Password:   NewSecret(password),
		RepoPrefix: prefix,
	}
	if s.Registry.Password.IsSet() && s.Registry.Username == "" {
		return s, fmt.Errorf("%s is set but %s is empty", EnvRegistryPassword, EnvRegistryUsername)
	}
	if s.Registry.Username != "" && !s.Registry.Password.IsSet() {
		return s, fmt.Errorf("%s is set but %s is empty", EnvRegistryUsername, EnvRegistryPassword)
	}
	return s, nil
}

// registryHost turns an endpoint (https://gcr.io, http://10.0.0.1:5000/,
// localhost:5000) into the host[:port] that keys registry credentials.
func registryHost(endpoint string) (string, error) {
	raw := endpoint
	if !strings.Contains(raw, "://") {
		raw = "https://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("%q is not a registry URL or host[:port]", endpoint)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return "", fmt.Errorf("%q: scheme must be https or http", endpoint)
	}
	if u.Path != "" && u.Path != "/" && u.Path != "/v1/" && u.Path != "/v2/" {
		return "", fmt.Errorf("%q: a registry endpoint has no path; put repository paths in %s", endpoint, EnvRepoPrefix)
	}
	return u.Host, nil
}

// DockerConfigJSON renders credentials for host in the format of a
// kubernetes.io/dockerconfigjson Secret (also what buildah and skopeo read
// as an authfile).
func DockerConfigJSON(host, username string, password Secret) ([]byte, error) {
	type entry struct {
		Username string `json:"username"`
		Password string `json:"password"`
		Auth     string `json:"auth"`
	}
	cfg := struct {
		Auths map[string]entry `json:"auths"`
	}{Auths: map[string]entry{host: {
		Username: username,
		Password: password.Reveal(),
		Auth:     base64.StdEncoding.EncodeToString([]byte(username + ":" + password.Reveal())),
	}}}
	return json.Marshal(cfg)
}
