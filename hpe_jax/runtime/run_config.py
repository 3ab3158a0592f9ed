"""A run's resolved config, saved in its workdir and read back.

``WORKDIR/config.json`` is what evaluate, predict and the sweep runner start
from. Runs saved by older versions load with the fields added since then,
set to the values that keep their meaning.
"""

from __future__ import annotations

import json

from absl import logging
import jax
import ml_collections

from hpe_jax.runtime import storage

CONFIG_FILE = 'config.json'


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  path = storage.join(workdir, CONFIG_FILE)
  text = config.to_json_best_effort(indent=2, sort_keys=True)
  if path.exists() and path.read_text() != text:
    logging.warning('%s differs from the config of this run; it is '
                    'replaced by the current one.', path)
  if jax.process_index() == 0:
    path.write_text(text)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config a run saved in its workdir (locked)."""
  path = storage.join(workdir, CONFIG_FILE)
  if not path.is_file():
    raise FileNotFoundError(f'{path}: no config; is {workdir!r} a workdir '
                            'of `python -m hpe_jax.main`?')
  config = ml_collections.ConfigDict(
      upgrade(_tuples(json.loads(path.read_text()))))
  config.lock()
  return config


def upgrade(fields: dict) -> dict:
  """The fields of a config saved by an older version, in today's form."""
  # Runs from before tasks existed trained keypoint models on their
  # dataset's own skeleton.
  fields.setdefault('task', 'keypoints')
  dataset = fields.get('dataset', {})
  dataset.setdefault('skeleton', '')
  dataset.get('synthetic', {}).setdefault('person_height', (0.25, 1.0))
  dataset.get('synthetic', {}).setdefault('cache_mb', 512.0)
  dataset.get('coco', {}).setdefault('skip_empty_images', False)
  # The heatmap sigma (loss) and decoding method (eval) became one codec
  # section shared by targets and decoding.
  codec = fields.setdefault('codec', {'sigma': 2.0, 'decode': 'dark'})
  if 'sigma' in fields.get('loss', {}):
    codec['sigma'] = fields['loss'].pop('sigma')
  if 'decode' in fields.get('eval', {}):
    codec['decode'] = fields['eval'].pop('decode')
  fields.get('input', {}).setdefault('max_consecutive_damaged', 100)
  fields.setdefault('divergence_rollbacks', 0)
  # Evaluation options added since (the mask tasks' eval.refine) are off
  # by their task's defaults.
  from hpe_jax import tasks  # pylint: disable=import-outside-toplevel
  try:
    defaults = tasks.get(fields['task']).default_eval_config().to_dict()
  except ValueError:
    defaults = {}  # an unknown task is reported where the run is used
  for key, value in defaults.items():
    fields.setdefault('eval', {}).setdefault(key, value)
  return fields


def _tuples(tree):
  """JSON turns tuples into lists; configs use tuples for fixed sizes."""
  if isinstance(tree, dict):
    return {k: _tuples(v) for k, v in tree.items()}
  if isinstance(tree, list):
    return tuple(_tuples(v) for v in tree)
  return tree
