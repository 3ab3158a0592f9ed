"""Tests for the run's metric writer: metrics.jsonl and TensorBoard files."""

import json
import logging
import os
import struct

import cv2
from etils import epath
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.proto import event_pb2
from tensorboardX.proto import plugin_hparams_pb2

from hpe_jax.runtime import metric_writer
from hpe_jax.runtime import storage


def _events(workdir):
  """Every Event in the run's TensorBoard files (TFRecord framing)."""
  events = []
  for path in sorted((workdir / 'tensorboard').glob('events.out.tfevents.*')):
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack('<Q', data[pos:pos + 8])
      pos += 12  # length and its CRC
      events.append(event_pb2.Event.FromString(data[pos:pos + length]))
      pos += length + 4  # record and its CRC
  return events


def _values(workdir):
  return [(event.step, value) for event in _events(workdir)
          for value in event.summary.value]


def _lines(workdir):
  return (workdir / 'metrics.jsonl').read_text().splitlines()


def test_same_step_writes_merge_into_one_line(tmp_path):
  with metric_writer.MetricWriter(tmp_path) as writer:
    writer.write_scalars(10, {'train/loss': 1.5})
    writer.write_scalars(10, {'eval/pck': 0.25})
    writer.write_scalars(20, {'train/loss': 1.0})
  assert [json.loads(line) for line in _lines(tmp_path)] == [
      {'step': 10, 'train/loss': 1.5, 'eval/pck': 0.25},
      {'step': 20, 'train/loss': 1.0}]


def test_same_step_after_flush_rewrites_its_line(tmp_path):
  writer = metric_writer.MetricWriter(tmp_path)
  writer.write_scalars(1, {'a': 1})
  writer.write_scalars(2, {'a': 2})
  writer.flush()
  assert len(_lines(tmp_path)) == 2
  writer.write_scalars(2, {'b': 3})
  writer.close()
  assert metric_writer.read_metrics(tmp_path) == [
      {'step': 1, 'a': 1}, {'step': 2, 'a': 2, 'b': 3}]


def test_numpy_jax_and_non_finite_values(tmp_path):
  with metric_writer.MetricWriter(tmp_path) as writer:
    writer.write_scalars(0, {
        'f32': np.float32(0.1), 'jax': jnp.asarray(2.5), 'int': jnp.int32(3),
        'bf16': jnp.bfloat16(0.5), 'one': np.ones((1, 1)),
        'nan': jnp.nan, 'inf': np.float32('inf'), 'minf': -np.inf})
  (line,) = _lines(tmp_path)

  def reject(constant):
    raise ValueError(f'non-standard JSON constant {constant}')

  record = json.loads(line, parse_constant=reject)
  assert record['nan'] == 'nan' and record['minf'] == '-inf'
  (read,) = metric_writer.read_metrics(tmp_path)
  assert {k: read[k] for k in ('f32', 'jax', 'int', 'bf16', 'one')} == {
      'f32': 0.1, 'jax': 2.5, 'int': 3, 'bf16': 0.5, 'one': 1.0}
  assert type(read['int']) is int
  assert np.isnan(read['nan'])
  assert read['inf'] == np.inf and read['minf'] == -np.inf


@pytest.mark.parametrize('scalars', [
    {'vector': np.zeros(2)}, {'text': 'abc'}, {'step': 1}])
def test_bad_scalars_raise(tmp_path, scalars):
  with metric_writer.MetricWriter(tmp_path) as writer:
    with pytest.raises(ValueError):
      writer.write_scalars(0, scalars)


def test_resume_drops_lines_after_the_checkpoint(tmp_path, caplog):
  with metric_writer.MetricWriter(tmp_path) as writer:
    for step in range(0, 60, 10):
      writer.write_scalars(step, {'loss': step})
  with (tmp_path / 'metrics.jsonl').open('a') as f:
    f.write('{"step": 60, "lo')  # cut short by the interruption
  caplog.set_level(logging.INFO)
  with metric_writer.MetricWriter(tmp_path, resume_step=20) as writer:
    writer.write_scalars(30, {'loss': -1})
  assert 'resuming after step 20, dropped 4 later line(s)' in caplog.text
  assert [(m['step'], m['loss']) for m in metric_writer.read_metrics(
      tmp_path)] == [(0, 0), (10, 10), (20, 20), (30, -1)]
  # TensorBoard hides the first run's events after the checkpoint.
  starts = [event.step for event in _events(tmp_path)
            if event.session_log.status == event_pb2.SessionLog.START]
  assert starts == [21]


