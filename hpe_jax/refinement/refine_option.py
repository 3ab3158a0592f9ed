"""The ``eval.refine`` option of the mask tasks: the network's masks
refined after the network, in evaluate, predict and training evaluations.

``config.eval.refine`` of the pose_mask and segmentation runs
(``--config.eval.refine=...`` on the evaluate and predict commands):

* ``''`` (the default): the network's masks as they are;
* ``crf``: the dense CRF (`dense_crf.refine`) of the network's class
  probabilities with the image, on the device: a jitted step of its own
  after the model's, its `dense_crf.CrfParams` passed as arguments (the
  run's searched ones, ``<workdir>/refine_search.json``, with the window
  and iterations they were searched at; else `dense_crf.DEFAULT`, window
  11, 5 iterations), so nothing recompiles when they change;
* ``superpixel_graphcut``: SLIC superpixels and graph cut seeded from the
  skeleton (`superpixel_graphcut.segment`) on the host, per person crop or
  image, from the image, the people's keypoints and the network's person
  probabilities.

Both work on the mask grid (the image is resized to it). With a
refinement, evaluators report the refined masks' metrics under their usual
names (``mask_iou``, ...), the network's own as ``unrefined/<name>``, and
``refine_seconds_per_image``: the refinement's wall time over the
evaluated images (crops for pose_mask), the CRF's compilation left out
(it refines the last batch's padding rows too, and that time counts).
"""

from __future__ import annotations

import functools
import time

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from hpe_jax import errors
from hpe_jax.refinement import dense_crf
from hpe_jax.refinement import superpixel_graphcut
from hpe_jax.runtime import sharding
from hpe_jax.tasks import base

CHOICES = ('', 'crf', 'superpixel_graphcut')
# The CRF's window and mean-field iterations without a search: static in
# its jitted step.
CRF_WINDOW = 11
CRF_ITERATIONS = 5


def eval_config():
  """The mask tasks' ``config.eval``: the shared defaults and ``refine``."""
  config = base.default_eval_config()
  config.refine = ''  # '', 'crf' or 'superpixel_graphcut'
  return config


def workdir_args(config, workdir) -> dict:
  """Keyword arguments of `make_evaluator` / `make_predictor` for a run
  loaded from `workdir`: the workdir (where the searched CRF params are)
  when ``eval.refine`` is set; nothing for the tasks without it."""
  return {'workdir': workdir} if config.eval.get('refine') else {}


def choice(eval_cfg) -> str:
  """``eval.refine`` of an eval config ('' where it has none).

  Raises:
    errors.ConfigError: not one of `CHOICES` (one line).
  """
  value = eval_cfg.get('refine', '')
  try:
    base.check_choice(value, CHOICES, 'eval.refine')
  except ValueError as e:
    raise errors.ConfigError(f'--config.{e}') from None
  return value


def resize_image(image: np.ndarray, shape) -> np.ndarray:
  """uint8 `image` at (h, w) `shape` (area interpolation, as the GrabCut
  baseline resizes crops to the mask grid)."""
  if image.shape[:2] == tuple(shape):
    return image
  return cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)


def crf_settings(workdir) -> tuple[int, int]:
  """(window, iterations) the run's CRF params were searched at, else
  the defaults."""
  saved = dense_crf.read_search(workdir) if workdir else None
  if saved is None:
    return CRF_WINDOW, CRF_ITERATIONS
  return (int(saved.get('window', CRF_WINDOW)),
          int(saved.get('iterations', CRF_ITERATIONS)))


def crf_images(images, shape):
  """float32 [B, h, w, 3]: the model's input images [B, H, W, 3] as the
  CRF sees them, on the (h, w) grid of the masks (linear resizing)."""
  images = jnp.asarray(images, jnp.float32)
  if images.shape[1:3] != tuple(shape):
    images = jax.image.resize(images, (images.shape[0], *shape,
                                       images.shape[-1]), 'linear')
  return images


def _crf_labels(probs, images, params, *, window: int, iterations: int):
  """uint8 [B, h, w] CRF labels of probs [B, h, w, C] with images
  [B, H, W, 3]."""
  return dense_crf.refine(probs, crf_images(images, probs.shape[1:3]),
                          params, window=window, iterations=iterations)


