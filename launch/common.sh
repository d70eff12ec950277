# shellcheck shell=bash
# Sourced by every launch/*.sh script, never run: the flags and their checks,
# the `step` printer, and the paths every worker uses.
#
# All scripts take the same slice flags (--name, --zone, --accelerator-type,
# ...), so one set of flags names a slice to each of them; the other groups
# of flags belong to the scripts that use them and are refused elsewhere by
# name. Bad arguments exit 2 with a message that names the flag; a failure
# while running exits 1.

# The variables set here are read by the scripts that source this file
# (SC2034), and the `~` in the remote paths is for the worker's shell to
# expand (SC2088).
# shellcheck disable=SC2034,SC2088

if ((BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] < 404)); then
  echo "bash ${BASH_VERSION} is too old: launch/ needs bash 4.4 or newer" \
    "(macOS: brew install bash)" >&2
  exit 2
fi

LAUNCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(dirname "${LAUNCH_DIR}")"

# On every worker, in the home directory (the worker's shell expands `~`):
# the code (replaced by each setup), its virtual environment (kept between
# setups so that a reinstall is quick), the run's log and its pid.
REMOTE_CODE='~/rao_jax'
REMOTE_VENV='~/rao_venv'
REMOTE_LOG='~/rao_jax.log'
REMOTE_PID='~/rao_jax.pid'
# True on a worker while the run that `run.sh` started there is alive.
REMOTE_RUNNING="[ -f ${REMOTE_PID} ] &&"
REMOTE_RUNNING+=" kill -0 \"\$(cat ${REMOTE_PID})\" 2>/dev/null"

# A path in a bucket: gs://BUCKET[/PATH].
GS_PATH='^gs://[a-z0-9][-_.a-z0-9]+[a-z0-9](/.*)?$'

# Defaults. A v4-32 has 4 hosts; us-central2-b is where v4 slices are.
name=rao
zone=us-central2-b
project=""
accelerator_type=""
topology=""
version=tpu-ubuntu2204-base
spot=0
queued=0
dry_run=0
source_dir=""
fetches=()
commit=HEAD
python=python3.11
config=configs/tpu_v4.py
workdir=""
allow_local_workdir=0
overrides=()
shape=()
cmd=()
poll_interval=60
max_polls=""  # 0: no limit; each script sets its default
max_relaunches=10
assume_state=""
worker=0
lines=100
# The arguments of each group as given, for a script that calls another.
slice_args=()
setup_args=()
run_args=()
poll_args=()

usage_error() {
  echo "$(basename "$0"): $*" >&2
  echo "Try '$0 --help'." >&2
  exit 2
}

fail() {
  echo "$(basename "$0"): $*" >&2
  exit 1
}

# Prints the help of each group of flags named in $1 ("slice setup run").
flags_help() {
  local group
  for group in $1; do
    case "${group}" in
      slice) cat <<'EOF'
Slice (the same for every script):
  --name=NAME              TPU VM name (default rao)
  --zone=ZONE              zone (default us-central2-b, where v4 is)
  --project=PROJECT        GCP project (default: gcloud's configured one)
  --accelerator-type=TYPE  v4-8, v4-32, ... (default v4-32)
  --topology=AxBxC         v4 chips by topology instead, e.g. 2x2x4 (= v4-32)
  --version=VERSION        TPU VM runtime (default tpu-ubuntu2204-base)
  --spot                   a spot slice: cheaper, may be preempted
  --queued                 through a queued resource NAME-qr
  --dry-run                print the commands, one per line after '+ ', and
                           run nothing
  -h, --help               this help
EOF
        ;;
      setup) cat <<'EOF'
Code (setup):
  --commit=REV             upload `git archive REV` of this checkout
                           (default HEAD: uncommitted changes stay behind)
  --source=DIR             upload the directory DIR instead
  --fetch=gs://B/DIR       also copy DIR (weights, a tokenizer) from the
                           bucket to ~/DIR on every worker (any number)
  --python=PYTHON          interpreter of the workers' venv (default
                           python3.11; installed with apt when missing)
EOF
        ;;
      run) cat <<'EOF'
Run:
  --config=PATH[:ARG]      config file (default configs/tpu_v4.py)
  --workdir=gs://B/DIR     the run's directory, shared by all hosts; rerun on
                           the same workdir to resume
  --allow-local-workdir    allow an absolute local path on a one-host slice
  --config.FIELD=VALUE     passed through to rao_jax.main (any number)
EOF
        ;;
      poll) cat <<'EOF'
Polling:
  --poll-interval=SECONDS  between two looks at the slice (default 60)
  --max-polls=N            stop after N looks (default 0: no limit; in a
                           dry run of watch 1, as its sleeps do not run)
EOF
        ;;
      watch) cat <<'EOF'
Watch:
  --max-relaunches=N       give up after N relaunches (default 10)
  --assume-state=STATE     with --dry-run: the state the slice reports
                           (default READY), e.g. PREEMPTED or SUSPENDED
EOF
        ;;
      logs) cat <<'EOF'
