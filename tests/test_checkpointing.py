"""Checkpoints: which are kept, best-step selection, init_from paths."""

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpe_jax import errors
from hpe_jax.runtime import checkpointing


def iterator():
  ds = grain.MapDataset.source(list(range(50))).shuffle(seed=3).repeat()
  return iter(ds.to_iter_dataset().batch(4))


def test_keeps_the_latest_and_the_best_and_restores_data_position(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=2)
  it = iterator()
  state = {'w': jnp.zeros(3)}
  for step, metric in [(1, 0.5), (2, 0.9), (3, None), (4, 0.1), (5, None)]:
    next(it)
    ckpt.save(step, {'w': state['w'] + step}, it, metric)
  ckpt.wait()
  expected_next = next(it)
  assert ckpt.manager.all_steps() == [2, 4, 5]  # last two, plus the best
  assert ckpt.best_step() == 2 and ckpt.latest_step() == 5

  fresh = iterator()
  restored = ckpt.restore(5, state, fresh)
  np.testing.assert_array_equal(restored['w'], [5, 5, 5])
  np.testing.assert_array_equal(next(fresh), expected_next)
  ckpt.close()

  reopened = checkpointing.Checkpointer(str(tmp_path), keep=2)
  assert reopened.best_step() == 2


def test_init_from_accepts_a_workdir_its_checkpoints_or_one_step(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=3)
  for step in (3, 7):
    ckpt.save(step, {'w': jnp.ones(1)}, iterator())
  ckpt.wait()
  folder = str(tmp_path / 'checkpoints')
  assert checkpointing.resolve_init_from(str(tmp_path)) == (folder, 7)
  assert checkpointing.resolve_init_from(folder) == (folder, 7)
  assert checkpointing.resolve_init_from(f'{folder}/3') == (folder, 3)
  with pytest.raises(FileNotFoundError, match='no checkpoint'):
    checkpointing.resolve_init_from(str(tmp_path / 'nowhere'))


def test_resuming_with_another_process_count_is_a_clear_error(
    tmp_path, monkeypatch):
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  ckpt.save(1, {'w': jnp.ones(1)}, iterator())
  ckpt.wait()
  ckpt.restore(1, {'w': jnp.zeros(1)}, iterator())  # same count: fine
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  with pytest.raises(errors.CheckpointError,
                     match=r"process_0-of-1.json.*same number"):
    ckpt.restore(1, {'w': jnp.zeros(1)}, iterator())
  ckpt.close()
