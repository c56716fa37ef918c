FROM registry.internal:5000/ml/base:2
USER 0:0
RUN ["/bin/sh", "-c", "set -eu\nif ! command -v apt-get >/dev/null 2>&1; then\n  echo 'imagespec: apt packages were requested but the base image has no apt-get' >&2\n  exit 127\nfi\nexport DEBIAN_FRONTEND=noninteractive\nmirror=$1\nshift\ntmp=$(mktemp -d)\nmkdir \"$tmp/sources.list.d\"\nrewrite() {\n  MIRROR=\"$mirror\" awk '\nfunction rw(u) {\n  if (u ~ /^(https?|ftp):\\/\\/[^\\/]+/) { sub(/^(https?|ftp):\\/\\/[^\\/]+/, \"\", u); return ENVIRON[\"MIRROR\"] u }\n  return u\n}\n/^[ \\t]*deb(-src)?[ \\t]/ {\n  i = 2\n  if ($i ~ /^\\[/) { while (i < NF && $i !~ /\\]$/) i++; i++ }\n  if (i <= NF) $i = rw($i)\n  print; next\n}\ntolower($0) ~ /^uris:/ { sub(/^[^:]*:/, \"\"); uris = 1; out = \"URIs:\"; for (i = 1; i <= NF; i++) out = out \" \" rw($i); print out; next }\nuris && /^[ \\t]/ { out = \"\"; for (i = 1; i <= NF; i++) out = out \" \" rw($i); print out; next }\n{ uris = 0; print }\n' \"$1\" >\"$2\"\n}\nif [ -f /etc/apt/sources.list ]; then rewrite /etc/apt/sources.list \"$tmp/sources.list\"; else : >\"$tmp/sources.list\"; fi\nfor f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do\n  if [ -f \"$f\" ]; then rewrite \"$f\" \"$tmp/sources.list.d/${f##*/}\"; fi\ndone\napt-get -o \"Dir::Etc::SourceList=$tmp/sources.list\" -o \"Dir::Etc::SourceParts=$tmp/sources.list.d\" update\napt-get -o \"Dir::Etc::SourceList=$tmp/sources.list\" -o \"Dir::Etc::SourceParts=$tmp/sources.list.d\" install -y --no-install-recommends -- \"$@\"\napt-get clean\nrm -rf /var/lib/apt/lists/* \"$tmp\"\n", "sh", \
    "http://apt.internal", \
    "curl"]
RUN ["/bin/sh", "-c", "set -eu\nprefix_of() {\n  p=$(command -v \"$1\") || return 0\n  case $p in\n  /*/condabin/*) printf '%s\\n' \"${p%/condabin/*}\" ;;\n  /*/bin/*) printf '%s\\n' \"${p%/bin/*}\" ;;\n  esac\n}\ngive_back() {\n  [ -n \"$1\" ] && [ -d \"$1\" ] || return 0\n  owner=$(stat -c %u:%g \"$1\") || return 0\n  case $owner in 0:*) return 0 ;; esac\n  if [ -n \"$(find \"$1\" -maxdepth 0 -perm -020)\" ]; then\n    find \"$1\" -xdev -user 0 ! -type l -exec chmod g+rwX {} +\n  fi\n  find \"$1\" -xdev -user 0 -exec chown -h \"$owner\" {} +\n}\nif ! command -v conda >/dev/null 2>&1; then\n  echo 'imagespec: conda packages were requested but the base image has no conda on PATH; use a base image that ships conda (e.g. miniconda)' >&2\n  exit 127\nfi\nconda install --yes \"$@\"\nconda clean --all --yes\ngive_back \"$(prefix_of conda)\"\ngive_back \"${CONDA_PREFIX:-}\"\ngive_back \"${HOME:-}\"\n", "sh", \
    "-c", \
    "https://conda.internal/ml", \
    "-c", \
    "conda-forge", \
    "--", \
    "numpy"]
RUN ["/bin/sh", "-c", "set -eu\nprefix_of() {\n  p=$(command -v \"$1\") || return 0\n  case $p in\n  /*/condabin/*) printf '%s\\n' \"${p%/condabin/*}\" ;;\n  /*/bin/*) printf '%s\\n' \"${p%/bin/*}\" ;;\n  esac\n}\ngive_back() {\n  [ -n \"$1\" ] && [ -d \"$1\" ] || return 0\n  owner=$(stat -c %u:%g \"$1\") || return 0\n  case $owner in 0:*) return 0 ;; esac\n  if [ -n \"$(find \"$1\" -maxdepth 0 -perm -020)\" ]; then\n    find \"$1\" -xdev -user 0 ! -type l -exec chmod g+rwX {} +\n  fi\n  find \"$1\" -xdev -user 0 -exec chown -h \"$owner\" {} +\n}\nif command -v pip >/dev/null 2>&1; then set -- pip install --no-cache-dir \"$@\"\nelif command -v pip3 >/dev/null 2>&1; then set -- pip3 install --no-cache-dir \"$@\"\nelif command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then set -- python3 -m pip install --no-cache-dir \"$@\"\nelif command -v python >/dev/null 2>&1 && python -m pip --version >/dev/null 2>&1; then set -- python -m pip install --no-cache-dir \"$@\"\nelse\n  echo 'imagespec: pip packages were requested but the base image has no pip (tried pip, pip3, python3 -m pip, python -m pip); use a base image with Python and pip, or add python3-pip to the apt packages' >&2\n  exit 127\nfi\nPIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \"$@\"\ngive_back \"$(prefix_of \"$1\")\"\n", "sh", \
    "--index-url", \
    "https://pypi.internal/simple", \
    "--extra-index-url", \
    "https://extra.internal/simple", \
    "--trusted-host", \
    "pypi.internal", \
    "--trusted-host", \
    "extra.internal", \
    "--", \
    "requests>=2.31"]
USER jovyan
