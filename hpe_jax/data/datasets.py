"""Builds a dataset reader from ``config.dataset``.

``config.dataset.name`` picks the reader and ``config.dataset.root`` the
folder it reads; each name has its own sub-config of file names relative to
that root, defaulting to the dataset's standard layout:

* ``synthetic``: the built-in procedural people; no files.
* ``coco``: ``annotations/person_keypoints_{train,val}2017.json`` and
  ``{train,val}2017/`` (a folder written by ``python -m hpe_jax.data.synthetic``
  reads with ``train_annotations=annotations.json, train_images=images``).
* ``lsp``: ``root`` holds ``lsp/`` and, for extra training images, ``lspet/``
  (like ``../shared/data``); train = LSP im0001-1000 (+ LSPET), eval = LSP
  im1001-2000.
* ``mpii``: mmpose's list-JSON layout, ``annotations/mpii_{train,val}.json``
  and ``images/``.
* ``pascal_part``: the PASCAL-Part ``.mat`` layout.
* ``cihp``: ``images/``, ``labels/`` and ``list/{train,val}_id.txt``.
* ``folder``: your own data, a folder of images with any of label maps,
  instance masks, box files and a keypoints JSON, with a skeleton and part
  schema named or read from schema files (`hpe_jax.data.folder`).

``config.dataset.skeleton`` (e.g. ``lsp14``) converts the keypoints of any
dataset to another skeleton (`skeleton_conversion.ConvertedSkeleton`).
"""

from __future__ import annotations

import os

import ml_collections

from hpe_jax.data import coco
from hpe_jax.data import concat
from hpe_jax.data import example as example_lib
from hpe_jax.data import folder
from hpe_jax.data import lsp
from hpe_jax.data import mpii
from hpe_jax.data import part_masks
from hpe_jax.data import skeleton_conversion
from hpe_jax.data import skeletons
from hpe_jax.data import synthetic

SPLITS = ('train', 'eval')

# What each dataset's examples carry, known without reading any file (the
# predict command needs the skeleton where the training data is absent).
SKELETONS = {'synthetic': skeletons.COCO17, 'coco': skeletons.COCO17,
             'lsp': skeletons.LSP14, 'mpii': skeletons.MPII16,
             'pascal_part': None, 'cihp': None,
             'folder': None}  # from config.dataset.folder.skeleton


def skeleton(cfg: ml_collections.ConfigDict) -> skeletons.Skeleton | None:
  """The keypoint skeleton of ``config.dataset`` (None: no keypoints)."""
  if cfg.name not in SKELETONS:
    raise ValueError(f'Unknown dataset {cfg.name!r}; known: '
                     f'{sorted(SKELETONS)}')
  if cfg.skeleton:
    return skeletons.get_skeleton(cfg.skeleton)
  return _source_skeleton(cfg)


def _source_skeleton(cfg: ml_collections.ConfigDict
                     ) -> skeletons.Skeleton | None:
  """The skeleton the dataset's files are in, before any conversion."""
  if cfg.name == 'folder' and cfg.folder.skeleton:
    return skeletons.get_skeleton(cfg.folder.skeleton)
  return SKELETONS[cfg.name]


PART_SCHEMAS = {'synthetic': skeletons.BODY_PARTS6, 'coco': None,
                'lsp': None, 'mpii': None,
                'pascal_part': skeletons.BODY_PARTS6,
                'cihp': skeletons.CIHP20,
                'folder': None}  # from config.dataset.folder.part_schema


def part_schema(cfg: ml_collections.ConfigDict) -> skeletons.PartSchema | None:
  """The body-part labels of ``config.dataset`` (None: no part maps)."""
  skeleton(cfg)  # checks the name
  if cfg.name == 'folder' and cfg.folder.part_maps and (
      cfg.folder.part_schema):
    return skeletons.get_part_schema(cfg.folder.part_schema)
  return PART_SCHEMAS[cfg.name]


