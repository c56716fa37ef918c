package revision

import (
	"regexp"
	"strings"
	"testing"

	"github.com/imagespec/imagespec-controller/pkg/dockerfile"
)

func fixture() dockerfile.Inputs {
	return dockerfile.Inputs{
		BaseImage: "jupyter/base-notebook:2024-01-01",
		Packages: dockerfile.Packages{
			Apt:   []string{"curl", "libc6:amd64"},
			Pip:   []string{"requests>=2.31", `pywin32>=1.0; sys_platform == "win32"`},
			Conda: []string{"conda-forge::numpy>=1.26"},
		},
		Sources: dockerfile.Sources{
			AptMirror:         "http://apt.internal",
			PipIndexURL:       "https://pypi.internal/simple",
			PipExtraIndexURLs: []string{"https://extra.internal/simple"},
			PipTrustedHosts:   []string{"pypi.internal"},
			CondaChannels:     []string{"conda-forge", "bioconda"},
		},
		User: "jovyan",
	}
}

const fixtureUpdateTime = "2026-01-02T03:04:05Z"

// TestTagStable pins the identity: if this fails, every existing image
// would be rebuilt under a new name. Change it only together with
// encodingVersion.
func TestTagStable(t *testing.T) {
	cases := []struct {
		in         dockerfile.Inputs
		updateTime string
		want       string
	}{
		// Was a436bca79687 while package sources were part of the
		// identity; tags made without sources (below) did not change.
		{fixture(), fixtureUpdateTime, "0cd16050ed84"},
		{dockerfile.Inputs{BaseImage: "ubuntu"}, "", "be80debab536"},
	}
	for _, tc := range cases {
		got := Tag(tc.in, tc.updateTime)
		if got != tc.want {
			t.Errorf("Tag(%+v, %q) = %q, want %q", tc.in, tc.updateTime, got, tc.want)
		}
		if !regexp.MustCompile(`^[0-9a-f]{12}$`).MatchString(got) {
			t.Errorf("tag %q is not 12 lowercase hex digits", got)
		}
	}
}

func TestTagSensitivity(t *testing.T) {
	base := Tag(fixture(), fixtureUpdateTime)
	mutations := map[string]func(in *dockerfile.Inputs, ut *string){
		"base image": func(in *dockerfile.Inputs, _ *string) { in.BaseImage = "jupyter/base-notebook:2024-01-02" },
		"base registry": func(in *dockerfile.Inputs, _ *string) {
			in.BaseImage = "localhost:5000/jupyter/base-notebook:2024-01-01"
		},
		"apt added":     func(in *dockerfile.Inputs, _ *string) { in.Packages.Apt = append(in.Packages.Apt, "git") },
		"apt version":   func(in *dockerfile.Inputs, _ *string) { in.Packages.Apt[0] = "curl=7.88.1-10" },
		"pip changed":   func(in *dockerfile.Inputs, _ *string) { in.Packages.Pip[0] = "requests>=2.32" },
		"conda removed": func(in *dockerfile.Inputs, _ *string) { in.Packages.Conda = nil },
		"entry moved manager": func(in *dockerfile.Inputs, _ *string) {
			in.Packages.Apt, in.Packages.Conda = []string{"curl", "libc6:amd64", "conda-forge::numpy>=1.26"}, nil
		},
		"update time": func(_ *dockerfile.Inputs, ut *string) { *ut = "2026-01-02T03:04:06Z" },
		"list boundary": func(in *dockerfile.Inputs, _ *string) {
			in.Packages.Apt = []string{"curl" + "libc6:amd64"}
		},
	}
	seen := map[string]string{base: "fixture"}
	for name, mutate := range mutations {
		in, ut := fixture(), fixtureUpdateTime
		mutate(&in, &ut)
		got := Tag(in, ut)
		if prev, dup := seen[got]; dup {
			t.Errorf("%s: tag %s equals the tag of %s", name, got, prev)
		}
		seen[got] = name
	}
}

