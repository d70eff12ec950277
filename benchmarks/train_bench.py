r"""Training-step throughput: rao_jax's jitted SFT step vs HF transformers.

  python benchmarks/train_bench.py --quick     # tiny config, < 2 min on CPU
  python benchmarks/train_bench.py             # + the 130M config
  python benchmarks/train_bench.py --hf_dir=/tmp/gemma3-270m --rows=1,4,16
  python benchmarks/train_bench.py --worker=ours --model_dir=DIR \
      --steps_file=FILE                        # one system alone (any venv)

Both systems train the same random weights (written once with `save_hf`),
fp32, on the same token sequences, step for step:

  ours  `update.train_step` with the SFT estimator and token-mean loss, the
        step's sequences packed by `packing.pack` into [rows, 256] with
        segment ids, exactly as `rl.sequence_update` does;
  hf    `transformers.AutoModelForCausalLM` (torch) from the same directory,
        one right-padded row per sequence with an attention mask, labels
        -100 outside the loss mask (HF's token-mean cross-entropy),
        `torch.optim.AdamW` and `clip_grad_norm_(1.0)`.

Same learning rate, betas, eps, weight decay and schedule (no warm-up: the
constant learning rate from the first update, mirrored with a `LambdaLR`).
Sequences are random tokens of 64-256 tokens with the loss on their last
third, drawn with a fixed seed; each step takes as many as pack
into `rows` rows of 256. The first `--warmup_steps` steps run untimed (the
first one, which compiles, is reported alone); the timed steps are
dispatched back to back and synchronised once at the end, with the host
work of each step (packing or padding, host-to-device copies) included.

Each system runs in its own process (peak RSS is that process's, imports
included; on an accelerator the device peak is reported too), both with
the malloc tunable `rao_jax.main` starts with (`rao_jax/runtime/host_memory.py`).
torch runs $BENCH_TORCH_THREADS threads (default 1, its fastest on a loaded
2-core CPU); XLA uses its default thread pool. On a GPU
machine jax uses its default backend and torch uses CUDA. Before any
timing counts, the first-step losses of both systems (same weights, same
tokens) must agree to 1e-3 relative: a benchmark that trains the wrong thing
is worthless, so the run exits 1 if they do not.

Prints a markdown table and, as the last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

import bench_models

ROW_LENGTH = 256  # the one packing bucket: every sequence fits a row
SEQ_LENGTHS = (64, 256)  # inclusive range of sequence lengths
ROWS = {'tiny': 16, '130M': 8}  # packed rows per step
LOSS_TOLERANCE = 1e-3  # relative, on the first step's loss


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------
# Data: the same sequences for both systems.
# ---------------------------------------------------------------------------


def make_steps(vocab_size: int, rows: int, num_steps: int,
               seed: int = 0) -> list[list[dict]]:
  """Per step, random sequences that first-fit-decreasing packs into `rows`.

  Each sequence is `{'tokens': [...], 'loss_mask': [...]}` with the loss on
  its last third. Sequences are drawn until one no longer fits; that one
  opens the next step, so no draw is wasted and the data is a pure function
  of the seed.
  """
  from rao_jax.rl import packing  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(seed)

  def draw():
    length = rng.randint(SEQ_LENGTHS[0], SEQ_LENGTHS[1] + 1)
    loss_mask = np.zeros(length, np.int32)
    loss_mask[length - length // 3:] = 1
    # Ids from 3: 0-2 are pad/bos/eos in our tokenizers.
    return dict(tokens=rng.randint(3, vocab_size, length).tolist(),
                loss_mask=loss_mask.tolist())

  steps, pending = [], draw()
  for _ in range(num_steps):
    step = [pending]
    while True:
      pending = draw()
      lengths = [len(s['tokens']) for s in step + [pending]]
      if len(packing.first_fit_decreasing(lengths, ROW_LENGTH)) > rows:
        break
      step.append(pending)
    steps.append(step)
  return steps


# ---------------------------------------------------------------------------
# Workers: each runs one system in its own process and prints a JSON line.
# ---------------------------------------------------------------------------


def _timed_steps(step_fn, sync_fn, steps, warmup_steps, compiles=lambda: 0):
  """Runs every step; returns the outputs and the timings of its phases.

  `step_fn(step) -> (loss, grad_norm)` as device values; `sync_fn(x)` waits
  for them; `compiles()` counts compiles so far. The first step (compile,
  allocation) and the remaining warm-up steps are timed apart from the
  rest, which are dispatched back to back and synchronised once.
  """
  outputs, phases = [], {}
  for phase, todo in (('first_step', steps[:1]),
                      ('warmup', steps[1:warmup_steps]),
                      ('timed', steps[warmup_steps:])):
    before = compiles()
    start = time.perf_counter()
    for step in todo:
      outputs.append(step_fn(step))
    sync_fn(outputs[-1])
    phases[f'{phase}_s'] = time.perf_counter() - start
    phases[f'{phase}_compiles'] = compiles() - before
  return outputs, phases


def run_ours(model_dir: str, steps: list[list[dict]], *, rows: int,
             warmup_steps: int, learning_rate: float, weight_decay: float,
             precision: str = 'highest') -> dict:
  """rao_jax's train step on `steps`; returns timings and per-step losses."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from rao_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  from rao_jax.model import sharding  # pylint: disable=g-import-not-at-top
  from rao_jax.rl import losses  # pylint: disable=g-import-not-at-top
  from rao_jax.rl import packing  # pylint: disable=g-import-not-at-top
  from rao_jax.rl import update  # pylint: disable=g-import-not-at-top

  mesh = model_lib.make_mesh({'fsdp': -1})
  rules = model_lib.DEFAULT_RULES
  model = model_lib.load_hf(model_dir, mesh=mesh, rules=rules)
  optim = update.OptimConfig(learning_rate=learning_rate,
                             weight_decay=weight_decay)
  with sharding.use_mesh(mesh, rules):
    optimizer = nnx.Optimizer(model, update.make_optimizer(optim),
                              wrt=nnx.Param)
  graphdef, state = update.split_train_state(model, optimizer)
  del model, optimizer  # the state is donated: keep no other handles
  # As `RunConfig.sft_loss`.
  loss_cfg = losses.LossConfig(estimator='sft', aggregation='token_mean')
  row_sharding = sharding.named_sharding(mesh, (sharding.BATCH, None), rules)
  train_state = [state]
  schedule = update.learning_rate_schedule(optim)
  updates_done = [0]  # one update per step: the schedule's trainer step

  def step_fn(step):
    # As rl.sequence_update: pack, put rows on the batch axes, one update.
    sequences = [packing.TrainSequence(
        tokens=np.asarray(s['tokens'], np.int32),
        loss_mask=np.asarray(s['loss_mask'], np.int32),
        sampler_logprobs=np.zeros(len(s['tokens']), np.float32))
                 for s in step]
    batches, _ = packing.pack(sequences, buckets=(ROW_LENGTH,),
                              rows_per_batch=rows)
    assert len(batches) == 1, 'make_steps packs each step into one batch'
    batch = {k: jax.device_put(v, row_sharding)
             for k, v in batches[0].items()}
    with sharding.use_mesh(mesh, rules):
      train_state[0], metrics = update.train_step(
          graphdef, train_state[0], batch, loss_cfg,
          float(schedule(updates_done[0])))
    updates_done[0] += 1
    return metrics['loss'], metrics['grad_norm']

  # Every XLA compile in this process from here on, with its duration.
  compile_s = []
  jax.monitoring.register_event_duration_secs_listener(
      lambda event, duration, **unused: compile_s.append(duration)
      if event == '/jax/core/compile/backend_compile_duration' else None)
  # On GPUs XLA may run fp32 matmuls in TF32 unless told otherwise; torch
  # does not by default. One flag sets both (see --precision).
  with jax.default_matmul_precision(precision):
    outputs, phases = _timed_steps(step_fn, jax.block_until_ready, steps,
                                   warmup_steps,
                                   compiles=lambda: len(compile_s))
  jax.block_until_ready(train_state[0])
  device = jax.devices()[0]
  stats = device.memory_stats() or {}
  return dict(
      device=f'jax {jax.__version__} {jax.default_backend()} '
             f'({device.device_kind}, {len(jax.devices())} device(s))',
      **phases, losses=[float(loss) for loss, _ in outputs],
      grad_norms=[float(g) for _, g in outputs],
      # XLA's own compile time; the first step also traces and lowers.
      compile_s=sum(compile_s[:phases['first_step_compiles']]),
      peak_device_mb=stats.get('peak_bytes_in_use', 0) / 2**20 or None)


