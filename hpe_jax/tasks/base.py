"""The interface every task implements, and the parts tasks share.

A task says what a model is trained to do and how its outputs are read:

* training (static under ``jax.jit``): `model_inputs` picks and normalises
  what the model takes from a batch, `init_inputs` gives `model.init` inputs
  of batch size 1, `loss` makes the targets on the device and returns the
  total and its named parts (logged as ``train/loss/<part>``),
  `training_labels` names the labels it needs from the data, and
  `rng_streams` names the random streams the model draws from in training
  besides ``dropout``;
* evaluation: `make_evaluator` returns an `Evaluator` over a dataset;
* prediction: `make_predictor` returns a `Predictor` that turns unlabelled
  images (plus boxes or poses where the task takes them) into results in
  image coordinates, `draw` paints a result over its image and
  `save_prediction` writes its files;
* export: `serving_function` is the pure predict step that
  `hpe_jax.export` serialises.

Settings live in ``config.loss`` (the task's `default_loss_config`),
``config.eval`` (`default_eval_config`) and ``config.codec`` (the heatmap
codec shared by targets and decoding).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, ClassVar, Protocol

import cv2
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hpe_jax import visualization
from hpe_jax.codecs import heatmap
from hpe_jax.data import coco
from hpe_jax.data import example
from hpe_jax.data import pipeline
from hpe_jax.ops import images as images_lib


class Evaluator(Protocol):
  """Runs a model over an evaluation split and scores it."""
  count: int  # real examples evaluated per pass
  primary_metric: str  # ranks checkpoints for "best"
  results: list[dict] | None  # COCO results of the last pass, if any

  def evaluate(self, variables) -> tuple[dict[str, float], list[np.ndarray]]:
    """(metrics by name, preview images) of one pass over the split."""


class Predictor(Protocol):
  """Runs a model over unlabelled images."""

  def predict(self, variables, images: example.ImageDataset, boxes=None,
              poses=None) -> list[dict]:
    """One result per image of `images`, in its order, in image pixels.

    `boxes` ({image_id: (boxes [N, 4], scores [N])}) and `poses`
    ({image_id: (keypoints [N, K, 3], scores [N])}) give the people of
    tasks that take them. Results hold, as the task has them, ``people``
    (COCO results: boxes, keypoints with scores, masks), ``label_images``
    ({name: uint8 label map at the image's size}) and what `draw` needs.
    """


def default_eval_config() -> ml_collections.ConfigDict:
  """Evaluation defaults; recipes override them under ``config.eval``."""
  return ml_collections.ConfigDict(dict(
      flip=False,  # flip test (the evaluate command turns it on)
      boxes='gt',  # 'gt', or a COCO detection file (top-down with dets)
      min_detection_score=0.0,
      num_preview_images=8,  # predictions drawn to TensorBoard
  ))


def check_choice(value, allowed, what: str) -> None:
  if value not in allowed:
    raise ValueError(f'{what} must be one of {allowed}, got {value!r}')


def flip_suffix(flip: bool) -> str:
  return '_flip' if flip else ''


def load_detections(config, dataset):
  """The person boxes of ``eval.boxes`` (None for ground-truth boxes)."""
  if config.eval.boxes == 'gt':
    return None
  return coco.load_detections(config.eval.boxes, dataset,
                              config.eval.min_detection_score)


@dataclasses.dataclass(frozen=True)
class Task:
  """A task whose model takes the normalised images only; subclasses add
  their loss, evaluator, predictor and drawing."""
  loss_cfg: Any
  output_size: tuple[int, int]
  codec: heatmap.HeatmapCodec = heatmap.HeatmapCodec()

  rng_streams: ClassVar[tuple[str, ...]] = ()
  # How an export's rows are made and its results read (`hpe_jax.serving`):
  # rows from 'boxes' (person crops, whole image without boxes), 'poses'
  # (crops around given poses) or the whole 'image'; results are the crops'
  # 'keypoints', a 'label_map', the crops' 'masks' or detected 'people'.
  serving_rows: ClassVar[str | None] = None
  serving_results: ClassVar[str | None] = None

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> Task:
    stride = config.input.output_stride
    return cls(config.loss, tuple(pipeline.geometry(config.input).output_size),
               heatmap.HeatmapCodec.from_config(config.codec, stride))

  @staticmethod
  def default_loss_config() -> ml_collections.ConfigDict:
    raise NotImplementedError

  @staticmethod
  def default_eval_config() -> ml_collections.ConfigDict:
    return default_eval_config()

  # Training.

  def model_inputs(self, batch, dtype) -> dict:
    return {'images': images_lib.normalize(batch['image'], dtype)}

  def init_inputs(self, image_size, num_joints, dtype) -> dict:
    """Inputs of batch size 1 for `model.init`."""
    del num_joints
    return {'images': jnp.zeros((1, *image_size, 3), dtype)}

  def loss(self, outputs, batch):
    raise NotImplementedError

  def training_labels(self, config) -> tuple[str, ...]:
    """The example labels the loss trains on ('keypoints', 'person_masks',
    'part_map'); training data with none of one stops the run at start-up
    (`pipeline.check_labels`). A task that names none is not checked."""
    del config
    return ()

  def train_rngs(self, rng) -> dict:
    """The model's random streams of one step, from that step's key."""
    rngs = {'dropout': rng}
    for i, name in enumerate(self.rng_streams):
      rngs[name] = jax.random.fold_in(rng, i + 1)
    return rngs

  # Evaluation and prediction.

  def make_evaluator(self, config, dataset, model, mesh) -> Evaluator:
    raise NotImplementedError

  def protocol_suffix(self, config) -> str:
    """Names the evaluation protocol in result file names: the flip test
    and a mask refinement (``eval.refine``, where the task has it)."""
    refine = config.eval.get('refine')
    return flip_suffix(config.eval.flip) + (f'_{refine}' if refine else '')

  def make_predictor(self, config, model, mesh, skeleton, *,
                     min_score: float = 0.3,
                     keypoint_threshold: float = 0.2) -> Predictor:
    """A predictor for images of `skeleton`'s people; detections (or
    given people) scoring below `min_score` and joints below
    `keypoint_threshold` are left out where the task has them."""
    raise NotImplementedError

  def serving_function(self, config, model, skeleton, *,
                       min_score: float = 0.3):
    """What `hpe_jax.export` serialises: (predict, extra inputs).

    ``predict(variables, batch)`` is the evaluation predict step (pure, not
    jitted): it takes ``image`` (uint8 [B, h, w, 3], the model input) and
    ``affine`` (float32 [B, 2, 3], image pixels -> output grid) plus the
    extra inputs ({name: (shape without the batch, dtype)}) and returns a
    dict of arrays (coordinates in image pixels, label maps on the output
    grid). `min_score` is the detection threshold of tasks that detect.
    """
    raise NotImplementedError(f'{type(self).__name__} cannot be exported')

  def part_schema(self, config):
    """The schema of the part labels the model predicts (None: none)."""
    del config
    return None

  def draw(self, image: np.ndarray, result: dict, skeleton,
           threshold: float) -> np.ndarray:
    """`image` with `result` painted over it."""
    raise NotImplementedError

  def save_prediction(self, out_dir: str, stem: str, image: np.ndarray,
                      result: dict, skeleton,
                      threshold: float) -> list[dict] | None:
    """Writes ``<stem>.png`` (the drawing), ``<stem>_<name>.png`` for each
    label image of the result and ``<stem>.json``; returns the image's COCO
    results for ``results.json`` (None for tasks without them)."""
    visualization.save_png(os.path.join(out_dir, f'{stem}.png'),
                           self.draw(image, result, skeleton, threshold))
    for name, labels in result.get('label_images', {}).items():
      cv2.imwrite(os.path.join(out_dir, f'{stem}_{name}.png'), labels)
    if 'people' in result:
      coco.write_results(os.path.join(out_dir, f'{stem}.json'),
                                   result['people'])
      return result['people']
    return None
