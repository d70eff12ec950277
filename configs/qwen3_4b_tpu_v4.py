r"""A Qwen3-4B recursive agent on a Cloud TPU v4 slice (`:v4-32`, `:v4-8`).

The paper's model (it trained Qwen3-4B-Instruct): lr 3e-6, betas (0.9,
0.95), wd 0.017, grad clip 1, 16 root tasks x 8 trees a step, CISPO. Run on
every host of the slice:

  python -m rao_jax.main --config=configs/qwen3_4b_tpu_v4.py \
      --workdir=gs://BUCKET/run \
      --config.init_from_hf=/path/to/Qwen3-4B-Instruct-2507 \
      --config.tokenizer.path=/path/to/Qwen3-4B-Instruct-2507

and plan it first, on any machine:

  python -m rao_jax.main --config=configs/qwen3_4b_tpu_v4.py:v4-8 \
      --workdir=/tmp/plan --config.mode=plan

The rest is configs/tpu_v4.py's (its `paper_config`). bf16 compute, fp32
parameters and Adam moments (4.02B parameters: 48 GB of train state,
sharded over every chip). Qwen3 has 32 query heads and 8 KV heads, so the
mesh splits them over a tensor axis of 4: each chip attends with 8 heads,
and holds a quarter of every KV cache and of the attention probabilities
the train step keeps for backward, which cost 36 layers x 32 heads x
length^2 a row; rows are 2048 tokens.

Memory plan, GiB a chip of 32 (`--config.mode=plan`, estimated: a
compile of the 4B model needs more than 23 GB of host memory, so plan it
with libtpu on a larger machine for the compiled figures):

                               v4-32 (96 slots)   v4-8 (16 slots)
  parameters, fp32                   0.94              3.75
  Adam moments                       1.87              7.49
  KV cache (one sampler)             1.69              1.13
  train step, 2048 tokens           11.23             11.67
  decode (window 2048)               1.89              0.02
  largest prefill                   15.94             10.48
  peak (arrays + largest)           20.44             24.04

Both fit the budget of 28.8 (plan.headroom 0.9). On the v4-8 the fp32
parameters and Adam moments alone take 11.2 GiB a chip; the slots are
what the rest allows. What each line means: docs/plan.md.
"""

from configs import tpu_v4
from rao_jax.model import config as model_config

# The mesh, slots, rows (one a group of four chips) and longest node of
# each slice, as the plan sizes them.
SLICES = {
    'v4-32': dict(mesh=dict(data=1, fsdp=4, tensor=4), num_slots=96,
                  rows_per_batch=4, max_len=2048),
    'v4-8': dict(mesh=dict(data=1, fsdp=1, tensor=4), num_slots=16,
                 rows_per_batch=1, max_len=2048),
}


def get_config(arg: str | None = None):
  """Qwen3 4B on the v4-32 (default) or `arg='v4-8'`."""
  slice_name = tpu_v4.parse_arg(arg, 'configs/qwen3_4b_tpu_v4.py')
  config = tpu_v4.paper_config(
      slice_name, model_config.qwen3_4b(dtype='bfloat16',
                                        param_dtype='float32'),
      slices=SLICES)
  return config
