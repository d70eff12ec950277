#!/usr/bin/env bash
# Cloud TPU VM lifecycle for rao_jax: create a slice, run a config on every
# host, tear it down. Prints each gcloud command; --dry-run prints only.
#
#   launch/tpu_vm.sh create  --name=rao --zone=us-central2-b --type=v4-32
#   launch/tpu_vm.sh run     --name=rao --zone=us-central2-b \
#       --config=configs/tpu_v4.py --workdir=gs://BUCKET/run [--dry-run]
#   launch/tpu_vm.sh delete  --name=rao --zone=us-central2-b
#
# `run` copies this checkout to every host, installs it with the pinned
# versions (jax[tpu]) and starts the same command on all hosts at once;
# configs/tpu_v4.py sets `distributed=True`, so each process calls
# jax.distributed.initialize() and the hosts form one mesh.
set -euo pipefail

command="${1:-}"; shift || true
name=rao; zone=us-central2-b; type=v4-32; version=tpu-ubuntu2204-base
config=configs/tpu_v4.py; workdir=""; dry_run=0; extra=()
for arg in "$@"; do
  case "$arg" in
    --name=*) name="${arg#*=}" ;;
    --zone=*) zone="${arg#*=}" ;;
    --type=*) type="${arg#*=}" ;;
    --version=*) version="${arg#*=}" ;;
    --config=*) config="${arg#*=}" ;;
    --workdir=*) workdir="${arg#*=}" ;;
    --dry-run) dry_run=1 ;;
    --config.*) extra+=("$arg") ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

step() {
  echo "+ $(printf '%q ' "$@")"
  if [[ "$dry_run" == 0 ]]; then "$@"; fi
}

tpu=(gcloud compute tpus tpu-vm)
case "$command" in
  create)
    step "${tpu[@]}" create "$name" --zone="$zone" \
      --accelerator-type="$type" --version="$version" ;;
  run)
    [[ -n "$workdir" ]] || { echo "run needs --workdir=" >&2; exit 2; }
    step "${tpu[@]}" scp --recurse --worker=all --zone="$zone" \
      "$(git rev-parse --show-toplevel)" "$name":~/rao_jax
    step "${tpu[@]}" ssh "$name" --worker=all --zone="$zone" --command \
      "cd ~/rao_jax && python3 -m venv .venv && .venv/bin/pip install -q -c constraints.txt -e . 'jax[tpu]' && .venv/bin/python -m rao_jax.main --config=$config --workdir=$workdir ${extra[*]:-}" ;;
  delete)
    step "${tpu[@]}" delete "$name" --zone="$zone" --quiet ;;
  *)
    echo "usage: $0 create|run|delete [--name= --zone= --type= --config= --workdir= --dry-run]" >&2
    exit 2 ;;
esac
