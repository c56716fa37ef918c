package inprocess

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestReadDockerSecret(t *testing.T) {
	const pw = "p@ss:word"
	kube := fake.NewSimpleClientset(
		&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "json"},
			Type:       corev1.SecretTypeDockerConfigJson,
			// Hand-made: no "auth", which containers/image needs.
			Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"reg:5000":{"username":"u","password":"` + pw + `"}}}`)},
		},
		&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "legacy"},
			Type:       corev1.SecretTypeDockercfg,
			Data:       map[string][]byte{corev1.DockerConfigKey: []byte(`{"other:443":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("v:"+pw)) + `"}}`)},
		},
		&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "broken"},
			Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte("not json " + pw)},
		},
	)
	b := &Backend{kube: kube}
	ctx := context.Background()

	a, err := b.readDockerSecret(ctx, "ns", "json")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := base64.StdEncoding.DecodeString(a["reg:5000"].Auth); string(got) != "u:"+pw {
		t.Errorf("auth not derived from username/password: %q", got)
	}
	legacy, err := b.readDockerSecret(ctx, "ns", "legacy")
	if err != nil || legacy["other:443"].Auth == "" {
		t.Fatalf("legacy: %v %v", legacy, err)
	}
	for _, name := range []string{"broken", "missing"} {
		_, err := b.readDockerSecret(ctx, "ns", name)
		if err == nil || strings.Contains(err.Error(), pw) || !strings.Contains(err.Error(), "ns/"+name) {
			t.Errorf("%s: error %v should name the Secret and not its content", name, err)
		}
	}

	// Pull credentials: the push ones with the pull Secret's on top.
	m := merged(auths{"reg:5000": {Auth: "push"}, "x": {Auth: "x"}}, auths{"reg:5000": {Auth: "pull"}})
	if m["reg:5000"].Auth != "pull" || m["x"].Auth != "x" {
		t.Errorf("merged: %v", m)
	}

	dir := t.TempDir()
	path, err := writeAuthFile(dir, "auth.json", a)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 || filepath.Dir(path) != dir {
		t.Fatalf("authfile %s: %v %v", path, st.Mode(), err)
	}
	var cfg struct {
		Auths map[string]struct{ Auth string }
	}
	raw, _ := os.ReadFile(path)
	if err := json.Unmarshal(raw, &cfg); err != nil || cfg.Auths["reg:5000"].Auth == "" {
		t.Errorf("authfile content does not parse as auth.json: %v", err)
	}

	secrets := strings.Join(a.secrets(), "\n")
	if !strings.Contains(secrets, pw) || !strings.Contains(secrets, "u:"+pw) {
		t.Errorf("secrets() misses the password forms")
	}
}
