package inprocess

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// authEntry is one registry's credentials in a docker config.
type authEntry struct {
	Auth          string `json:"auth,omitempty"`
	Username      string `json:"username,omitempty"`
	Password      string `json:"password,omitempty"`
	IdentityToken string `json:"identitytoken,omitempty"`
}

// auths maps a registry (host[:port], optionally with a path) to credentials.
type auths map[string]authEntry

// readDockerSecret reads a dockerconfigjson (or legacy dockercfg) Secret with
// a direct GET: the controller's informers cache only Secrets it manages.
// Errors name the Secret, never its content.
func (b *Backend) readDockerSecret(ctx context.Context, namespace, name string) (auths, error) {
	s, err := b.kube.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading Secret %s/%s: %w", namespace, name, err)
	}
	out := auths{}
	if raw, ok := s.Data[corev1.DockerConfigJsonKey]; ok {
		var cfg struct {
			Auths auths `json:"auths"`
		}
		if json.Unmarshal(raw, &cfg) != nil {
			return nil, fmt.Errorf("Secret %s/%s: %s is not a docker config (JSON with \"auths\")", namespace, name, corev1.DockerConfigJsonKey)
		}
		out = cfg.Auths
	} else if raw, ok := s.Data[corev1.DockerConfigKey]; ok {
		if json.Unmarshal(raw, &out) != nil {
			return nil, fmt.Errorf("Secret %s/%s: %s is not a docker config", namespace, name, corev1.DockerConfigKey)
		}
	} else {
		return nil, fmt.Errorf("Secret %s/%s has neither %s nor %s", namespace, name, corev1.DockerConfigJsonKey, corev1.DockerConfigKey)
	}
	for host, e := range out {
		// containers/image reads only "auth"; kubectl-made Secrets have
		// both forms, hand-made ones sometimes only username/password.
		if e.Auth == "" && (e.Username != "" || e.Password != "") {
			e.Auth = base64.StdEncoding.EncodeToString([]byte(e.Username + ":" + e.Password))
			out[host] = e
		}
	}
	return out, nil
}

// secrets lists the credential strings in a, for redaction.
func (a auths) secrets() []string {
	var out []string
	for _, e := range a {
		for _, s := range []string{e.Auth, e.Password, e.IdentityToken} {
			if s != "" {
				out = append(out, s)
			}
		}
		if e.Auth != "" {
			// The decoded form "user:password" and the password alone.
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

// merged returns base with over's entries on top.
func merged(base, over auths) auths {
	out := auths{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		out[k] = v
	}
	return out
}

// writeAuthFile writes a as a containers auth.json with mode 0600 in dir,
// which the caller created private and removes after the build.
func writeAuthFile(dir, name string, a auths) (string, error) {
	b, err := json.Marshal(struct {
		Auths auths `json:"auths"`
	}{Auths: a})
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