def default_config() -> ml_collections.ConfigDict:
  """Dataset defaults; recipes override them under ``config.dataset``."""
  return ml_collections.ConfigDict(dict(
      name='synthetic',
      root='',
      skeleton='',  # convert keypoints to this skeleton ('' = the dataset's)
      synthetic=dict(
          num_train=2000, num_eval=200, image_size=(256, 256),
          max_people=3, seed=0,
          person_height=(0.25, 1.0),  # fractions of the image height
          cache_mb=512.0),  # drawn samples kept in memory, per process
      coco=dict(
          train_annotations='annotations/person_keypoints_train2017.json',
          train_images='train2017',
          eval_annotations='annotations/person_keypoints_val2017.json',
          eval_images='val2017',
          parts_dir='',  # optional part-map PNGs, relative to root
          min_keypoints=0,  # the reader drops people with fewer
          # True leaves out images without people, which full-image
          # segmentation otherwise learns background from.
          skip_empty_images=False,
      ),
      lsp=dict(use_lspet=True),
      mpii=dict(
          train_annotations='annotations/mpii_train.json',
          eval_annotations='annotations/mpii_val.json',
          images='images',
          headboxes='',  # official head boxes (.mat) for the eval split
      ),
      cihp=dict(train_list='list/train_id.txt', eval_list='list/val_id.txt'),
      # Patterns relative to root: a folder of <stem>.png (.txt for boxes),
      # or a file pattern with {stem}; '' = not in this dataset.
      folder=dict(
          images='images',
          part_maps='',  # label PNGs in part_schema's labels
          part_schema='',  # built-in name (parts6, cihp20) or .json file
          instances='',  # PNGs with k on the k-th person's pixels
          boxes='',  # text files, one 'x1 y1 x2 y2' line per person
          keypoints='',  # one JSON file: stem -> people
          skeleton='',  # built-in name (coco17, ...) or .json file
          train_list='', eval_list='',  # files of stems, else by hash:
          eval_fraction=0.1,  # this share of the stems is evaluation
      ),
  ))


def _path(root: str, relative: str) -> str:
  return os.path.join(root, relative) if relative else ''


def build(cfg: ml_collections.ConfigDict,
          split: str) -> example_lib.ImageDataset:
  """The reader of `split` ('train' or 'eval') of ``config.dataset``."""
  dataset = _build_reader(cfg, split)
  if cfg.skeleton and dataset.skeleton != skeleton(cfg):
    return skeleton_conversion.ConvertedSkeleton(dataset, skeleton(cfg))
  return dataset


def _build_reader(cfg: ml_collections.ConfigDict,
                  split: str) -> example_lib.ImageDataset:
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
  name, root = cfg.name, cfg.root
  if name != 'synthetic' and not os.path.isdir(root):
    raise example_lib.DatasetError(
        f'dataset {name!r}: root folder {root!r} does not exist '
        '(set --config.dataset.root)')
  train = split == 'train'

  if name == 'synthetic':
    s = cfg.synthetic
    return synthetic.SyntheticPeople(
        s.num_train if train else s.num_eval,
        # Disjoint seeds keep evaluation images out of training.
        seed=2 * s.seed + (0 if train else 1),
        image_size=tuple(s.image_size), max_people=s.max_people,
        person_height=tuple(s.person_height), cache_mb=s.cache_mb)

  if name == 'coco':
    c = cfg.coco
    return coco.CocoKeypoints(
        _path(root, c.train_annotations if train else c.eval_annotations),
        _path(root, c.train_images if train else c.eval_images),
        parts_dir=_path(root, c.parts_dir) or None,
        min_keypoints=c.min_keypoints,
        skip_empty_images=c.skip_empty_images)

  if name == 'lsp':
    main = lsp.LeedsSportsPose(os.path.join(root, 'lsp'),
                               split='train' if train else 'test',
                               variant='lsp')
    if not (train and cfg.lsp.use_lspet):
      return main
    extra = lsp.LeedsSportsPose(os.path.join(root, 'lspet'), split='train',
                                variant='lspet')
    return concat.ConcatDataset([main, extra])

  if name == 'mpii':
    m = cfg.mpii
    return mpii.Mpii(
        _path(root, m.train_annotations if train else m.eval_annotations),
        _path(root, m.images),
        headboxes_file=None if train else (_path(root, m.headboxes) or None))

  if name == 'pascal_part':
    return part_masks.PascalPart(root)

  if name == 'cihp':
    return part_masks.PartMapFolder(
        os.path.join(root, 'images'), os.path.join(root, 'labels'),
        skeletons.CIHP20,
        list_file=_path(root, cfg.cihp.train_list if train else
                        cfg.cihp.eval_list) or None,
        name='cihp')

  if name == 'folder':
    f = cfg.folder
    return folder.FolderDataset(
        root, split, images=f.images, part_maps=f.part_maps,
        instances=f.instances, boxes=f.boxes, keypoints=f.keypoints,
        part_schema=part_schema(cfg), skeleton=_source_skeleton(cfg),
        split_list=f.train_list if train else f.eval_list,
        eval_fraction=f.eval_fraction)

  raise ValueError(f'Unknown dataset {name!r}; known: {sorted(SKELETONS)}')
