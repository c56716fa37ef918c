package dockerfile

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/containers/image/v5/docker/reference"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Limits the CRD schema mirrors (maxItems / maxLength), so the API server
// rejects oversized specs before the controller sees them.
const (
	// MaxPackagesPerList bounds each of packages.apt, packages.pip and packages.conda.
	MaxPackagesPerList = 256
	// MaxEntryLength bounds one package entry, in bytes.
	MaxEntryLength = 512
	// MaxSourceURLs bounds each list in Sources.
	MaxSourceURLs = 16
	// MaxURLLength bounds one URL or host in Sources, in bytes.
	MaxURLLength = 2048
	// MaxUserLength bounds the USER value restored after the installs.
	MaxUserLength = 256
)

// Hints shown when an entry looks like a command-line option: package
// managers' options are not part of a package list, sources are controller
// settings.
const (
	aptOptionHint   = "command-line options are not accepted, list package names only (an apt mirror is a controller setting: --apt-mirror)"
	pipOptionHint   = "command-line options are not accepted, list one requirement per entry (package indexes are controller settings: --pip-index-url, --pip-extra-index-url, --pip-trusted-host; requirement files are not supported)"
	condaOptionHint = "command-line options are not accepted; to pick a channel write channel::name (e.g. conda-forge::numpy), or ask for it as a controller setting (--conda-channel)"
)

// ValidatePackages checks every entry against its package manager's grammar.
// Each problem is reported at its own index; nothing is dropped or trimmed.
func ValidatePackages(p Packages, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	errs = append(errs, validateList(p.Apt, fldPath.Child("apt"), aptOptionHint, validateAptEntry)...)
	errs = append(errs, validateList(p.Conda, fldPath.Child("conda"), condaOptionHint, validateCondaEntry)...)
	errs = append(errs, validateList(p.Pip, fldPath.Child("pip"), pipOptionHint, validatePipEntry)...)
	return errs
}

// entryError is a grammar violation; omitValue keeps the entry out of the
// message when it may carry a credential.
type entryError struct {
	reason    string
	omitValue bool
}

func validateList(list []string, fldPath *field.Path, optionHint string, grammar func(string) *entryError) field.ErrorList {
	var errs field.ErrorList
	if len(list) > MaxPackagesPerList {
		errs = append(errs, field.TooMany(fldPath, len(list), MaxPackagesPerList))
	}
	for i, s := range list {
		p := fldPath.Index(i)
		if reason := commonEntryProblem(s); reason != "" {
			if len(s) > MaxEntryLength {
				errs = append(errs, field.TooLong(p, s, MaxEntryLength))
				continue
			}
			errs = append(errs, field.Invalid(p, s, reason))
			continue
		}
		if strings.HasPrefix(s, "-") {
			errs = append(errs, field.Invalid(p, s, optionHint))
			continue
		}
		if e := grammar(s); e != nil {
			if e.omitValue {
				errs = append(errs, field.Invalid(p, field.OmitValueType{}, e.reason))
			} else {
				errs = append(errs, field.Invalid(p, s, e.reason))
			}
		}
	}
	return errs
}

// commonEntryProblem holds the rules shared by all three managers. Every
// grammar involved is ASCII, so anything else is rejected up front; that also
// keeps invalid UTF-8 away from the JSON encoding of RUN instructions.
func commonEntryProblem(s string) string {
	switch {
	case s == "":
		return "must not be empty"
	case len(s) > MaxEntryLength:
		return "too long"
	case strings.TrimSpace(s) == "":
		return "must not be blank"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f {
			return "must not contain control characters or line breaks"
		}
		if c >= utf8.RuneSelf {
			return "must contain only ASCII characters"
		}
	}
	if s[0] == ' ' || s[len(s)-1] == ' ' {
		return "must not begin or end with whitespace (entries are used exactly as written)"
	}
	return ""
}

// ValidateSources checks the controller's package source settings. URLs are
// never echoed in errors: an index URL is the usual place for a credential.
func ValidateSources(s Sources, fldPath *field.Path) field.ErrorList {
	var errs field.ErrorList
	if s.AptMirror != "" {
		if reason := urlProblem(s.AptMirror, true); reason != "" {
			errs = append(errs, field.Invalid(fldPath.Child("aptMirror"), field.OmitValueType{}, reason))
		}
	}
	if s.PipIndexURL != "" {
		if reason := urlProblem(s.PipIndexURL, false); reason != "" {
			errs = append(errs, field.Invalid(fldPath.Child("pipIndexURL"), field.OmitValueType{}, reason))
		}
	}
	extra := fldPath.Child("pipExtraIndexURLs")
	if len(s.PipExtraIndexURLs) > MaxSourceURLs {
		errs = append(errs, field.TooMany(extra, len(s.PipExtraIndexURLs), MaxSourceURLs))
	}
	for i, u := range s.PipExtraIndexURLs {
		if reason := urlProblem(u, false); reason != "" {
			errs = append(errs, field.Invalid(extra.Index(i), field.OmitValueType{}, reason))
		}
	}
	hosts := fldPath.Child("pipTrustedHosts")
	if len(s.PipTrustedHosts) > MaxSourceURLs {
		errs = append(errs, field.TooMany(hosts, len(s.PipTrustedHosts), MaxSourceURLs))
	}
	for i, h := range s.PipTrustedHosts {
		if !hostPortRE.MatchString(h) {
			errs = append(errs, field.Invalid(hosts.Index(i), field.OmitValueType{}, "must be a host name or IP address with an optional :port"))
		}
	}
	channels := fldPath.Child("condaChannels")
	if len(s.CondaChannels) > MaxSourceURLs {
		errs = append(errs, field.TooMany(channels, len(s.CondaChannels), MaxSourceURLs))
	}
	for i, c := range s.CondaChannels {
		if reason := condaChannelProblem(c); reason != "" {
			errs = append(errs, field.Invalid(channels.Index(i), field.OmitValueType{}, reason))
		}
	}
	return errs
}

