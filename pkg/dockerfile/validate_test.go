package dockerfile

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

func TestValidatePackagesAccepts(t *testing.T) {
	accepted := Packages{
		Apt: []string{
			"curl", "g++", "libc6:amd64", "curl/bookworm-backports", "libc6:amd64/bookworm",
			"nginx=1.22.1-9", "tzdata=1:2.3-4~deb12u1", "libssl3=3.0.11-1~deb12u2",
			"python3.11", "libstdc++6", "lib32z1:i386=1:1.2.13.dfsg-1", "ca-certificates",
		},
		Pip: []string{
			"requests", "requests>=2.31", "requests[socks]>=2.31,<3", "numpy==1.26.*",
			`pywin32>=1.0; sys_platform == "win32"`, "pkg @ https://example.com/pkg-1.0.whl",
			"Django~=4.2.1", "torch==2.1.0+cu118", "foo===1.0-weird", "foo!=1.5.*",
			"requests (>=2.31, <3)", "requests [ socks , security ] >= 2.31",
			`name; python_version < "3.8" and (os_name == 'posix' or extra == "x")`,
			`name; "linux" in sys_platform`, `name; platform_machine not in "x86_64 aarch64"`,
			"pkg @ git+https://example.com/repo.git@v1.0 ; python_version >= '3.8'",
			"zope.interface>=5", "v>=v1.0", "a", "pre>=1.0rc1", "post==1.0.post1.dev2", "epoch>=1!2.0",
			`shell; sys_platform == "$(id)` + "`id`" + `;rm -rf /|&<>"`,
		},
		Conda: []string{
			"numpy", "tensorflow=1.13*", "conda-forge::numpy>=1.26", "numpy>=1.26,<2",
			"numpy=1.26=py311_0", "numpy 1.26.*", "numpy 1.26 py311*", "python>=3.8|<3",
			"pkgs/main::numpy", "conda-forge/linux-64::numpy==1.26.4", "numpy==1.26.4",
			"numpy[version='>=1.26,<2']", "numpy[build=py311*,channel=conda-forge]", "_libgcc_mutex",
			"numpy>=1.26 py311*", "ca-certificates", "numpy!=1.26.0",
		},
	}
	if errs := ValidatePackages(accepted, field.NewPath("spec", "packages")); len(errs) > 0 {
		for _, e := range errs {
			t.Errorf("unexpected rejection: %v", e)
		}
	}
}

