package dockerfile

import (
	"regexp"
	"strings"
)

// The accepted conda MatchSpec forms (conda's "standard specification"):
//
//	[channel[/subdir]::]name[version[build]][[key=value,...]]
//
// where version is "=v", "=v=build", a constraint list such as ">=1.26,<2"
// or "1.26.*|1.27", or " v" after a space, and build follows a space or '='.
// Versions are kept to conda's version characters; spaces only separate the
// name, version and build.
var (
	condaNameRE    = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)
	condaVersionRE = regexp.MustCompile(`^[A-Za-z0-9_.*+!]+$`)
	condaBuildRE   = regexp.MustCompile(`^[A-Za-z0-9_.*+]+$`)
	// One constraint: optional operator, then a version.
	condaConstraintRE = regexp.MustCompile(`^(?:==|!=|<=|>=|~=|<|>|=)?[A-Za-z0-9_.*+!]+$`)
	condaBracketKeyRE = regexp.MustCompile(`^(?:version|build|build_number|channel|subdir|md5|sha256)$`)
	condaBracketValRE = regexp.MustCompile(`^[A-Za-z0-9_.*+!<>=,|/:~ -]+$`)
)

func validateCondaEntry(s string) *entryError {
	const form = "must be a conda match spec such as numpy, numpy>=1.26,<2, tensorflow=1.13* or conda-forge::numpy>=1.26"
	rest := s
	if i := strings.Index(rest, "::"); i >= 0 {
		if !condaChannelRE.MatchString(rest[:i]) {
			return &entryError{reason: form + ": the channel before '::' must be a channel name such as conda-forge (channel URLs are a controller setting: --conda-channel)"}
		}
		rest = rest[i+2:]
	}
	if strings.HasSuffix(rest, "]") {
		open := strings.IndexByte(rest, '[')
		if open < 0 {
			return &entryError{reason: form + ": unbalanced ']'"}
		}
		if reason := condaBracketProblem(rest[open+1 : len(rest)-1]); reason != "" {
			return &entryError{reason: form + ": " + reason}
		}
		rest = rest[:open]
	}
	end := strings.IndexAny(rest, " =<>!~")
	if end < 0 {
		end = len(rest)
	}
	name, vb := rest[:end], rest[end:]
	if !condaNameRE.MatchString(name) {
		return &entryError{reason: form + ": the package name holds letters, digits, '_', '.', '-' and starts with a letter, digit or '_'"}
	}
	if strings.HasSuffix(name, ".tar.bz2") || strings.HasSuffix(name, ".conda") {
		return &entryError{reason: "must name a package, not a package file: conda would read it as a file path"}
	}
	if vb == "" {
		return nil
	}
	if reason := condaVersionBuildProblem(vb); reason != "" {
		return &entryError{reason: form + ": " + reason}
	}
	return nil
}

func condaVersionBuildProblem(vb string) string {
	var version, build string
	switch {
	case vb[0] == ' ':
		// "name version [build]"
		fields := strings.Split(vb[1:], " ")
		if len(fields) > 2 {
			return "expected at most a version and a build string, separated by single spaces"
		}
		version = fields[0]
		if len(fields) == 2 {
			build = fields[1]
			if build == "" {
				return "expected a build string after the space"
			}
		}
	case vb[0] == '=' && (len(vb) == 1 || vb[1] != '='):
		// "name=version[=build]"
		v, b, hasBuild := strings.Cut(vb[1:], "=")
		version = v
		if hasBuild {
			if b == "" {
				return "expected a build string after the second '='"
			}
			build = b
		}
		if !condaVersionRE.MatchString(version) {
			return "the version after '=' holds letters, digits and . _ * + !"
		}
		return condaBuildStringProblem(build)
	default:
		// "name>=1,<2[ build]"
		v, b, hasBuild := strings.Cut(vb, " ")
		version = v
		if hasBuild {
			if b == "" {
				return "expected a build string after the space"
			}
			build = b
		}
	}
	if version == "" {
		return "expected a version"
	}
	for _, alt := range strings.Split(version, "|") {
		for _, c := range strings.Split(alt, ",") {
			if !condaConstraintRE.MatchString(c) {
				return "each version constraint is an optional operator (==, !=, <, <=, >, >=, ~=, =) and a version, joined by ',' (and) or '|' (or)"
			}
		}
	}
	return condaBuildStringProblem(build)
}

func condaBuildStringProblem(build string) string {
	if build != "" && !condaBuildRE.MatchString(build) {
		return "the build string holds letters, digits and . _ * +"
	}
	return ""
}

func condaBracketProblem(inner string) string {
	if inner == "" {
		return "empty brackets"
	}
	for _, kv := range splitBracket(inner) {
		key, val, ok := strings.Cut(kv, "=")
		if !ok || !condaBracketKeyRE.MatchString(key) {
			return "bracket keys are version, build, build_number, channel, subdir, md5, sha256, written key=value"
		}
		if len(val) >= 2 && (val[0] == '\'' || val[0] == '"') && val[len(val)-1] == val[0] {
			val = val[1 : len(val)-1]
		} else if strings.ContainsAny(val, " ,") {
			return "a bracket value with spaces or commas must be quoted"
		}
		if !condaBracketValRE.MatchString(val) {
			return "a bracket value holds letters, digits and _ . * + ! < > = , | / : ~ - and spaces"
		}
	}
	return ""
}

// splitBracket splits key=value pairs at commas outside quotes.
func splitBracket(s string) []string {
	var out []string
	var quote byte
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == ',':
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}
