r"""A Gemma-3-1B recursive agent on a Cloud TPU v4 slice (`:v4-32`, `:v4-8`).

Run on every host of the slice (`launch/run.sh` does):

  python -m rao_jax.main --config=configs/tpu_v4.py --workdir=gs://BUCKET/run \
      --config.init_from_hf=/path/to/gemma-3-1b \
      --config.tokenizer.path=/path/to/gemma-3-1b

`configs/tpu_v4.py` is the v4-32 (16 chips, 4 hosts); `configs/tpu_v4.py:v4-8`
the v4-8 (4 chips, one host). Check a variant before paying for it, on any
machine (shapes only; with libtpu installed the programs are compiled for
the slice ahead of time):

  python -m rao_jax.main --config=configs/tpu_v4.py:v4-8 --workdir=/tmp/plan \
      --config.mode=plan

The paper's protocol and scale: SFT then RL on `medium` documents, 16 root
tasks x 8 trees a step, CISPO, lr 3e-6, betas (0.9, 0.95), wd 0.017, grad
clip 1; evaluation on easy/medium/hard. bf16 compute, fp32 parameters and
Adam moments, FSDP over every chip (Gemma 3 1B has one KV head: nothing
for a tensor axis to split). Expect each RL step to roll out 128 trees
and train on their nodes in minibatches of one row a chip.

Memory plan, GiB a chip of 32 (`--config.mode=plan`: compiled for the slice
by libtpu 0.0.42.1 on a CPU, and estimated without it):

                            v4-32 (256 slots)    v4-8 (64 slots)
                            compiled  estimated  compiled  estimated
  parameters, fp32             0.23      0.23       0.93      0.93
  Adam moments                 0.47      0.47       1.86      1.86
  KV cache (one sampler)       1.63      1.63       1.63      1.63
  train step, 1 row a chip    16.97     20.73      16.52     20.99
  decode (window 4096)         1.41      1.93       1.90      1.93
  largest prefill              8.00     11.63       6.64     11.63
  generated code               0.68         -       0.69         -
  peak (arrays, train, code)  19.97     23.05      21.63     25.40

Both fit the budget of 28.8 (plan.headroom 0.9). The train step is the
largest program: no layer is rematerialised, so the backward pass keeps
every layer's attention probabilities (one 4096-token row a chip: ~0.5
GiB a layer); a second row a chip, or a longer one, is what does not fit.
What each line means: docs/plan.md.
"""

import dataclasses

from configs import cpu_tiny
from rao_jax.model import config as model_config
from rao_jax.rl import update

# Per slice: the mesh, the slots both samplers hold, the rows of a packed
# minibatch (one row a chip) and the longest node, as the plan sizes them.
SLICES = {
    'v4-32': dict(mesh=dict(data=1, fsdp=16, tensor=1), num_slots=256,
                  rows_per_batch=16, max_len=4096),
    'v4-8': dict(mesh=dict(data=1, fsdp=4, tensor=1), num_slots=64,
                 rows_per_batch=4, max_len=4096),
}


def parse_arg(arg: str | None, file: str) -> str:
  """The slice a variant names ('' or None: the v4-32)."""
  name = arg or 'v4-32'
  if name not in SLICES:
    raise ValueError(f'{file}: unknown variant {arg!r} (known: '
                     f'{", ".join(sorted(SLICES))})')
  return name


def paper_config(slice_name: str, model: model_config.ModelConfig,
                 slices=None):
  """cpu_tiny's sections at the paper's scale on one v4 slice; `slices`
  (default `SLICES`) gives its mesh, slots, rows and node length."""
  shape = (slices or SLICES)[slice_name]
  max_len = shape['max_len']
  config = cpu_tiny.get_config()
  config.distributed = True  # every host of the slice runs the command
  config.model = dataclasses.asdict(model)
  # Weights and tokenizer of a Hugging Face checkpoint directory copied next
  # to the run (nothing is downloaded at run time); turns in the
  # checkpoint's own chat template, opened by the protocol explained
  # (docs/tokenizers.md).
  config.tokenizer = dict(kind='hf', path='', chat_template='checkpoint',
                          preamble=True)

  # The paper's protocol: train on medium, evaluate on easy/medium/hard.
  config.tasks.train_level = 'medium'
  config.tasks.sft_level = ''  # SFT on medium too
  config.tasks.task_kinds = ()  # every question kind
  config.tasks.eval_levels = ('easy', 'medium', 'hard')
  config.tasks.num_eval = 256
  config.sampler.num_slots = shape['num_slots']
  config.sampler.max_len = max_len
  config.sampler.decode_steps = 32
  config.rollout.budgets.max_new_tokens = 512
  config.rollout.window.inline_chars = 4096
  config.rollout.window.head_chars = 512
  config.rollout.budgets.max_tokens = 1 << 20
  config.rl.roots_per_step = 16
  config.rl.group_size = 8
  config.rl.credit.baseline = 'leave_one_out'  # the paper's Eq. 3
  config.rl.steps = 200
  rows = shape['rows_per_batch']
  # Row buckets up to the longest node (multiples of the log-prob chunk).
  lengths = tuple(n for n in (1024, 2048) if n < max_len) + (max_len,)
  config.rl.rows_per_batch = rows
  config.rl.pack_lengths = lengths
  config.sft.rows_per_batch = rows
  config.sft.pack_lengths = lengths
  config.rl.loss.estimator = 'cispo'
  config.rl.loss.logprob_chunk = 256
  config.sft.steps = 500
  config.sft.roots_per_step = 64
  config.sft.aggregation = 'token_mean'
  config.sft.optim = dataclasses.asdict(update.OptimConfig(
      learning_rate=1e-5, warmup_steps=50, decay_steps=450))
  config.optim = dataclasses.asdict(update.OptimConfig(
      learning_rate=3e-6, b1=0.9, b2=0.95, weight_decay=0.017,
      grad_clip=1.0))
  config.generate.max_len = max_len
  config.generate.max_new_tokens = 64

  config.mesh = dict(shape['mesh'])
  config.plan = dict(topology=slice_name, hbm_gib=32.0, headroom=0.9,
                     compile=True)
  config.checkpoint.every_steps = 20
  return config


def get_config(arg: str | None = None):
  """Gemma 3 1B on the v4-32 (default) or `arg='v4-8'`."""
  slice_name = parse_arg(arg, 'configs/tpu_v4.py')
  return paper_config(
      slice_name,
      model_config.gemma3_1b(dtype='bfloat16', param_dtype='float32'))
