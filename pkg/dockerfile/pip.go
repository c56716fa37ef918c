package dockerfile

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// PEP 440 version pieces (Appendix B), assembled per specifier operator the
// way PEP 440 "Version specifiers" restricts them.
const (
	pep440Epoch   = `(?:[0-9]+!)?`
	pep440Release = `[0-9]+(?:\.[0-9]+)*`
	pep440Pre     = `(?:[-_.]?(?:alpha|beta|preview|pre|a|b|c|rc)[-_.]?[0-9]*)?`
	pep440Post    = `(?:-[0-9]+|[-_.]?(?:post|rev|r)[-_.]?[0-9]*)?`
	pep440Dev     = `(?:[-_.]?dev[-_.]?[0-9]*)?`
	pep440Local   = `(?:\+[a-z0-9]+(?:[-_.][a-z0-9]+)*)?`
)

var (
	pep508NameRE = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$`)
	// Public versions, for < <= > >=.
	pep440PublicRE = regexp.MustCompile(`(?i)^v?` + pep440Epoch + pep440Release + pep440Pre + pep440Post + pep440Dev + `$`)
	// Local versions are allowed for == and !=.
	pep440LocalRE = regexp.MustCompile(`(?i)^v?` + pep440Epoch + pep440Release + pep440Pre + pep440Post + pep440Dev + pep440Local + `$`)
	// Prefix matching (==1.26.*) is for == and != only.
	pep440PrefixRE = regexp.MustCompile(`(?i)^v?` + pep440Epoch + pep440Release + `\.\*$`)
	// ~= needs at least two release segments.
	pep440CompatRE = regexp.MustCompile(`(?i)^v?` + pep440Epoch + `[0-9]+(?:\.[0-9]+)+` + pep440Pre + pep440Post + pep440Dev + `$`)
	// === compares strings; PEP 508 still limits the characters.
	pep508VersionRE = regexp.MustCompile(`^[A-Za-z0-9._*+!-]+$`)
)

// PEP 508 environment marker variables, plus the ones later packaging
// specifications added (extras, dependency_groups).
var pep508MarkerVars = map[string]bool{
	"python_version": true, "python_full_version": true, "os_name": true, "sys_platform": true,
	"platform_release": true, "platform_system": true, "platform_version": true,
	"platform_machine": true, "platform_python_implementation": true,
	"implementation_name": true, "implementation_version": true, "extra": true,
	"extras": true, "dependency_groups": true,
}

// URL schemes pip can fetch a direct reference from without local state.
var pipURLSchemes = map[string]bool{"https": true, "http": true, "git+https": true, "git+http": true}

// pep508 is a recursive-descent reader of the PEP 508 dependency
// specification grammar; it only checks, it builds nothing.
type pep508 struct {
	s   string
	pos int
}

type pep508Error struct {
	msg  string
	omit bool
}

func (e *pep508Error) Error() string { return e.msg }

func validatePipEntry(s string) *entryError {
	p := &pep508{s: s}
	if err := p.requirement(); err != nil {
		if pe, ok := err.(*pep508Error); ok {
			return &entryError{reason: "must be a PEP 508 requirement such as requests>=2.31 or requests[socks]>=2.31,<3: " + pe.msg, omitValue: pe.omit}
		}
		return &entryError{reason: err.Error()}
	}
	return nil
}

func (p *pep508) errorf(format string, args ...any) error {
	return &pep508Error{msg: fmt.Sprintf(format, args...) + fmt.Sprintf(" at offset %d", p.pos)}
}

func (p *pep508) eof() bool { return p.pos >= len(p.s) }

func (p *pep508) peek() byte {
	if p.eof() {
		return 0
	}
	return p.s[p.pos]
}

func (p *pep508) wsp() int {
	n := 0
	for !p.eof() && (p.s[p.pos] == ' ' || p.s[p.pos] == '\t') {
		p.pos++
		n++
	}
	return n
}

func (p *pep508) identifier() (string, bool) {
	start := p.pos
	for !p.eof() {
		c := p.s[p.pos]
		if isAlnum(c) || c == '.' || c == '-' || c == '_' {
			p.pos++
			continue
		}
		break
	}
	id := p.s[start:p.pos]
	if !pep508NameRE.MatchString(id) {
		p.pos = start
		return "", false
	}
	return id, true
}

// pip reads a bare name with one of these suffixes as a local archive path.
var pipArchiveSuffixes = []string{".whl", ".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".txz", ".tlz", ".tar.lz", ".tar.lzma"}

func (p *pep508) requirement() error {
	name, ok := p.identifier()
	if !ok {
		return p.errorf("expected a project name (letters, digits, '.', '-', '_', starting and ending with a letter or digit)")
	}
	for _, suffix := range pipArchiveSuffixes {
		if strings.HasSuffix(strings.ToLower(name), suffix) {
			return &pep508Error{msg: "a name ending in " + suffix + " is read by pip as a local file; use name @ https://.../file" + suffix + " for an archive"}
		}
	}
	p.wsp()
	if p.peek() == '[' {
		if err := p.extras(); err != nil {
			return err
		}
		p.wsp()
	}
	if p.peek() == '@' {
		p.pos++
		p.wsp()
		if err := p.url(); err != nil {
			return err
		}
		if p.eof() {
			return nil
		}
		if p.wsp() == 0 || p.peek() != ';' {
			return p.errorf("expected whitespace and ';' before an environment marker after a URL")
		}
		return p.quotedMarker()
	}
	if p.peek() == '(' {
		p.pos++
		if err := p.versionMany(); err != nil {
			return err
		}
		p.wsp()
		if p.peek() != ')' {
			return p.errorf("expected ')'")
		}
		p.pos++
	} else if c := p.peek(); c == '<' || c == '>' || c == '=' || c == '!' || c == '~' {
		if err := p.versionMany(); err != nil {
			return err
		}
	}
	p.wsp()
	if p.eof() {
		return nil
	}
	if p.peek() == ';' {
		return p.quotedMarker()
	}
	return p.errorf("unexpected %q", p.peek())
}

func (p *pep508) extras() error {
	p.pos++ // '['
	p.wsp()
	if p.peek() == ']' {
		p.pos++
		return nil
	}
	for {
		p.wsp()
		if _, ok := p.identifier(); !ok {
			return p.errorf("expected an extra name")
		}
		p.wsp()
		switch p.peek() {
		case ',':
			p.pos++
		case ']':
			p.pos++
			return nil
		default:
			return p.errorf("expected ',' or ']' in extras")
		}
	}
}

var pep440Ops = []string{"===", "==", "!=", "<=", ">=", "~=", "<", ">"}

func (p *pep508) versionCmp() (string, bool) {
	p.wsp()
	for _, op := range pep440Ops {
		if strings.HasPrefix(p.s[p.pos:], op) {
			p.pos += len(op)
			return op, true
		}
	}
	return "", false
}

func (p *pep508) versionMany() error {
	for {
		if err := p.versionOne(); err != nil {
			return err
		}
		save := p.pos
		p.wsp()
		if p.peek() != ',' {
			p.pos = save
			return nil
		}
		p.pos++
	}
}

func (p *pep508) versionOne() error {
	op, ok := p.versionCmp()
	if !ok {
		return p.errorf("expected a version operator (==, !=, <=, >=, <, >, ~=, ===)")
	}
	p.wsp()
	start := p.pos
	for !p.eof() {
		c := p.s[p.pos]
		if isAlnum(c) || strings.IndexByte("-_.*+!", c) >= 0 {
			p.pos++
			continue
		}
		break
	}
	v := p.s[start:p.pos]
	if v == "" {
		return p.errorf("expected a version after %q", op)
	}
	var valid bool
	switch op {
	case "===":
		valid = pep508VersionRE.MatchString(v)
	case "==", "!=":
		valid = pep440LocalRE.MatchString(v) || pep440PrefixRE.MatchString(v)
	case "~=":
		valid = pep440CompatRE.MatchString(v)
	default:
		valid = pep440PublicRE.MatchString(v)
	}
	if !valid {
		p.pos = start
		return p.errorf("%q is not a PEP 440 version valid with %q", v, op)
	}
	p.wsp()
	return nil
}

func (p *pep508) url() error {
	start := p.pos
	for !p.eof() && p.s[p.pos] != ' ' && p.s[p.pos] != '\t' {
		p.pos++
	}
	raw := p.s[start:p.pos]
	u, err := url.Parse(raw)
	if raw == "" || err != nil || u.Host == "" {
		p.pos = start
		return p.errorf("expected an absolute URL after '@'")
	}
	if u.User != nil {
		return &pep508Error{msg: "URL must not contain credentials: they would be recorded in the image history", omit: true}
	}
	if !pipURLSchemes[u.Scheme] {
		p.pos = start
		return p.errorf("URL scheme must be https, http, git+https or git+http")
	}
	return nil
}

func (p *pep508) quotedMarker() error {
	p.pos++ // ';'
	if err := p.markerOr(); err != nil {
		return err
	}
	p.wsp()
	if !p.eof() {
		return p.errorf("unexpected %q in environment marker", p.peek())
	}
	return nil
}

// keyword consumes word if it is next and not followed by an identifier character.
func (p *pep508) keyword(word string) bool {
	if !strings.HasPrefix(p.s[p.pos:], word) {
		return false
	}
	end := p.pos + len(word)
	if end < len(p.s) && (isAlnum(p.s[end]) || p.s[end] == '_' || p.s[end] == '.') {
		return false
	}
	p.pos = end
	return true
}

func (p *pep508) markerOr() error {
	if err := p.markerAnd(); err != nil {
		return err
	}
	for {
		save := p.pos
		p.wsp()
		if !p.keyword("or") {
			p.pos = save
			return nil
		}
		if err := p.markerAnd(); err != nil {
			return err
		}
	}
}

func (p *pep508) markerAnd() error {
	if err := p.markerExpr(); err != nil {
		return err
	}
	for {
		save := p.pos
		p.wsp()
		if !p.keyword("and") {
			p.pos = save
			return nil
		}
		if err := p.markerExpr(); err != nil {
			return err
		}
	}
}

func (p *pep508) markerExpr() error {
	p.wsp()
	if p.peek() == '(' {
		p.pos++
		if err := p.markerOr(); err != nil {
			return err
		}
		p.wsp()
		if p.peek() != ')' {
			return p.errorf("expected ')' in environment marker")
		}
		p.pos++
		return nil
	}
	if err := p.markerVar(); err != nil {
		return err
	}
	if err := p.markerOp(); err != nil {
		return err
	}
	return p.markerVar()
}

func (p *pep508) markerOp() error {
	p.wsp()
	if _, ok := p.versionCmp(); ok {
		return nil
	}
	if p.keyword("in") {
		return nil
	}
	if p.keyword("not") {
		if p.wsp() > 0 && p.keyword("in") {
			return nil
		}
	}
	return p.errorf("expected a marker operator (==, !=, <, <=, >, >=, ~=, ===, in, not in)")
}

func (p *pep508) markerVar() error {
	p.wsp()
	switch q := p.peek(); q {
	case '"', '\'':
		p.pos++
		for !p.eof() && p.s[p.pos] != q {
			if !isPythonStrChar(p.s[p.pos]) && p.s[p.pos] != '"' && p.s[p.pos] != '\'' {
				return p.errorf("character %q is not allowed in a marker string", p.s[p.pos])
			}
			p.pos++
		}
		if p.eof() {
			return p.errorf("unterminated marker string")
		}
		p.pos++
		return nil
	}
	start := p.pos
	for !p.eof() && (isAlnum(p.s[p.pos]) || p.s[p.pos] == '_' || p.s[p.pos] == '.') {
		p.pos++
	}
	name := p.s[start:p.pos]
	if !pep508MarkerVars[name] {
		p.pos = start
		return p.errorf("expected a marker variable (python_version, sys_platform, ...) or a quoted string")
	}
	return nil
}

// isPythonStrChar is PEP 508's python_str_c, without the quotes.
func isPythonStrChar(c byte) bool {
	return c == ' ' || c == '\t' || isAlnum(c) || strings.IndexByte("().{}-_*#:;,/?[]!~`@$%^&=+|<>", c) >= 0
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
