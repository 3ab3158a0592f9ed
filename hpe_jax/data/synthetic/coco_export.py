"""Writes `SyntheticPeople` to disk as a COCO-format folder.

`export` is the Python entry point; `define_flags` and `main` are the
command line's (``python -m hpe_jax.data.synthetic``, see `__main__`).
"""

from __future__ import annotations

import json
import os
from typing import Sequence

from absl import flags
import cv2

from hpe_jax.data import coco
from hpe_jax.data.synthetic import dataset as dataset_lib


def export(output_dir: str, num_images: int, seed: int = 0,
           jpeg_quality: int = 95, **dataset_kwargs) -> str:
  """Writes a COCO-format folder of `SyntheticPeople`; returns the JSON path.

  Layout: ``images/<12-digit id>.jpg``, ``parts/<12-digit id>.png`` (uint8
  part labels) and ``annotations.json``. The same arguments give
  byte-identical files.

  Args:
    output_dir: folder to create or overwrite files in.
    num_images: number of images.
    seed: dataset seed.
    jpeg_quality: OpenCV JPEG quality.
    **dataset_kwargs: further `SyntheticPeople` arguments.
  """
  dataset = dataset_lib.SyntheticPeople(num_images, seed=seed,
                                        **dataset_kwargs)
  for sub in ('images', 'parts'):
    os.makedirs(os.path.join(output_dir, sub), exist_ok=True)
  images, annotations = [], []
  for i in range(len(dataset)):
    ex = dataset[i]
    stem = f'{ex["image_id"]:012d}'
    jpg = os.path.join(output_dir, 'images', stem + '.jpg')
    png = os.path.join(output_dir, 'parts', stem + '.png')
    ok = cv2.imwrite(jpg, cv2.cvtColor(ex['image'], cv2.COLOR_RGB2BGR),
                     [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    if not ok or not cv2.imwrite(png, ex['part_map']):
      raise OSError(f'could not write {jpg} or {png}')
    images.append(coco.coco_image_entry(ex, stem + '.jpg'))
    annotations += coco.coco_annotation_entries(
        ex, len(annotations) + 1)
  ground_truth = dict(
      info=dict(description='hpe_jax synthetic people', seed=int(seed)),
      images=images, annotations=annotations,
      categories=coco.coco_categories(dataset.skeleton))
  path = os.path.join(output_dir, 'annotations.json')
  with open(path, 'w') as f:
    json.dump(ground_truth, f, separators=(',', ':'))
  return path


def define_flags() -> None:
  # Only when run as a program, so that importing the package never clashes
  # with a trainer's own --seed or --output.
  flags.DEFINE_string('output', None, 'Folder to write.', required=True)
  flags.DEFINE_integer('num_images', 1000, 'Number of images.')
  flags.DEFINE_integer('seed', 0, 'Dataset seed.')
  flags.DEFINE_list('image_size', ['256', '256'], 'height,width in pixels.')
  flags.DEFINE_integer('min_people', 1, 'Fewest people per image.')
  flags.DEFINE_integer('max_people', 3, 'Most people per image.')
  flags.DEFINE_integer('jpeg_quality', 95, 'JPEG quality.')


def main(argv: Sequence[str]) -> None:
  del argv
  f = flags.FLAGS
  height, width = (int(v) for v in f.image_size)
  path = export(f.output, f.num_images, seed=f.seed, image_size=(height, width),
                min_people=f.min_people, max_people=f.max_people,
                jpeg_quality=f.jpeg_quality)
  print(f'wrote {f.num_images} images and {path}')