func TestValidatePackagesRejects(t *testing.T) {
	cases := []struct {
		manager string
		entry   string
		reason  string
	}{
		// Shared rules.
		{"apt", "", "must not be empty"},
		{"pip", "   ", "must not be blank"},
		{"conda", " numpy", "must not begin or end with whitespace"},
		{"pip", "requests ", "must not begin or end with whitespace"},
		{"apt", "curl\nrm", "control characters"},
		{"pip", "requests\t>=2", "control characters"},
		{"pip", "reqüests", "only ASCII"},
		{"pip", "requests\xff", "only ASCII"},
		{"apt", "-y", "command-line options are not accepted"},
		{"apt", "--allow-unauthenticated", "--apt-mirror"},
		{"pip", "--index-url https://evil/simple", "--pip-index-url"},
		{"pip", "-r req.txt", "requirement files are not supported"},
		{"pip", "-e git+https://x/y.git", "command-line options"},
		{"conda", "-c conda-forge", "channel::name"},
		{"conda", "--override-channels", "--conda-channel"},
		// apt.
		{"apt", "Curl", "Debian policy"},
		{"apt", "c", "Debian policy"},
		{"apt", "curl;id", "Debian policy"},
		{"apt", "$(id)", "Debian policy"},
		{"apt", "foo-", "remove the package"},
		{"apt", "foo.deb", "local package file"},
		{"apt", "libc6:AMD64", "architecture"},
		{"apt", "curl=", "version after '='"},
		{"apt", "curl=abc", "starts with a digit"},
		{"apt", "curl=x:1.0", "epoch must be a number"},
		{"apt", "curl=1.0-", "revision"},
		{"apt", "curl=1.0-a_b", "revision"},
		{"apt", "curl/", "release after '/'"},
		{"apt", "curl/bookworm backports", "release after '/'"},
		{"apt", "curl*", "Debian policy"},
		// pip.
		{"pip", "requests>=", "expected a version"},
		{"pip", "requests>=2.*", "PEP 440"},
		{"pip", "requests~=2", "PEP 440"},
		{"pip", "requests<2.0+local", "PEP 440"},
		{"pip", "requests 2.0", "unexpected"},
		{"pip", "requests;", "marker variable"},
		{"pip", `requests; os == "x"`, "marker variable"},
		{"pip", `requests; sys_platform = "x"`, "marker operator"},
		{"pip", `requests; sys_platform == "x`, "unterminated"},
		{"pip", `requests; sys_platform == "a\b"`, "not allowed in a marker string"},
		{"pip", "requests[socks", "extras"},
		{"pip", "requests[]]", "unexpected"},
		{"pip", "-requests", "command-line options"},
		{"pip", "requests-", "project name"},
		{"pip", "$(id)", "project name"},
		{"pip", "`id`", "project name"},
		{"pip", ";rm -rf /", "project name"},
		{"pip", "pkg @ ftp://example.com/x.whl", "URL scheme"},
		{"pip", "pkg @ file:///tmp/x.whl", "absolute URL"},
		{"pip", "pkg @ https://example.com/x.whl ;", "marker variable"},
		{"pip", "pkg @ https://example.com/x.whl python_version", "whitespace and ';'"},
		{"pip", "./local/dir", "project name"},
		{"pip", "pkg-1.0-py3-none-any.whl", "local file"},
		{"pip", "pkg.tar.gz[extra]", "local file"},
		{"pip", "requests>=2.31 # comment", "unexpected"},
		// conda.
		{"conda", "numpy>=", "version constraint"},
		{"conda", "numpy>=1.26,", "version constraint"},
		{"conda", "numpy  1.26", "expected a version"},
		{"conda", "numpy 1.26 py 311", "at most a version and a build"},
		{"conda", "numpy=1.26=", "build string after the second '='"},
		{"conda", "numpy=1-26", "version after '='"},
		{"conda", "https://repo.example.com/conda::numpy", "channel before '::'"},
		{"conda", "numpy[version=1.2", "package name"},
		{"conda", "numpy[foo=bar]", "bracket keys"},
		{"conda", "numpy[version=>=1,<2]", "bracket keys"},
		{"conda", "numpy[version=>=1 <2]", "must be quoted"},
		{"conda", "numpy#comment", "package name"},
		{"conda", "numpy-1.0-py_0.tar.bz2", "package file"},
		{"conda", "feature@", "package name"},
		{"conda", "$(id)", "package name"},
		{"conda", "numpy;id", "package name"},
		{"conda", "numpy 1.26 py311;id", "build string"},
	}
	for _, tc := range cases {
		t.Run(tc.manager+"/"+tc.entry, func(t *testing.T) {
			var p Packages
			list := []string{"ok-entry", tc.entry}
			switch tc.manager {
			case "apt":
				p.Apt = list
			case "pip":
				p.Pip = list
			case "conda":
				p.Conda = list
			}
			errs := ValidatePackages(p, field.NewPath("spec", "packages"))
			if len(errs) != 1 {
				t.Fatalf("want exactly one error, got %v", errs)
			}
			wantField := "spec.packages." + tc.manager + "[1]"
			if errs[0].Field != wantField {
				t.Errorf("field = %q, want %q", errs[0].Field, wantField)
			}
			if msg := errs[0].Error(); !strings.Contains(msg, tc.reason) {
				t.Errorf("error %q does not mention %q", msg, tc.reason)
			}
		})
	}
}