func TestTagEquivalences(t *testing.T) {
	base := Tag(fixture(), fixtureUpdateTime)
	equivalent := map[string]func(in *dockerfile.Inputs){
		"fully qualified base": func(in *dockerfile.Inputs) { in.BaseImage = "docker.io/jupyter/base-notebook:2024-01-01" },
		"package order": func(in *dockerfile.Inputs) {
			in.Packages.Apt = []string{"libc6:amd64", "curl"}
			in.Packages.Pip = []string{in.Packages.Pip[1], in.Packages.Pip[0]}
		},
		"duplicate entry":     func(in *dockerfile.Inputs) { in.Packages.Apt = append(in.Packages.Apt, "curl") },
		"user":                func(in *dockerfile.Inputs) { in.User = "" },
		"mirror trailing '/'": func(in *dockerfile.Inputs) { in.Sources.AptMirror += "/" },
		// Sources are settings of where packages come from: changing one
		// must not rename every revision in the cluster.
		"no sources":   func(in *dockerfile.Inputs) { in.Sources = dockerfile.Sources{} },
		"apt mirror":   func(in *dockerfile.Inputs) { in.Sources.AptMirror = "http://apt2.internal" },
		"pip index":    func(in *dockerfile.Inputs) { in.Sources.PipIndexURL = "" },
		"conda order":  func(in *dockerfile.Inputs) { in.Sources.CondaChannels = []string{"bioconda", "conda-forge"} },
		"trusted host": func(in *dockerfile.Inputs) { in.Sources.PipTrustedHosts = append(in.Sources.PipTrustedHosts, "x") },
	}
	for name, mutate := range equivalent {
		in := fixture()
		mutate(&in)
		if got := Tag(in, fixtureUpdateTime); got != base {
			t.Errorf("%s: tag %s, want %s", name, got, base)
		}
	}
	if a, b := Tag(dockerfile.Inputs{BaseImage: "ubuntu"}, ""), Tag(dockerfile.Inputs{BaseImage: "docker.io/library/ubuntu:latest"}, ""); a != b {
		t.Errorf("ubuntu (%s) and docker.io/library/ubuntu:latest (%s) differ", a, b)
	}
	empty := dockerfile.Inputs{BaseImage: "ubuntu", Packages: dockerfile.Packages{Apt: []string{}}, Sources: dockerfile.Sources{CondaChannels: []string{}}}
	if a, b := Tag(empty, ""), Tag(dockerfile.Inputs{BaseImage: "ubuntu"}, ""); a != b {
		t.Errorf("empty and nil lists differ: %s, %s", a, b)
	}
	// A tag stands for exactly one Dockerfile.
	in := fixture()
	shuffled := fixture()
	shuffled.Packages.Apt = []string{"libc6:amd64", "curl", "curl"}
	shuffled.BaseImage = "docker.io/jupyter/base-notebook:2024-01-01"
	a, err := dockerfile.Render(in)
	if err != nil {
		t.Fatal(err)
	}
	b, err := dockerfile.Render(shuffled)
	if err != nil {
		t.Fatal(err)
	}
	if Tag(in, "") != Tag(shuffled, "") || string(a) != string(b) {
		t.Errorf("equal tags must mean equal Dockerfiles")
	}
}

func TestTargetImage(t *testing.T) {
	tag := "0123456789ab"
	cases := []struct{ prefix, name, want string }{
		{"localhost:5000/team", "my-spec", "localhost:5000/team/my-spec:" + tag},
		{"localhost:5000", "my-spec", "localhost:5000/my-spec:" + tag},
		{"gcr.io/my-private-repo", "my-spec", "gcr.io/my-private-repo/my-spec:" + tag},
		{"registry.internal:443/a/b", "x.y", "registry.internal:443/a/b/x.y:" + tag},
		{"myuser", "my-spec", "docker.io/myuser/my-spec:" + tag},
	}
	for _, tc := range cases {
		got, err := TargetImage(tc.prefix, tc.name, tag)
		if err != nil || got != tc.want {
			t.Errorf("TargetImage(%q, %q) = %q, %v; want %q", tc.prefix, tc.name, got, err, tc.want)
		}
	}
	bad := []struct{ prefix, name, tag, reason string }{
		{"", "x", tag, "empty"},
		{"localhost:5000/team/", "x", tag, "single '/'"},
		{"Gcr.io/Repo", "x", tag, "not a valid image repository"},
		{"gcr.io/repo:v1", "x", tag, "not a valid image repository"},
		{"gcr.io/repo", "x:v1", tag, "must not carry a tag"},
		{"gcr.io/repo", "x", "-bad", "target tag"},
		{"gcr.io/repo", "x", strings.Repeat("a", 129), "target tag"},
		{"gcr.io/repo", "My_Spec", tag, "not a valid image repository"},
	}
	for _, tc := range bad {
		got, err := TargetImage(tc.prefix, tc.name, tc.tag)
		if err == nil || !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("TargetImage(%q, %q, %q) = %q, %v; want an error mentioning %q", tc.prefix, tc.name, tc.tag, got, err, tc.reason)
		}
	}
	if got, err := TargetImage("localhost:5000/team", "s", Tag(fixture(), "")); err != nil || !strings.HasPrefix(got, "localhost:5000/team/s:") {
		t.Errorf("a Tag result must be usable as a target tag: %q, %v", got, err)
	}
}

