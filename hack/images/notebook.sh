# notebook: laid out like jupyter/docker-stacks' images
# (docker-stacks-foundation): a conda prefix CONDA_DIR=/opt/conda owned by
# the notebook user jovyan (uid 1000, gid 100 "users"), group-writable with
# setgid directories as docker-stacks' fix-permissions leaves it, USER 1000,
# /opt/conda/bin first on PATH. The prefix is a venv with the stand-in conda
# (conda/conda) in place of Miniforge: no conda is available here.
. "$(dirname "$0")/lib.sh"
: "${BASE_ARCHIVE:?}"

ctr=$(bah from --quiet --pull-never "oci-archive:$BASE_ARCHIVE")
bah copy --quiet "$ctr" "$IMAGES_DIR/conda/conda" /usr/local/bin/conda.standin >/dev/null
run_in "$ctr" '
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
rm -rf /var/lib/apt/lists/*
useradd --no-log-init --create-home --shell /bin/bash --uid 1000 --gid 100 --no-user-group jovyan
python3 -m venv /opt/conda
install -m 0755 /usr/local/bin/conda.standin /opt/conda/bin/conda
rm /usr/local/bin/conda.standin
mkdir -p /opt/conda/conda-meta /opt/conda/pkgs
# A conda installer leaves the prefix with a history; the stand-in keeps
# its record of parsed calls beside it.
: >/opt/conda/conda-meta/history
: >/opt/conda/conda-meta/standin-calls
chown -R 1000:100 /opt/conda /home/jovyan
# fix-permissions, as docker-stacks runs it on CONDA_DIR and the home
# (symlinks skipped: the venv links to the system python).
for d in /opt/conda /home/jovyan; do
	find "$d" ! -type l ! \( -group 100 -a -perm -g+rwX \) -exec chgrp 100 {} + -exec chmod g+rwX {} +
	find "$d" -type d ! -perm -6000 -exec chmod +6000 {} +
done
'
bah config --user 1000 --workingdir /home/jovyan \
	--env NB_USER=jovyan --env NB_UID=1000 --env NB_GID=100 \
	--env CONDA_DIR=/opt/conda --env HOME=/home/jovyan --env SHELL=/bin/bash \
	--env PATH=/opt/conda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	--cmd '["python"]' "$ctr"
commit "$ctr"
