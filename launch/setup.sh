#!/usr/bin/env bash
# Puts the code on every worker of the slice and installs it with the pinned
# versions: a `git archive` of HEAD (or --commit, or a --source directory),
# unpacked into ~/rao_jax, installed into the venv ~/rao_venv with
# `pip install -c constraints.txt -e '.[tpu]'`; --fetch copies directories
# such as a model's weights from a bucket to every worker.
#
#   launch/setup.sh --name=rao --zone=us-central2-b
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $0 [flags]

Copies the code to all workers, replacing ${REMOTE_CODE} (the venv
${REMOTE_VENV} is kept, so a second setup only reinstalls what changed),
installs it, and checks on each worker that JAX sees the TPU. Refuses while
a run is going on (stop.sh stops it).

The 'tpu' extra is jax[tpu], whose version constraints.txt pins, so pip
takes the libtpu that this jax release names (constraints.txt pins that
too), and gcsfs, through which the checkpoints reach gs:// workdirs.

EOF
  flags_help "slice setup"
}

parse_flags setup "$@"
[[ "${python}" =~ ^python3(\.[0-9]+)?$ ]] ||
  usage_error "--python=${python}: an interpreter name such as python3.11"
fetch=()
for given in "${fetches[@]}"; do
  url="${given%/}"
  dir="${url##*/}"
  [[ "${url}" =~ ${GS_PATH} && "${url}" == gs://*/* &&
    "${dir}" =~ ^[A-Za-z0-9._-]+$ ]] ||
    usage_error "--fetch=${given}: not a gs://BUCKET/DIR path"
  # The worker's own gcloud (TPU VM images have it) syncs it into ~/DIR.
  fetch+=("mkdir -p ~/${dir}"
    "gcloud storage rsync --recursive $(shell_quote "${url}") ~/${dir}")
done
if [[ -n "${source_dir}" ]]; then
  [[ "${commit}" == HEAD ]] ||
    usage_error "--source=${source_dir} and --commit=${commit}: give one"
  [[ -f "${source_dir}/setup.py" ]] ||
    usage_error "--source=${source_dir}: not a rao_jax checkout (no setup.py)"
else
  rev="$(git -C "${REPO_ROOT}" rev-parse --verify --quiet \
    "${commit}^{commit}")" ||
    usage_error "--commit=${commit}: not a commit of ${REPO_ROOT}"
  if [[ "${commit}" == HEAD ]] &&
    [[ -n "$(git -C "${REPO_ROOT}" status --porcelain -uno)" ]]; then
    echo "$(basename "$0"): note: uncommitted changes are not uploaded" \
      "(commit them, or pass --source=${REPO_ROOT})" >&2
  fi
fi
need_gcloud

tarball="${TMPDIR:-/tmp}/rao_jax-${name}.tar.gz"
if [[ -n "${source_dir}" ]]; then
  step tar -czf "${tarball}" -C "${source_dir}" --exclude=.git \
    --exclude=.venv --exclude=__pycache__ .
else
  step git -C "${REPO_ROOT}" archive --format=tar.gz -o "${tarball}" "${rev}"
fi
tpus tpu-vm scp "${tarball}" "${name}:rao_jax.tar.gz" --worker=all

venv="${REMOTE_VENV}/bin"
apt_install="sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq"
install="$(remote_script \
  'set -e' \
  "$(remote_refuse_while_running 'launch/stop.sh stops it')" \
  "command -v ${python} >/dev/null || { sudo apt-get update -qq && " \
  "${apt_install} ${python} ${python}-venv; }" \
  "rm -rf ${REMOTE_CODE} && mkdir -p ${REMOTE_CODE}" \
  "tar -xzf ~/rao_jax.tar.gz -C ${REMOTE_CODE}" \
  "${fetch[@]}" \
  "[ -x ${venv}/python ] || ${python} -m venv ${REMOTE_VENV}" \
  "cd ${REMOTE_CODE}" \
  "${venv}/pip install -q -U pip" \
  "${venv}/pip install -q -c constraints.txt -e \".[tpu]\"" \
  "timeout 900 ${venv}/python launch/check_tpu.py")"
tpus tpu-vm ssh "${name}" --worker=all "--command=${install}"
