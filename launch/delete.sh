#!/usr/bin/env bash
# Deletes the slice, and its queued resource when it was created through one
# (--queued). A slice costs its hourly price until it is deleted.
#
#   launch/delete.sh --name=rao --zone=us-central2-b [--queued]
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $0 [flags]

Deletes the TPU VM without asking; with --queued, deletes the queued
resource NAME-qr with --force, which deletes its TPU VM too. The workdir's
bucket is left as it is.

EOF
  flags_help slice
}

parse_flags "" "$@"
need_gcloud

if ((queued)); then
  tpus queued-resources delete "$(queued_resource)" --force --quiet
else
  tpus tpu-vm delete "${name}" --quiet
fi
