// Package dockerfile turns an image spec (base image, apt/conda/pip package
// lists) and the controller's package sources into a Dockerfile for buildah,
// and validates those inputs against each package manager's grammar.
//
// # No shell ever parses a package entry
//
// Every RUN is written in exec (JSON) form:
//
//	RUN ["/bin/sh", "-c", "<fixed script>", "sh", "<arg>", ...]
//
// The script text is a constant of this package; package entries and source
// settings are positional parameters that the script only ever uses as "$@".
// The Dockerfile parser does not expand variables in exec-form RUN, and the
// JSON encoding escapes quotes, backslashes and line breaks, so each entry
// reaches apt-get, conda or pip as exactly one argv element, byte for byte.
// FuzzRenderArgv checks this by parsing the output with the parser buildah
// uses and executing the resulting argv against stub package managers.
// Validation is a second, independent layer: entries that do not fit the
// package manager's grammar are rejected with a field error naming the entry
// (never trimmed or dropped), and entries starting with '-' are refused so
// nothing can be read as an option even where "--" is not honoured.
//
// # Order and normalization
//
// Sections run apt, then conda, then pip (system libraries first; pip last so
// it can see what conda installed). A section with no entries is omitted.
// Each manager receives its whole list in one invocation and resolves it as
// a set, so list order carries no meaning: Normalize sorts each list and
// removes exact duplicates, and Render uses that order, so equal specs give
// byte-identical Dockerfiles and one revision tag always means one
// Dockerfile. Source lists keep their order: conda channel order is priority.
// The base image is rendered fully qualified (ubuntu becomes
// docker.io/library/ubuntu:latest), so no short-name resolution happens at
// build time and localhost:5000/x stays on localhost:5000.
//
// # apt
//
// One layer runs apt-get update, apt-get install -y --no-install-recommends,
// apt-get clean and removes /var/lib/apt/lists, with DEBIAN_FRONTEND set for
// that RUN only. With an apt mirror, rewritten copies of /etc/apt/sources.list
// and /etc/apt/sources.list.d/*.list|*.sources are written to a temporary
// directory and apt is pointed at them with -o Dir::Etc::SourceList and
// Dir::Etc::SourceParts. The mirror replaces the scheme and host of each
// http(s)/ftp archive URI and keeps its path (http://deb.debian.org/debian
// becomes <mirror>/debian), so one mirror host can serve several archives.
// The rewrite does not persist in the image: the mirror is build
// infrastructure of this cluster, and an image that only works next to it
// would break wherever else it is pulled. The same reasoning keeps pip
// indexes and conda channels out of pip.conf and .condarc: they are passed
// as command-line arguments for the build only.
//
// # pip
//
// pip runs with --no-cache-dir, PIP_DISABLE_PIP_VERSION_CHECK=1 (no call to
// PyPI in air-gapped clusters) and PIP_BREAK_SYSTEM_PACKAGES=1. The last one
// makes bases whose Python is "externally managed" (PEP 668, such as Debian
// bookworm's python3-pip) accept the install; as an environment variable it is
// ignored by pips older than 23.0.1, while the --break-system-packages flag
// would make those older pips fail with "no such option". Installing into the
// base's own Python, not a virtual environment, is deliberate: users expect
// the packages next to the base image's Jupyter kernel. The executable is the
// first of pip, pip3, python3 -m pip, python -m pip that exists; with none the
// build fails with a message saying so.
//
// # conda
//
// conda install --yes gets the configured channels as -c arguments, in order,
// ahead of the defaults, then conda clean --all --yes runs in the same layer.
// Without conda on PATH the build fails with a message saying so.
//
// # User
//
// Packages install as root. When the base image has a configured user, the
// Dockerfile switches to USER 0:0 before the installs (numeric, so it works
// even when /etc/passwd has no root entry) and restores the base's user at
// the end. USER expands $variables, so the user must be a plain name or id.
//
// # Sources and secrets
//
// Sources are rendered into the Dockerfile and therefore into the image's
// history. URLs with credentials (user:password@, anaconda.org /t/<token>/)
// are refused, and errors about sources never repeat the offending value.
package dockerfile
