"""Exported predictors: the same outputs as in-process prediction, for every
task, batch size and dtype; loading without flax or model code; the export
command on a trained run; clear refusals of wrong inputs."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from hpe_jax import serving
from hpe_jax.serving import exporter
from hpe_jax import tasks
from hpe_jax.data import datasets
from hpe_jax.data import synthetic
from hpe_jax.serving import exported as exported_lib
from conftest import TINY_MODELS
from conftest import tiny_model_config
from conftest import ROOT

def init(config):
  model, variables = exporter.untrained(config)
  return (model, variables, tasks.make(config),
          datasets.skeleton(config.dataset))


def random_batch(loaded, size: int, seed: int) -> dict:
  """Random crops of a random image through the loader's own geometry."""
  rng = np.random.default_rng(seed)
  batch = loaded.empty_batch(size)
  image = rng.integers(0, 256, (48, 40, 3), np.uint8)
  boxes = np.sort(rng.uniform(0, 40, (size, 2, 2)), 1).reshape(size, 4)
  to_input, to_output = loaded._affines(boxes + [0, 0, 2, 2], 1.25)
  batch['image'] = np.stack([exported_lib.warp_image(image, m, (32, 32))
                             for m in to_input])
  batch['affine'] = to_output.astype(np.float32)
  if 'keypoints' in batch:
    k = batch['keypoints'].shape[1]
    batch['keypoints'] = np.concatenate(
        [rng.uniform(0, 8, (size, k, 2)),
         rng.choice([0.0, 2.0], (size, k, 1))], -1).astype(np.float32)
  return batch


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
@pytest.mark.parametrize('task_name', list(TINY_MODELS))
def test_exported_outputs_match_in_process_prediction(task_name, dtype,
                                                      tmp_path):
  config = tiny_model_config(task_name, dtype)
  model, variables, task, skeleton = init(config)
  meta = exporter.export_predictor(config, model, variables, 0, str(tmp_path),
                                 platforms=('cpu', 'cuda'))
  assert meta['platforms'] == ['cpu', 'cuda']
  assert meta['task'] == task_name and meta['dtype'] == dtype
  loaded = serving.load(str(tmp_path))
  predict, _ = task.serving_function(config, model, skeleton)
  in_process = jax.jit(predict)
  for size in (1, 3, 8):
    batch = random_batch(loaded, size, seed=size)
    want = jax.device_get(in_process(variables, batch))
    got = loaded.run(batch)
    assert set(got) == set(want) == set(meta['outputs'])
    for key in want:
      assert got[key].shape == want[key].shape, key
      np.testing.assert_allclose(np.asarray(got[key], np.float32),
                                 np.asarray(want[key], np.float32),
                                 rtol=1e-6, atol=1e-5, err_msg=key)
  assert loaded.compilations == 3


def test_wrong_inputs_are_refused_with_a_clear_message(tmp_path):
  config = tiny_model_config('keypoints')
  model, variables, _, _ = init(config)
  exporter.export_predictor(config, model, variables, 0, str(tmp_path),
                          platforms=('cpu',))
  loaded = serving.load(str(tmp_path))
  batch = loaded.empty_batch(2)
  with pytest.raises(serving.ExportError,
                     match=r'image: expected uint8 \[batch, 32, 32, 3\], '
                     r'got uint8 \[2, 30, 32, 3\]'):
    loaded.run({**batch, 'image': np.zeros((2, 30, 32, 3), np.uint8)})
  with pytest.raises(serving.ExportError, match='image: expected uint8'):
    loaded.run({**batch, 'image': batch['image'].astype(np.float32)})
  with pytest.raises(serving.ExportError, match='different batch sizes'):
    loaded.run({**batch, 'affine': batch['affine'][:1]})
  with pytest.raises(serving.ExportError, match=r'\[height, width, 3\]'):
    loaded.predict(np.zeros((8, 8), np.uint8))
  with pytest.raises(serving.ExportError, match='not an export'):
    serving.load(str(tmp_path / 'nothing'))
  meta = json.loads((tmp_path / 'metadata.json').read_text())
  del meta['rows']  # as written by an earlier version
  (tmp_path / 'metadata.json').write_text(json.dumps(meta))
  with pytest.raises(serving.ExportError, match='without rows.*export the '
                     'run again'):
    serving.load(str(tmp_path))