func TestValidatePackagesLimits(t *testing.T) {
	long := strings.Repeat("a", MaxEntryLength+1)
	errs := ValidatePackages(Packages{Pip: []string{long}}, field.NewPath("p"))
	if len(errs) != 1 || errs[0].Type != field.ErrorTypeTooLong || errs[0].Field != "p.pip[0]" {
		t.Fatalf("want one TooLong error at p.pip[0], got %v", errs)
	}
	if strings.Contains(errs[0].Error(), long) {
		t.Errorf("a too-long value should not be repeated in the error")
	}
	if errs := ValidatePackages(Packages{Pip: []string{strings.Repeat("a", MaxEntryLength)}}, field.NewPath("p")); len(errs) != 0 {
		t.Errorf("an entry of exactly MaxEntryLength must pass: %v", errs)
	}
	many := make([]string, MaxPackagesPerList+1)
	for i := range many {
		many[i] = "pkg"
	}
	errs = ValidatePackages(Packages{Apt: many}, field.NewPath("p"))
	if len(errs) != 1 || errs[0].Type != field.ErrorTypeTooMany || errs[0].Field != "p.apt" {
		t.Fatalf("want one TooMany error at p.apt, got %v", errs)
	}
}

func TestValidatePackagesReportsEveryBadEntry(t *testing.T) {
	errs := ValidatePackages(Packages{
		Apt:   []string{"curl", "BAD", "also bad"},
		Pip:   []string{"-r x"},
		Conda: []string{"ok", ""},
	}, field.NewPath("spec", "packages"))
	var got []string
	for _, e := range errs {
		got = append(got, e.Field)
	}
	want := []string{"spec.packages.apt[1]", "spec.packages.apt[2]", "spec.packages.conda[1]", "spec.packages.pip[0]"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("fields = %v, want %v", got, want)
	}
}

func TestValidatePipURLCredentialsNotEchoed(t *testing.T) {
	errs := ValidatePackages(Packages{Pip: []string{"pkg @ https://user:s3cret@example.com/pkg.whl"}}, field.NewPath("p"))
	if len(errs) != 1 || errs[0].Field != "p.pip[0]" {
		t.Fatalf("want one error at p.pip[0], got %v", errs)
	}
	if msg := errs[0].Error(); strings.Contains(msg, "s3cret") || !strings.Contains(msg, "credentials") {
		t.Errorf("error must explain and must not echo the credential: %q", msg)
	}
}

