#!/usr/bin/env bash
# Creates a Cloud TPU VM slice: on demand, spot (--spot), or through a queued
# resource (--queued), which waits in line for capacity instead of failing.
#
#   launch/create.sh --name=rao --zone=us-central2-b --accelerator-type=v4-32
#   launch/create.sh --accelerator-type=v4-8 --spot --queued --dry-run
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $0 [flags]

Creates the slice. With --queued it asks for a queued resource NAME-qr and
waits, polling, until the queued resource is ACTIVE (its TPU VM is READY).

EOF
  flags_help "slice poll"
}

parse_flags poll "$@"
check_count --poll-interval poll_interval 1
max_polls="${max_polls:-0}"
check_count --max-polls max_polls 0
need_gcloud

if ((queued)); then
  args=(queued-resources create "$(queued_resource)" "--node-id=${name}"
    "${shape[@]}" "--runtime-version=${version}")
else
  args=(tpu-vm create "${name}" "${shape[@]}" "--version=${version}")
fi
if ((spot)); then
  args+=(--spot)
fi
tpus "${args[@]}"

# `tpu-vm create` returns once the VM is READY; a queued resource may wait
# for capacity for hours.
if ((queued)); then
  for ((poll = 1; ; poll++)); do
    read_state ACTIVE
    case "${state}" in
      ACTIVE) break ;;
      FAILED | SUSPENDING | SUSPENDED | NOT_FOUND)
        fail "queued resource $(queued_resource) is ${state}" ;;
    esac
    ((max_polls == 0 || poll < max_polls)) ||
      fail "queued resource $(queued_resource) is still ${state} after" \
        "${poll} polls (--max-polls)"
    echo "$(basename "$0"): $(queued_resource) is ${state}; waiting" >&2
    step sleep "${poll_interval}"
  done
fi
