package config

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The seed documentation's GCR example, byte for byte in shape: a one-line
// JSON keyfile in single quotes.
const gcrEnv = `# custom image
PRIMEHUB_FEATURE_CUSTOM_IMAGE=true
PRIMEHUB_CUSTOM_IMAGE_REGISTRY_ENDPOINT=https://gcr.io
PRIMEHUB_CUSTOM_IMAGE_REGISTRY_USERNAME=_json_key
PRIMEHUB_CUSTOM_IMAGE_REGISTRY_PASSWORD='{"type":"service_account","project_id":"p","private_key":"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n","client_email":"b@p.iam.gserviceaccount.com"}'
PRIMEHUB_CUSTOM_IMAGE_REPO_PREFIX=gcr.io/my-private-repo
`

func TestGCRExampleParses(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, ".env")
	if err := os.WriteFile(path, []byte(gcrEnv), 0o600); err != nil {
		t.Fatal(err)
	}
	vars, err := ReadEnvFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Load(MapLookup(vars))
	if err != nil {
		t.Fatal(err)
	}
	if !s.FeatureEnabled || s.Registry.Host != "gcr.io" || s.Registry.Username != "_json_key" || s.Registry.RepoPrefix != "gcr.io/my-private-repo" {
		t.Fatalf("unexpected settings: %+v", s)
	}
	var key map[string]string
	if err := json.Unmarshal([]byte(s.Registry.Password.Reveal()), &key); err != nil {
		t.Fatalf("password is not the keyfile JSON: %v", err)
	}
	// Single quotes are literal: the \n inside the key stays a backslash-n,
	// which is what JSON needs.
	if !strings.Contains(key["private_key"], "BEGIN PRIVATE KEY-----\nMIIE") {
		t.Fatalf("private key mangled: %q", key["private_key"])
	}
	for _, out := range []string{fmt.Sprintf("%v", s), fmt.Sprintf("%+v", s), fmt.Sprintf("%#v", s), fmt.Sprint(s.Registry.Password)} {
		if strings.Contains(out, "service_account") {
			t.Fatalf("password leaked through formatting: %s", out)
		}
	}
	if b, _ := json.Marshal(s); strings.Contains(string(b), "service_account") {
		t.Fatalf("password leaked through JSON: %s", b)
	}
	auth, err := DockerConfigJSON(s.Registry.Host, s.Registry.Username, s.Registry.Password)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Auths map[string]struct{ Username, Password string }
	}
	if err := json.Unmarshal(auth, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Auths["gcr.io"].Username != "_json_key" || cfg.Auths["gcr.io"].Password != s.Registry.Password.Reveal() {
		t.Fatalf("authfile does not carry the credentials for gcr.io")
	}
}

func TestParseEnvValues(t *testing.T) {
	in := "A=plain # comment\nexport B=\"x\\\"y\\n\"\nC='it''\nD=\nE=a#b\n"
	_, err := ParseEnv(strings.NewReader(in))
	if err == nil || !strings.Contains(err.Error(), "line 3 (C)") {
		t.Fatalf("want an error naming line 3 and key C, got %v", err)
	}
	vars, err := ParseEnv(strings.NewReader("A=plain # comment\nexport B=\"x\\\"y\\n\"\nD=\nE=a#b\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"A": "plain", "B": "x\"y\n", "D": "", "E": "a#b"}
	for k, v := range want {
		if vars[k] != v {
			t.Errorf("%s = %q, want %q", k, vars[k], v)
		}
	}
}

func TestEnvironmentOverridesFile(t *testing.T) {
	file := MapLookup(map[string]string{EnvFeatureCustomImage: "true", EnvRepoPrefix: "file.example/x"})
	env := MapLookup(map[string]string{EnvRepoPrefix: "localhost:5000/team"})
	s, err := Load(Layered(env, file))
	if err != nil {
		t.Fatal(err)
	}
	if s.Registry.RepoPrefix != "localhost:5000/team" || s.Registry.Host != "localhost:5000" {
		t.Fatalf("environment did not win or localhost registry misdetected: %+v", s.Registry)
	}
}

func TestLoadErrorsNameTheSetting(t *testing.T) {
	const secret = "hunter2-very-secret"
	cases := []struct {
		name string
		vars map[string]string
		want string
	}{
		{"feature not boolean", map[string]string{EnvFeatureCustomImage: "yes please"}, EnvFeatureCustomImage},
		{"no prefix", map[string]string{EnvFeatureCustomImage: "true"}, EnvRepoPrefix},
		{"bad prefix", map[string]string{EnvFeatureCustomImage: "true", EnvRepoPrefix: "Not Valid"}, EnvRepoPrefix},
		{"bad endpoint scheme", map[string]string{EnvFeatureCustomImage: "true", EnvRepoPrefix: "r.example/x", EnvRegistryEndpoint: "ftp://r.example"}, EnvRegistryEndpoint},
		{"password without user", map[string]string{EnvFeatureCustomImage: "true", EnvRepoPrefix: "r.example/x", EnvRegistryPassword: secret}, EnvRegistryUsername},
		{"user without password", map[string]string{EnvFeatureCustomImage: "true", EnvRepoPrefix: "r.example/x", EnvRegistryUsername: "u"}, EnvRegistryPassword},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(MapLookup(tc.vars))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error naming %s, got %v", tc.want, err)
			}
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("error leaks the password: %v", err)
			}
		})
	}
}

func TestFeatureDisabledNeedsNothingElse(t *testing.T) {
	for _, v := range []string{"", "false", "0"} {
		s, err := Load(MapLookup(map[string]string{EnvFeatureCustomImage: v}))
		if err != nil || s.FeatureEnabled {
			t.Fatalf("%q: got %+v, %v", v, s, err)
		}
	}
}

func TestRegistryHost(t *testing.T) {
	for in, want := range map[string]string{
		"https://gcr.io":              "gcr.io",
		"https://gcr.io/":             "gcr.io",
		"localhost:5000":              "localhost:5000",
		"http://10.1.2.3:5000":        "10.1.2.3:5000",
		"https://index.docker.io/v1/": "index.docker.io",
	} {
		got, err := registryHost(in)
		if err != nil || got != want {
			t.Errorf("registryHost(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