def test_bucket_workdir_is_rewritten_whole_after_each_line(
    tmp_path, monkeypatch):
  # A local folder stands in for the bucket: every write to it must be a
  # whole-file write, never an append or a truncation.
  bucket = tmp_path / 'bucket'
  monkeypatch.setattr(storage, 'is_remote', lambda p: str(p).startswith(
      str(bucket)))
  uploads = []
  write_bytes = epath.Path.write_bytes

  def record_upload(self, data):
    uploads.append(data)
    return write_bytes(self, data)

  monkeypatch.setattr(epath.Path, 'write_bytes', record_upload)
  with metric_writer.MetricWriter(bucket) as writer:
    writer.write_scalars(1, {'loss': 1.0})
    writer.write_scalars(2, {'loss': 2.0})
    assert _lines(bucket) == ['{"step": 1, "loss": 1.0}']
  assert uploads[-1] == (bucket / 'metrics.jsonl').read_bytes()
  assert not os.path.exists(writer._file.name)  # local copy removed
  with metric_writer.MetricWriter(bucket, resume_step=1) as writer:
    assert _lines(bucket) == ['{"step": 1, "loss": 1.0}']
    writer.write_scalars(2, {'loss': 3.0})
  assert [(m['step'], m['loss']) for m in metric_writer.read_metrics(
      bucket)] == [(1, 1.0), (2, 3.0)]
  assert _values(bucket)  # TensorBoard events in the same workdir


def test_resumed_step_merges_into_its_line(tmp_path):
  for attempt in range(2):
    with metric_writer.MetricWriter(tmp_path, resume_step=0) as writer:
      writer.write_scalars(0, {f'eval/{attempt}': attempt, 'eval/ap': attempt})
      writer.write_scalars(1, {'loss': attempt})
  assert metric_writer.read_metrics(tmp_path) == [
      {'step': 0, 'eval/0': 0, 'eval/1': 1, 'eval/ap': 1},
      {'step': 1, 'loss': 1}]


def test_writers_started_together_keep_both_event_files(tmp_path):
  with metric_writer.MetricWriter(tmp_path) as writer:
    writer.write_scalars(1, {'first': 1})
  with metric_writer.MetricWriter(tmp_path, resume_step=1) as writer:
    writer.write_scalars(2, {'second': 2})
  assert {value.tag for _, value in _values(tmp_path)} == {'first', 'second'}


def _write_everything(writer):
  writer.write_scalars(0, {'loss': 1.0})
  writer.write_images(0, {'image': np.zeros((4, 4, 3), np.uint8)})
  writer.write_text(0, 'config', 'text')
  writer.write_hparams({'lr': 0.1})
  writer.flush()
  writer.close()


def test_other_processes_write_nothing(tmp_path, monkeypatch):
  monkeypatch.setattr(jax, 'process_index', lambda: 1)
  _write_everything(metric_writer.MetricWriter(tmp_path / 'run'))
  _write_everything(metric_writer.MetricWriter(tmp_path / 'off',
                                               enabled=False))
  assert not list(tmp_path.iterdir())


def test_closed_writer_refuses_writes(tmp_path):
  writer = metric_writer.MetricWriter(tmp_path)
  writer.close()
  writer.close()
  with pytest.raises(RuntimeError, match='closed'):
    writer.write_scalars(0, {'loss': 1.0})


def test_tensorboard_scalars_images_text_and_hparams(tmp_path):
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
  batch = rng.integers(0, 256, (2, 6, 5, 3), dtype=np.uint8)
  with metric_writer.MetricWriter(tmp_path) as writer:
    writer.write_scalars(3, {'train/loss': 0.75})
    writer.write_scalars(4, {'train/loss': np.nan})
    writer.write_images(3, {'pred': image, 'batch': batch})
    writer.write_text(3, 'config', 'optimizer: adam')
    writer.write_hparams({'optimizer': {'name': 'adam', 'lr': 0.1},
                          'size': (256, 256)}, metric_tags=['eval/ap'])
    with pytest.raises(ValueError, match='uint8'):
      writer.write_images(3, {'float': image.astype(np.float32)})

  values = _values(tmp_path)
  scalars = [(step, v.simple_value) for step, v in values
             if v.tag == 'train/loss']
  assert scalars[0] == (3, 0.75)
  assert scalars[1][0] == 4 and np.isnan(scalars[1][1])

  images = {v.tag: (step, v.image) for step, v in values if v.HasField('image')}
  step, pred = images['pred']
  decoded = cv2.imdecode(np.frombuffer(pred.encoded_image_string, np.uint8),
                         cv2.IMREAD_COLOR)
  assert step == 3
  np.testing.assert_array_equal(decoded[..., ::-1], image)
  assert (images['batch'][1].height, images['batch'][1].width) == (6, 10)

  (text,) = [(step, v.tensor.string_val[0]) for step, v in values
             if v.tag.startswith('config')]
  assert text == (3, b'optimizer: adam')

  (start,) = [v.metadata.plugin_data.content for _, v in values
              if v.tag == '_hparams_/session_start_info']
  hparams = plugin_hparams_pb2.HParamsPluginData.FromString(
      start).session_start_info.hparams
  assert hparams['optimizer.name'].string_value == 'adam'
  assert hparams['optimizer.lr'].number_value == 0.1
  assert hparams['size'].string_value == '(256, 256)'
