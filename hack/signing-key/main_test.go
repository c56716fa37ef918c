package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/imagespec/imagespec-controller/pkg/supplychain"
)

// The printed Secret holds a key pair the controller accepts with the
// passphrase beside it.
func TestSecretHoldsUsableKey(t *testing.T) {
	out := filepath.Join(t.TempDir(), "secret.json")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = f
	err = run("ns", "key")
	os.Stdout = stdout
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var s corev1.Secret
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatal(err)
	}
	if s.Namespace != "ns" || s.Name != "key" || len(s.Data["cosign.pub"]) == 0 {
		t.Fatalf("secret %s/%s with keys %v", s.Namespace, s.Name, len(s.Data))
	}
	if _, err := supplychain.Fingerprint(s.Data["cosign.key"], s.Data["cosign.password"]); err != nil {
		t.Fatal(err)
	}
}