Logs:
  --worker=N               whose log (default 0: the process that reports)
  --lines=N                lines of history before following (default 100)
EOF
        ;;
    esac
  done
}

# Parses the arguments into the variables above. $1 lists the groups this
# script accepts besides "slice"; a flag of another group is refused.
parse_flags() {
  local groups=" slice $1 " arg group
  shift
  for arg in "$@"; do
    case "${arg}" in
      -h | --help) usage; exit 0 ;;
      --dry-run) group=slice; dry_run=1 ;;
      --name=*) group=slice; name="${arg#*=}" ;;
      --zone=*) group=slice; zone="${arg#*=}" ;;
      --project=*) group=slice; project="${arg#*=}" ;;
      --accelerator-type=*) group=slice; accelerator_type="${arg#*=}" ;;
      --topology=*) group=slice; topology="${arg#*=}" ;;
      --version=*) group=slice; version="${arg#*=}" ;;
      --spot) group=slice; spot=1 ;;
      --queued) group=slice; queued=1 ;;
      --commit=*) group=setup; commit="${arg#*=}" ;;
      --source=*) group=setup; source_dir="${arg#*=}" ;;
      --fetch=*) group=setup; fetches+=("${arg#*=}") ;;
      --python=*) group=setup; python="${arg#*=}" ;;
      --config=*) group=run; config="${arg#*=}" ;;
      --workdir=*) group=run; workdir="${arg#*=}" ;;
      --allow-local-workdir) group=run; allow_local_workdir=1 ;;
      --config.*=*) group=run; overrides+=("${arg}") ;;
      --config.*) usage_error "${arg}: an override needs =VALUE" ;;
      --poll-interval=*) group=poll; poll_interval="${arg#*=}" ;;
      --max-polls=*) group=poll; max_polls="${arg#*=}"
        [[ -n "${max_polls}" ]] || usage_error "--max-polls= is empty" ;;
      --max-relaunches=*) group=watch; max_relaunches="${arg#*=}" ;;
      --assume-state=*) group=watch; assume_state="${arg#*=}" ;;
      --worker=*) group=logs; worker="${arg#*=}" ;;
      --lines=*) group=logs; lines="${arg#*=}" ;;
      *) usage_error "unknown argument ${arg}" ;;
    esac
    [[ "${groups}" == *" ${group} "* ]] ||
      usage_error "${arg} is not a flag of $(basename "$0")"
    # A script that calls another passes these on; --dry-run on its own.
    case "${group}:${arg}" in
      slice:--dry-run) ;;
      slice:*) slice_args+=("${arg}") ;;
      setup:*) setup_args+=("${arg}") ;;
      run:*) run_args+=("${arg}") ;;
      poll:*) poll_args+=("${arg}") ;;
    esac
  done
  check_slice_flags
}

