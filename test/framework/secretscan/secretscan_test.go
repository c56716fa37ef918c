package secretscan

import (
	"encoding/base64"
	"encoding/json"
	"testing"
)

func TestFindEveryForm(t *testing.T) {
	c := Credential{User: "_json_key", Password: `{"type":"service_account","key":"a\nb"}`}
	authJSON, err := json.Marshal(map[string]any{"auths": map[string]any{"reg:5000": map[string]string{
		"auth": base64.StdEncoding.EncodeToString([]byte(c.User + ":" + c.Password)),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	escaped, _ := json.Marshal(map[string]string{"message": "push with " + c.Password})
	for name, text := range map[string]string{
		"plain":            "password is " + c.Password,
		"json-escaped":     string(escaped),
		"dockerconfigjson": string(authJSON),
		"password base64":  base64.StdEncoding.EncodeToString([]byte(c.Password)),
	} {
		if got := Find(map[string]string{name: text}, c); len(got) == 0 {
			t.Errorf("%s: not found", name)
		}
	}
	if got := Find(map[string]string{"clean": "nothing here " + c.User}, c); len(got) != 0 {
		t.Errorf("clean text reported: %v", got)
	}
}

func TestJSONRefusesNull(t *testing.T) {
	var missing *struct{ Items []int }
	if _, err := JSON(missing); err == nil {
		t.Fatal("a nil list scanned as null")
	}
	if s, err := JSON(struct{ Items []int }{}); err != nil || s == "" {
		t.Fatalf("empty list: %q %v", s, err)
	}
}
