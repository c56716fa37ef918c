package buildahpod

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/imagespec/imagespec-controller/"

// The backend shares labels through pkg/names, not the controller: no
// package it builds on, directly or not, is pkg/controller.
func TestDoesNotImportController(t *testing.T) {
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var visit func(pkg, from string)
	visit = func(pkg, from string) {
		if seen[pkg] {
			return
		}
		seen[pkg] = true
		if pkg == "pkg/controller" {
			t.Errorf("buildahpod depends on pkg/controller (through %s)", from)
			return
		}
		dir := filepath.Join(root, pkg)
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
				continue
			}
			f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(dir, e.Name()), nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range f.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				if rest, ok := strings.CutPrefix(p, module); ok {
					visit(rest, pkg)
				}
			}
		}
	}
	visit("pkg/backend/buildahpod", "")
	if !seen["pkg/names"] {
		t.Error("buildahpod does not use pkg/names for its labels")
	}
}
