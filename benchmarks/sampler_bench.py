r"""Greedy generation speed: rao_jax's slot sampler vs HF generate vs tunix.

  python benchmarks/sampler_bench.py --quick           # tiny config, < 2 min
  python benchmarks/sampler_bench.py                   # + the 130M config
  python benchmarks/sampler_bench.py --tunix_python=/work/tunix-venv/bin/python
  python benchmarks/sampler_bench.py --hf_dir=/tmp/gemma3-270m  # real weights

Every system runs the same random weights (written once with `save_hf`),
fp32, greedy, 128 new tokens for batches of prompts of mixed lengths (8 to
32 tokens). Each system runs in its own process, so peak memory is that
process's peak RSS (imports included), and tunix (which pins an older
safetensors and changes flax's sharding defaults process-wide) can live in
its own venv: pass its interpreter with --tunix_python or $TUNIX_PYTHON.
Each system is timed after one untimed warm-up run of the same shapes.

The limits are measured in the same run: memory bandwidth (a large NumPy
copy) and fp32 matmul peak (a jitted 2048^2 matmul). A token costs about
2 x num_params FLOPs, and a decode step reads every weight once, so the
FLOP limit is peak / (2 N) tokens/s and the bandwidth limit is
batch x bandwidth / (4 N) tokens/s; the table shows min(both).

Prints a markdown table, the greedy agreement between systems, and as the
last line one JSON object for the first model's largest batch (the tiny
config's 64, or `--hf_dir`'s checkpoint).
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

NEW_TOKENS = 128
PROMPT_LENS = (8, 32)
MAX_LEN = 160  # longest prompt + NEW_TOKENS


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------
# Workers: each runs one system in its own process and prints a JSON line.
# ---------------------------------------------------------------------------


def _worker_ours(model_dir, prompts_by_batch, chunk):
  import jax  # pylint: disable=g-import-not-at-top
  from rao_jax import model as model_lib  # pylint: disable=g-import-not-at-top
  from rao_jax import sampler as sampler_lib  # pylint: disable=g-import-not-at-top

  model = model_lib.load_hf(model_dir)
  results = {}
  for batch, prompts in prompts_by_batch.items():
    sampler = sampler_lib.SlotSampler(model, num_slots=int(batch),
                                      max_len=MAX_LEN)
    requests = [sampler_lib.Request(p, jax.random.key(i), NEW_TOKENS)
                for i, p in enumerate(prompts)]

    def run():
      start = time.perf_counter()
      sampler.admit(requests)
      ttft = time.perf_counter() - start
      turns = {}
      while sampler.num_running:
        turns.update({t.slot: t for t in sampler.decode(chunk)})
      total = time.perf_counter() - start
      for slot in list(turns):
        sampler.release(slot)
      return ttft, total, [turns[i].tokens.tolist() for i in range(len(prompts))]

    run()  # warm-up: compiles every program this shape needs
    ttft, total, tokens = run()
    compiles = sampler.num_compiles()
    # Host overhead of a decode call: a 1-step call minus the time of one
    # step inside a `chunk`-step call. No timing includes a compile: the
    # timed run compiled `chunk` steps at every window these lengths reach,
    # and the untimed decode(1) the one window (64) that the 1-step calls
    # use. Per decode step of the timed run it is that overhead / chunk.
    sampler.admit(requests)
    sampler.decode(1)
    one_step = min(_timed(lambda: sampler.decode(1)) for _ in range(8))
    in_loop = min(_timed(lambda: sampler.decode(chunk))
                  for _ in range(2)) / chunk
    for slot in range(len(prompts)):
      sampler.release(slot)
    call_overhead = max(0.0, one_step - in_loop)
    results[batch] = dict(
        tok_s=len(prompts) * NEW_TOKENS / total, ttft_s=ttft, tokens=tokens,
        host_overhead_ms=1e3 * call_overhead / chunk,
        call_overhead_ms=1e3 * call_overhead, compiles=compiles)
  return results


def _worker_hf(model_dir, prompts_by_batch):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  # One thread: on this shared 2-core machine torch's spin-waiting threads
  # made generate ~40x slower with 2 threads than with 1 (measured).
  torch.set_num_threads(int(os.environ.get('BENCH_TORCH_THREADS', '1')))
  model = transformers.AutoModelForCausalLM.from_pretrained(
      model_dir, dtype=torch.float32).eval()
  results = {}
  for batch, prompts in prompts_by_batch.items():
    width = max(map(len, prompts))
    ids = np.zeros((len(prompts), width), np.int64)
    mask = np.zeros_like(ids)
    for i, p in enumerate(prompts):  # left padding, as generate expects
      ids[i, width - len(p):] = p
      mask[i, width - len(p):] = 1
    kwargs = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                  do_sample=False, pad_token_id=0, eos_token_id=None)

    def run(n):
      start = time.perf_counter()
      with torch.no_grad():
        out = model.generate(**kwargs, max_new_tokens=n, min_new_tokens=n)
      return time.perf_counter() - start, out[:, width:].tolist()

    run(NEW_TOKENS)
    ttft, _ = run(1)
    total, tokens = run(NEW_TOKENS)
    results[batch] = dict(tok_s=len(prompts) * NEW_TOKENS / total,
                          ttft_s=ttft, tokens=tokens)
  return results


class _IdTokenizer:
  """Prompts travel as space-separated ids: no real tokenizer involved."""

  def __init__(self, vocab_size):
    self._vocab_size = vocab_size

  def encode(self, text, **unused):
    return [int(t) for t in text.split()]

  def decode(self, ids, **unused):
    return ' '.join(map(str, ids))

  def bos_id(self):
    return 0  # falsy: tunix then prepends no BOS, as the other systems

  def eos_id(self):
    return self._vocab_size + 7  # never sampled: all runs go to 128 tokens

  def pad_id(self):
    return 0


def _worker_tunix(model_dir, prompts_by_batch):
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from tunix.generate import sampler as tunix_sampler  # pylint: disable=g-import-not-at-top
  from tunix.models.gemma3 import model as tunix_model  # pylint: disable=g-import-not-at-top
  from tunix.models.gemma3 import params_safetensors  # pylint: disable=g-import-not-at-top

  with open(os.path.join(model_dir, 'config.json')) as f:
    hf = json.load(f)
  rope = hf.get('rope_parameters') or {}
  config = tunix_model.ModelConfig(
      num_layers=hf['num_hidden_layers'], num_embed=hf['vocab_size'],
      embed_dim=hf['hidden_size'], hidden_dim=hf['intermediate_size'],
      num_heads=hf['num_attention_heads'], head_dim=hf['head_dim'],
      num_kv_heads=hf['num_key_value_heads'],
      sliding_window_size=hf.get('sliding_window') or 4096,
      local_base_frequency=int(rope.get('sliding_attention', {}).get(
          'rope_theta', 10_000)),
      global_base_frequency=int(rope.get('full_attention', {}).get(
          'rope_theta', 10_000)),
      param_dtype=jnp.float32)
  model = params_safetensors.create_model_from_safe_tensors(
      model_dir, config, dtype=jnp.float32)
  tokenizer = _IdTokenizer(hf['vocab_size'])
  sampler = tunix_sampler.Sampler(
      model, tokenizer, tunix_sampler.CacheConfig(
          cache_size=2 * MAX_LEN, num_layers=config.num_layers,
          num_kv_heads=config.num_kv_heads, head_dim=config.head_dim))
  results = {}
  for batch, prompts in prompts_by_batch.items():
    texts = [' '.join(map(str, p)) for p in prompts]

    def run(n):
      start = time.perf_counter()
      out = sampler(texts, max_generation_steps=n,
                    max_prompt_length=PROMPT_LENS[1], echo=False,
                    eos_tokens=[tokenizer.eos_id()], temperature=0.0)
      return time.perf_counter() - start, [np.asarray(t).tolist()
                                           for t in out.tokens]

    run(NEW_TOKENS)
    run(1)
    ttft, _ = run(1)
    total, tokens = run(NEW_TOKENS)
    results[batch] = dict(tok_s=len(prompts) * NEW_TOKENS / total,
                          ttft_s=ttft, tokens=[t[:NEW_TOKENS] for t in tokens])
  return results


def _worker_main(args):
  with open(args.prompts) as f:
    prompts_by_batch = json.load(f)
  if args.worker == 'ours':
    results = _worker_ours(args.model_dir, prompts_by_batch, args.chunk)
  elif args.worker == 'hf':
    results = _worker_hf(args.model_dir, prompts_by_batch)
  else:
    results = _worker_tunix(args.model_dir, prompts_by_batch)
  print(json.dumps(dict(results=results, peak_rss_mb=_peak_rss_mb())))


# ---------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------


def _measure_limits():
  """Memory read bandwidth (bytes/s) and fp32 matmul peak (FLOP/s)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  # Read bandwidth: decoding reads the weights and writes almost nothing,
  # so a copy (read + write, what this measured before) understates it.
  src = jnp.ones(256 * 2**20 // 4, jnp.float32)  # 256 MiB, beyond the caches
  total = jax.jit(jnp.sum)
  total(src).block_until_ready()
  best = min(_timed(lambda: total(src).block_until_ready()) for _ in range(10))
  bandwidth = src.nbytes / best
  n = 2048
  a = jnp.ones((n, n), jnp.float32)
  matmul = jax.jit(lambda x: x @ x)
  matmul(a).block_until_ready()
  best = min(_timed(lambda: matmul(a).block_until_ready()) for _ in range(5))
  return bandwidth, 2 * n**3 / best


def _timed(fn):
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def _run_worker(python, worker, model_dir, prompts_file, chunk, env=None):
  cmd = [python, os.path.abspath(__file__), f'--worker={worker}',
         f'--model_dir={model_dir}', f'--prompts={prompts_file}',
         f'--chunk={chunk}']
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                        check=False)
  if proc.returncode:
    return None, proc.stderr.strip().splitlines()[-1:] or ['failed']
  return json.loads(proc.stdout.strip().splitlines()[-1]), None


