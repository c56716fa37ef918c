package inprocess

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/imagespec/imagespec-controller/pkg/credentials"
)

func TestWriteAuthFile(t *testing.T) {
	a := credentials.Auths{"reg:5000": {Auth: base64.StdEncoding.EncodeToString([]byte("u:pw"))}}
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
}
