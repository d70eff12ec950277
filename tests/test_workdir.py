"""A workdir is never silently reused: the record, the refusal, start over."""

import json
import os

import pytest

import config_testing

from rao_jax.runtime import workdir as workdir_lib

_run_config = config_testing.run_config


def test_same_run_and_free_fields_continue(tmp_path):
  config = _run_config()
  workdir_lib.record(workdir_lib.resolve(tmp_path), config, restored=False)
  workdir_lib.check(workdir_lib.resolve(tmp_path), config)  # the same run
  # Longer RL, another evaluation, another mesh: the same run continues.
  workdir_lib.check(workdir_lib.resolve(tmp_path), _run_config(**{
      'rl.steps': 9, 'tasks.num_eval': 5, 'mode': 'eval', 'mesh.tensor': 2,
      'checkpoint.every_steps': 7, 'log.progress_bar': True}))
  # SFT-only runs number their steps as train runs do.
  workdir_lib.check(workdir_lib.resolve(tmp_path), _run_config(mode='sft'))


@pytest.mark.parametrize('overrides, fields', [
    ({'model.mlp_dim': 256}, ['model.mlp_dim']),
    ({'seed': 3, 'rl.credit.baseline': 'leave_one_out'},
     ['rl.credit.baseline', 'seed']),
    ({'mode': 'rl'}, ['mode']),  # RL from step 1, not after SFT's steps
    ({'sft.steps': 4}, ['sft.steps']),
])
def test_another_run_is_refused_naming_the_fields(tmp_path, overrides,
                                                  fields):
  workdir_lib.record(workdir_lib.resolve(tmp_path), _run_config(), restored=False)
  before = (tmp_path / 'config.json').read_text()
  with pytest.raises(workdir_lib.WorkdirMismatch) as error:
    workdir_lib.check(workdir_lib.resolve(tmp_path), _run_config(**overrides))
  message = str(error.value)
  named = [line.split(':')[0].strip() for line in message.splitlines()
           if line.startswith('  ')]
  assert named == fields
  assert '--workdir' in message and '--start_over' in message
  assert (tmp_path / 'config.json').read_text() == before


def test_the_record_is_kept_unless_the_run_restored_and_trains(tmp_path):
  path = tmp_path / 'config.json'
  workdir_lib.record(workdir_lib.resolve(tmp_path), _run_config(), restored=False)
  first = json.loads(path.read_text())
  longer = _run_config(**{'rl.steps': 5})
  workdir_lib.record(workdir_lib.resolve(tmp_path), longer, restored=False)
  assert json.loads(path.read_text()) == first  # did not restore
  workdir_lib.record(workdir_lib.resolve(tmp_path), _run_config(mode='eval'), restored=True)
  assert json.loads(path.read_text()) == first  # evaluates only
  workdir_lib.record(workdir_lib.resolve(tmp_path), longer, restored=True)
  assert json.loads(path.read_text())['rl']['steps'] == 5


def test_move_aside_moves_the_run_aside(tmp_path):
  assert workdir_lib.move_aside(workdir_lib.resolve(tmp_path)) is None  # nothing to move
  for name in ('checkpoints', 'trees', 'data'):
    (tmp_path / name).mkdir()
  (tmp_path / 'checkpoints' / '3').mkdir()
  (tmp_path / 'metrics.jsonl').write_text('{"step": 1}\n')
  workdir_lib.record(workdir_lib.resolve(tmp_path), _run_config(), restored=False)
  moved = workdir_lib.move_aside(workdir_lib.resolve(tmp_path))
  assert sorted(os.listdir(moved)) == ['checkpoints', 'config.json',
                                       'metrics.jsonl', 'trees']
  assert os.path.isdir(os.path.join(moved, 'checkpoints', '3'))
  # The datasets stay; the run's files are gone from the top.
  assert sorted(os.listdir(tmp_path)) == ['data', 'replaced']
  workdir_lib.check(workdir_lib.resolve(tmp_path), _run_config(**{'model.mlp_dim': 256}))
