"""Refusals through the real entry point: one line on stderr naming the
field or path and what it accepts, exit status 2, nothing written; the
traceback only when asked for."""

import json
import os
import subprocess
import sys

import pytest

import xla_env

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(workdir, *args, env=None):
  return subprocess.run(
      [sys.executable, '-m', 'rao_jax.main', '--config=configs/cpu_tiny.py',
       f'--workdir={workdir}', *args], cwd=_ROOT,
      env=dict(xla_env.env(8), **(env or {})), capture_output=True,
      text=True, timeout=300)


def _one_line(result):
  """The refusal's line, checked to be all stderr says."""
  assert result.returncode == 2, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), lines
  return lines[0]


@pytest.fixture(scope='module')
def not_a_checkpoint(tmp_path_factory):
  """A directory with a config.json but no weights, and one with nothing."""
  path = tmp_path_factory.mktemp('hf')
  (path / 'config.json').write_text('{}')
  return path


@pytest.mark.parametrize('overrides, message', [
    (['--config.optim.learning_rate=nan'],
     'optim.learning_rate=nan: must be a finite number'),
    (['--config.sft.optim.learning_rate=inf'],
     'sft.optim.learning_rate=inf: must be a finite number'),
    (['--config.sampler.temperature=inf',
      '--config.rl.loss.temperature=inf'],
     'sampler.temperature=inf: must be a finite number'),
    (['--config.rl.credit.child_bonus=nan'],
     'rl.credit.child_bonus=nan: must be a finite number'),
    (['--config.optim.grad_clip=inf'],
     'optim.grad_clip=inf: must be a finite number'),
    (['--config.rl.loss.epsilon_max=nan'],
     'rl.loss.epsilon_max=nan: must be a finite number'),
    (['--config.model.norm_eps=nan'],
     'model.norm_eps=nan: must be a finite number'),
    (['--config.seed=-1'], 'seed=-1: must be an integer from 0 to'),
    (['--config.seed=4294967296'], 'seed=4294967296: must be an integer'),
    (['--config.tokenizer.kind=hf', '--config.tokenizer.path={empty}'],
     "tokenizer.path='{empty}': no tokenizer.json there (expected a "
     'directory holding a Hugging Face tokenizer.json)'),
    (['--config.init_from_hf={empty}/nope'],
     "init_from_hf='{empty}/nope': no such directory"),
    (['--config.init_from_hf={hf}'],
     "init_from_hf='{hf}': no *.safetensors there"),
    (['--config.no_such_field=1'],
     "--config.no_such_field=1: the config has no field 'no_such_field'"),
    (['--config.optim.nope=1'],
     "--config.optim.nope=1: the config has no field 'nope'"),
    (['--config.mode=nope'], "config.mode='nope': expected one of"),
    (['--config.mesh.tensor=3'], 'mesh='),
])
def test_a_bad_input_is_one_line_and_writes_nothing(
    tmp_path, not_a_checkpoint, overrides, message):
  empty = tmp_path / 'empty'
  empty.mkdir()
  names = dict(empty=empty, hf=not_a_checkpoint)
  workdir = tmp_path / 'run'
  result = _main(workdir, *[o.format(**names) for o in overrides])
  line = _one_line(result)
  assert message.format(**names) in line, line
  # Refused before the run was recorded: the corrected command is the
  # same run, not another one.
  assert not (workdir / 'config.json').exists()


def test_traceback_on_request(tmp_path):
  for args, env in ((['--verbosity=1'], None),
                    ([], {'RAO_TRACEBACK': '1'})):
    result = _main(tmp_path, '--config.optim.learning_rate=nan', *args,
                   env=env)
    assert result.returncode != 0
    assert 'Traceback' in result.stderr
    assert 'optim.learning_rate=nan' in result.stderr


def test_another_run_in_the_workdir_is_one_line(tmp_path):
  # A run recorded with another model: refused naming the field and the
  # way out, in one line.
  (tmp_path / 'config.json').write_text(json.dumps({
      'seed': 0, 'mode': 'generate', 'model': {'mlp_dim': 1}}))
  line = _one_line(_main(tmp_path, '--config.mode=eval'))
  assert 'holds another run' in line and 'model.mlp_dim' in line
  assert '--start_over' in line
