#!/usr/bin/env bash
# Watches a running slice and relaunches the run when the slice is taken
# away: when the TPU VM is PREEMPTED (spot) or its queued resource is
# SUSPENDED, it deletes the slice, creates it again, sets it up and reruns
# the same command, which resumes from the workdir's checkpoints.
#
#   launch/watch.sh --name=rao --zone=us-central2-b --spot \
#       --config=configs/tpu_v4.py --workdir=gs://BUCKET/run
#   launch/watch.sh ... --dry-run --assume-state=PREEMPTED --max-polls=1
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: $0 [flags]

Give it the flags create.sh, setup.sh and run.sh were given. Every
--poll-interval seconds it reads the slice's state:
  PREEMPTED, TERMINATED (TPU VM), SUSPENDING, SUSPENDED, FAILED (queued
  resource), or no slice at all: delete.sh, create.sh, setup.sh, run.sh;
  READY, ACTIVE: asks each worker whether the run goes on; when it has
  stopped everywhere, exits 0 if the workdir has summary.json (the run
  finished) and 1 if not (it failed: logs.sh shows why);
  any other state (CREATING, PROVISIONING, ...): polls again.
Relaunches upload the commit that was HEAD when watch started (or
--commit, or --source). A failed relaunch is tried again at the next poll.

EOF
  flags_help "slice setup run poll watch"
}

parse_flags "setup run poll watch" "$@"
check_run_flags
# A recreated slice starts with empty disks: only a bucket keeps the
# checkpoints the rerun resumes from.
[[ "${workdir}" == gs://* ]] ||
  usage_error "--workdir=${workdir}: watch needs a gs:// workdir (a" \
    "recreated slice starts with empty disks)"
check_count --poll-interval poll_interval 1
# A dry run prints the sleeps instead of sleeping: one poll unless told.
if [[ -z "${max_polls}" ]]; then
  max_polls=$((dry_run ? 1 : 0))
fi
check_count --max-polls max_polls 0
check_count --max-relaunches max_relaunches 0
if [[ -n "${assume_state}" ]]; then
  ((dry_run)) ||
    usage_error "--assume-state=${assume_state} works only with --dry-run"
  [[ "${assume_state}" =~ ^[A-Z_]+$ ]] ||
    usage_error "--assume-state=${assume_state}: a state such as PREEMPTED"
fi
if [[ -z "${source_dir}" ]]; then
  sha="$(git -C "${REPO_ROOT}" rev-parse --verify --quiet \
    "${commit}^{commit}")" ||
    usage_error "--commit=${commit}: not a commit of ${REPO_ROOT}"
  setup_args+=("--commit=${sha}")  # the last --commit counts
fi
need_gcloud

dry=()
if ((dry_run)); then
  dry=(--dry-run)
fi

# Deletes what is left of the slice, then creates, sets up and starts it
# again; fails as soon as one of them does.
relaunch() {
  if [[ "${state}" != NOT_FOUND ]]; then
    "${BASH}" "${LAUNCH_DIR}/delete.sh" "${slice_args[@]}" "${dry[@]}" ||
      return 1
  fi
  "${BASH}" "${LAUNCH_DIR}/create.sh" "${slice_args[@]}" "${poll_args[@]}" \
    "${dry[@]}" &&
    "${BASH}" "${LAUNCH_DIR}/setup.sh" "${slice_args[@]}" "${setup_args[@]}" \
      "${dry[@]}" &&
    "${BASH}" "${LAUNCH_DIR}/run.sh" "${slice_args[@]}" "${run_args[@]}" \
      "${dry[@]}"
}

# On a READY slice: returns while the run goes on (or the workers cannot be
# reached), exits when it has stopped on every worker.
check_run() {
  local out alive
  alive="$(remote_script "if ${REMOTE_RUNNING}; then echo rao_jax:running" \
    'else echo rao_jax:stopped; fi')"
  tpus_cmd tpu-vm ssh "${name}" --worker=all "--command=${alive}"
  print_step "${cmd[@]}"
  ((dry_run)) && return 0
  if ! out="$("${cmd[@]}")"; then
    echo "$(basename "$0"): the workers did not answer; polling again" >&2
    return 0
  fi
  [[ "${out}" == *rao_jax:stopped* ]] || return 0
  [[ "${out}" != *rao_jax:running* ]] ||
    fail "rao_jax.main stopped on some workers only; logs.sh --worker=N" \
      "shows why, stop.sh stops the others"
  cmd=(gcloud storage ls "${workdir%/}/summary.json")
  print_step "${cmd[@]}"
  if "${cmd[@]}" >/dev/null 2>&1; then
    echo "$(basename "$0"): the run finished (${workdir%/}/summary.json)" >&2
    exit 0
  fi
  fail "rao_jax.main stopped without writing ${workdir%/}/summary.json:" \
    "it failed (logs.sh shows why)"
}

relaunches=0
for ((poll = 1; ; poll++)); do
  if ((queued)); then read_state ACTIVE; else read_state READY; fi
  case "${state}" in
    PREEMPTED | TERMINATED | SUSPENDING | SUSPENDED | FAILED | NOT_FOUND)
      ((relaunches < max_relaunches)) ||
        fail "the slice is ${state} after ${relaunches} relaunches; giving" \
          "up (--max-relaunches=${max_relaunches})"
      relaunches=$((relaunches + 1))
      echo "$(basename "$0"): the slice is ${state}: relaunch" \
        "${relaunches} of ${max_relaunches}" >&2
      relaunch ||
        echo "$(basename "$0"): relaunch ${relaunches} failed; trying" \
          "again at the next poll" >&2
      ;;
    READY | ACTIVE) check_run ;;
    *) echo "$(basename "$0"): the slice is ${state}; polling again" >&2 ;;
  esac
  if ((max_polls > 0 && poll >= max_polls)); then
    echo "$(basename "$0"): stopping after ${poll} polls (--max-polls)" >&2
    exit 0
  fi
  step sleep "${poll_interval}"
done