var (
	hostPortRE = regexp.MustCompile(`^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$`)
	// A conda channel name, optionally with a subdir or label path (pkgs/main, conda-forge/label/dev).
	condaChannelRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$`)
)

// urlProblem validates an http(s) URL from controller settings. Sources end
// up in the Dockerfile and so in the image's history: credentials there would
// leak to everyone who can pull the image.
func urlProblem(s string, mirror bool) string {
	if len(s) > MaxURLLength {
		return fmt.Sprintf("may not be more than %d bytes", MaxURLLength)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= 0x20 || c >= 0x7f {
			return "must not contain whitespace, control or non-ASCII characters"
		}
	}
	u, err := url.Parse(s)
	if err != nil {
		return "must be a valid URL"
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "must be an http:// or https:// URL"
	}
	if u.User != nil {
		return "must not contain credentials: URLs are recorded in the image history; give the build access by network policy or a credential-free proxy instead"
	}
	if u.Host == "" || u.Opaque != "" {
		return "must be an absolute URL with a host"
	}
	if mirror && (u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(s, "?") || strings.HasSuffix(s, "#")) {
		return "must not have a query or fragment: its path prefixes the archive paths"
	}
	if hasTokenPath(u.Path) {
		return "must not contain an access token (/t/<token>/): URLs are recorded in the image history"
	}
	return ""
}

// hasTokenPath spots anaconda.org-style tokens, which live in the path.
func hasTokenPath(p string) bool {
	segs := strings.Split(p, "/")
	for i := 0; i+1 < len(segs); i++ {
		if segs[i] == "t" && segs[i+1] != "" {
			return true
		}
	}
	return false
}

func condaChannelProblem(c string) string {
	if strings.HasPrefix(c, "http://") || strings.HasPrefix(c, "https://") {
		return urlProblem(c, false)
	}
	if len(c) > MaxURLLength || !condaChannelRE.MatchString(c) {
		return "must be a channel name (e.g. conda-forge) or an http(s) URL"
	}
	return ""
}

// ValidateBaseImage accepts what buildah can pull: a named reference with a
// tag or a digest, not both (containers/image refuses tag+digest). Registry
// detection is the reference library's: localhost:5000/x stays on localhost:5000.
func ValidateBaseImage(ref string, fldPath *field.Path) field.ErrorList {
	if ref == "" {
		return field.ErrorList{field.Required(fldPath, "a base image reference is required")}
	}
	if len(ref) > MaxURLLength {
		return field.ErrorList{field.TooLong(fldPath, ref, MaxURLLength)}
	}
	if ref != strings.TrimSpace(ref) {
		return field.ErrorList{field.Invalid(fldPath, ref, "must not begin or end with whitespace")}
	}
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return field.ErrorList{field.Invalid(fldPath, ref, "must be an image reference such as ubuntu:22.04 or registry.example.com/team/image@sha256:<digest>: "+err.Error())}
	}
	_, tagged := named.(reference.NamedTagged)
	_, digested := named.(reference.Canonical)
	if tagged && digested {
		return field.ErrorList{field.Invalid(fldPath, ref, "must not have both a tag and a digest: keep only the digest")}
	}
	return nil
}

var (
	userPartRE = regexp.MustCompile(`^(?:[0-9]+|[A-Za-z_][A-Za-z0-9_.-]*)$`)
)

// ValidateUser checks the base image's configured user. It lands in a USER
// instruction, which expands $variables, so only plain names and ids pass.
func ValidateUser(user string, fldPath *field.Path) field.ErrorList {
	if user == "" {
		return nil
	}
	if len(user) > MaxUserLength {
		return field.ErrorList{field.TooLong(fldPath, user, MaxUserLength)}
	}
	parts := strings.Split(user, ":")
	ok := len(parts) <= 2
	for _, part := range parts {
		ok = ok && userPartRE.MatchString(part)
	}
	if !ok {
		return field.ErrorList{field.Invalid(fldPath, user, "must be a user name or uid, optionally followed by :group or :gid")}
	}
	return nil
}

// Validate checks all inputs; field paths are relative to Inputs.
func Validate(in Inputs) field.ErrorList {
	var errs field.ErrorList
	errs = append(errs, ValidateBaseImage(in.BaseImage, field.NewPath("baseImage"))...)
	errs = append(errs, ValidatePackages(in.Packages, field.NewPath("packages"))...)
	errs = append(errs, ValidateSources(in.Sources, field.NewPath("sources"))...)
	errs = append(errs, ValidateUser(in.User, field.NewPath("user"))...)
	return errs
}