def test_export_command_and_loading_with_jax_and_numpy_only(
    tiny_run, tmp_path):
  """The exported predictor finds the same poses as the predict command
  (whose crops come from the training pipeline), in a process that never
  imports flax or the model code."""
  out = tmp_path / 'export'
  proc = subprocess.run(
      [sys.executable, '-m', 'hpe_jax.export', f'--workdir={tiny_run}',
       f'--output={out}', '--checkpoint=latest', '--platforms=cpu'],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr
  assert 'keypoints predictor (hourglass, checkpoint step 8' in proc.stdout
  images = tmp_path / 'images'
  synthetic.export(str(images), 2, seed=3, image_size=(64, 64))
  boxes = [{'image_id': a['image_id'], 'category_id': 1, 'score': 0.9,
            'bbox': a['bbox']}
           for a in json.loads((images / 'annotations.json').read_text())[
               'annotations']]
  (tmp_path / 'boxes.json').write_text(json.dumps(boxes))
  predicted = tmp_path / 'predicted'
  proc = subprocess.run(
      [sys.executable, '-m', 'hpe_jax.predict', f'--workdir={tiny_run}',
       f'--input={images / "images"}', f'--output={predicted}',
       f'--boxes={tmp_path / "boxes.json"}', '--min_box_score=0'],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr
  script = f'''
import json, os, sys
import numpy as np
from hpe_jax import serving
from hpe_jax.data import files
model = serving.load({str(out)!r})
boxes = json.load(open({str(tmp_path / 'boxes.json')!r}))
found = []
for name in sorted(os.listdir({str(images / 'images')!r})):
  image_id = int(os.path.splitext(name)[0])
  image = files.read_image(os.path.join({str(images / 'images')!r}, name))
  mine = [b['bbox'] for b in boxes if b['image_id'] == image_id]
  xyxy = [[x, y, x + w, y + h, 0.9] for x, y, w, h in mine]
  for p in model.predict(image, boxes=xyxy)['people']:
    found.append(p['keypoints'].tolist())
loaded = [m for m in sys.modules if m == 'flax' or m.startswith(
    ('flax.', 'hpe_jax.models', 'hpe_jax.tasks', 'hpe_jax.training'))]
print(json.dumps({{'found': found, 'loaded': loaded}}))
'''
  proc = subprocess.run([sys.executable, '-c', script], cwd=ROOT,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result['loaded'] == []
  want = json.loads((predicted / 'results.json').read_text())
  assert len(result['found']) == len(want) == len(boxes)
  got = np.array(result['found'])
  want = np.array([r['keypoints'] for r in want]).reshape(got.shape)
  # The same people, perhaps in another order.
  order = [np.abs(want[..., :2] - g[:, :2]).sum((1, 2)).argmin()
           for g in got]
  assert sorted(order) == list(range(len(want)))
  want = want[order]
  # Same crops up to OpenCV's fixed-point interpolation; same peaks.
  np.testing.assert_allclose(got[..., :2], want[..., :2], atol=0.5)
  np.testing.assert_allclose(got[..., 2], want[..., 2], atol=0.02)


def test_the_standalone_example_in_the_docs_runs(tiny_export, tmp_path):
  """docs/deployment.md's example, which needs jax and numpy only."""
  text = (ROOT / 'docs' / 'deployment.md').read_text()
  start = text.index('```python\nimport json\n')
  code = text[start + len('```python\n'):text.index('```', start + 3)]
  assert "path = 'EXPORT'" in code and 'image = ...' in code
  np.save(tmp_path / 'image.npy', np.random.default_rng(0).integers(
      0, 256, (90, 70, 3), np.uint8))
  code = code.replace("path = 'EXPORT'", f'path = {str(tiny_export)!r}')
  code = code.replace('image = ...', f'image = np.load({str(tmp_path / "image.npy")!r})')
  code += "\nimport sys\nassert not [m for m in sys.modules if m.startswith(('hpe_jax', 'flax'))]\n"
  proc = subprocess.run([sys.executable, '-c', code], cwd=tmp_path,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.strip().splitlines()
  assert len(lines) == 17 and lines[0].startswith('nose'), proc.stdout
