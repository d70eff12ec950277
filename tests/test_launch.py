"""launch/*.sh: the gcloud commands they print, run against a recording
gcloud, and the remote commands they send, run in a scratch home directory.

No test reaches Google Cloud: a fake `gcloud` first on PATH records each call
(and answers `describe` from a list of states), so a dry run is checked to
run nothing, and watch's real loop is checked against a slice that is
preempted and comes back.
"""

import importlib.metadata
import os
import pathlib
import shlex
import shutil
import stat
import subprocess
import sys
import threading
import time

import jax
import packaging.requirements
import packaging.version
import pytest

_ROOT = pathlib.Path(__file__).resolve().parent.parent
_SCRIPTS = ('create', 'setup', 'run', 'logs', 'stop', 'watch', 'delete')
_GS = 'gs://my-bucket/run'

# Records its arguments NUL-separated in calls/NNNN; `describe` prints the
# next line of `states` (NOT_FOUND as gcloud's error), the workers' liveness
# check prints `liveness`, `storage ls` succeeds when `summary` exists.
_FAKE_GCLOUD = r"""#!/usr/bin/env bash
set -euo pipefail
fake="${FAKE_GCLOUD_DIR}"
mkdir -p "${fake}/calls"
n=$(find "${fake}/calls" -type f | wc -l)
printf '%s\0' "$@" > "${fake}/calls/$(printf %04d "${n}")"
case "$*" in
  *" describe "*)
    state=$(head -n 1 "${fake}/states")
    sed -i 1d "${fake}/states"
    if [[ "${state}" == NOT_FOUND ]]; then
      echo "ERROR: (gcloud) NOT_FOUND: Resource not found" >&2
      exit 1
    fi
    echo "${state}" ;;
  *rao_jax:running*) cat "${fake}/liveness" ;;
  "storage ls "*) [[ -f "${fake}/summary" ]] ;;
esac
"""


class Launcher:
  """Runs launch scripts with the fake gcloud and TMPDIR in one folder."""

  def __init__(self, folder: pathlib.Path):
    self.folder = folder
    bin_dir = folder / 'bin'
    bin_dir.mkdir()
    gcloud = bin_dir / 'gcloud'
    gcloud.write_text(_FAKE_GCLOUD)
    gcloud.chmod(gcloud.stat().st_mode | stat.S_IEXEC)
    self.env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}',
                    TMPDIR=str(folder), FAKE_GCLOUD_DIR=str(folder))

  def __call__(self, script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(['bash', f'launch/{script}.sh', *args], cwd=_ROOT,
                          env=self.env, capture_output=True, text=True,
                          timeout=60)

  def dry_run(self, script: str, *args: str) -> list[list[str]]:
    """The commands a dry run prints, as argument lists; checks it ran none."""
    result = self(script, '--dry-run', *args)
    assert result.returncode == 0, result.stderr
    assert not self.gcloud_calls(), 'a dry run called gcloud'
    assert not list(self.folder.glob('*.tar.gz')), 'a dry run wrote a tarball'
    return printed_commands(result.stdout)

  def gcloud_calls(self) -> list[list[str]]:
    calls = self.folder / 'calls'
    if not calls.exists():
      return []
    return [['gcloud', *p.read_text().split('\0')[:-1]]
            for p in sorted(calls.iterdir())]


@pytest.fixture
def launch(tmp_path):
  return Launcher(tmp_path)


def printed_commands(stdout: str) -> list[list[str]]:
  """Each `+ ` line of the output, read back as the shell would."""
  lines = [line[2:] for line in stdout.splitlines() if line.startswith('+ ')]
  return [shlex.split(line) for line in lines]


def remote_command(argv: list[str]) -> str:
  """The --command= of a `tpu-vm ssh`, checked to be valid bash."""
  [command] = [a.removeprefix('--command=') for a in argv
               if a.startswith('--command=')]
  check = subprocess.run(['bash', '-n', '-c', command], capture_output=True,
                         text=True)
  assert check.returncode == 0, check.stderr
  return command


def verb(argv: list[str]) -> str:
  """`tpu-vm create`, `queued-resources delete`, `git archive`, `sleep`..."""
  if argv[0] == 'gcloud' and argv[1:3] == ['compute', 'tpus']:
    return ' '.join(argv[3:5])
  if argv[0] == 'gcloud':
    return ' '.join(argv[1:3])
  return 'git archive' if argv[:1] == ['git'] else argv[0]


def head_sha() -> str:
  return subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=_ROOT, check=True,
                        capture_output=True, text=True).stdout.strip()