func TestValidateSources(t *testing.T) {
	good := Sources{
		AptMirror:         "http://mirror.internal:8080/apt/",
		PipIndexURL:       "https://pypi.internal/simple",
		PipExtraIndexURLs: []string{"https://extra.internal/simple/", "http://10.0.0.5:3141/root/pypi/+simple/"},
		PipTrustedHosts:   []string{"pypi.internal", "10.0.0.5:3141", "[fd00::1]:8080"},
		CondaChannels:     []string{"conda-forge", "pkgs/main", "https://conda.internal/channels/ml"},
	}
	if errs := ValidateSources(good, field.NewPath("sources")); len(errs) > 0 {
		t.Fatalf("unexpected errors: %v", errs)
	}
	cases := []struct {
		s      Sources
		field  string
		reason string
		secret string
	}{
		{Sources{AptMirror: "ftp://mirror/debian"}, "sources.aptMirror", "http:// or https://", ""},
		{Sources{AptMirror: "http://mirror/debian?x=1"}, "sources.aptMirror", "query or fragment", ""},
		{Sources{AptMirror: "mirror.internal"}, "sources.aptMirror", "http:// or https://", ""},
		{Sources{AptMirror: "http://u:hunter2@mirror/debian"}, "sources.aptMirror", "credentials", "hunter2"},
		{Sources{PipIndexURL: "https://__token__:pypi-AgEIcHlwaS@pypi.internal/simple"}, "sources.pipIndexURL", "credentials", "pypi-AgEIcHlwaS"},
		{Sources{PipIndexURL: "https://pypi.internal/simple --trusted-host evil"}, "sources.pipIndexURL", "whitespace", "evil"},
		{Sources{PipExtraIndexURLs: []string{"https://ok/simple", "https:///nohost"}}, "sources.pipExtraIndexURLs[1]", "with a host", ""},
		{Sources{PipTrustedHosts: []string{"-evil"}}, "sources.pipTrustedHosts[0]", "host name", ""},
		{Sources{PipTrustedHosts: []string{"host name"}}, "sources.pipTrustedHosts[0]", "host name", ""},
		{Sources{CondaChannels: []string{"-c"}}, "sources.condaChannels[0]", "channel name", ""},
		{Sources{CondaChannels: []string{"https://conda.anaconda.org/t/tk-1234abcd/private"}}, "sources.condaChannels[0]", "access token", "tk-1234abcd"},
	}
	for _, tc := range cases {
		errs := ValidateSources(tc.s, field.NewPath("sources"))
		if len(errs) != 1 {
			t.Errorf("%+v: want one error, got %v", tc.s, errs)
			continue
		}
		msg := errs[0].Error()
		if errs[0].Field != tc.field || !strings.Contains(msg, tc.reason) {
			t.Errorf("%+v: got %q, want field %s and reason %q", tc.s, msg, tc.field, tc.reason)
		}
		if tc.secret != "" && strings.Contains(msg, tc.secret) {
			t.Errorf("error echoes a secret: %q", msg)
		}
	}
	many := make([]string, MaxSourceURLs+1)
	for i := range many {
		many[i] = "conda-forge"
	}
	if errs := ValidateSources(Sources{CondaChannels: many}, field.NewPath("s")); len(errs) != 1 || errs[0].Type != field.ErrorTypeTooMany {
		t.Errorf("want one TooMany error, got %v", errs)
	}
}

func TestValidateBaseImage(t *testing.T) {
	for _, ref := range []string{
		"ubuntu", "ubuntu:22.04", "localhost:5000/x", "localhost:5000/team/x:1.0",
		"gcr.io/my-private-repo/base", "jupyter/base-notebook@sha256:" + strings.Repeat("a", 64),
		"registry.example.com:443/a/b/c:v1",
	} {
		if errs := ValidateBaseImage(ref, field.NewPath("spec", "baseImage")); len(errs) > 0 {
			t.Errorf("%q: unexpected errors %v", ref, errs)
		}
	}
	cases := []struct{ ref, reason string }{
		{"", "Required"},
		{"Ubuntu", "must be an image reference"},
		{"ubuntu:22.04 ", "whitespace"},
		{"ubuntu:latest@sha256:" + strings.Repeat("a", 64), "both a tag and a digest"},
		{"ubuntu;id", "must be an image reference"},
		{"ubuntu:$TAG", "must be an image reference"},
		{strings.Repeat("a", 64), "must be an image reference"},
		{"http://registry/x", "must be an image reference"},
	}
	for _, tc := range cases {
		errs := ValidateBaseImage(tc.ref, field.NewPath("spec", "baseImage"))
		if len(errs) != 1 || errs[0].Field != "spec.baseImage" || !strings.Contains(errs[0].Error(), tc.reason) {
			t.Errorf("%q: got %v, want one spec.baseImage error mentioning %q", tc.ref, errs, tc.reason)
		}
	}
}

func TestValidateUser(t *testing.T) {
	for _, u := range []string{"", "jovyan", "1000", "1000:100", "jovyan:users", "_apt", "nb.user"} {
		if errs := ValidateUser(u, field.NewPath("user")); len(errs) > 0 {
			t.Errorf("%q: unexpected errors %v", u, errs)
		}
	}
	for _, u := range []string{"$USER", "a b", "a:b:c", "x\n", "1000:", ":100", "${HOME}", "-1", "root\\"} {
		errs := ValidateUser(u, field.NewPath("user"))
		if len(errs) != 1 || errs[0].Field != "user" || !strings.Contains(errs[0].Error(), "user name or uid") {
			t.Errorf("%q: got %v, want one user error", u, errs)
		}
	}
}
