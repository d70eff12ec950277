"""The typed run config: parsing, errors that name the field, phases."""

import dataclasses
import json

import pytest

import config_testing

from configs import cpu_tiny
from configs import tpu_v4
from rao_jax import config as config_lib
from rao_jax.training import phases as phases_lib
from rao_jax.rl import credit
from rao_jax.rl import losses


def _typed(arg='smoke', **fields):
  """A typed config; `a__b` keys stand for the dotted field `a.b`."""
  return config_testing.run_config(
      arg, **{k.replace('__', '.'): v for k, v in fields.items()})


def test_every_section_is_a_frozen_dataclass():
  run = _typed(None)
  for field in dataclasses.fields(run):
    value = getattr(run, field.name)
    if dataclasses.is_dataclass(value):
      with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(value, dataclasses.fields(value)[0].name, None)
  assert run.rollout.window.max_tokens == run.sampler.max_len
  assert run.sft.pack_lengths == (144, 288)  # tuples, hashable
  hash(run.rl)
  hash(run.sft)


@pytest.mark.parametrize('field, value, message', [
    ('sft__optim__learning_rate', -1.0, 'sft.optim.learning_rate=-1.0'),
    ('rollout__window__head_chars', 99, 'rollout.window.head_chars'),
    ('sft__solver', 'magic', "sft.solver='magic'"),
    ('rl__pack_lengths', (100,), 'rl.pack_lengths=[100]: the largest'),
    ('sft__pack_lengths', (144, 300), 'sft.pack_lengths: 300 is not a '
     'multiple of rl.loss.logprob_chunk=144'),
    ('rl__credit__baseline', 'median', "rl.credit.baseline='median': "
     "expected one of ('leave_one_out',"),
    ('tokenizer__kind', 'sentencepiece', 'tokenizer.kind'),
    ('checkpoint__max_to_keep', 0, 'checkpoint.max_to_keep=0'),
    ('tasks__num_eval', 0, 'tasks.num_eval=0'),
    ('tasks__eval_agents', ('recursive', 'oracle'), "tasks.eval_agents=("
     "'recursive', 'oracle'): expected one or more of recursive, "
     'single_agent'),
    ('tasks__eval_agents', (), 'tasks.eval_agents=(): expected one or more'),
    ('mesh__pipeline', 2, "mesh: unknown fields ['pipeline']"),
])
def test_bad_fields_are_named(field, value, message):
  with pytest.raises(ValueError) as error:
    _typed(**{field: value})
  assert message in str(error.value)


def test_unknown_fields_are_refused():
  config = cpu_tiny.get_config('smoke')
  config.rl.lerning_rate = 1.0
  with pytest.raises(ValueError, match=r"rl: unknown fields \['lerning_rate'\]"):
    config_lib.from_config_dict(config)
  config = cpu_tiny.get_config('smoke')
  config.extra = 1
  with pytest.raises(ValueError, match=r"config: unknown fields \['extra'\]"):
    config_lib.from_config_dict(config)


def test_to_dict_is_the_config_files_shape():
  config = cpu_tiny.get_config()
  plain = config_lib.from_config_dict(config).to_dict()
  # The plan's target is not part of what a run records.
  assert set(plain) == set(config.to_dict()) - {'plan'}
  for section in ('sft', 'rl', 'rollout', 'tasks', 'sampler'):
    assert set(plain[section]) == set(config[section].to_dict()), section
  json.dumps(plain)


def test_a_hidden_depth_budget_is_recorded_and_a_shown_one_is_not():
  # Shown (the default) it is left out, so workdirs of runs from before the
  # field compare equal; hidden, the run records it.
  config = cpu_tiny.get_config()
  assert 'show_depth_budget' not in (
      config_lib.from_config_dict(config).to_dict()['rollout']['window'])
  config.rollout.window.show_depth_budget = False
  run = config_lib.from_config_dict(config)
  assert run.rollout.window.show_depth_budget is False
  assert run.to_dict()['rollout']['window']['show_depth_budget'] is False


def test_registries_list_their_variants():
  assert credit.BASELINES.names() == (
      'leave_one_out', 'leave_one_out_depth', 'leave_one_out_task',
      'leave_one_out_same_task', 'leave_one_out_results', 'group_mean',
      'none')
  assert losses.ESTIMATORS.names() == ('cispo', 'ppo', 'sft')
  with pytest.raises(ValueError, match='rl.loss.estimator'):
    losses.ESTIMATORS.get('reinforce')


def test_phases_are_one_record_each():
  run = _typed(None)
  sft, rl = phases_lib.phases(run, ('sft', 'rl'))
  assert (sft.name, sft.first_step, sft.last_step) == ('sft', 1, 150)
  assert (rl.name, rl.first_step, rl.last_step) == ('rl', 151, 160)
  assert sft.update.loss.estimator == 'sft'
  assert sft.update.loss.temperature == 1.0
  assert rl.update.loss == run.rl.loss
  assert sft.update.passes == 1 and not sft.update.skip_zero_advantage
  assert rl.update.skip_zero_advantage
  assert sft.level == rl.level == 'moderate'
  # Each phase's schedule starts at its own first step.
  assert sft.learning_rate(1) == 0.0  # warm-up from 0
  assert rl.learning_rate(151) == run.optim.learning_rate
  assert phases_lib.phase_at((sft, rl), 150) is sft
  assert phases_lib.phase_at((sft, rl), 151) is rl
  assert [p.name for p in phases_lib.phases(run, ('rl',))] == ['rl']
  assert phases_lib.phases(run, ('rl',))[0].first_step == 1
  assert phases_lib.phases(run, ()) == ()
  with pytest.raises(ValueError, match='unknown phases'):
    phases_lib.phases(run, ('eval',))


def test_shipped_tpu_config_needs_its_tokenizer_path():
  config = tpu_v4.get_config()
  with pytest.raises(ValueError, match='tokenizer.path'):
    config_lib.from_config_dict(config)
  config.tokenizer.path = '/checkpoints/gemma-3-1b'
  run = config_lib.from_config_dict(config)
  assert run.distributed and run.mesh.fsdp == 16


@pytest.mark.parametrize('arg', ['mixture', 'mixture,smoke'])
def test_the_mixture_variant_leaves_delegating_to_rl(arg):
  config = config_lib.from_config_dict(cpu_tiny.get_config(arg))
  assert config.sft.solver == 'mixture'
  assert config.rl.credit.baseline == 'leave_one_out'
  if arg == 'mixture':
    assert config.tasks.train_level == 'mixed'
