# debian-python: debian + python3 and pip, with a non-root default user
# (app, uid 1000) as many notebook images have, so that builds must switch
# to root and restore the user afterwards.
. "$(dirname "$0")/lib.sh"
: "${BASE_ARCHIVE:?}"

ctr=$(bah from --quiet --pull-never "oci-archive:$BASE_ARCHIVE")
run_in "$ctr" '
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends python3 python3-pip python3-venv >/dev/null
rm -rf /var/lib/apt/lists/*
useradd --create-home --uid 1000 --user-group --shell /bin/bash app
'
bah config --user app --workingdir /home/app --env HOME=/home/app \
	--cmd '["python3"]' "$ctr"
commit "$ctr"
