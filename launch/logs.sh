#!/usr/bin/env bash
# Streams a worker's log of the run (worker 0's by default: the process that
# prints the metrics and the evaluations) until Ctrl-C.
#
#   launch/logs.sh --name=rao --zone=us-central2-b [--worker=0]
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $0 [flags]

Follows ${REMOTE_LOG} on one worker with tail -F, which keeps following
across a restart of the run.

EOF
  flags_help "slice logs"
}

parse_flags logs "$@"
check_count --worker worker 0
check_count --lines lines 0
need_gcloud

tpus tpu-vm ssh "${name}" "--worker=${worker}" \
  "--command=tail -n ${lines} -F ${REMOTE_LOG}"