class Refiner:
  """Refines batches of predicted masks by one `CHOICES` method, timed.

  Args:
    method: 'crf' or 'superpixel_graphcut'.
    mesh: the evaluation mesh (the CRF's inputs are sharded over it).
    workdir: the run's workdir, where `dense_crf.load_params` looks for
      searched CRF params (None: `dense_crf.DEFAULT`).
    skeleton: the keypoints' skeleton (graph cut draws its seeds with it).
  """

  def __init__(self, method: str, mesh, *, workdir=None, skeleton=None):
    if method not in CHOICES[1:]:
      raise ValueError(f'no refinement {method!r}')
    self.method = method
    self.skeleton = skeleton
    self.crf_params = None
    if method == 'crf':
      params = (dense_crf.load_params(workdir) if workdir else
                dense_crf.DEFAULT)
      self.crf_params = dense_crf.CrfParams(
          *(np.float32(v) for v in params))
      self.crf_window, self.crf_iterations = crf_settings(workdir)
      batch = sharding.batch_sharding(mesh)
      self._crf = jax.jit(
          functools.partial(_crf_labels, window=self.crf_window,
                            iterations=self.crf_iterations),
          in_shardings=(batch, batch, sharding.replicated(mesh)))
      self._compiled = {}
    self.reset()

  def reset(self) -> None:
    """Starts a new pass: the time and image count go back to zero."""
    self.seconds = 0.0
    self.images = 0

  def describe(self) -> dict:
    """What refines: ``{'method': ...}``, for 'crf' with ``crf_params``
    ({field: value}), ``crf_window`` and ``crf_iterations``."""
    out = {'method': self.method}
    if self.crf_params is not None:
      out['crf_params'] = dense_crf.params_to_dict(self.crf_params)
      out['crf_window'] = self.crf_window
      out['crf_iterations'] = self.crf_iterations
    return out

  def crf(self, probs, images):
    """The CRF's labels (a device array) of a global batch (timed; `refined`
    counts its images).

    Args:
      probs: float [B, h, w, C] class probabilities on the device.
      images: uint8 [B, H, W, 3] the model's input images.
    """
    key = (probs.shape, probs.dtype, images.shape, images.dtype)
    if key not in self._compiled:
      # Compiled ahead, so that the timing leaves compilation out.
      self._compiled[key] = self._crf.lower(probs, images,
                                            self.crf_params).compile()
    jax.block_until_ready(probs)
    start = time.perf_counter()
    labels = jax.block_until_ready(
        self._compiled[key](probs, images, self.crf_params))
    self.seconds += time.perf_counter() - start
    return labels

  def graphcut(self, images, keypoints, person_probs, valid, *,
               skeleton=None) -> np.ndarray:
    """uint8 [B, h, w] graph-cut masks of the valid rows (zeros elsewhere).

    Args:
      images: uint8 [B, H, W, 3] (resized to the mask grid).
      keypoints: [B, K, 3] or [B, P, K, 3] on the mask grid.
      person_probs: float [B, h, w] the network's person probability.
      valid: bool [B].
      skeleton: of the keypoints, if not the one given at construction.
    """
    person_probs = np.asarray(person_probs, np.float32)
    out = np.zeros(person_probs.shape, np.uint8)
    start = time.perf_counter()
    rows = np.flatnonzero(valid)
    for i in rows:
      out[i] = superpixel_graphcut.segment(
          resize_image(np.asarray(images[i]), out.shape[1:]), keypoints[i],
          skeleton or self.skeleton, probs=person_probs[i])
    self.seconds += time.perf_counter() - start
    self.images += len(rows)
    return out

  @property
  def host_keys(self) -> tuple[str, ...]:
    """Batch keys `refined` reads on the host, besides `wrap`'s outputs:
    graph cut's image and keypoints (the CRF runs on the device)."""
    return ('image', 'keypoints') if self.method == 'superpixel_graphcut' \
        else ()

  def wrap(self, predict_fn):
    """`predict_fn` (jitted, (variables, global batch) -> dict with
    ``class_probs`` [B, h, w, C]) followed by the CRF's ``refined_labels``,
    or for graph cut with only the ``person_probs`` [B, h, w] it reads; for
    `batched_prediction.host_predictions`, which copies every output to the
    host."""

    def predict(variables, batch):
      out = predict_fn(variables, batch)
      probs = out.pop('class_probs')
      if self.method == 'crf':
        out['refined_labels'] = self.crf(probs, batch['image'])
      else:
        out['person_probs'] = probs[..., 1]
      return out

    return predict

  def refined(self, host: dict, keypoints=None) -> np.ndarray:
    """The refined masks of a host batch of `wrap`'s outputs: the CRF's,
    or graph cut's from the batch's ``image`` and `keypoints` (on the mask
    grid); counts the batch's valid images for the time per image."""
    if self.method == 'crf':
      self.images += int(host['valid'].sum())
      return host['refined_labels']
    return self.graphcut(host['image'], keypoints, host['person_probs'],
                         host['valid'])

  def metrics(self, refined: dict, unrefined: dict) -> dict:
    """`refined` metrics under their names, `unrefined` ones prefixed
    ``unrefined/`` and ``refine_seconds_per_image``."""
    out = dict(refined)
    out.update({f'unrefined/{k}': v for k, v in unrefined.items()})
    out['refine_seconds_per_image'] = (self.seconds / self.images
                                       if self.images else float('nan'))
    return out


def make(eval_cfg, mesh, *, workdir=None, skeleton=None) -> Refiner | None:
  """The `Refiner` of ``eval_cfg.refine`` (None for no refinement)."""
  method = choice(eval_cfg)
  if not method:
    return None
  return Refiner(method, mesh, workdir=workdir, skeleton=skeleton)
