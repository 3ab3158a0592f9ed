"""Writes an export (`hpe_jax.export`): a run's predictor serialised with
`jax.export`, its variables and its metadata (`hpe_jax.serving.exported`
reads them).
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp

from hpe_jax import tasks
from hpe_jax import visualization
from hpe_jax.data import datasets
from hpe_jax.data import pipeline
from hpe_jax.models import registry
from hpe_jax.serving import exported as exported_lib
from hpe_jax.tasks import pose_mask


def _schema_dict(schema, num_colors: int | None = None) -> dict | None:
  if schema is None:
    return None
  out = dataclasses.asdict(schema)
  if num_colors is not None and out.get('colors') is None:
    out['colors'] = visualization.label_palette(num_colors).tolist()
  return out


def _specs(tree):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def metadata(config, task, skeleton, part_schema, step,
             min_score: float) -> dict:
  """What a loader needs besides the function: geometry and schemas."""
  geometry = pipeline.geometry(config.input)
  return {
      'format': exported_lib.FORMAT,
      'task': config.task,
      'rows': task.serving_rows,
      'results': task.serving_results,
      'model': config.model.name,
      'dtype': config.model.dtype,
      'checkpoint_step': step,
      'mode': config.input.mode,
      'input_size': list(geometry.input_size),
      'output_stride': geometry.stride,
      'box_padding': config.input.box_padding,
      'pose_box_scale': pose_mask.POSE_BOX_SCALE,
      'flip_test': bool(config.eval.flip),
      'min_score': min_score,
      # Joints of given poses scoring at or below it are not given to the
      # pose-conditioned mask model (as in predict).
      'keypoint_threshold': 0.2,
      'skeleton': _schema_dict(skeleton),
      'part_schema': _schema_dict(
          part_schema, part_schema and len(part_schema.label_names)),
      'jax_version': jax.__version__,
  }


def untrained(config):
  """(model, variables) of a config, freshly initialised: for exports whose
  weights do not matter (benchmarks, tests)."""
  model = registry.build_for_run(config, datasets.skeleton(config.dataset))
  inputs = tasks.make(config).init_inputs(
      tuple(config.input.image_size), model.num_joints, model.dtype)
  return model, model.init(jax.random.key(config.seed), **inputs,
                           train=False)


def export_predictor(config, model, variables, step, output: str, *,
                     platforms=('cpu', 'cuda'), min_score: float = 0.3
                     ) -> dict:
  """Writes the export of a loaded run to `output`; returns its metadata."""
  task = tasks.make(config)
  skeleton = datasets.skeleton(config.dataset)
  part_schema = task.part_schema(config)
  predict, extra = task.serving_function(config, model, skeleton,
                                         min_score=min_score)
  h, w = pipeline.geometry(config.input).input_size
  b, = jax.export.symbolic_shape('b')
  batch = {'image': jax.ShapeDtypeStruct((b, h, w, 3), jnp.uint8),
           'affine': jax.ShapeDtypeStruct((b, 2, 3), jnp.float32)}
  batch.update({k: jax.ShapeDtypeStruct((b, *shape), dtype)
                for k, (shape, dtype) in extra.items()})
  # Evaluation BatchNorm: the running statistics are arguments too.
  variables = jax.device_get(variables)
  exported = jax.export.export(jax.jit(predict), platforms=tuple(platforms))(
      _specs(variables), batch)
  leaves = jax.tree.leaves(variables)
  meta = metadata(config, task, skeleton, part_schema, step, min_score)
  meta.update(
      platforms=list(exported.platforms),
      inputs={k: {'shape': ['b', *v.shape[1:]], 'dtype': str(v.dtype)}
              for k, v in batch.items()},
      outputs={k: {'shape': ['b', *v.shape[1:]], 'dtype': str(v.dtype)}
               for k, v in jax.tree.unflatten(exported.out_tree,
                                              exported.out_avals).items()},
      variables={'count': len(leaves),
                 'dtypes': [str(x.dtype) for x in leaves]})
  os.makedirs(output, exist_ok=True)
  exported_lib.write(output, exported.serialize(), leaves, meta)
  return meta
