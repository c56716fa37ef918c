package credentials

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containers/image/v5/types"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestRead(t *testing.T) {
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
	ctx := context.Background()

	a, err := Read(ctx, kube, "ns", "json")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := base64.StdEncoding.DecodeString(a["reg:5000"].Auth); string(got) != "u:"+pw {
		t.Errorf("auth not derived from username/password: %q", got)
	}
	legacy, err := Read(ctx, kube, "ns", "legacy")
	if err != nil || legacy["other:443"].Auth == "" {
		t.Fatalf("legacy: %v %v", legacy, err)
	}
	for _, name := range []string{"broken", "missing"} {
		_, err := Read(ctx, kube, "ns", name)
		if err == nil || strings.Contains(err.Error(), pw) || !strings.Contains(err.Error(), "ns/"+name) {
			t.Errorf("%s: error %v should name the Secret and not its content", name, err)
		}
	}

	// Pull credentials: the push ones with the pull Secret's on top.
	m := Merged(Auths{"reg:5000": {Auth: "push"}, "x": {Auth: "x"}}, Auths{"reg:5000": {Auth: "pull"}})
	if m["reg:5000"].Auth != "pull" || m["x"].Auth != "x" {
		t.Errorf("Merged: %v", m)
	}

	secrets := strings.Join(a.Secrets(), "\n")
	if !strings.Contains(secrets, pw) || !strings.Contains(secrets, "u:"+pw) {
		t.Errorf("Secrets() misses the password forms")
	}
}

func TestLookup(t *testing.T) {
	auth := func(u, p string) Entry { return Entry{Auth: base64.StdEncoding.EncodeToString([]byte(u + ":" + p))} }
	a := Auths{
		"reg:5000":                     auth("host", "h"),
		"reg:5000/team":                auth("team", "t"),
		"https://index.docker.io/v1/":  auth("hub", "d"),
		"http://plain.example:8080/v2": {Username: "plain", Password: "p"},
	}
	cases := []struct {
		host, repo string
		user       string
		found      bool
	}{
		{"reg:5000", "other/app", "host", true},
		{"reg:5000", "team/app", "team", true},  // the longest prefix wins
		{"reg:5000", "teamx/app", "host", true}, // a path matches whole components only
		{"docker.io", "library/ubuntu", "hub", true},
		{"plain.example:8080", "a", "plain", true},
		{"reg:5001", "team/app", "", false},
	}
	for _, tc := range cases {
		u, _, ok := a.Lookup(tc.host, tc.repo)
		if u != tc.user || ok != tc.found {
			t.Errorf("Lookup(%s, %s) = %q %v, want %q %v", tc.host, tc.repo, u, ok, tc.user, tc.found)
		}
	}
	if _, p, _ := a.Lookup("reg:5000", "team/app"); p != "t" {
		t.Errorf("password %q, want t", p)
	}
}

func TestTrustCertDir(t *testing.T) {
	single := t.TempDir()
	if err := os.WriteFile(filepath.Join(single, "ca.crt"), []byte("pem"), 0o644); err != nil {
		t.Fatal(err)
	}
	tree := t.TempDir()
	for _, tc := range []struct {
		dir               string
		certPath, perHost string
	}{
		{single, single, ""},
		{tree, "", tree},
		{"", "", ""},
	} {
		sys := &types.SystemContext{}
		TrustCertDir(sys, tc.dir)
		if sys.DockerCertPath != tc.certPath || sys.DockerPerHostCertDirPath != tc.perHost {
			t.Errorf("TrustCertDir(%q): DockerCertPath %q, DockerPerHostCertDirPath %q; want %q, %q",
				tc.dir, sys.DockerCertPath, sys.DockerPerHostCertDirPath, tc.certPath, tc.perHost)
		}
	}
}

func TestPullScope(t *testing.T) {
	shared, err := ParseShared([]string{"reg:5000/bases/", " hubteam ", ""})
	if err != nil || len(shared) != 2 || shared[0] != "reg:5000/bases" || shared[1] != "docker.io/hubteam" {
		t.Fatalf("ParseShared: %v %v", shared, err)
	}
	for _, bad := range []string{"reg:5000/bases:1", "reg:5000/Bases", "reg:5000/b@sha256:" + strings.Repeat("a", 64)} {
		if _, err := ParseShared([]string{bad}); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("ParseShared(%q): %v, want an error naming it", bad, err)
		}
	}
	p := PullScope{Shared: shared}
	const target = "reg:5000/e2e/app:0123456789ab"
	for base, want := range map[string]bool{
		"reg:5000/e2e/app:fedcba987654": true,  // its own earlier revision
		"reg:5000/bases/python:3":       true,  // shared
		"reg:5000/bases/deep/python:3":  true,  // under a shared prefix
		"hubteam/python:3":              true,  // docker.io/hubteam is shared
		"reg:5000/basesx/python:3":      false, // not on a path boundary
		"reg:5000/e2e/victim:latest":    false, // another ImageSpec's
		"python:3":                      false,
	} {
		if got := p.UsesPush(target, base); got != want {
			t.Errorf("UsesPush(%s) = %v, want %v", base, got, want)
		}
	}
	push, pull := Auths{"reg:5000": {Auth: "push"}}, Auths{"other:443": {Auth: "pull"}}
	if a := p.Pull(target, "reg:5000/e2e/victim:latest", push, pull); len(a) != 1 || a["other:443"].Auth != "pull" {
		t.Errorf("another tenant's base: %v, want the pull Secret's entries alone", a)
	}
	if a := p.Pull(target, "reg:5000/bases/python:3", push, pull); a["reg:5000"].Auth != "push" || a["other:443"].Auth != "pull" {
		t.Errorf("shared base: %v, want both", a)
	}
	if a := p.Pull(target, "reg:5000/e2e/victim:latest", push, nil); len(a) != 0 {
		t.Errorf("another tenant's base, no pull Secret: %v, want nothing (anonymous)", a)
	}
}

func TestPullScopeExplain(t *testing.T) {
	p := PullScope{Shared: []string{"reg:5000/bases"}}
	const target = "reg:5000/e2e/app:0123456789ab"
	if why := p.Explain(target, "reg:5000/e2e/victim:latest"); !strings.Contains(why, "spec.pullSecret") {
		t.Errorf("another tenant's base: %q", why)
	}
	for _, base := range []string{"reg:5000/bases/python:3", "reg:5000/e2e/app:fedcba987654", "other:5000/x:1", "python:3"} {
		if why := p.Explain(target, base); why != "" {
			t.Errorf("%s: %q, want no explanation", base, why)
		}
	}
}
