package dockerfile

import (
	"regexp"
	"strings"
)

// Debian policy 5.6.1 and 5.6.12: package names are lowercase alphanumerics
// and + - . (at least two characters, starting with an alphanumeric); a
// version is [epoch:]upstream_version[-debian_revision].
var (
	aptNameRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)
	aptArchRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	aptReleaseRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9.+~_-]*$`)
	aptEpochRE    = regexp.MustCompile(`^[0-9]+$`)
	aptUpstreamRE = regexp.MustCompile(`^[0-9][A-Za-z0-9.+~-]*$`)
	aptRevisionRE = regexp.MustCompile(`^[A-Za-z0-9+.~]+$`)
)

// validateAptEntry accepts the forms apt-get install takes for a package:
// name, name:arch, and either =version or /release after them.
func validateAptEntry(s string) *entryError {
	rest := s
	var version, release string
	hasVersion, hasRelease := false, false
	if i := strings.IndexByte(rest, '='); i >= 0 {
		rest, version, hasVersion = rest[:i], rest[i+1:], true
	} else if i := strings.IndexByte(rest, '/'); i >= 0 {
		rest, release, hasRelease = rest[:i], rest[i+1:], true
	}
	name, arch, hasArch := strings.Cut(rest, ":")
	if !aptNameRE.MatchString(name) {
		return &entryError{reason: "package name must follow Debian policy: at least two characters of a-z, 0-9, '+', '-', '.', starting with a letter or digit (forms: name, name=version, name:arch, name/release)"}
	}
	if strings.HasSuffix(name, "-") {
		return &entryError{reason: "package name must not end with '-': apt-get would remove the package instead of installing it"}
	}
	if strings.HasSuffix(name, ".deb") {
		return &entryError{reason: "package name must not end with .deb: apt-get would read it as a local package file"}
	}
	if hasArch && !aptArchRE.MatchString(arch) {
		return &entryError{reason: "architecture after ':' must be a Debian architecture name such as amd64"}
	}
	if hasVersion {
		if reason := debianVersionProblem(version); reason != "" {
			return &entryError{reason: reason}
		}
	}
	if hasRelease && !aptReleaseRE.MatchString(release) {
		return &entryError{reason: "release after '/' must be a suite or codename such as bookworm-backports"}
	}
	return nil
}

func debianVersionProblem(v string) string {
	const form = "version after '=' must be [epoch:]upstream_version[-debian_revision] per Debian policy, e.g. 1:2.3-4~deb12u1"
	upstream := v
	if epoch, after, ok := strings.Cut(v, ":"); ok {
		if !aptEpochRE.MatchString(epoch) {
			return form + " (the epoch must be a number)"
		}
		upstream = after
	}
	revision := ""
	hasRevision := false
	if i := strings.LastIndexByte(upstream, '-'); i >= 0 {
		upstream, revision, hasRevision = upstream[:i], upstream[i+1:], true
	}
	if !aptUpstreamRE.MatchString(upstream) {
		return form + " (the upstream version starts with a digit and holds only alphanumerics and . + ~ -)"
	}
	if hasRevision && !aptRevisionRE.MatchString(revision) {
		return form + " (the revision holds only alphanumerics and + . ~)"
	}
	return ""
}
