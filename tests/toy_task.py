"""A toy task in one module, to show that a new task needs nothing else.

The person's silhouette as one sigmoid channel (the difference of a U-Net's
two mask logits), trained with binary cross-entropy, scored by pixel
accuracy and predicted as a label image. The module is also its own recipe
(`get_config`), so the normal commands run it with this directory on
``PYTHONPATH``:

  PYTHONPATH=tests python -m hpe_jax.main --config=tests/toy_task.py \
      --workdir=/tmp/toy
"""

import dataclasses
import functools

import jax.numpy as jnp
import ml_collections
import optax

from hpe_jax import visualization
from hpe_jax.data import skeletons
from hpe_jax.data import warp
from hpe_jax.evaluation import batched_prediction
from hpe_jax.ops import images as images_lib
from hpe_jax.tasks import base
from hpe_jax.training import base_config


def _foreground_logit(outputs):
  logits = outputs['mask_logits'].astype(jnp.float32)
  return logits[..., 1] - logits[..., 0]


@dataclasses.dataclass(frozen=True)
class ForegroundTask(base.Task):
  """Person vs background, one sigmoid per pixel."""

  @staticmethod
  def default_loss_config():
    return ml_collections.ConfigDict(dict(person_weight=1.0))

  def loss(self, outputs, batch):
    labels = batch['mask']
    person = (labels == 1).astype(jnp.float32)
    weight = (labels != skeletons.IGNORE_LABEL) * jnp.where(
        labels == 1, self.loss_cfg.person_weight, 1.0)
    bce = optax.sigmoid_binary_cross_entropy(_foreground_logit(outputs),
                                             person)
    value = (bce * weight).sum() / jnp.maximum(weight.sum(), 1.0)
    return value, {'bce': value}

  def make_evaluator(self, config, dataset, model, mesh):
    return ForegroundEvaluator(config, dataset, model, mesh)

  def make_predictor(self, config, model, mesh, skeleton, **unused):
    return ForegroundPredictor(config, model, mesh)

  def draw(self, image, result, skeleton, threshold):
    return visualization.overlay_labels(
        image, result['label_images']['foreground'])


TASK = ForegroundTask


def _predict(variables, batch, *, model):
  out = model.apply(variables,
                    images_lib.normalize(batch['image'], model.dtype),
                    train=False)
  return {'labels': (_foreground_logit(out) > 0).astype(jnp.uint8)}


class ForegroundEvaluator:
  """Pixel accuracy over the labelled pixels of the split."""

  def __init__(self, config, dataset, model, mesh):
    self.mesh = mesh
    self.batches, self.count = batched_prediction.eval_batches(
        dataset, config.input, config.input.eval_batch_size, mesh)
    self.predict_fn = batched_prediction.jit_predict(
        functools.partial(_predict, model=model), mesh)
    self.primary_metric = 'foreground_accuracy'
    self.results = None

  def evaluate(self, variables):
    right = total = 0
    for host, _ in batched_prediction.host_predictions(
        self.batches, self.predict_fn, variables, self.mesh,
        ('mask', 'valid')):
      known = ((host['mask'] != skeletons.IGNORE_LABEL) &
               host['valid'][:, None, None])
      right += int(((host['labels'] == host['mask']) & known).sum())
      total += int(known.sum())
    return {'foreground_accuracy': right / max(total, 1)}, []


class ForegroundPredictor:
  """The silhouette of each image, at the image's size."""

  def __init__(self, config, model, mesh):
    self.config, self.mesh = config, mesh
    self.predict_fn = batched_prediction.jit_predict(
        functools.partial(_predict, model=model), mesh)

  def predict(self, variables, images, boxes=None, poses=None):
    del boxes, poses

    def result_of(ann, host, i):
      return {'image_id': ann['image_id'], 'label_images': {
          'foreground': warp.labels_to_image(
              host['labels'][i], host['affine'][i],
              (ann['height'], ann['width']))}}

    return batched_prediction.predict_images(
        images, self.config.input, self.config.input.eval_batch_size,
        self.predict_fn, variables, self.mesh, result_of)


def get_config(arg=None):
  del arg
  config = base_config.get_base_config('unet', 'toy_task')
  config.model.update(features=4, levels=1, num_classes=2, dropout_rate=0.0)
  config.input.update(mode='full_image', image_size=(32, 32),
                      output_stride=1, batch_size=8, eval_batch_size=8,
                      num_threads=1)
  config.dataset.synthetic.update(num_train=32, num_eval=8,
                                  image_size=(32, 32))
  config.optimizer.update(name='adam', learning_rate=3e-3)
  config.update(total_steps=6, log_every=2, eval_every=0,
                checkpoint_every=3, eval_at_start=True)
  config.lock()
  return config