// A revision tied to a base digest is its own revision; without a digest
// the tag is Tag's, so tags made before tracking stay as they were.
func TestTagWithBase(t *testing.T) {
	in := fixture()
	plain := Tag(in, fixtureUpdateTime)
	if got := TagWithBase(in, fixtureUpdateTime, ""); got != plain {
		t.Errorf("TagWithBase without a digest = %s, want Tag's %s", got, plain)
	}
	d1 := "sha256:" + strings.Repeat("1", 64)
	d2 := "sha256:" + strings.Repeat("2", 64)
	t1, t2 := TagWithBase(in, fixtureUpdateTime, d1), TagWithBase(in, fixtureUpdateTime, d2)
	if t1 == plain || t2 == plain || t1 == t2 {
		t.Errorf("tags plain %s, digest 1 %s, digest 2 %s: want three different tags", plain, t1, t2)
	}
	if again := TagWithBase(in, fixtureUpdateTime, d1); again != t1 {
		t.Errorf("TagWithBase is not stable: %s then %s", t1, again)
	}
	// The digest must not be confusable with updateTime's value.
	if TagWithBase(in, "x", "") == TagWithBase(in, "", "x") {
		t.Error("updateTime \"x\" and base digest \"x\" give the same tag")
	}
	// Pinned: changing it rebuilds every tracked image.
	if want := "08f5cf1ecefa"; t1 != want {
		t.Errorf("TagWithBase(fixture, digest 1) = %s, want %s", t1, want)
	}
}

// Each layout names the same revision its own way; names a layout cannot
// make are errors that say why.
func TestLayoutTarget(t *testing.T) {
	tag := "0123456789ab"
	cases := []struct {
		layout                  Layout
		prefix, namespace, name string
		want                    string
	}{
		{LayoutPrefix, "localhost:5000/team", "ns1", "app", "localhost:5000/team/app:" + tag},
		{"", "localhost:5000/team", "ns1", "app", "localhost:5000/team/app:" + tag},
		{LayoutNamespaced, "localhost:5000/team", "ns1", "app", "localhost:5000/team/ns1/app:" + tag},
		{LayoutNamespaced, "localhost:5000/team", "ns2", "app", "localhost:5000/team/ns2/app:" + tag},
		{LayoutNamespaced, "myuser", "ns1", "app", "docker.io/myuser/ns1/app:" + tag},
		{LayoutSingle, "localhost:5000/team/images", "ns1", "app", "localhost:5000/team/images:app-" + tag},
		{LayoutSingle, "myuser/images", "ns1", "my.spec", "docker.io/myuser/images:my.spec-" + tag},
	}
	for _, tc := range cases {
		got, err := tc.layout.Target(tc.prefix, tc.namespace, tc.name, tag)
		if err != nil || got != tc.want {
			t.Errorf("%q.Target(%q, %q, %q) = %q, %v; want %q", tc.layout, tc.prefix, tc.namespace, tc.name, got, err, tc.want)
		}
	}
	bad := []struct {
		layout                  Layout
		prefix, namespace, name string
		reason                  string
	}{
		{LayoutNamespaced, "localhost:5000", "", "app", "needs the ImageSpec's namespace"},
		{LayoutSingle, "", "ns", "app", "empty"},
		{LayoutSingle, "localhost:5000/images:v1", "ns", "app", "must not carry a tag"},
		{LayoutSingle, "Localhost:5000/Images", "ns", "app", "not a valid image repository"},
		{LayoutSingle, "localhost:5000/images", "ns", strings.Repeat("a", 120), "puts the ImageSpec's name in the tag"},
		{"flat", "localhost:5000", "ns", "app", "unknown repository layout"},
	}
	for _, tc := range bad {
		got, err := tc.layout.Target(tc.prefix, tc.namespace, tc.name, tag)
		if err == nil || !strings.Contains(err.Error(), tc.reason) {
			t.Errorf("%q.Target(%q, %q, %q) = %q, %v; want an error mentioning %q", tc.layout, tc.prefix, tc.namespace, tc.name, got, err, tc.reason)
		}
	}
	for _, s := range []string{"", "prefix", "namespaced", "single"} {
		if _, err := ParseLayout(s); err != nil {
			t.Errorf("ParseLayout(%q): %v", s, err)
		}
	}
	if _, err := ParseLayout("Namespaced"); err == nil || !strings.Contains(err.Error(), "want one of") {
		t.Errorf("ParseLayout(Namespaced): %v, want an error listing the layouts", err)
	}
}