check_slice_flags() {
  [[ "${name}" =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] ||
    usage_error "--name=${name}: lower-case letters, digits and '-'," \
      "starting with a letter"
  [[ "${zone}" =~ ^[a-z]+-[a-z]+[0-9]+-[a-z]$ ]] ||
    usage_error "--zone=${zone}: not a zone (e.g. us-central2-b)"
  [[ -z "${project}" || "${project}" =~ ^[a-z][-a-z0-9.:]*$ ]] ||
    usage_error "--project=${project}: not a project id"
  [[ -n "${version}" ]] || usage_error "--version= is empty"
  if [[ -n "${topology}" ]]; then
    [[ -z "${accelerator_type}" ]] ||
      usage_error "--topology=${topology} and" \
        "--accelerator-type=${accelerator_type}: give one of them"
    [[ "${topology}" =~ ^[1-9][0-9]*x[1-9][0-9]*x[1-9][0-9]*$ ]] ||
      usage_error "--topology=${topology}: v4 topologies are AxBxC, e.g. 2x2x4"
  else
    accelerator_type="${accelerator_type:-v4-32}"
    [[ "${accelerator_type}" =~ ^v[0-9][a-z0-9]*-[1-9][0-9]*$ ]] ||
      usage_error "--accelerator-type=${accelerator_type}: not a TPU type" \
        "(e.g. v4-8, v4-32)"
  fi
  # The gcloud flags that say what hardware (topology: v4 chips only).
  if [[ -n "${topology}" ]]; then
    shape=(--type=v4 "--topology=${topology}")
  else
    shape=("--accelerator-type=${accelerator_type}")
  fi
}

# Exits 2 unless the variable named $2 holds a whole number >= $3; $1 is the
# flag to name.
check_count() {
  local flag="$1" value="${!2}" least="$3"
  if ! [[ "${value}" =~ ^[0-9]+$ ]] || ((10#${value} < least)); then
    usage_error "${flag}=${value}: needs a whole number >= ${least}"
  fi
}

# Checks --config and --workdir for a run on this slice.
check_run_flags() {
  [[ -n "${config}" ]] || usage_error "--config= is empty"
  [[ -n "${workdir}" ]] ||
    usage_error "--workdir= is missing: the run's gs://BUCKET/DIR"
  [[ "${workdir}" == gs://* ]] && {
    [[ "${workdir}" =~ ${GS_PATH} ]] ||
      usage_error "--workdir=${workdir}: not a gs://BUCKET/DIR path (a" \
        "bucket name has 3-63 lower-case letters, digits, '-', '_', '.')"
    return 0
  }
  # Every host reads and writes the same checkpoints, so a slice of several
  # hosts needs a bucket; on one host a local disk will do.
  ! is_multi_host ||
    usage_error "--workdir=${workdir}: $(slice_shape) has several hosts," \
      "which need a shared gs:// workdir"
  ((allow_local_workdir)) ||
    usage_error "--workdir=${workdir}: not a gs:// path (on a one-host" \
      "slice, --allow-local-workdir allows a local one)"
  [[ "${workdir}" == /* ]] ||
    usage_error "--workdir=${workdir}: a local workdir must be an absolute" \
      "path (setup replaces ${REMOTE_CODE})"
}

# Prints the slice's shape as the user gave it.
slice_shape() {
  if [[ -n "${topology}" ]]; then
    echo "v4 ${topology}"
  else
    echo "${accelerator_type}"
  fi
}

# True when the slice has more than one host: a v4 host holds 4 chips (8
# TensorCores, the number in v4-N), a v5e or v6e host up to 8 chips.
is_multi_host() {
  if [[ -n "${topology}" ]]; then
    local chips=1 side
    for side in ${topology//x/ }; do
      chips=$((chips * side))
    done
    ((chips > 4))
  else
    ((${accelerator_type##*-} > 8))
  fi
}

queued_resource() {
  echo "${name}-qr"
}

# Prints $1 as the shell reads it back: bare when it holds only characters
# that are safe unquoted, single-quoted otherwise.
shell_quote() {
  if [[ "$1" =~ ^[-A-Za-z0-9_./:=@,+%]+$ ]]; then
    printf '%s' "$1"
  else
    printf '%s' "${1@Q}"
  fi
}

# Prints its arguments as one shell command line.
shell_join() {
  local sep="" arg
  for arg in "$@"; do
    printf '%s%s' "${sep}" "$(shell_quote "${arg}")"
    sep=" "
  done
}

print_step() {
  printf '+ %s\n' "$(shell_join "$@")"
}

# Prints the command, then runs it unless this is a dry run.
step() {
  print_step "$@"
  ((dry_run)) || "$@"
}

# Sets the array `cmd` to `gcloud compute tpus ARGS...` on this slice's zone
# and project (`tpu-vm ...` or `queued-resources ...`).
tpus_cmd() {
  cmd=(gcloud compute tpus "$@" "--zone=${zone}")
  [[ -z "${project}" ]] || cmd+=("--project=${project}")
}

# Prints and runs `gcloud compute tpus ARGS...` on this slice.
tpus() {
  tpus_cmd "$@"
  step "${cmd[@]}"
}

# Sets `state` to the slice's state: the queued resource's (ACCEPTED, ACTIVE,
# SUSPENDED, ...) with --queued, else the TPU VM's (CREATING, READY,
# PREEMPTED, ...); NOT_FOUND when there is none, UNKNOWN when gcloud fails
# otherwise. A dry run prints the command and takes --assume-state, or $1.
read_state() {
  local err
  if ((queued)); then
    tpus_cmd queued-resources describe "$(queued_resource)" \
      '--format=value(state.state)'
  else
    tpus_cmd tpu-vm describe "${name}" '--format=value(state)'
  fi
  print_step "${cmd[@]}"
  if ((dry_run)); then
    state="${assume_state:-$1}"
    return 0
  fi
  err="$(mktemp)"
  if state="$("${cmd[@]}" 2>"${err}")" && [[ -n "${state}" ]]; then
    :
  elif grep -q NOT_FOUND "${err}"; then
    state=NOT_FOUND
  else
    echo "$(basename "$0"): gcloud could not say the state:" \
      "$(tail -n 3 "${err}")" >&2
    state=UNKNOWN
  fi
  rm -f "${err}"
}

# Prints the commands joined into one line for a worker's shell: "; "
# between them, a space after one that ends with "&" (sent to the
# background), nothing after one that ends with a space (it goes on in the
# next argument, to keep the lines here short).
remote_script() {
  local sep="" part
  for part in "$@"; do
    printf '%s%s' "${sep}" "${part}"
    case "${part}" in
      *" ") sep="" ;;
      *"&") sep=" " ;;
      *) sep="; " ;;
    esac
  done
}

# Prints a worker's command that exits 1, saying $1, while the run is alive.
remote_refuse_while_running() {
  remote_script "if ${REMOTE_RUNNING}; then " \
    "echo \"\$(hostname): rao_jax.main runs (pid \$(cat ${REMOTE_PID})): " \
    "$1\" >&2" \
    'exit 1; fi'
}

# Outside a dry run, gcloud must be there.
need_gcloud() {
  ((dry_run)) || command -v gcloud >/dev/null ||
    fail "gcloud not found: install the Google Cloud CLI and run gcloud init"
}
