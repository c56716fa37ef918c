package controller

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/imagespec/imagespec-controller/pkg/apis/primehub/v1alpha1"
)

func TestSpecDiff(t *testing.T) {
	old := v1alpha1.Packages{Apt: []string{"vim", "curl"}, Pip: []string{"numpy"}}
	cases := []struct {
		base string
		pkgs v1alpha1.Packages
		want string
	}{
		{"python:3.11", v1alpha1.Packages{Apt: []string{"curl"}, Pip: []string{"numpy", "requests>=2.31"}}, "apt: -vim; pip: +requests>=2.31"},
		{"python:3.11", v1alpha1.Packages{Apt: []string{"curl", "vim", "curl"}, Pip: []string{"numpy"}}, ""},
		{"docker.io/library/python:3.11", old, ""},
		{"python:3.12", old, "baseImage: python:3.11 -> python:3.12"},
		{"python:3.11", v1alpha1.Packages{Apt: []string{"curl", "vim"}, Pip: []string{"numpy"}, Conda: []string{"conda-forge::numpy"}}, "conda: +conda-forge::numpy"},
	}
	for _, c := range cases {
		if got := specDiff("python:3.11", old, c.base, c.pkgs); got != c.want {
			t.Errorf("diff to %s %+v = %q, want %q", c.base, c.pkgs, got, c.want)
		}
	}
	if got := clip(strings.Repeat("é", 600)); len(got) > maxCauseMessage+3 || !strings.HasSuffix(got, "...") || !utf8.ValidString(got) {
		t.Errorf("clip: %d bytes %q...", len(got), got[:8])
	}
}