// Owns decides which base images a build may pull with the push
// credentials: nothing of another ImageSpec's (prefix, single) or another
// namespace's (namespaced), whatever the spelling of the reference.
func TestLayoutOwns(t *testing.T) {
	const tag = "0123456789ab"
	for _, c := range []struct {
		layout        Layout
		target, image string
		want          bool
	}{
		{LayoutPrefix, "reg:5000/team/app:" + tag, "reg:5000/team/app:fedcba987654", true},
		{LayoutPrefix, "reg:5000/team/app:" + tag, "reg:5000/team/app@sha256:" + strings.Repeat("a", 64), true},
		{LayoutPrefix, "reg:5000/team/app:" + tag, "reg:5000/team/other:" + tag, false},
		{LayoutPrefix, "reg:5000/team/app:" + tag, "reg:5000/team/app/sub:" + tag, false},
		{LayoutPrefix, "reg:5000/team/app:" + tag, "other:5000/team/app:" + tag, false},
		{LayoutPrefix, "docker.io/team/app:" + tag, "team/app:latest", true},
		{LayoutNamespaced, "reg:5000/p/ns-a/app:" + tag, "reg:5000/p/ns-a/sibling:1", true},
		{LayoutNamespaced, "reg:5000/p/ns-a/app:" + tag, "reg:5000/p/ns-a/deep/er:1", true},
		{LayoutNamespaced, "reg:5000/p/ns-a/app:" + tag, "reg:5000/p/ns-ab/app:1", false},
		{LayoutNamespaced, "reg:5000/p/ns-a/app:" + tag, "reg:5000/p/ns-b/app:" + tag, false},
		{LayoutNamespaced, "reg:5000/p/ns-a/app:" + tag, "reg:5000/p/ns-a:1", false},
		{LayoutSingle, "reg:5000/all:app-" + tag, "reg:5000/all:app-fedcba987654", true},
		{LayoutSingle, "reg:5000/all:app-" + tag, "reg:5000/all:app-b-" + tag, false},
		{LayoutSingle, "reg:5000/all:app-b-" + tag, "reg:5000/all:app-" + tag, false},
		{LayoutSingle, "reg:5000/all:app-" + tag, "reg:5000/all:app-latest", false},
		{LayoutSingle, "reg:5000/all:app-" + tag, "reg:5000/all:app-" + tag + "@sha256:" + strings.Repeat("a", 64), false},
		{LayoutSingle, "reg:5000/all:app-" + tag, "reg:5000/all@sha256:" + strings.Repeat("a", 64), false},
		{LayoutSingle, "reg:5000/all:app-" + tag, "reg:5000/other:app-" + tag, false},
		{LayoutPrefix, "reg:5000/team/app:" + tag, "not a reference", false},
	} {
		if got := c.layout.Owns(c.target, c.image); got != c.want {
			t.Errorf("%s: Owns(%s, %s) = %v, want %v", c.layout, c.target, c.image, got, c.want)
		}
	}
}
