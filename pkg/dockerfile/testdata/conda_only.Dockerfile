FROM docker.io/continuumio/miniconda3:24.1.2-0
RUN ["/bin/sh", "-c", "set -eu\nif ! command -v conda >/dev/null 2>&1; then\n  echo 'imagespec: conda packages were requested but the base image has no conda on PATH; use a base image that ships conda (e.g. miniconda)' >&2\n  exit 127\nfi\nconda install --yes \"$@\"\nconda clean --all --yes\n", "sh", \
    "--", \
    "conda-forge::numpy>=1.26", \
    "numpy>=1.26,<2", \
    "tensorflow=1.13*"]
