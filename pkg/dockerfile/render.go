package dockerfile

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"

	"github.com/containers/image/v5/docker/reference"
)

// Packages lists what to install, per package manager, exactly as the user
// wrote each entry.
type Packages struct {
	Apt   []string
	Pip   []string
	Conda []string
}

// Sources are optional package sources for clusters without internet access.
// They come from controller configuration (trusted admin input, still
// validated) and are used for the build only.
type Sources struct {
	// AptMirror replaces the scheme and host of the base image's apt archive URIs.
	AptMirror string
	// PipIndexURL replaces PyPI.
	PipIndexURL string
	// PipExtraIndexURLs are searched in addition to the index.
	PipExtraIndexURLs []string
	// PipTrustedHosts are hosts pip may reach without valid HTTPS.
	PipTrustedHosts []string
	// CondaChannels are added in order, with priority over the defaults.
	CondaChannels []string
}

// Inputs is everything a Dockerfile is rendered from.
type Inputs struct {
	BaseImage string
	Packages  Packages
	Sources   Sources
	// User is the base image's configured user; "" means root and no USER lines.
	User string
}

// Normalize returns the canonical form of in: the base image fully qualified
// with a default :latest tag, each package list sorted with exact duplicates
// removed, empty lists as nil and the apt mirror without trailing slashes.
// Source lists keep their order. Invalid values are passed through unchanged.
func Normalize(in Inputs) Inputs {
	out := in
	if named, err := reference.ParseNormalizedNamed(in.BaseImage); err == nil {
		out.BaseImage = reference.TagNameOnly(named).String()
	}
	out.Packages = Packages{
		Apt:   sortedUnique(in.Packages.Apt),
		Pip:   sortedUnique(in.Packages.Pip),
		Conda: sortedUnique(in.Packages.Conda),
	}
	out.Sources = Sources{
		AptMirror:         strings.TrimRight(in.Sources.AptMirror, "/"),
		PipIndexURL:       in.Sources.PipIndexURL,
		PipExtraIndexURLs: nonEmpty(in.Sources.PipExtraIndexURLs),
		PipTrustedHosts:   nonEmpty(in.Sources.PipTrustedHosts),
		CondaChannels:     nonEmpty(in.Sources.CondaChannels),
	}
	return out
}

func sortedUnique(list []string) []string {
	if len(list) == 0 {
		return nil
	}
	out := slices.Clone(list)
	slices.Sort(out)
	return slices.Compact(out)
}

func nonEmpty(list []string) []string {
	if len(list) == 0 {
		return nil
	}
	return slices.Clone(list)
}

// Render validates in and renders its normalized form. The same inputs, in
// any package order, always give the same bytes.
func Render(in Inputs) ([]byte, error) {
	if errs := Validate(in); len(errs) > 0 {
		return nil, errs.ToAggregate()
	}
	return render(Normalize(in)), nil
}

// Fixed shell scripts. Package entries and sources only ever arrive as
// positional parameters ("$@"); nothing user-supplied is part of a script.
const (
	aptMissing = `if ! command -v apt-get >/dev/null 2>&1; then
  echo 'imagespec: apt packages were requested but the base image has no apt-get' >&2
  exit 127
fi
export DEBIAN_FRONTEND=noninteractive
`
	aptScript = "set -eu\n" + aptMissing + `apt-get update
apt-get install -y --no-install-recommends -- "$@"
apt-get clean
rm -rf /var/lib/apt/lists/*
`
	// $1 is the mirror.
	aptMirrorScript = "set -eu\n" + aptMissing + `mirror=$1
shift
tmp=$(mktemp -d)
mkdir "$tmp/sources.list.d"
rewrite() {
  MIRROR="$mirror" awk '` + aptRewriteAwk + `' "$1" >"$2"
}
if [ -f /etc/apt/sources.list ]; then rewrite /etc/apt/sources.list "$tmp/sources.list"; else : >"$tmp/sources.list"; fi
for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  if [ -f "$f" ]; then rewrite "$f" "$tmp/sources.list.d/${f##*/}"; fi
done
apt-get -o "Dir::Etc::SourceList=$tmp/sources.list" -o "Dir::Etc::SourceParts=$tmp/sources.list.d" update
apt-get -o "Dir::Etc::SourceList=$tmp/sources.list" -o "Dir::Etc::SourceParts=$tmp/sources.list.d" install -y --no-install-recommends -- "$@"
apt-get clean
rm -rf /var/lib/apt/lists/* "$tmp"
`
	condaScript = "set -eu\n" + giveBackFunc + `if ! command -v conda >/dev/null 2>&1; then
  echo 'imagespec: conda packages were requested but the base image has no conda on PATH; use a base image that ships conda (e.g. miniconda)' >&2
  exit 127
fi
conda install --yes "$@"
conda clean --all --yes
give_back "$(prefix_of conda)"
give_back "${CONDA_PREFIX:-}"
give_back "${HOME:-}"
`
	pipScript = "set -eu\n" + giveBackFunc + `if command -v pip >/dev/null 2>&1; then set -- pip install --no-cache-dir "$@"
elif command -v pip3 >/dev/null 2>&1; then set -- pip3 install --no-cache-dir "$@"
elif command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then set -- python3 -m pip install --no-cache-dir "$@"
elif command -v python >/dev/null 2>&1 && python -m pip --version >/dev/null 2>&1; then set -- python -m pip install --no-cache-dir "$@"
else
  echo 'imagespec: pip packages were requested but the base image has no pip (tried pip, pip3, python3 -m pip, python -m pip); use a base image with Python and pip, or add python3-pip to the apt packages' >&2
  exit 127
fi
PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 "$@"
give_back "$(prefix_of "$1")"
`
)

