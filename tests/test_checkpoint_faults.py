"""Checkpoint faults never lose work or block a run: a damaged checkpoint
falls back to the newest intact one, a failed save stops the run with one
clear line and keeps the checkpoints before it."""

import logging
import pathlib
import re
import shutil

import jax
import numpy as np
import pytest

from hpe_jax import errors
from hpe_jax import tasks
from hpe_jax.data import datasets
from hpe_jax.models import registry
from hpe_jax.runtime import checkpointing
from hpe_jax.runtime import sharding
from hpe_jax.runtime import trained_run
from hpe_jax.training import optimizers
from hpe_jax.training import train_state
from hpe_jax.training import trainer
from conftest import make_tiny_config

NO_SPACE = OSError(28, 'No space left on device')


@pytest.fixture(scope='module')
def trained(tmp_path_factory) -> pathlib.Path:
  """A tiny run of 8 steps with checkpoints 4 and 8; tests damage copies."""
  workdir = tmp_path_factory.mktemp('trained')
  trainer.train_and_evaluate(make_tiny_config(), str(workdir))
  assert _steps(workdir) == [4, 8]
  return workdir


def _copy(trained, tmp_path) -> pathlib.Path:
  workdir = tmp_path / 'run'
  shutil.copytree(trained, workdir)
  return workdir


def _steps(workdir, folder=checkpointing.CHECKPOINT_DIR):
  return sorted(int(p.name) for p in (workdir / folder).iterdir()
                if p.name.isdigit())


def _truncate_state(workdir, step) -> tuple[pathlib.Path, int]:
  """Cuts the largest file of `step`'s state (array data) in half."""
  files = [p for p in (workdir / 'checkpoints' / str(step) / 'state').rglob(
      '*') if p.is_file()]
  largest = max(files, key=lambda p: p.stat().st_size)
  size = largest.stat().st_size // 2
  with open(largest, 'r+b') as f:
    f.truncate(size)
  return largest, size


def _restore(workdir, step, config=None):
  """The train state of checkpoint `step` (raises if it is damaged)."""
  config = config or make_tiny_config()
  model = registry.build_for_run(config, datasets.skeleton(config.dataset))
  tx, _ = optimizers.make_optimizer(config.optimizer, config.total_steps)
  target = train_state.abstract(model, tx, tasks.make(config), config,
                                sharding.make_mesh())
  ckpt = checkpointing.Checkpointer(str(workdir), read_only=True)
  try:
    return ckpt.restore(step, target)
  finally:
    ckpt.close()


def _assert_same_state(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5,
                               atol=1e-6)


def _damage_warnings(caplog):
  return [r.getMessage() for r in caplog.records
          if r.levelno == logging.WARNING and 'is damaged' in r.getMessage()]


def test_a_truncated_latest_checkpoint_falls_back_and_the_run_goes_on(
    trained, tmp_path, caplog):
  workdir = _copy(trained, tmp_path)
  truncated, size = _truncate_state(workdir, 8)
  with caplog.at_level(logging.INFO):
    trainer.train_and_evaluate(make_tiny_config(total_steps=12),
                               str(workdir))

  warnings = _damage_warnings(caplog)
  moved = workdir / checkpointing.DAMAGED_DIR / '8'
  assert len(warnings) == 1, warnings
  assert str(workdir / 'checkpoints' / '8') in warnings[0]
  assert f'moved it to {moved}' in warnings[0]
  assert 'using step 4 instead' in warnings[0]
  assert f'Resumed from {workdir / "checkpoints"} at step 4' in caplog.text
  # The damaged checkpoint is kept, as it was, outside Orbax's folder.
  damaged_copy = moved / truncated.relative_to(workdir / 'checkpoints' / '8')
  assert damaged_copy.stat().st_size == size
  # The run saved step 8 again and went on to 12; a later resume sees them.
  assert _steps(workdir) == [4, 8, 12]
  caplog.clear()
  with caplog.at_level(logging.INFO):
    trainer.train_and_evaluate(make_tiny_config(total_steps=12),
                               str(workdir))
  assert not _damage_warnings(caplog)
  assert 'at step 12' in caplog.text
  # Resumed from 4 with the input rewound to 4: step 8 is the same as the
  # uninterrupted run's.
  _assert_same_state(_restore(workdir, 8), _restore(trained, 8))


def test_evaluate_falls_back_from_latest_but_not_from_a_named_step(
    trained, tmp_path, caplog):
  workdir = _copy(trained, tmp_path)
  _truncate_state(workdir, 8)
  config = make_tiny_config()
  with caplog.at_level(logging.WARNING):
    _, variables, step, _ = trained_run.load_trained(config, str(workdir),
                                                     'latest')
  assert step == 4 and variables['params']
  warnings = _damage_warnings(caplog)
  assert len(warnings) == 1 and 'left it in place' in warnings[0], warnings
  assert _steps(workdir) == [4, 8]  # read-only: nothing moved
  assert not (workdir / checkpointing.DAMAGED_DIR).exists()

  with pytest.raises(errors.CheckpointError,
                     match=r'checkpoint 8 in .* cannot be restored \(.+\); '
                           r'the checkpoints there: 4, 8\.'):
    trained_run.load_trained(config, str(workdir), '8')
  with pytest.raises(errors.CheckpointError,
                     match=r'checkpoint 12 in .* \(no such checkpoint\)'):
    trained_run.load_trained(config, str(workdir), '12')
  with pytest.raises(errors.CheckpointError, match=r'no checkpoint there'):
    trained_run.load_trained(config, str(tmp_path / 'empty'), 'latest')
  with pytest.raises(errors.CheckpointError, match=r'no checkpoint with an '):
    trained_run.load_trained(config, str(tmp_path / 'empty'), 'best')


