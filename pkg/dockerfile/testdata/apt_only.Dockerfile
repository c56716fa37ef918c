FROM localhost:5000/team/base:1.0
RUN ["/bin/sh", "-c", "set -eu\nif ! command -v apt-get >/dev/null 2>&1; then\n  echo 'imagespec: apt packages were requested but the base image has no apt-get' >&2\n  exit 127\nfi\nexport DEBIAN_FRONTEND=noninteractive\napt-get update\napt-get install -y --no-install-recommends -- \"$@\"\napt-get clean\nrm -rf /var/lib/apt/lists/*\n", "sh", \
    "curl", \
    "curl/bookworm-backports", \
    "libc6:amd64", \
    "tzdata=1:2.3-4~deb12u1"]