def run_hf(model_dir: str, steps: list[list[dict]], *, warmup_steps: int,
           learning_rate: float, weight_decay: float,
           precision: str = 'highest', threads: int | None = None) -> dict:
  """HF transformers (torch) training on `steps`; as `run_ours` returns."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from rao_jax.rl import update  # pylint: disable=g-import-not-at-top

  if threads:
    torch.set_num_threads(threads)
  old_precision = torch.get_float32_matmul_precision()
  torch.set_float32_matmul_precision(
      'highest' if precision == 'highest' else 'high')
  device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  model = transformers.AutoModelForCausalLM.from_pretrained(
      model_dir, dtype=torch.float32).to(device).train()
  # The same optimiser as update.make_optimizer: AdamW (decoupled decay on
  # every parameter, as optax.adamw without a mask), global-norm clip 1.0,
  # and its schedule (a linear warm-up from 0 when it has one, else the
  # constant learning rate).
  optim = update.OptimConfig(learning_rate=learning_rate,
                             weight_decay=weight_decay)
  optimizer = torch.optim.AdamW(
      model.parameters(), lr=optim.learning_rate, betas=(optim.b1, optim.b2),
      eps=optim.eps, weight_decay=optim.weight_decay)
  warmup = optim.warmup_steps
  schedule = torch.optim.lr_scheduler.LambdaLR(
      optimizer, lambda count: min(count / warmup, 1.0) if warmup else 1.0)

  def step_fn(step):
    width = max(len(s['tokens']) for s in step)
    ids = np.zeros((len(step), width), np.int64)
    mask = np.zeros_like(ids)
    labels = np.full_like(ids, -100)  # ignored by HF's loss
    for i, s in enumerate(step):
      n = len(s['tokens'])
      ids[i, :n] = s['tokens']
      mask[i, :n] = 1
      labels[i, :n] = np.where(np.asarray(s['loss_mask']) > 0, s['tokens'],
                               -100)
    # HF shifts labels inside: token i is predicted from position i - 1, as
    # in losses.token_logprobs.
    out = model(input_ids=torch.from_numpy(ids).to(device),
                attention_mask=torch.from_numpy(mask).to(device),
                labels=torch.from_numpy(labels).to(device), use_cache=False)
    out.loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                               optim.grad_clip)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)
    return out.loss.detach(), grad_norm.detach()

  def sync(unused):
    if device.type == 'cuda':
      torch.cuda.synchronize()

  outputs, phases = _timed_steps(step_fn, sync, steps, warmup_steps)
  torch.set_float32_matmul_precision(old_precision)
  name = (torch.cuda.get_device_name() if device.type == 'cuda' else
          f'{torch.get_num_threads()} threads')
  return dict(
      device=f'torch {torch.__version__} {device.type} ({name}), '
             f'transformers {transformers.__version__}, attention '
             f'{model.config._attn_implementation}',  # pylint: disable=protected-access
      **phases, losses=[float(loss) for loss, _ in outputs],
      grad_norms=[float(g) for _, g in outputs], compile_s=None,
      peak_device_mb=(torch.cuda.max_memory_allocated() / 2**20
                      if device.type == 'cuda' else None))


def _worker_main(args):
  with open(args.steps_file) as f:
    spec = json.load(f)
  kwargs = dict(warmup_steps=spec['warmup_steps'],
                learning_rate=spec['learning_rate'],
                weight_decay=spec['weight_decay'], precision=args.precision)
  if args.worker == 'ours':
    result = run_ours(args.model_dir, spec['steps'], rows=spec['rows'],
                      **kwargs)
  else:
    # One thread by default: on the shared 2-core machine this was written
    # on, a tiny-model step took 0.77 s with 1 thread and 1.8-2.1 s with 2
    # (torch's spinning workers), as sampler_bench.py found for generate.
    result = run_hf(args.model_dir, spec['steps'],
                    threads=int(os.environ.get('BENCH_TORCH_THREADS', '1')),
                    **kwargs)
  result['peak_rss_mb'] = _peak_rss_mb()
  print(json.dumps(result))


# ---------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------


def _run_worker(worker, model_dir, steps_file, precision, env):
  cmd = [sys.executable, os.path.abspath(__file__), f'--worker={worker}',
         f'--model_dir={model_dir}', f'--steps_file={steps_file}',
         f'--precision={precision}']
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                        check=False)
  if proc.returncode:
    return None, '\n'.join(proc.stderr.strip().splitlines()[-15:]) or 'failed'
  return json.loads(proc.stdout.strip().splitlines()[-1]), None


def _relative(a, b):
  return abs(a - b) / max(abs(a), abs(b), 1e-12)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true',
                      help='tiny config only (< 2 min on a CPU)')
  parser.add_argument('--steps', type=int, default=None,
                      help='timed steps (default: tiny 10, 130M 3 on CPU, '
                      '20 on accelerators)')
  parser.add_argument('--warmup_steps', type=int, default=2,
                      help='untimed steps first (the first one compiles)')
  parser.add_argument('--learning_rate', type=float, default=1e-3)
  parser.add_argument('--weight_decay', type=float, default=0.02)
  parser.add_argument('--precision', choices=('highest', 'tensorfloat32'),
                      default='highest',
                      help='fp32 matmul precision in both systems (TF32 '
                      'matters on GPUs only)')
  bench_models.add_hf_dir_flag(parser)
  parser.add_argument('--rows', default=None,
                      help='comma-separated packed rows per step, one case '
                      'each (default: tiny 16, 130M 8, a checkpoint 4)')
  parser.add_argument('--worker', choices=('ours', 'hf'))
  parser.add_argument('--model_dir')
  parser.add_argument('--steps_file')
  args = parser.parse_args()
  if args.worker:
    return _worker_main(args)
  if args.warmup_steps < 1:
    parser.error('--warmup_steps must be >= 1: the first step compiles')

  # The driver only writes weights; on a GPU it must not preallocate most of
  # the memory the workers (which get the environment as it was) will use.
  # Both workers start with the malloc tunable `rao_jax.main` runs with.
  from rao_jax.runtime import host_memory  # pylint: disable=g-import-not-at-top
  worker_env = (host_memory.environment_with_tunable(os.environ) or
                dict(os.environ))
  os.environ['XLA_PYTHON_CLIENT_PREALLOCATE'] = 'false'
  import jax  # pylint: disable=g-import-not-at-top
  on_cpu = jax.default_backend() == 'cpu'
  print(f'jax backend: {jax.default_backend()}, {os.cpu_count()} CPUs, load '
        f'{os.getloadavg()[0]:.1f}')
  rows_md, summary, all_agree = [], {}, True
  with tempfile.TemporaryDirectory() as tmp:
    cases = []  # (name, rows, model config, model directory)
    for model, config, model_dir in bench_models.models(
        args.quick, args.hf_dir, tmp):
      row_counts = ([int(r) for r in args.rows.split(',')] if args.rows
                    else [ROWS.get(model, 4)])
      cases += [(model if len(row_counts) == 1 else f'{model} x{rows}', rows,
                 config, model_dir) for rows in row_counts]
    for name, rows, config, model_dir in cases:
      timed = args.steps or (20 if not on_cpu else 10 if name == 'tiny' else 3)
      steps = make_steps(config.vocab_size, rows, args.warmup_steps + timed)
      steps_file = os.path.join(tmp, f'{name.replace(" ", "_")}_steps.json')
      with open(steps_file, 'w') as f:
        json.dump(dict(steps=steps, rows=rows,
                       warmup_steps=args.warmup_steps,
                       learning_rate=args.learning_rate,
                       weight_decay=args.weight_decay), f)
      timed_tokens = sum(len(s['tokens']) for step in steps[args.warmup_steps:]
                         for s in step)
      out = {}
      for system in ('ours', 'hf'):
        out[system], error = _run_worker(system, model_dir, steps_file,
                                         args.precision, worker_env)
        if error:
          print(f'{system} on {name} failed: {error}')
          all_agree = False
        else:
          print(f'{name} {system}: {out[system]["device"]}')
      ours, hf = out['ours'], out['hf']
      for r in (ours, hf):
        if r:
          r['tokens_per_s'] = timed_tokens / r['timed_s']
      for system, r in out.items():
        if r is None:
          rows_md.append(f'| {name} | {system} | n/a |' + ' |' * 10)
          continue
        ratio = f'{r["tokens_per_s"] / hf["tokens_per_s"]:.2f}x' if hf else ''
        device_mb = (f'{r["peak_device_mb"]:,.0f}' if r['peak_device_mb']
                     else 'n/a')
        compile_s = 'n/a' if r['compile_s'] is None else f'{r["compile_s"]:.1f}'
        rows_md.append(
            f'| {name} | {system} | {r["tokens_per_s"]:,.0f} | {ratio} | '
            f'{1e3 * r["timed_s"] / timed:,.0f} | {r["first_step_s"]:.1f} | '
            f'{compile_s} | {r["warmup_s"]:.1f} | {r["peak_rss_mb"]:,.0f} | '
            f'{device_mb} | '
            f'{r["losses"][0]:.5f} | {r["losses"][-1]:.5f} |')
      summary[name] = dict(rows=rows, timed_steps=timed,
                           tokens_per_step=timed_tokens / timed)
      if ours and hf:
        first_diff = _relative(ours['losses'][0], hf['losses'][0])
        last_diff = _relative(ours['losses'][-1], hf['losses'][-1])
        grad_diff = _relative(ours['grad_norms'][0], hf['grad_norms'][0])
        agree = first_diff <= LOSS_TOLERANCE
        all_agree &= agree
        print(f'{name}: first-step loss ours {ours["losses"][0]:.6f} hf '
              f'{hf["losses"][0]:.6f} (relative difference {first_diff:.1e}, '
              f'{"OK" if agree else "MISMATCH"} at {LOSS_TOLERANCE:g}); '
              f'first-step grad norm {grad_diff:.1e} apart; after '
              f'{len(steps)} steps {ours["losses"][-1]:.6f} vs '
              f'{hf["losses"][-1]:.6f} ({last_diff:.1e} apart)')
        summary[name].update(
            ratio_vs_hf=ours['tokens_per_s'] / hf['tokens_per_s'],
            first_loss_rel_diff=first_diff,
            first_grad_norm_rel_diff=grad_diff,
            last_loss_rel_diff=last_diff, losses_agree=agree,
            timed_compiles=ours['timed_compiles'])
        if ours['timed_compiles'] or ours['warmup_compiles']:
          print(f'{name}: ours compiled {ours["warmup_compiles"]} times in '
                f'the warm-up after the first step and '
                f'{ours["timed_compiles"]} times in the timed steps')
      for system, r in out.items():
        if r:
          summary[name][system] = {
              k: r[k] for k in ('tokens_per_s', 'first_step_s', 'compile_s',
                                'warmup_s', 'peak_rss_mb', 'peak_device_mb',
                                'device')}
          summary[name][system].update(
              step_ms=1e3 * r['timed_s'] / timed, first_loss=r['losses'][0],
              last_loss=r['losses'][-1])
  print(f'\nfp32 ({args.precision} matmuls), SFT token-mean loss, AdamW lr '
        f'{args.learning_rate:g} wd {args.weight_decay:g} betas (0.9, 0.95), '
        f'clip 1.0; sequences of {SEQ_LENGTHS[0]}-{SEQ_LENGTHS[1]} random '
        f'tokens, loss on the last third, packed into rows of {ROW_LENGTH} '
        f'(ours) or padded one per row (HF); {args.warmup_steps} untimed '
        'warm-up steps, then the timed ones; tokens = real (non-pad) tokens\n')
  print('| config | system | tokens/s | vs HF | step ms | first step s | '
        'of which XLA compile s | rest of warm-up s | peak RSS MB | '
        'peak device MB | first loss | last loss |')
  print('|---|---|---|---|---|---|---|---|---|---|---|---|')
  print('\n'.join(rows_md))
  summary['losses_agree'] = all_agree
  print(json.dumps(summary))
  return 0 if all_agree else 1


if __name__ == '__main__':
  sys.exit(main())
