"""The dataset doctor: what a dataset holds and what is wrong with it, before
training on it.

  python -m hpe_jax.data.inspect --config=configs/X.py[:arg] \
      [--config.dataset.name=folder --config.dataset.root=... ...] \
      [--split=train|eval|both] [--limit=N] [--output=contact_sheet.png]

It reads every example of the split(s) the config's dataset gives (labels
and pixels, as training would) and prints:

* images and their size range, people (crowd regions apart), people
  without a labelled joint, labelled joints per joint, people with masks;
* pixels per part class, and classes that never occur;
* damaged samples with the reason (missing or undecodable files, malformed
  annotations), and, separately, label maps with values outside the part
  schema;

and writes a contact sheet PNG of a few examples drawn with their labels
(skeletons by side, boxes, person masks, part maps with a legend). Any
config the training command accepts works, so the data can be checked with
the very flags that will train on it. The exit status is 1 when something is
damaged or outside the schema.
"""

from __future__ import annotations

import dataclasses
import os

from absl import flags
import cv2
from ml_collections import config_flags
import numpy as np

from hpe_jax import cli
from hpe_jax import visualization
from hpe_jax.data import datasets
from hpe_jax.data import example
from hpe_jax.data import skeletons

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'A recipe or data config (hpe_jax/data/config.py).',
    lock_config=True)
_SPLIT = flags.DEFINE_enum('split', 'both', ['train', 'eval', 'both'],
                           'Which split(s) to scan.')
_LIMIT = flags.DEFINE_integer('limit', 0, 'Scan at most this many images per '
                              'split (0: all).')
_OUTPUT = flags.DEFINE_string('output', 'contact_sheet.png',
                              'Contact sheet PNG to write ("" for none).')
_SAMPLES = flags.DEFINE_integer('samples', 12, 'Examples on the sheet.')

_CELL = 192  # contact-sheet cell side in pixels


@dataclasses.dataclass
class Report:
  """What `scan` found in one split."""
  name: str
  images: int = 0
  sizes: list[tuple[int, int]] = dataclasses.field(default_factory=list)
  people: int = 0
  crowd: int = 0
  without_keypoints: int = 0
  with_masks: int = 0
  joints: np.ndarray | None = None  # [K] labelled count per joint
  class_pixels: np.ndarray | None = None  # [num classes + 1], last: 255
  damaged: list[str] = dataclasses.field(default_factory=list)
  outside_schema: list[str] = dataclasses.field(default_factory=list)
  skipped_at_load: int = 0  # annotations the reader dropped when built
  good: list[int] = dataclasses.field(default_factory=list)

  @property
  def problems(self) -> int:
    return len(self.damaged) + len(self.outside_schema) + self.skipped_at_load


def scan(dataset: example.ImageDataset, limit: int = 0) -> Report:
  """Reads every example (or the first `limit`) and tallies it."""
  report = Report(dataset.name, skipped_at_load=dataset.num_skipped)
  if dataset.skeleton is not None:
    report.joints = np.zeros(dataset.skeleton.num_joints, np.int64)
  schema = dataset.part_schema
  if schema is not None:
    report.class_pixels = np.zeros(schema.num_labels + 1, np.int64)
  for i in range(min(len(dataset), limit) if limit else len(dataset)):
    report.images += 1
    try:
      ex = dataset[i]
    except example.LabelsOutsideSchema as e:
      report.outside_schema.append(str(e))
      continue
    except example.DamagedSampleError as e:
      report.damaged.append(str(e))
      continue
    report.good.append(i)
    report.sizes.append((ex['height'], ex['width']))
    person = ~ex['is_crowd']
    report.people += int(person.sum())
    report.crowd += int(ex['is_crowd'].sum())
    labelled = ex['keypoints'][..., 2] > 0
    if report.joints is not None:
      report.without_keypoints += int((~labelled.any(-1) & person).sum())
      report.joints += labelled[person].sum(0)
    if 'person_masks' in ex:
      report.with_masks += int(
          (ex['person_masks'].reshape(len(person), -1).any(-1) & person).sum())
    if schema is not None:
      counts = np.bincount(ex['part_map'].ravel(), minlength=256)
      report.class_pixels[:-1] += counts[:schema.num_labels]
      report.class_pixels[-1] += counts[skeletons.IGNORE_LABEL]
  return report


def _share(n: int, total: int) -> str:
  return f'{100 * n / max(total, 1):.1f}%'