def test_a_missing_input_position_is_damage_not_a_process_count_mismatch(
    trained, tmp_path, caplog):
  workdir = _copy(trained, tmp_path)
  (workdir / 'checkpoints/8/data/process_0-of-1.json').unlink()
  with caplog.at_level(logging.WARNING):
    trainer.train_and_evaluate(make_tiny_config(), str(workdir))
  warnings = _damage_warnings(caplog)
  assert len(warnings) == 1, warnings
  assert 'process_0-of-1.json is missing' in warnings[0]
  assert 'same number of processes' not in caplog.text
  assert (workdir / checkpointing.DAMAGED_DIR / '8' / 'state').is_dir()
  assert _steps(workdir) == [4, 8]
  _assert_same_state(_restore(workdir, 8), _restore(trained, 8))


def test_input_positions_of_another_process_count_are_an_error(
    trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  data = workdir / 'checkpoints/8/data'
  (data / 'process_0-of-1.json').rename(data / 'process_0-of-2.json')
  with pytest.raises(errors.CheckpointError,
                     match=r"\['process_0-of-2.json'\].*same number of "):
    trainer.train_and_evaluate(make_tiny_config(), str(workdir))
  assert _steps(workdir) == [4, 8]
  assert not (workdir / checkpointing.DAMAGED_DIR).exists()


def test_every_checkpoint_damaged_is_an_error_and_nothing_moves(
    trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  _truncate_state(workdir, 8)
  (workdir / 'checkpoints/4/data/process_0-of-1.json').write_text('{"ne')
  with pytest.raises(errors.CheckpointError,
                     match=r'no checkpoint in .* can be restored \(8: .+; '
                           r'4: its input position process_0-of-1.json is '
                           r'unreadable'):
    trainer.train_and_evaluate(make_tiny_config(), str(workdir))
  assert _steps(workdir) == [4, 8]
  assert not (workdir / checkpointing.DAMAGED_DIR).exists()


def _step_of(path) -> int:
  """The step whose (temporary) folder `path` is in."""
  for part in pathlib.Path(str(path)).parts:
    if re.fullmatch(r'\d+\.orbax-checkpoint-tmp', part):
      return int(part.split('.')[0])
  raise AssertionError(f'not in a step folder: {path}')


def _fail_after_step_4(monkeypatch, owner, name, path_of, is_async):
  """`owner.name` raises "no space left" for every step after 4."""
  original = getattr(owner, name)

  def failing(*args, **kwargs):
    if _step_of(path_of(*args)) > 4:
      raise NO_SPACE
    return original(*args, **kwargs)

  async def failing_async(*args, **kwargs):
    if _step_of(path_of(*args)) > 4:
      raise NO_SPACE
    return await original(*args, **kwargs)

  monkeypatch.setattr(owner, name, failing_async if is_async else failing)


@pytest.mark.parametrize('where', ['grain_write', 'orbax_commit'])
def test_a_failed_save_stops_the_run_and_keeps_the_earlier_checkpoints(
    where, tmp_path, monkeypatch, caplog):
  """The Grain file is written while `save` blocks; Orbax commits (renames
  the temporary folder) in the background, so that error surfaces in the
  next `save`: both name step 8 and the intact step 4."""
  if where == 'grain_write':
    from grain._src.python.checkpoint import handler  # pylint: disable=import-outside-toplevel
    # CheckpointHandler.save(self, directory, ...)
    _fail_after_step_4(monkeypatch, handler.CheckpointHandler, 'save',
                       lambda self, directory, *_: directory, is_async=False)
  else:
    from orbax.checkpoint._src.path import atomicity  # pylint: disable=import-outside-toplevel
    # Renames a step's (and each item's) temporary folder once written.
    _fail_after_step_4(monkeypatch, atomicity.AtomicRenameTemporaryPath,
                       'finalize', lambda self, *_: self.get(), is_async=True)
  workdir = tmp_path / 'run'
  config = make_tiny_config(total_steps=12)
  with pytest.raises(
      errors.CheckpointError,
      match=r'^saving checkpoint 8 in .*/checkpoints failed \(OSError: '
            r'\[Errno 28\] No space left on device\); the last intact '
            r'checkpoint is step 4\. Fix the cause and re-run the same '
            r'command to resume\.$'):
    trainer.train_and_evaluate(config, str(workdir))
  monkeypatch.undo()
  assert _steps(workdir) == [4]
  leftovers = [p.name for p in (workdir / 'checkpoints').iterdir()
               if 'tmp' in p.name]
  assert '8.orbax-checkpoint-tmp' in leftovers, leftovers
  # The earlier checkpoint restores, and the half-written folder does not
  # stop the re-run: it resumes from 4 and saves 8 and 12.
  _restore(workdir, 4)
  with caplog.at_level(logging.INFO):
    trainer.train_and_evaluate(config, str(workdir))
  assert not _damage_warnings(caplog)
  assert f'Resumed from {workdir / "checkpoints"} at step 4' in caplog.text
  assert _steps(workdir) == [4, 8, 12]
  assert not [p for p in (workdir / 'checkpoints').iterdir()
              if 'tmp' in p.name]  # Orbax replaced it when saving 8
  _restore(workdir, 12)


def test_a_failed_save_without_a_previous_checkpoint_says_none(
    tmp_path, monkeypatch):
  from grain._src.python.checkpoint import handler  # pylint: disable=import-outside-toplevel

  def failing(*args, **kwargs):
    raise NO_SPACE

  monkeypatch.setattr(handler.CheckpointHandler, 'save', failing)
  with pytest.raises(errors.CheckpointError,
                     match=r'saving checkpoint 4 .* last intact checkpoint '
                           r'is none\.'):
    trainer.train_and_evaluate(make_tiny_config(), str(tmp_path / 'run'))
