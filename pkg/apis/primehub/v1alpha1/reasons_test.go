package v1alpha1

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

var backticked = regexp.MustCompile("`([A-Za-z]+)`")

// listIn returns the backticked names in the parenthesized list that
// follows marker in the README.
func listIn(t *testing.T, readme, marker string) []string {
	t.Helper()
	i := strings.Index(readme, marker)
	if i < 0 {
		t.Fatalf("README has no %q", marker)
	}
	rest := readme[i+len(marker):]
	end := strings.Index(rest, ")")
	var out []string
	for _, m := range backticked.FindAllStringSubmatch(rest[:end], -1) {
		out = append(out, m[1])
	}
	sort.Strings(out)
	return out
}

func namesOfKind(k ReasonKind) []string {
	var out []string
	for _, r := range Reasons {
		if slices.Contains(r.Kinds, k) {
			out = append(out, r.Name)
		}
	}
	sort.Strings(out)
	return out
}

// The README's lists of status reasons, event reasons and causes are the
// table's.
func TestReadmeListsMatchReasons(t *testing.T) {
	raw, err := os.ReadFile("../../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	for _, c := range []struct {
		marker string
		kind   ReasonKind
	}{
		{"`phase` (Pending, Running, Succeeded, Failed, Cancelled), `reason`\n  (", KindStatus},
		{"Events mark every transition (", KindEvent},
		{"`spec.cause` (one of\n  ", KindCause},
	} {
		got, want := listIn(t, readme, c.marker), namesOfKind(c.kind)
		if !slices.Equal(got, want) {
			t.Errorf("README lists %s reasons %v, the table %v", c.kind, got, want)
		}
	}
}

// Every reason constant is in the table, once, with a meaning.
func TestReasonsTableComplete(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "reasons.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var consts []string
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			for _, v := range spec.(*ast.ValueSpec).Values {
				if lit, ok := v.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					s, _ := strconv.Unquote(lit.Value)
					if k := ReasonKind(s); k != KindStatus && k != KindEvent && k != KindCause {
						consts = append(consts, s)
					}
				}
			}
		}
	}
	seen := map[string]bool{}
	for _, r := range Reasons {
		if seen[r.Name] || r.Meaning == "" || len(r.Kinds) == 0 {
			t.Errorf("table entry %+v: duplicate or undocumented", r)
		}
		seen[r.Name] = true
	}
	for _, c := range consts {
		if !seen[c] {
			t.Errorf("constant %q is not in the Reasons table", c)
		}
	}
	if len(consts) != len(Reasons) {
		t.Errorf("%d constants, %d table entries", len(consts), len(Reasons))
	}
}