def describe(report: Report, dataset: example.ImageDataset) -> list[str]:
  """The report as printed lines."""
  lines = [f'{report.name}: {report.images} images scanned']
  if report.sizes:
    h, w = np.array(report.sizes).T
    lines.append(f'  image size: height {h.min()}-{h.max()} (median '
                 f'{int(np.median(h))}), width {w.min()}-{w.max()} (median '
                 f'{int(np.median(w))})')
  lines.append(f'  people: {report.people}' +
               (f' (+{report.crowd} crowd regions)' if report.crowd else ''))
  if report.joints is not None:
    lines.append(f'  people without a labelled joint: '
                 f'{report.without_keypoints}')
    names = dataset.skeleton.joint_names
    lines.append('  labelled joints: ' + ', '.join(
        f'{n} {c}' for n, c in zip(names, report.joints)))
  if dataset.has_masks:
    lines.append(f'  people with a mask: {report.with_masks}')
  if report.class_pixels is not None:
    schema = dataset.part_schema
    total = report.class_pixels.sum()
    names = schema.label_names + ('ignored (255)',)
    lines.append(f'  part-map pixels ({schema.name}): ' + ', '.join(
        f'{n} {_share(c, total)}' for n, c in zip(names, report.class_pixels)
        if c))
    never = [n for n, c in zip(schema.label_names, report.class_pixels)
             if not c]
    if never:
      lines.append(f'  classes that never occur: {", ".join(never)}')
  if report.skipped_at_load:
    lines.append(f'  annotations dropped by the reader: '
                 f'{report.skipped_at_load} (see the warnings above)')
  for title, found in (('damaged samples', report.damaged),
                       ('labels outside the schema', report.outside_schema)):
    if found:
      lines.append(f'  {title}: {len(found)}')
      lines.extend(f'    {line}' for line in found[:20])
      if len(found) > 20:
        lines.append(f'    ... and {len(found) - 20} more')
  return lines


def _cell(image: np.ndarray) -> np.ndarray:
  """`image` letterboxed into a `_CELL`-sided square."""
  h, w = image.shape[:2]
  scale = _CELL / max(h, w)
  small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                     interpolation=cv2.INTER_AREA)
  out = np.zeros((_CELL, _CELL, 3), np.uint8)
  out[:small.shape[0], :small.shape[1]] = small
  return out


def draw_example(ex: example.Example,
                 dataset: example.ImageDataset) -> np.ndarray:
  """One example with its labels: part map or masks, boxes, skeletons."""
  image = ex['image']
  schema = dataset.part_schema
  if schema is not None:
    image = visualization.overlay_labels(image, ex['part_map'],
                                         colors=schema.colors)
  elif 'person_masks' in ex and len(ex['person_masks']):
    ids = (ex['person_masks'] *
           np.arange(1, len(ex['person_masks']) + 1)[:, None, None]).max(0)
    image = visualization.overlay_labels(image, ids)
  image = np.ascontiguousarray(image)
  for box, crowd in zip(ex['boxes'], ex['is_crowd']):
    x1, y1, x2, y2 = np.round(box).astype(int)
    cv2.rectangle(image, (x1, y1), (x2, y2),
                  (128, 128, 128) if crowd else (255, 255, 255), 1)
  if dataset.skeleton is not None and len(ex['keypoints']):
    image = visualization.draw_skeleton(image, ex['keypoints'],
                                        dataset.skeleton)
  return visualization.put_text(_cell(image), os.path.basename(
      ex['image_path']) or f'id {ex["image_id"]}')


def contact_sheet(dataset: example.ImageDataset, indices: list[int],
                  num: int) -> np.ndarray | None:
  """Up to `num` of the good examples, evenly spread, in a grid."""
  if not indices:
    return None
  chosen = [indices[int(k)] for k in
            np.unique(np.linspace(0, len(indices) - 1, num).round())]
  examples = [dataset[i] for i in chosen]
  sheet = visualization.grid([draw_example(ex, dataset) for ex in examples],
                             columns=min(4, len(examples)))
  schema = dataset.part_schema
  if schema is None:
    return sheet
  present = np.concatenate([ex['part_map'].ravel() for ex in examples])
  return visualization.add_legend(sheet, present, schema.label_names,
                                  schema.colors)


def main(argv):
  del argv
  config = cli.config_value(_CONFIG)
  if _OUTPUT.value:
    cli.output_folder(os.path.dirname(_OUTPUT.value) or '.')
  splits = ('train', 'eval') if _SPLIT.value == 'both' else (_SPLIT.value,)
  problems = 0
  sheets = {}
  for split in splits:
    dataset = datasets.build(config.dataset, split)
    report = scan(dataset, _LIMIT.value)
    print('\n'.join(describe(report, dataset)))
    problems += report.problems
    if _OUTPUT.value:
      sheets[split] = contact_sheet(dataset, report.good,
                                    max(1, _SAMPLES.value // len(splits)))
  drawn = [s for s in sheets.values() if s is not None]
  if drawn:
    width = max(s.shape[1] for s in drawn)
    sheet = np.concatenate([np.pad(s, ((0, 4), (0, width - s.shape[1]),
                                       (0, 0))) for s in drawn])
    visualization.save_png(_OUTPUT.value, sheet)
    print(f'contact sheet: {_OUTPUT.value} ({", ".join(sheets)})')
  if problems:
    print(f'{problems} problem(s) found')
    raise SystemExit(1)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  cli.run(main)
