// Package secretscan finds registry credentials in text that users can
// read: logs, events, status, ConfigMaps. A credential is looked for in
// every form the code that handles it writes: as is, JSON-escaped, and
// base64-encoded the way a dockerconfigjson's "auth" field holds it.
package secretscan

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// Credential is a registry login. User may be empty when only the
// password is known.
type Credential struct {
	User, Password string
}

// Forms lists the strings that give the credential away: the password as
// is and JSON-escaped (a keyfile with quotes inside a JSON document), the
// base64 of "user:password" (a dockerconfigjson "auth" field) and of the
// password alone.
func (c Credential) Forms() []string {
	if c.Password == "" {
		return nil
	}
	forms := []string{c.Password, base64.StdEncoding.EncodeToString([]byte(c.Password))}
	if q, err := json.Marshal(c.Password); err == nil {
		forms = append(forms, string(q[1:len(q)-1]))
	}
	if c.User != "" {
		forms = append(forms, base64.StdEncoding.EncodeToString([]byte(c.User+":"+c.Password)))
	}
	return dedupe(forms)
}

// Find returns, sorted, a line "<source>: <form>" for each source in which
// a form of any credential appears. A form is named by its kind, never
// shown, so the result can be printed.
func Find(sources map[string]string, creds ...Credential) []string {
	var found []string
	for name, text := range sources {
		for i, c := range creds {
			for j, f := range c.Forms() {
				if strings.Contains(text, f) {
					found = append(found, fmt.Sprintf("%s: credential %d, form %d", name, i, j))
				}
			}
		}
	}
	sort.Strings(found)
	return found
}

// JSON marshals v for Find. It fails instead of returning "null" for a nil
// list, so a scan never passes because the List call before it failed.
func JSON(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	if s := string(b); s != "null" {
		return s, nil
	}
	return "", fmt.Errorf("nothing to scan: got null")
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
