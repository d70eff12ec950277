#!/usr/bin/env bash
# Starts `python -m rao_jax.main --config=... --workdir=...` on every worker
# of the slice at once, in the background, so the ssh returns; each worker
# logs to ~/rao_jax.log. A run resumes from the workdir's checkpoints.
#
#   launch/run.sh --name=rao --zone=us-central2-b \
#       --config=configs/tpu_v4.py --workdir=gs://BUCKET/run \
#       --config.init_from_hf=/home/$USER/gemma-3-1b
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $0 [flags]

Starts the run on all workers (the config's distributed=True makes the
hosts one mesh). A slice of several hosts needs a gs:// workdir; on a
one-host slice (v4-8) --allow-local-workdir allows an absolute local path.
Refuses on a worker where the run already goes on.

EOF
  flags_help "slice run"
}

parse_flags run "$@"
check_run_flags
need_gcloud

# Quoted for the worker's shell, so an override such as
# --config.tasks.eval_levels=('easy','hard') arrives as one argument.
main="${REMOTE_VENV}/bin/python -m rao_jax.main $(shell_join \
  "--config=${config}" "--workdir=${workdir}" "${overrides[@]}")"
# setsid: the run is in a session of its own, untouched when ssh hangs up.
start="$(remote_script \
  'set -e' \
  "$(remote_refuse_while_running 'launch/stop.sh stops it')" \
  "cd ${REMOTE_CODE}" \
  "echo \"== \$(date -u +%FT%TZ) start\" >> ${REMOTE_LOG}" \
  "nohup setsid ${main} >> ${REMOTE_LOG} 2>&1 < /dev/null &" \
  "echo \$! > ${REMOTE_PID}" \
  "echo \"\$(hostname): rao_jax.main started, pid \$!, log ${REMOTE_LOG}\"")"
tpus tpu-vm ssh "${name}" --worker=all "--command=${start}"
