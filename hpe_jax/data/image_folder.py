"""Unlabelled images from a file or a folder, for inference.

`ImageFolder` presents images as an `ImageDataset` with no people (or with
given people: the poses the pose-conditioned mask network needs), so the
predict command runs them through the same evaluation pipeline (crops from
given or whole-image boxes) as labelled data. Image ids are the file stem
when it is a number (as COCO's are, so COCO detection files match), else
the position in sorted order.
"""

from __future__ import annotations

import os

import numpy as np

from hpe_jax.data import example
from hpe_jax.data import files
from hpe_jax.data import skeletons

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp')


def list_images(path: str) -> list[str]:
  """The image files of `path` (a file, or a folder's images sorted)."""
  if os.path.isfile(path):
    return [path]
  if not os.path.isdir(path):
    raise example.DatasetError(f'{path}: no such image file or folder')
  found = sorted(os.path.join(path, f) for f in os.listdir(path)
                 if f.lower().endswith(IMAGE_EXTENSIONS))
  if not found:
    raise example.DatasetError(f'{path}: no {"/".join(IMAGE_EXTENSIONS)} '
                               'images in this folder')
  return found


class ImageFolder(example.ImageDataset):
  """Images without annotations; `skeleton` is what the model predicts."""

  def __init__(self, path: str, skeleton: skeletons.Skeleton,
               drop_damaged: bool = False):
    """Lists the images of `path` (an image file or a folder).

    With `drop_damaged`, each image is decoded once now and those that
    cannot be are left out, listed in ``damaged`` (`DamagedSampleError`s);
    image ids stay those of the full listing.
    """
    self.name = os.path.basename(os.path.normpath(path))
    self.skeleton = skeleton
    self.paths = list_images(path)
    stems = [os.path.splitext(os.path.basename(p))[0] for p in self.paths]
    numeric = all(s.isdigit() for s in stems) and len(set(stems)) == len(
        stems)
    self.image_ids = ([int(s) for s in stems] if numeric else
                      list(range(1, len(stems) + 1)))
    self.damaged: list[example.DamagedSampleError] = []
    if drop_damaged:
      kept = []
      for i, p in enumerate(self.paths):
        try:
          files.read_image(p)
          kept.append(i)
        except example.DamagedSampleError as e:
          self.damaged.append(e)
      self.paths = [self.paths[i] for i in kept]
      self.image_ids = [self.image_ids[i] for i in kept]
    self._sizes: dict[int, tuple[int, int]] = {}
    self._people: dict[int, tuple[np.ndarray, np.ndarray]] = {}

  def set_people(self, people: dict[int, tuple[np.ndarray, np.ndarray]]):
    """Gives images people: {image_id: (keypoints [P, K, 3], boxes [P, 4])}.
    """
    self._people = dict(people)

  def __len__(self) -> int:
    return len(self.paths)

  def annotation(self, index: int) -> example.Example:
    if index not in self._sizes:
      self._sizes[index] = files.image_size(self.paths[index])
    h, w = self._sizes[index]
    image_id = self.image_ids[index]
    people = example.empty_people(self.num_joints)
    if image_id in self._people:
      keypoints, boxes = self._people[image_id]
      people.update(keypoints=keypoints, boxes=boxes,
                    head_boxes=np.full_like(boxes, np.nan),
                    is_crowd=np.zeros(len(boxes), bool))
    return dict(image_id=image_id, image_path=self.paths[index], height=h,
                width=w, **people)

  def load_pixels(self, index: int, annotation: example.Example):
    return {'image': files.read_image(self.paths[index])}