def _agreement(a, b):
  """Fraction of tokens before the first divergence, over all sequences."""
  if a is None or b is None:
    return None
  same = 0
  for x, y in zip(a, b):
    n = 0
    while n < min(len(x), len(y)) and x[n] == y[n]:
      n += 1
    same += n
  return same / (NEW_TOKENS * len(a))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true',
                      help='tiny config only, batches 1 and 64')
  parser.add_argument('--tunix_python', default=os.environ.get(
      'TUNIX_PYTHON', '/work/tunix-venv/bin/python'))
  parser.add_argument('--chunk', type=int, default=32,
                      help='decode steps per sampler call')
  bench_models.add_hf_dir_flag(parser)
  parser.add_argument('--batches', default=None,
                      help='comma-separated batch sizes (default 1,16,64; '
                      '1,64 with --quick)')
  parser.add_argument('--worker', choices=('ours', 'hf', 'tunix'))
  parser.add_argument('--model_dir')
  parser.add_argument('--prompts')
  args = parser.parse_args()
  if args.worker:
    return _worker_main(args)

  # rao_jax settles JAX's platform before jax loads (no TPU probe errors
  # on a CPU machine with libtpu installed: rao_jax/runtime/platforms.py).
  import rao_jax  # pylint: disable=g-import-not-at-top,unused-import
  bandwidth, peak = _measure_limits()
  print(f'measured: memory read bandwidth {bandwidth / 1e9:.1f} GB/s, fp32 '
        f'matmul peak {peak / 1e9:.1f} GFLOP/s, {os.cpu_count()} CPUs')
  tunix_ok = os.path.exists(args.tunix_python)
  if not tunix_ok:
    print(f'tunix: no interpreter at {args.tunix_python!r} (pass '
          '--tunix_python or set TUNIX_PYTHON to a venv with google-tunix '
          'and jax==0.10.2): tunix column left empty')
  batches = (1, 64) if args.quick else (1, 16, 64)
  if args.batches:
    batches = tuple(int(b) for b in args.batches.split(','))
  rng = np.random.RandomState(0)
  rows, summary = [], {}
  with tempfile.TemporaryDirectory() as tmp:
    models = bench_models.models(args.quick, args.hf_dir, tmp)
    for name, config, model_dir in models:
      prompts = {b: [rng.randint(3, config.vocab_size,
                                 rng.randint(*PROMPT_LENS) + 1).tolist()
                     for _ in range(b)] for b in batches}
      prompts_file = os.path.join(tmp, f'{name}_prompts.json')
      with open(prompts_file, 'w') as f:
        json.dump(prompts, f)
      out, errors = {}, {}
      for system in ('ours', 'hf', 'tunix'):
        if system == 'tunix' and not tunix_ok:
          out[system], errors[system] = None, 'not installed'
          continue
        python = args.tunix_python if system == 'tunix' else sys.executable
        out[system], errors[system] = _run_worker(
            python, system, model_dir, prompts_file, args.chunk)
        if errors[system]:
          print(f'{system} on {name} failed: {errors[system]}')
      n = config.num_params()
      for b in batches:
        limit = min(peak / (2 * n), b * bandwidth / (4 * n))
        cell = {s: (o['results'][str(b)] if o else None)
                for s, o in out.items()}
        for s, r in cell.items():
          if r is None:
            rows.append(f'| {name} | {b} | {s} | n/a | | | | |')
            continue
          rows.append(
              f'| {name} | {b} | {s} | {r["tok_s"]:,.0f} | '
              f'{r["tok_s"] / limit:.0%} | {1e3 * r["ttft_s"]:.1f} | '
              f'{out[s]["peak_rss_mb"]:,.0f} | '
              f'{r.get("host_overhead_ms", float("nan")):.2f} |')
        ours = cell['ours']
        agree_hf = _agreement(ours and ours['tokens'],
                              cell['hf'] and cell['hf']['tokens'])
        agree_tunix = _agreement(ours and ours['tokens'],
                                 cell['tunix'] and cell['tunix']['tokens'])
        rows.append(f'| {name} | {b} | agreement | ours=hf {agree_hf} | '
                    f'ours=tunix {agree_tunix} | | | |')
        if name == models[0][0] and b == batches[-1]:
          summary = dict(
              ours_tok_s=ours and ours['tok_s'],
              hf_tok_s=cell['hf'] and cell['hf']['tok_s'],
              tunix_tok_s=cell['tunix'] and cell['tunix']['tok_s'],
              compiles=ours and ours['compiles'],
              limit_tok_s=limit, agreement_hf=agree_hf,
              agreement_tunix=agree_tunix,
              tunix_error=errors['tunix'])
          if summary['ours_tok_s'] and summary['hf_tok_s']:
            summary['ratio_vs_hf'] = summary['ours_tok_s'] / summary['hf_tok_s']
          else:
            summary['ratio_vs_hf'] = None
  print(f'\nfp32, greedy, {NEW_TOKENS} new tokens, prompts of '
        f'{PROMPT_LENS[0]}-{PROMPT_LENS[1]} tokens, decode chunk '
        f'{args.chunk}; limit = min(FLOP, bandwidth) limit measured above\n')
  print('| config | batch | system | tokens/s | of limit | TTFT ms | '
        'peak RSS MB | host ms/step |')
  print('|---|---|---|---|---|---|---|---|')
  print('\n'.join(rows))
  print(json.dumps(summary))


if __name__ == '__main__':
  main()
