FROM docker.io/continuumio/miniconda3:24.1.2-0
RUN ["/bin/sh", "-c", "set -eu\nprefix_of() {\n  p=$(command -v \"$1\") || return 0\n  case $p in\n  /*/condabin/*) printf '%s\\n' \"${p%/condabin/*}\" ;;\n  /*/bin/*) printf '%s\\n' \"${p%/bin/*}\" ;;\n  esac\n}\ngive_back() {\n  [ -n \"$1\" ] && [ -d \"$1\" ] || return 0\n  owner=$(stat -c %u:%g \"$1\") || return 0\n  case $owner in 0:*) return 0 ;; esac\n  if [ -n \"$(find \"$1\" -maxdepth 0 -perm -020)\" ]; then\n    find \"$1\" -xdev -user 0 ! -type l -exec chmod g+rwX {} +\n  fi\n  find \"$1\" -xdev -user 0 -exec chown -h \"$owner\" {} +\n}\nif ! command -v conda >/dev/null 2>&1; then\n  echo 'imagespec: conda packages were requested but the base image has no conda on PATH; use a base image that ships conda (e.g. miniconda)' >&2\n  exit 127\nfi\nconda install --yes \"$@\"\nconda clean --all --yes\ngive_back \"$(prefix_of conda)\"\ngive_back \"${CONDA_PREFIX:-}\"\ngive_back \"${HOME:-}\"\n", "sh", \
    "--", \
    "conda-forge::numpy>=1.26", \
    "numpy>=1.26,<2", \
    "tensorflow=1.13*"]
