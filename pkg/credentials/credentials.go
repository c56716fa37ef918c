// Package credentials reads registry credentials from docker Secrets
// (kubernetes.io/dockerconfigjson, or the legacy kubernetes.io/dockercfg),
// picks the entry for a registry, and points containers/image at the
// registry CAs to trust. The inprocess backend and base image
// tracking read Secrets through it, so a Secret means the same to both.
package credentials

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containers/image/v5/docker/reference"
	"github.com/containers/image/v5/types"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Entry is one registry's credentials in a docker config.
type Entry struct {
	Auth          string `json:"auth,omitempty"`
	Username      string `json:"username,omitempty"`
	Password      string `json:"password,omitempty"`
	IdentityToken string `json:"identitytoken,omitempty"`
}

// Auths maps a registry (host[:port], optionally with a path or a scheme)
// to credentials.
type Auths map[string]Entry

// Read reads a docker Secret with a direct GET: the controller's informers
// cache only Secrets it manages. Errors name the Secret, never its content.
func Read(ctx context.Context, kube kubernetes.Interface, namespace, name string) (Auths, error) {
	s, err := kube.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading Secret %s/%s: %w", namespace, name, err)
	}
	return Parse(s)
}

// Parse reads the credentials of a docker Secret. Every entry gets its
// "auth" form (containers/image reads only that; kubectl-made Secrets have
// both forms, hand-made ones sometimes only username/password).
func Parse(s *corev1.Secret) (Auths, error) {
	out := Auths{}
	if raw, ok := s.Data[corev1.DockerConfigJsonKey]; ok {
		var cfg struct {
			Auths Auths `json:"auths"`
		}
		if json.Unmarshal(raw, &cfg) != nil {
			return nil, fmt.Errorf("Secret %s/%s: %s is not a docker config (JSON with \"auths\")", s.Namespace, s.Name, corev1.DockerConfigJsonKey)
		}
		out = cfg.Auths
	} else if raw, ok := s.Data[corev1.DockerConfigKey]; ok {
		if json.Unmarshal(raw, &out) != nil {
			return nil, fmt.Errorf("Secret %s/%s: %s is not a docker config", s.Namespace, s.Name, corev1.DockerConfigKey)
		}
	} else {
		return nil, fmt.Errorf("Secret %s/%s has neither %s nor %s", s.Namespace, s.Name, corev1.DockerConfigJsonKey, corev1.DockerConfigKey)
	}
	for host, e := range out {
		if e.Auth == "" && (e.Username != "" || e.Password != "") {
			e.Auth = base64.StdEncoding.EncodeToString([]byte(e.Username + ":" + e.Password))
			out[host] = e
		}
	}
	return out, nil
}

// Secrets lists the credential strings in a, for redaction: each entry's
// auth, password and token, the decoded "user:password" and the password
// alone.
func (a Auths) Secrets() []string {
	var out []string
	for _, e := range a {
		for _, s := range []string{e.Auth, e.Password, e.IdentityToken} {
			if s != "" {
				out = append(out, s)
			}
		}
		if e.Auth != "" {
			if dec, err := base64.StdEncoding.DecodeString(e.Auth); err == nil {
				out = append(out, string(dec))
				if _, pw, ok := strings.Cut(string(dec), ":"); ok && pw != "" {
					out = append(out, pw)
				}
			}
		}
	}
	return out
}

// ConfigJSON is a in the docker config form ({"auths": ...}) that
// kubernetes.io/dockerconfigjson Secrets and containers' auth files share.
func (a Auths) ConfigJSON() ([]byte, error) {
	return json.Marshal(struct {
		Auths Auths `json:"auths"`
	}{Auths: a})
}

// Merged returns base with over's entries on top.
func Merged(base, over Auths) Auths {
	out := Auths{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		out[k] = v
	}
	return out
}

// Lookup returns the user name and password for repository repo (a path
// such as team/app) on registry host, as containers tools pick them: the
// entry whose key names the longest matching host/path prefix. Keys may
// carry a scheme and a /v1/ or /v2/ suffix, as docker's own files do.
func (a Auths) Lookup(host, repo string) (user, password string, ok bool) {
	full := host + "/" + repo
	best := -1
	for key, e := range a {
		k := normalizeKey(key)
		if k != host && !strings.HasPrefix(full, k+"/") {
			continue
		}
		if len(k) <= best {
			continue
		}
		u, p := e.Username, e.Password
		if dec, err := base64.StdEncoding.DecodeString(e.Auth); err == nil && e.Auth != "" {
			if du, dp, found := strings.Cut(string(dec), ":"); found {
				u, p = du, dp
			}
		}
		best, user, password, ok = len(k), u, p, true
	}
	return user, password, ok
}

func normalizeKey(key string) string {
	if i := strings.Index(key, "://"); i >= 0 {
		key = key[i+3:]
	}
	key = strings.TrimSuffix(key, "/")
	key = strings.TrimSuffix(key, "/v1")
	key = strings.TrimSuffix(key, "/v2")
	if key == "index.docker.io" || key == "registry-1.docker.io" {
		key = "docker.io"
	}
	return key
}

// TrustCertDir makes sys trust the registry CAs in dir: a dir holding
// ca.crt trusts it for every registry, otherwise dir is a certs.d tree of
// <host[:port]>/ca.crt. An empty dir changes nothing (the system's CAs).
func TrustCertDir(sys *types.SystemContext, dir string) {
	if dir == "" {
		return
	}
	if _, err := os.Stat(filepath.Join(dir, "ca.crt")); err == nil {
		sys.DockerCertPath = dir
	} else {
		sys.DockerPerHostCertDirPath = dir
	}
}

// SystemContext is how the controller process reaches the registry of
// named: a's entry for it (anonymous without one; never the process's own
// ~/.docker or auth.json), the CAs of certDir, and no TLS verification for
// the hosts in insecure.
func (a Auths) SystemContext(named reference.Named, certDir string, insecure []string, userAgent string) *types.SystemContext {
	host := reference.Domain(named)
	sys := &types.SystemContext{
		DockerRegistryUserAgent: userAgent,
		DockerAuthConfig:        &types.DockerAuthConfig{},
	}
	if user, password, ok := a.Lookup(host, reference.Path(named)); ok {
		sys.DockerAuthConfig = &types.DockerAuthConfig{Username: user, Password: password}
	}
	TrustCertDir(sys, certDir)
	if slices.Contains(insecure, host) {
		sys.DockerInsecureSkipTLSVerify = types.OptionalBoolTrue
	}
	return sys
}
