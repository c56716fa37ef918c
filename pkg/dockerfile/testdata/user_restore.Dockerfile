FROM docker.io/jupyter/base-notebook:2024-01-01
USER 0:0
RUN ["/bin/sh", "-c", "set -eu\nif ! command -v apt-get >/dev/null 2>&1; then\n  echo 'imagespec: apt packages were requested but the base image has no apt-get' >&2\n  exit 127\nfi\nexport DEBIAN_FRONTEND=noninteractive\napt-get update\napt-get install -y --no-install-recommends -- \"$@\"\napt-get clean\nrm -rf /var/lib/apt/lists/*\n", "sh", \
    "vim"]
RUN ["/bin/sh", "-c", "set -eu\nif command -v pip >/dev/null 2>&1; then set -- pip install --no-cache-dir \"$@\"\nelif command -v pip3 >/dev/null 2>&1; then set -- pip3 install --no-cache-dir \"$@\"\nelif command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then set -- python3 -m pip install --no-cache-dir \"$@\"\nelif command -v python >/dev/null 2>&1 && python -m pip --version >/dev/null 2>&1; then set -- python -m pip install --no-cache-dir \"$@\"\nelse\n  echo 'imagespec: pip packages were requested but the base image has no pip (tried pip, pip3, python3 -m pip, python -m pip); use a base image with Python and pip, or add python3-pip to the apt packages' >&2\n  exit 127\nfi\nPIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \"$@\"\n", "sh", \
    "--", \
    "requests"]
USER 1000:100