def test_create_prints_an_on_demand_slice(launch):
  [argv] = launch.dry_run('create')
  assert argv[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'create', 'rao']
  assert set(argv[6:]) == {'--zone=us-central2-b', '--accelerator-type=v4-32',
                           '--version=tpu-ubuntu2204-base'}


def test_create_spot_by_topology_in_a_project(launch):
  [argv] = launch.dry_run('create', '--spot', '--topology=2x2x4',
                          '--project=my-proj', '--zone=europe-west4-a',
                          '--name=big')
  assert argv[3:6] == ['tpu-vm', 'create', 'big']
  assert {'--spot', '--type=v4', '--topology=2x2x4', '--project=my-proj',
          '--zone=europe-west4-a'} <= set(argv)
  assert not any(a.startswith('--accelerator-type') for a in argv)


def test_create_through_a_queued_resource_waits_for_it(launch):
  create, describe = launch.dry_run('create', '--queued', '--spot',
                                    '--accelerator-type=v4-8', '--name=small')
  assert create[3:6] == ['queued-resources', 'create', 'small-qr']
  assert {'--node-id=small', '--accelerator-type=v4-8', '--spot',
          '--runtime-version=tpu-ubuntu2204-base'} <= set(create)
  assert describe[3:6] == ['queued-resources', 'describe', 'small-qr']
  assert '--format=value(state.state)' in describe

  # For real: it polls until the queued resource is ACTIVE.
  (launch.folder / 'states').write_text('WAITING_FOR_RESOURCES\nACTIVE\n')
  result = launch('create', '--queued', '--poll-interval=1')
  assert result.returncode == 0, result.stderr
  assert [verb(c) for c in launch.gcloud_calls()] == [
      'queued-resources create', 'queued-resources describe',
      'queued-resources describe']
  assert 'rao-qr is WAITING_FOR_RESOURCES' in result.stderr


def test_create_fails_when_the_queued_resource_fails(launch):
  (launch.folder / 'states').write_text('FAILED\n')
  result = launch('create', '--queued', '--poll-interval=1')
  assert result.returncode == 1
  assert 'rao-qr is FAILED' in result.stderr


def test_setup_uploads_head_and_installs_the_pinned_versions(launch):
  archive, scp, ssh = launch.dry_run('setup')
  tarball = str(launch.folder / 'rao_jax-rao.tar.gz')
  assert archive == ['git', '-C', str(_ROOT), 'archive', '--format=tar.gz',
                     '-o', tarball, head_sha()]
  assert scp[3:5] == ['tpu-vm', 'scp'] and '--worker=all' in scp
  assert tarball in scp and 'rao:rao_jax.tar.gz' in scp
  assert ssh[3:6] == ['tpu-vm', 'ssh', 'rao'] and '--worker=all' in ssh
  install = remote_command(ssh)
  assert 'pip install -q -c constraints.txt -e ".[tpu]"' in install
  assert install.endswith('python launch/check_tpu.py')

  # For real (gcloud faked): the tarball holds the checkout's HEAD.
  result = launch('setup')
  assert result.returncode == 0, result.stderr
  listing = subprocess.run(['tar', '-tzf', tarball], check=True,
                           capture_output=True, text=True).stdout.split()
  files_at_head = subprocess.run(
      ['git', 'ls-tree', '-r', '--name-only', 'HEAD'], cwd=_ROOT, check=True,
      capture_output=True, text=True).stdout.split()
  assert 'setup.py' in files_at_head
  assert {f for f in listing if not f.endswith('/')} == set(files_at_head)
  assert [verb(c) for c in launch.gcloud_calls()] == ['tpu-vm scp',
                                                      'tpu-vm ssh']


