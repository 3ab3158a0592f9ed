"""`SyntheticPeople`: the procedural people as an in-memory image dataset.

Sample `index` of seed `seed` is a pure function of the two: its geometry is
drawn from ``default_rng((seed, index, 0))`` and its pixels from
``default_rng((seed, index, 1))``.

Drawing a sample costs a few milliseconds, as much as the rest of the input
pipeline and, on 2 CPU cores, a large share of a small model's training
step; and a top-down epoch asks for every image once per person. Since a
sample never changes, the first `cache_mb` megabytes of drawn samples are
kept in memory (per process) and never drawn again; augmentation still
varies per epoch.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from hpe_jax.data import example as example_lib
from hpe_jax.data import skeletons
from hpe_jax.data.synthetic import pixels
from hpe_jax.data.synthetic import render
from hpe_jax.data.synthetic import scene as scene_lib


class SyntheticPeople(example_lib.ImageDataset):
  """Procedurally drawn people with keypoints, masks and part maps.

  See the package docstring for what is drawn and the visibility rule.
  """
  name = 'synthetic'
  skeleton = skeletons.COCO17
  part_schema = skeletons.BODY_PARTS6
  has_masks = True

  def __init__(self, num_images: int, seed: int = 0,
               image_size: tuple[int, int] = (256, 256),
               min_people: int = 1, max_people: int = 3,
               person_height: tuple[float, float] = (0.25, 1.0),
               occluder_prob: float = 0.25,
               min_visible_fraction: float = 0.005,
               uniform_colour_prob: float = 0.5,
               max_clutter: int = 20, cache_mb: float = 0.0):
    """Builds the dataset.

    Args:
      num_images: number of samples.
      seed: the samples are a function of (seed, index).
      image_size: (height, width) in pixels.
      min_people: fewest people per image (0 allows empty images).
      max_people: most people per image.
      person_height: range of standing heights as fractions of the image
        height (sampled log-uniformly; poses such as crouching are smaller).
      occluder_prob: chance that an image has objects in front of people.
      min_visible_fraction: people with fewer visible pixels (as a fraction
        of the image) are dropped, so that each listed person is really seen.
      uniform_colour_prob: chance that a person wears one material on all
        parts (otherwise skin, hair and clothes, or a patchwork).
      max_clutter: most clutter shapes in the background.
      cache_mb: memory for drawn samples kept for reuse (0: none).
    """
    if num_images < 0:
      raise ValueError(f'num_images must be >= 0, got {num_images}')
    if not 0 <= min_people <= max_people:
      raise ValueError(f'need 0 <= min_people <= max_people, got '
                       f'{min_people}, {max_people}')
    if len(image_size) != 2 or min(image_size) < 8:
      raise ValueError(f'image_size must be (height, width) >= 8, got '
                       f'{image_size}')
    if not 0 < person_height[0] <= person_height[1]:
      raise ValueError(f'bad person_height {person_height}')
    self._num_images = int(num_images)
    self._seed = int(seed)
    self._cfg = scene_lib.Config(
        image_hw=(int(image_size[0]), int(image_size[1])),
        min_people=int(min_people), max_people=int(max_people),
        height_range=(float(person_height[0]), float(person_height[1])),
        occluder_prob=float(occluder_prob),
        min_visible_fraction=float(min_visible_fraction),
        uniform_colour_prob=float(uniform_colour_prob),
        max_clutter=max(3, int(max_clutter)))
    self._cache_bytes = int(cache_mb * 2**20)
    self._init_cache()

  def _init_cache(self):
    # The scene of the last index: `__getitem__` asks for the annotation and
    # then the pixels of the same index.
    self._last: tuple[int, render.Scene] | None = None
    self._kept: dict[int, tuple[render.Scene, np.ndarray]] = {}
    self._kept_bytes = 0
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return self._num_images

  def __getstate__(self) -> dict[str, Any]:
    # Worker processes start with empty caches of their own.
    return {k: v for k, v in self.__dict__.items()
            if k not in ('_last', '_kept', '_kept_bytes', '_lock')}

  def __setstate__(self, state: dict[str, Any]):
    self.__dict__.update(state)
    self._init_cache()

  def _rng(self, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng((self._seed, index, stream))

  def scene(self, index: int) -> render.Scene:
    """The geometry of sample `index` (owner map, masks, visibility).

    For tests and debugging; the result is cached, so do not modify it.
    """
    kept = self._kept.get(index)
    if kept is not None:
      return kept[0]
    last = self._last
    if last is not None and last[0] == index:
      return last[1]
    scene = scene_lib.make_scene(self._rng(index, 0), self._cfg)
    self._last = (index, scene)
    return scene

  def _pixels(self, index: int) -> tuple[render.Scene, np.ndarray]:
    kept = self._kept.get(index)
    if kept is not None:
      return kept
    scene = self.scene(index)
    image = pixels.render_pixels(self._rng(index, 1), scene, self._cfg)
    size = image.nbytes + sum(a.nbytes for a in (
        scene.owner, scene.person_masks, scene.part_map, scene.frames))
    with self._lock:
      if self._kept_bytes + size <= self._cache_bytes:
        self._kept[index] = (scene, image)
        self._kept_bytes += size
    return scene, image

  def annotation(self, index: int) -> example_lib.Example:
    scene = self.scene(index)
    h, w = self._cfg.image_hw
    ann = {k: v.copy() for k, v in scene.annotation.items()}
    return dict(image_id=index + 1, image_path='', height=h, width=w, **ann)

  def load_pixels(self, index: int,
                  annotation: example_lib.Example) -> example_lib.Example:
    del annotation  # Everything follows from the index.
    scene, image = self._pixels(index)
    return dict(image=image.copy(), person_masks=scene.person_masks.copy(),
                part_map=scene.part_map.copy())
