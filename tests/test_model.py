"""The decoder on its own: KV-cache decoding, packing, sharding, bad configs."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rao_jax import model as model_lib
from rao_jax import testing
from rao_jax.model import config as config_lib
from rao_jax.model import gemma
from rao_jax.model import params as params_lib
from rao_jax.model import sharding


def _tiny(**overrides) -> gemma.Transformer:
  return testing.tiny_model(**{'sliding_window': 5,
                               'final_logit_softcap': 20.0,
                               'attn_logit_softcap': 30.0, **overrides})


# A Gemma 3 with a short window and soft-caps; a Qwen3 with an untied head.
_MODELS = {
    'gemma3': _tiny,
    'qwen3_untied': lambda: testing.tiny_model(preset='tiny_qwen3',
                                               tie_embeddings=False),
}


@nnx.jit
def _forward(model, tokens, positions, segments=None, cache=None):
  return model(tokens, positions, segments, cache)


def _tokens(shape, seed=0, vocab=384):
  return jnp.asarray(np.random.RandomState(seed).randint(3, vocab, shape))


@pytest.mark.parametrize('name', list(_MODELS))
def test_cache_decode_equals_full_forward(name):
  model = _MODELS[name]()
  lengths = [11, 6]
  total = 16
  tokens = _tokens((2, total))
  positions = jnp.tile(jnp.arange(total), (2, 1))
  full, _ = _forward(model, tokens, positions)

  # Prefill rows of different lengths (right-padded), then one token at a
  # time; the sliding window (5) is shorter than the sequences.
  prefill_len = max(lengths)
  seg = (np.arange(prefill_len)[None] < np.array(lengths)[:, None])
  cache = gemma.init_cache(model.config, batch_size=2, max_len=32)
  logits, cache = _forward(model, tokens[:, :prefill_len], positions[:, :prefill_len],
                        jnp.asarray(seg, jnp.int32), cache)
  for row, n in enumerate(lengths):
    np.testing.assert_allclose(logits[row, :n], full[row, :n], atol=1e-4)
  pos = np.array(lengths)
  while pos.max() < total:
    live = pos < total
    tok = tokens[jnp.arange(2), jnp.minimum(pos, total - 1)][:, None]
    logits, cache = _forward(model, tok, jnp.asarray(pos)[:, None],
                         jnp.asarray(live, jnp.int32)[:, None], cache)
    for row in np.flatnonzero(live):
      np.testing.assert_allclose(logits[row, 0], full[row, pos[row]],
                                 atol=1e-4)
    pos = pos + live


def test_reused_cache_row_ignores_stale_entries():
  model = _tiny()
  cache = gemma.init_cache(model.config, batch_size=1, max_len=24)
  long_tokens = _tokens((1, 20), seed=3)
  _, cache = _forward(model, long_tokens, jnp.arange(20)[None], None, cache)
  short = _tokens((1, 6), seed=4)
  reused, _ = _forward(model, short, jnp.arange(6)[None], None, cache)
  fresh, _ = _forward(model, short, jnp.arange(6)[None])
  np.testing.assert_allclose(reused, fresh, atol=1e-4)


def test_packed_segments_equal_separate_rows():
  model = _tiny()
  a, b = _tokens((1, 7), seed=5), _tokens((1, 5), seed=6)
  packed = jnp.concatenate([a, b, jnp.zeros((1, 4), a.dtype)], axis=1)
  positions = jnp.asarray([list(range(7)) + list(range(5)) + [0] * 4])
  segments = jnp.asarray([[1] * 7 + [2] * 5 + [0] * 4])
  out, _ = _forward(model, packed, positions, segments)
  ref_a, _ = _forward(model, a, jnp.arange(7)[None])
  ref_b, _ = _forward(model, b, jnp.arange(5)[None])
  np.testing.assert_allclose(out[:, :7], ref_a, atol=1e-4)
  np.testing.assert_allclose(out[:, 7:12], ref_b, atol=1e-4)


@pytest.mark.parametrize('cfg', [
    config_lib.tiny(num_heads=4, num_kv_heads=2),
    config_lib.tiny_qwen3(tie_embeddings=False),
], ids=['gemma3', 'qwen3_untied'])
def test_sharded_parameters_and_forward_match_unsharded(cfg):
  mesh = sharding.make_mesh({'data': 2, 'fsdp': 2, 'tensor': 2})
  rules = sharding.DEFAULT_RULES
  model = params_lib.create_model(cfg, mesh, rules, seed=0)
  table = dict(rules)
  flat = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
  for path, axes in params_lib.param_axes(model).items():
    value = flat[path].get_value()
    expected = jax.sharding.PartitionSpec(*(table[a] for a in axes))
    assert value.sharding.is_equivalent_to(
        jax.sharding.NamedSharding(mesh, expected), value.ndim), path
  heads = [('embedder', 'table')] + [('lm_head',)] * (not cfg.tie_embeddings)
  for path in heads:  # [V, D]: vocab over tensor, embed over fsdp
    assert flat[path].get_value().sharding.spec == (
        jax.sharding.PartitionSpec('tensor', 'fsdp'))

  # The same weights, unsharded on one device.
  plain = nnx.merge(*nnx.split(gemma.Transformer(cfg, rngs=nnx.Rngs(0))))
  nnx.update(plain, jax.device_get(nnx.state(model)))
  tokens = _tokens((4, 10))
  positions = jnp.tile(jnp.arange(10), (4, 1))

  @nnx.jit
  def forward(m, t, p):
    return m(t, p)[0]

  with sharding.use_mesh(mesh, rules):
    sharded_out = forward(model, tokens, positions)
  plain_out = forward(plain, tokens, positions)
  np.testing.assert_allclose(sharded_out, plain_out, atol=1e-5)


def test_heads_not_dividing_tensor_axis_names_the_field():
  mesh = sharding.make_mesh({'data': 1, 'fsdp': 2, 'tensor': 4})
  cfg = config_lib.tiny(num_heads=4, num_kv_heads=2)
  with pytest.raises(ValueError, match=r'model\.num_kv_heads=2'):
    params_lib.check_shardable(cfg, mesh, sharding.DEFAULT_RULES)


def test_unknown_logical_axis_and_bad_rules_are_named():
  mesh = sharding.make_mesh({'fsdp': -1})
  rules = [r for r in sharding.DEFAULT_RULES if r[0] != 'mlp']
  with pytest.raises(ValueError, match=r"logical axis 'mlp'"):
    params_lib.check_shardable(config_lib.tiny(), mesh, rules)
  with pytest.raises(ValueError, match=r"'embed' -> 'model'"):
    params_lib.check_shardable(config_lib.tiny(), mesh,
                               [('embed', 'model')])
  with pytest.raises(ValueError, match=r'mesh.tensor=0'):
    sharding.make_mesh({'tensor': 0})
  with pytest.raises(ValueError, match=r'needs 6 devices'):
    sharding.make_mesh({'data': 3, 'tensor': 2})


@pytest.mark.parametrize('overrides, field', [
    (dict(num_heads=6, num_kv_heads=4), 'model.num_heads=6'),
    (dict(layer_types=('full_attention',)), 'model.layer_types'),
    (dict(dtype='float16'), 'model.dtype'),
    (dict(sliding_window=None), 'model.sliding_window'),
    (dict(head_dim=31), 'model.head_dim'),
    (dict(mlp_activation='gelu'), 'model.mlp_activation'),
    (dict(tie_embeddings='false'), 'model.tie_embeddings'),
    (dict(norm_scale_plus_one=None), 'model.norm_scale_plus_one'),
    (dict(embed_scale=1), 'model.embed_scale'),
    (dict(family='qwen2'), 'model.family'),
])
def test_bad_model_config_names_the_field(overrides, field):
  with pytest.raises(ValueError, match=field.replace('.', r'\.')):
    config_lib.tiny(**overrides)


def test_from_dict_refuses_unknown_fields():
  with pytest.raises(ValueError, match='num_layer'):
    config_lib.from_dict({'preset': 'tiny', 'num_layer': 2})
  cfg = config_lib.from_dict({'preset': 'gemma3_1b', 'dtype': 'bfloat16'})
  assert cfg.dtype == 'bfloat16' and cfg.num_layers == 26


def test_bf16_forward_tracks_fp32():
  model = _tiny()
  bf16 = gemma.Transformer(model.config.replace(dtype='bfloat16'),
                           rngs=nnx.Rngs(0))
  nnx.update(bf16, nnx.state(model))
  tokens = _tokens((2, 9))
  positions = jnp.tile(jnp.arange(9), (2, 1))
  ref, _ = _forward(model, tokens, positions)
  got, _ = _forward(bf16, tokens, positions)
  assert got.dtype == jnp.float32  # logits always come back in fp32
  assert np.abs(np.asarray(got) - np.asarray(ref)).max() < 0.25
  assert (np.asarray(got).argmax(-1) == np.asarray(ref).argmax(-1)).mean() > .9


@pytest.mark.parametrize('cfg', [
    config_lib.tiny(), config_lib.tiny_qwen3(),
    config_lib.tiny_qwen3(tie_embeddings=False)],
                         ids=['gemma3', 'qwen3', 'qwen3_untied'])
def test_num_params_counts_the_state(cfg):
  model = gemma.Transformer(cfg, rngs=nnx.Rngs(0))
  counted = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert counted == cfg.num_params()
  assert model_lib.ModelConfig is config_lib.ModelConfig