// giveBackFunc defines the shell functions that hand what a root install
// left in a user's environment back to that user. Packages install as root,
// but a conda prefix or venv owned by the image's user (docker-stacks'
// /opt/conda, owned by jovyan:users and group-writable) must stay writable
// by that user, or its later conda or pip installs fail on our files. In a
// prefix whose top directory belongs to a non-root user, every file owned
// by root gets that directory's owner and group, and group read/write (and
// search on directories) when the directory is group-writable, as
// docker-stacks' fix-permissions leaves it. A root-owned prefix is left
// alone. The conda step also gives back the user's home, where conda keeps
// its environment list, as docker-stacks fixes /home/$NB_USER. prefix_of names the directory above the bin/ (or conda's condabin/)
// holding a command.
const giveBackFunc = `prefix_of() {
  p=$(command -v "$1") || return 0
  case $p in
  /*/condabin/*) printf '%s\n' "${p%/condabin/*}" ;;
  /*/bin/*) printf '%s\n' "${p%/bin/*}" ;;
  esac
}
give_back() {
  [ -n "$1" ] && [ -d "$1" ] || return 0
  owner=$(stat -c %u:%g "$1") || return 0
  case $owner in 0:*) return 0 ;; esac
  if [ -n "$(find "$1" -maxdepth 0 -perm -020)" ]; then
    find "$1" -xdev -user 0 ! -type l -exec chmod g+rwX {} +
  fi
  find "$1" -xdev -user 0 -exec chown -h "$owner" {} +
}
`

// aptRewriteAwk points the archive URIs of one-line (sources.list) and
// deb822 (*.sources) files at ENVIRON["MIRROR"], keeping each URI's path.
// The mirror comes from the environment because awk takes it literally from
// there, unlike awk -v or sed replacement text. It must not contain a single
// quote: the shell script quotes it that way.
const aptRewriteAwk = `
function rw(u) {
  if (u ~ /^(https?|ftp):\/\/[^\/]+/) { sub(/^(https?|ftp):\/\/[^\/]+/, "", u); return ENVIRON["MIRROR"] u }
  return u
}
/^[ \t]*deb(-src)?[ \t]/ {
  i = 2
  if ($i ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
  if (i <= NF) $i = rw($i)
  print; next
}
tolower($0) ~ /^uris:/ { sub(/^[^:]*:/, ""); uris = 1; out = "URIs:"; for (i = 1; i <= NF; i++) out = out " " rw($i); print out; next }
uris && /^[ \t]/ { out = ""; for (i = 1; i <= NF; i++) out = out " " rw($i); print out; next }
{ uris = 0; print }
`

// rootUser is numeric so switching works even without an /etc/passwd entry.
const rootUser = "0:0"

// render writes the Dockerfile for already normalized inputs without
// validating them; Render is the public entry point.
func render(in Inputs) []byte {
	var b bytes.Buffer
	b.WriteString("FROM " + in.BaseImage + "\n")
	var runs [][]string
	if len(in.Packages.Apt) > 0 {
		if in.Sources.AptMirror != "" {
			runs = append(runs, shellRun(aptMirrorScript, append([]string{in.Sources.AptMirror}, in.Packages.Apt...)))
		} else {
			runs = append(runs, shellRun(aptScript, in.Packages.Apt))
		}
	}
	if len(in.Packages.Conda) > 0 {
		var args []string
		for _, c := range in.Sources.CondaChannels {
			args = append(args, "-c", c)
		}
		args = append(args, "--")
		runs = append(runs, shellRun(condaScript, append(args, in.Packages.Conda...)))
	}
	if len(in.Packages.Pip) > 0 {
		var args []string
		if in.Sources.PipIndexURL != "" {
			args = append(args, "--index-url", in.Sources.PipIndexURL)
		}
		for _, u := range in.Sources.PipExtraIndexURLs {
			args = append(args, "--extra-index-url", u)
		}
		for _, h := range in.Sources.PipTrustedHosts {
			args = append(args, "--trusted-host", h)
		}
		args = append(args, "--")
		runs = append(runs, shellRun(pipScript, append(args, in.Packages.Pip...)))
	}
	if len(runs) == 0 {
		return b.Bytes()
	}
	if in.User != "" {
		b.WriteString("USER " + rootUser + "\n")
	}
	for _, argv := range runs {
		writeExecRun(&b, argv)
	}
	if in.User != "" {
		b.WriteString("USER " + in.User + "\n")
	}
	return b.Bytes()
}

func shellRun(script string, args []string) []string {
	return append([]string{"/bin/sh", "-c", script, "sh"}, args...)
}

// writeExecRun writes an exec-form RUN with the interpreter, script and $0 on
// the first line and one argument per continuation line. Every line but the
// last ends in ", \"; an element's JSON encoding always ends in '"', so no
// element can add or remove a line continuation.
func writeExecRun(b *bytes.Buffer, argv []string) {
	b.WriteString("RUN [")
	for i, a := range argv {
		switch {
		case i == 0:
		case i < 4:
			b.WriteString(", ")
		default:
			b.WriteString(", \\\n    ")
		}
		b.Write(jsonString(a))
	}
	b.WriteString("]\n")
}

// jsonString encodes s without HTML escaping, so <, > and & stay readable.
func jsonString(s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		// Encoding a string cannot fail.
		panic(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}