def test_setup_fetches_directories_from_a_bucket(launch):
  *_, ssh = launch.dry_run('setup', '--fetch=gs://my-bucket/hf/gemma-3-1b/',
                           '--fetch=gs://my-bucket/tok')
  install = remote_command(ssh)
  assert ('gcloud storage rsync --recursive gs://my-bucket/hf/gemma-3-1b '
          '~/gemma-3-1b') in install
  assert 'gcloud storage rsync --recursive gs://my-bucket/tok ~/tok' in install
  # Before the install, after the code: a failed copy stops the setup.
  assert install.index('rsync') < install.index('pip install')


def test_setup_refuses_while_the_run_goes_on(launch, tmp_path):
  [*_, ssh] = launch.dry_run('setup')
  home = tmp_path / 'home'
  home.mkdir()
  run = subprocess.Popen(['sleep', '30'])
  try:
    (home / 'rao_jax.pid').write_text(f'{run.pid}\n')
    result = subprocess.run(['bash', '-c', remote_command(ssh)],
                            env=dict(os.environ, HOME=str(home)),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert f'rao_jax.main runs (pid {run.pid})' in result.stderr
    assert not (home / 'rao_jax').exists()  # the code was left alone
  finally:
    run.kill()
    run.wait()


def test_check_tpu_fails_without_a_tpu():
  # This machine has no TPU: the check must say so and fail.
  result = subprocess.run([sys.executable, 'launch/check_tpu.py'], cwd=_ROOT,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 1
  assert 'JAX found no TPU' in result.stderr
  assert f'{jax.default_backend()} devices' in result.stdout


def test_setup_from_a_source_directory(launch, tmp_path):
  source = tmp_path / 'src'
  source.mkdir()
  (source / 'setup.py').write_text('')
  tar, _, _ = launch.dry_run('setup', f'--source={source}')
  assert tar[:4] == ['tar', '-czf', str(tmp_path / 'rao_jax-rao.tar.gz'), '-C']
  assert tar[4] == str(source) and '--exclude=.git' in tar


def test_tpu_extra_pins_the_libtpu_that_the_pinned_jax_names():
  pins = dict(line.split('==') for line in
              (_ROOT / 'constraints.txt').read_text().splitlines()
              if '==' in line and not line.startswith('#'))
  # This test reads the installed jax's metadata: it must be the pinned one.
  assert pins['jax'] == jax.__version__
  [libtpu] = [packaging.requirements.Requirement(r)
              for r in importlib.metadata.requires('jax')
              if r.startswith('libtpu') and 'tpu' in r]
  assert packaging.version.Version(pins['libtpu']) in libtpu.specifier, (
      f'constraints.txt pins libtpu=={pins["libtpu"]}; jax {pins["jax"]}[tpu]'
      f' needs {libtpu.specifier}')


def test_run_starts_the_main_command_on_every_worker(launch, tmp_path):
  override = "--config.tasks.eval_levels=('easy','hard')"
  [ssh] = launch.dry_run('run', f'--workdir={_GS}', '--config.rl.steps=3',
                         override, '--config=configs/tpu_v4.py:v4-8')
  assert ssh[3:6] == ['tpu-vm', 'ssh', 'rao'] and '--worker=all' in ssh
  start = remote_command(ssh)
  assert 'nohup' in start and '>> ~/rao_jax.log 2>&1' in start

  # On a scratch "worker": a stand-in python records its arguments and
  # stays up like a run.
  home = tmp_path / 'home'
  (home / 'rao_jax').mkdir(parents=True)
  python = home / 'rao_venv' / 'bin' / 'python'
  python.parent.mkdir(parents=True)
  python.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$HOME/argv"\n'
                    'exec sleep 30\n')
  python.chmod(0o755)
  worker = dict(os.environ, HOME=str(home))
  first = subprocess.run(['bash', '-c', start], env=worker, capture_output=True,
                         text=True, timeout=10)
  pid = int((home / 'rao_jax.pid').read_text())
  try:
    assert first.returncode == 0, first.stderr
    assert 'rao_jax.main started' in first.stdout
    for _ in range(100):
      if (home / 'argv').exists():
        break
      time.sleep(0.05)
    assert (home / 'argv').read_text().splitlines() == [
        '-m', 'rao_jax.main', '--config=configs/tpu_v4.py:v4-8',
        f'--workdir={_GS}', '--config.rl.steps=3', override]
    assert (home / 'rao_jax.log').exists()
    again = subprocess.run(['bash', '-c', start], env=worker,
                           capture_output=True, text=True, timeout=10)
    assert again.returncode == 1 and 'rao_jax.main runs' in again.stderr
  finally:
    os.kill(pid, 15)


@pytest.mark.parametrize('shape, workdir, extra, refused', [
    ('--accelerator-type=v4-32', '/home/me/run', '--allow-local-workdir',
     'several hosts'),
    ('--topology=2x2x4', '/home/me/run', '--allow-local-workdir',
     'several hosts'),
    ('--accelerator-type=v4-8', '/home/me/run', None, '--allow-local-workdir'),
    ('--accelerator-type=v4-8', 'runs/x', '--allow-local-workdir', 'absolute'),
    ('--accelerator-type=v4-32', 'gs://B/run', None, 'not a gs://BUCKET/DIR'),
    ('--accelerator-type=v4-8', '/home/me/run', '--allow-local-workdir', None),
    ('--topology=2x2x1', '/home/me/run', '--allow-local-workdir', None),
    ('--accelerator-type=v4-32', _GS, None, None),
])
def test_run_wants_a_shared_workdir_on_several_hosts(launch, shape, workdir,
                                                     extra, refused):
  args = [shape, f'--workdir={workdir}', '--dry-run'] + ([extra] if extra
                                                          else [])
  result = launch('run', *args)
  if refused is None:
    assert result.returncode == 0, result.stderr
    assert f'--workdir={workdir}' in remote_command(
        printed_commands(result.stdout)[0])
  else:
    assert result.returncode == 2
    assert f'--workdir={workdir}' in result.stderr and refused in result.stderr


def test_logs_follows_worker_0(launch):
  [ssh] = launch.dry_run('logs')
  assert ssh[3:6] == ['tpu-vm', 'ssh', 'rao'] and '--worker=0' in ssh
  assert remote_command(ssh) == 'tail -n 100 -F ~/rao_jax.log'


def test_stop_sends_sigterm_and_waits(launch, tmp_path):
  [ssh] = launch.dry_run('stop')
  assert '--worker=all' in ssh
  stop = remote_command(ssh)
  home = tmp_path / 'home'
  home.mkdir()
  worker = dict(os.environ, HOME=str(home))
  run = subprocess.Popen(['sleep', '60'])
  # Reaped as soon as it exits, so that `kill -0` sees it gone.
  threading.Thread(target=run.wait, daemon=True).start()
  try:
    (home / 'rao_jax.pid').write_text(f'{run.pid}\n')
    result = subprocess.run(['bash', '-c', stop], env=worker,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith('stopped')
    assert run.poll() == -15  # SIGTERM
    again = subprocess.run(['bash', '-c', stop], env=worker,
                           capture_output=True, text=True, timeout=30)
    assert again.stdout.strip().endswith('not running')
  finally:
    run.kill()


def test_delete_a_slice_or_its_queued_resource(launch):
  [node] = launch.dry_run('delete')
  assert node[3:] == ['tpu-vm', 'delete', 'rao', '--quiet',
                      '--zone=us-central2-b']
  [queued] = launch.dry_run('delete', '--queued', '--name=small')
  assert queued[3:7] == ['queued-resources', 'delete', 'small-qr', '--force']


def test_watch_relaunches_a_preempted_spot_slice(launch):
  commands = launch.dry_run('watch', '--assume-state=PREEMPTED',
                            '--max-polls=1', '--spot', f'--workdir={_GS}',
                            '--config=configs/tpu_v4.py:v4-8',
                            '--accelerator-type=v4-8', '--config.rl.steps=3',
                            '--fetch=gs://my-bucket/gemma-3-1b')
  assert [verb(c) for c in commands] == [
      'tpu-vm describe', 'tpu-vm delete', 'tpu-vm create', 'git archive',
      'tpu-vm scp', 'tpu-vm ssh', 'tpu-vm ssh']
  describe, delete, create, archive, _, install, start = commands
  assert '--format=value(state)' in describe
  assert 'rao' in delete and '--spot' in create
  assert '--accelerator-type=v4-8' in create
  assert archive[-1] == head_sha()
  assert 'pip install' in remote_command(install)
  assert 'gs://my-bucket/gemma-3-1b ~/gemma-3-1b' in remote_command(install)
  assert ('rao_jax.main --config=configs/tpu_v4.py:v4-8 '
          f'--workdir={_GS} --config.rl.steps=3') in remote_command(start)


def test_watch_recreates_a_reclaimed_queued_resource(launch):
  commands = launch.dry_run('watch', '--assume-state=SUSPENDED',
                            '--max-polls=1', '--queued', '--spot',
                            f'--workdir={_GS}')
  assert [verb(c) for c in commands] == [
      'queued-resources describe', 'queued-resources delete',
      'queued-resources create', 'queued-resources describe', 'git archive',
      'tpu-vm scp', 'tpu-vm ssh', 'tpu-vm ssh']
  assert '--force' in commands[1] and '--spot' in commands[2]


def test_watch_keeps_polling_a_ready_slice(launch):
  commands = launch.dry_run('watch', '--max-polls=2', '--poll-interval=7',
                            f'--workdir={_GS}')
  assert [verb(c) for c in commands] == [
      'tpu-vm describe', 'tpu-vm ssh', 'sleep', 'tpu-vm describe',
      'tpu-vm ssh']
  assert commands[2] == ['sleep', '7']
  assert 'rao_jax:running' in remote_command(commands[1])


def test_watch_gives_up_after_max_relaunches(launch):
  result = launch('watch', '--dry-run', '--assume-state=PREEMPTED',
                  '--max-polls=5', '--max-relaunches=2', f'--workdir={_GS}')
  assert result.returncode == 1
  assert '--max-relaunches=2' in result.stderr
  commands = printed_commands(result.stdout)
  assert [verb(c) for c in commands].count('tpu-vm create') == 2


@pytest.mark.parametrize('first_state', ['PREEMPTED', 'NOT_FOUND'])
@pytest.mark.parametrize('liveness, summary, rc, said', [
    ('rao_jax:stopped\nrao_jax:stopped\n', True, 0, 'the run finished'),
    ('rao_jax:stopped\nrao_jax:stopped\n', False, 1, 'summary.json'),
    ('rao_jax:running\nrao_jax:stopped\n', True, 1, 'some workers'),
])
def test_watch_relaunches_then_follows_the_run_to_its_end(
    launch, first_state, liveness, summary, rc, said):
  (launch.folder / 'states').write_text(f'{first_state}\nREADY\n')
  (launch.folder / 'liveness').write_text(liveness)
  if summary:
    (launch.folder / 'summary').write_text('')
  result = launch('watch', '--poll-interval=1', '--spot', f'--workdir={_GS}')
  assert result.returncode == rc, result.stderr
  assert said in result.stderr
  calls = [verb(c) for c in launch.gcloud_calls()]
  relaunch = ['tpu-vm create', 'tpu-vm scp', 'tpu-vm ssh', 'tpu-vm ssh']
  if first_state == 'PREEMPTED':
    relaunch.insert(0, 'tpu-vm delete')  # nothing to delete when NOT_FOUND
  end = ['storage ls'] if liveness.count('stopped') == 2 else []
  assert calls == ['tpu-vm describe', *relaunch, 'tpu-vm describe',
                   'tpu-vm ssh', *end]
  if end:
    assert launch.gcloud_calls()[-1][-1] == f'{_GS}/summary.json'


@pytest.mark.parametrize('script, args, named', [
    ('create', ['--zone='], '--zone='),
    ('create', ['--accelerator-type=v4'], '--accelerator-type=v4'),
    ('create', ['--topology=2x2', '--dry-run'], '--topology=2x2'),
    ('create', ['--topology=2x2x4', '--accelerator-type=v4-32'],
     '--topology=2x2x4'),
    ('create', ['--name=Rao_1'], '--name=Rao_1'),
    ('create', ['--poll-interval=0'], '--poll-interval=0'),
    ('create', ['--spotty'], '--spotty'),
    ('create', ['--workdir=gs://my-bucket/x'], '--workdir=gs://my-bucket/x'),
    ('logs', ['--worker=first'], '--worker=first'),
    ('logs', ['--spot', '--lines=-1'], '--lines=-1'),
    ('setup', ['--commit=no-such-rev'], '--commit=no-such-rev'),
    ('setup', ['--source=/nonexistent'], '--source=/nonexistent'),
    ('setup', ['--python=pypy'], '--python=pypy'),
    ('setup', ['--fetch=gs://my-bucket/'], '--fetch=gs://my-bucket/'),
    ('setup', ['--fetch=/home/me/w'], '--fetch=/home/me/w'),
    ('run', [], '--workdir'),
    ('run', [f'--workdir={_GS}', '--config.rl.steps'], '--config.rl.steps'),
    ('run', [f'--workdir={_GS}', '--max-polls=1'], '--max-polls=1'),
    ('watch', ['--workdir=/home/me/run', '--accelerator-type=v4-8',
               '--allow-local-workdir'], '--workdir=/home/me/run'),
    ('watch', [f'--workdir={_GS}', '--assume-state=PREEMPTED'],
     '--assume-state'),
    ('watch', [f'--workdir={_GS}', '--max-relaunches=x'], '--max-relaunches'),
    ('delete', ['extra'], 'extra'),
])
def test_bad_arguments_exit_2_naming_the_flag(launch, script, args, named):
  result = launch(script, *args)
  assert result.returncode == 2, result.stdout + result.stderr
  assert named in result.stderr
  assert not launch.gcloud_calls()


@pytest.mark.parametrize('script', _SCRIPTS)
def test_help_describes_the_flags(launch, script):
  result = launch(script, '--help')
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith(f'Usage: launch/{script}.sh')
  assert '--dry-run' in result.stdout and '--zone=' in result.stdout
  own = {'setup': '--source=', 'run': '--workdir=', 'watch': '--assume-state=',
         'logs': '--worker=', 'create': '--poll-interval='}
  assert own.get(script, '--name=') in result.stdout
  assert not launch.gcloud_calls()


def test_shellcheck_passes_on_every_script():
  shellcheck = (shutil.which('shellcheck', path=os.path.dirname(sys.executable))
                or shutil.which('shellcheck'))
  assert shellcheck, "shellcheck is missing: pip install -e '.[test]'"
  scripts = sorted(str(p) for p in (_ROOT / 'launch').glob('*.sh'))
  assert len(scripts) == len(_SCRIPTS) + 1  # and common.sh
  result = subprocess.run([shellcheck, '--external-sources', *scripts],
                          capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow  # ~30 s: gcloud takes 1-2 s to start, 15 times
def test_gcloud_accepts_every_printed_command(launch, tmp_path):
  """Google Cloud CLI's own parser reads each command: without an account it
  stops after parsing with 'no active account' (exit 1); a flag it does not
  know would exit 2."""
  if not shutil.which('gcloud'):
    pytest.skip('the Google Cloud CLI is not installed')
  runs = [
      ('create', '--spot', '--accelerator-type=v4-8'),
      ('create', '--topology=2x2x4', '--project=my-proj'),
      ('create', '--queued', '--spot'),
      ('delete', '--queued'), ('delete',), ('setup',), ('logs',), ('stop',),
      ('run', f'--workdir={_GS}'),
      ('watch', f'--workdir={_GS}'), ('watch', f'--workdir={_GS}', '--queued'),
  ]
  commands = []
  for script, *args in runs:
    commands += [c for c in launch.dry_run(script, *args)
                 if c[0] == 'gcloud' and c not in commands]
  # watch's check for a finished run, and setup's --fetch on the workers.
  commands += [['gcloud', 'storage', 'ls', f'{_GS}/summary.json'],
               ['gcloud', 'storage', 'rsync', '--recursive',
                'gs://my-bucket/tok', str(tmp_path / 'tok')]]
  assert len(commands) == 15
  # No account, a project for the commands that name none, nothing cached
  # from this machine's gcloud, and nothing asked or reported.
  env = dict(os.environ, CLOUDSDK_CONFIG=str(tmp_path / 'gcloud'),
             CLOUDSDK_CORE_PROJECT='my-proj',
             CLOUDSDK_CORE_DISABLE_PROMPTS='1',
             CLOUDSDK_CORE_DISABLE_USAGE_REPORTING='true',
             CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK='true')
  for argv in commands:
    result = subprocess.run(argv, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1 and 'active account' in result.stderr, (
        argv, result.stderr)
