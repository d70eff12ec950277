#!/usr/bin/env bash
# Stops the run on every worker with SIGTERM, on which rao_jax saves a
# checkpoint at the current step and exits, and waits until it has exited.
# The slice stays up (delete.sh tears it down); run.sh on the same workdir
# resumes.
#
#   launch/stop.sh --name=rao --zone=us-central2-b
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $0 [flags]

Sends SIGTERM to the run on all workers at once (the hosts save the
checkpoint together) and waits up to 10 minutes for each to exit.

EOF
  flags_help slice
}

parse_flags "" "$@"
need_gcloud

# shellcheck disable=SC2016  # $pid and $(...) are the worker shell's.
stop_run="$(remote_script \
  "if ${REMOTE_RUNNING}; then pid=\$(cat ${REMOTE_PID})" \
  'kill -TERM "$pid"' \
  'for i in $(seq 120); do ' \
  'kill -0 "$pid" 2>/dev/null || break; sleep 5; done' \
  'if kill -0 "$pid" 2>/dev/null; then ' \
  'echo "$(hostname): pid $pid still runs after 600 s" >&2; exit 1; fi' \
  'echo "$(hostname): stopped"' \
  'else echo "$(hostname): not running"; fi')"
tpus tpu-vm ssh "${name}" --worker=all "--command=${stop_run}"
