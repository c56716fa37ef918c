# debian-conda: debian-python with a conda-style prefix in /opt/conda (a
# venv owned by the image user, first on PATH) and a stand-in `conda`
# command, so builds with conda steps run end to end.
. "$(dirname "$0")/lib.sh"
: "${BASE_ARCHIVE:?}"

ctr=$(bah from --quiet --pull-never "oci-archive:$BASE_ARCHIVE")
bah copy --quiet "$ctr" "$IMAGES_DIR/conda/conda" /usr/local/bin/conda.standin >/dev/null
run_in "$ctr" '
python3 -m venv /opt/conda
install -m 0755 /usr/local/bin/conda.standin /opt/conda/bin/conda
rm /usr/local/bin/conda.standin
mkdir -p /opt/conda/conda-meta
chown -R 1000:1000 /opt/conda
'
bah config --env CONDA_PREFIX=/opt/conda \
	--env PATH=/opt/conda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
	"$ctr"
commit "$ctr"
