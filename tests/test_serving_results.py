"""What the server answers for every kind of model (in process, through
the ASGI app): COCO-style JSON with RLE masks and label maps at the image's
size, drawn images, poses given to the pose-conditioned mask model, and
person boxes from a detector export for a top-down keypoint model."""

import base64
import json

import cv2
from fastapi import testclient
import numpy as np
from pycocotools import mask as mask_utils
import pytest

from hpe_jax import serving
from hpe_jax.serving import exporter
from hpe_jax.serving import server
from conftest import tiny_model_config

HEIGHT, WIDTH = 60, 80


@pytest.fixture(scope='module')
def exports(tmp_path_factory):
  """Untrained tiny exports of every task, by task name."""
  out = {}
  for task in ('keypoints', 'segmentation', 'pose_mask', 'part_rcnn'):
    config = tiny_model_config(task)
    model, variables = exporter.untrained(config)
    path = tmp_path_factory.mktemp(task)
    exporter.export_predictor(config, model, variables, 0, str(path),
                            platforms=('cpu',), min_score=0.0)
    out[task] = str(path)
  return out


def client(path, detector=None, **settings):
  service = server.Service(
      serving.load(path), server.Settings(max_batch=4, **settings),
      detector and serving.load(detector))
  service.compile()
  return testclient.TestClient(server.create_app(service))


def image_bytes() -> bytes:
  image = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3),
                                            np.uint8)
  return cv2.imencode('.png', image)[1].tobytes()


def predict(c, **params):
  r = c.post('/v1/predict', content=image_bytes(), params=params,
             headers={'content-type': 'image/png'})
  assert r.status_code == 200, r.text
  return r.json()


def label_map(entry) -> np.ndarray:
  return cv2.imdecode(np.frombuffer(base64.b64decode(entry['png']),
                                    np.uint8), cv2.IMREAD_UNCHANGED)


def check_people(people, with_masks: bool):
  for p in people:
    x, y, w, h = p['bbox']
    assert w >= 0 and h >= 0 and 0 <= p['score']
    assert len(p['keypoints']) % 3 == 0 and p['keypoints']
    if with_masks:
      mask = mask_utils.decode(p['segmentation'])
      assert mask.shape == (HEIGHT, WIDTH)


def test_label_map_models_answer_label_maps_and_joints(exports):
  with client(exports['segmentation']) as c:
    body = predict(c)
    labels = label_map(body['label_maps']['labels'])
    assert labels.shape == (HEIGHT, WIDTH) and labels.max() <= 1
    assert body['label_maps']['labels']['names'] == ['background', 'person']
    # The triple head model has both joint heads.
    assert set(body['joints']) == {'regression', 'softmax'}
    assert np.array(body['joints']['softmax']).shape == (17, 2)
    drawn = c.post('/v1/predict?draw=1', content=image_bytes(),
                   headers={'content-type': 'image/png'})
    assert cv2.imdecode(np.frombuffer(drawn.content, np.uint8), 1).shape == (
        HEIGHT, WIDTH, 3)


def test_part_model_answers_people_with_masks_and_part_maps(exports):
  with client(exports['part_rcnn']) as c:
    body = predict(c)
    assert body['people'], 'min_score 0 keeps every detection'
    check_people(body['people'], with_masks=True)
    parts = label_map(body['label_maps']['parts'])
    assert parts.shape == (HEIGHT, WIDTH)
    assert len(body['label_maps']['parts']['names']) > parts.max()
    instances = label_map(body['label_maps']['instances'])
    assert instances.max() <= len(body['people'])
    # Each person's mask is their part of the instance map.
    for n, p in enumerate(body['people']):
      np.testing.assert_array_equal(mask_utils.decode(p['segmentation']),
                                    instances == n + 1)


def test_pose_mask_model_takes_poses_and_answers_masks(exports):
  k = len(serving.load(exports['pose_mask']).metadata['skeleton'][
      'joint_names'])
  pose = np.zeros((k, 3))
  pose[:, 0] = np.linspace(20, 60, k)
  pose[:, 1] = np.linspace(10, 50, k)
  pose[:, 2] = 0.9
  shifted = pose + [3, 3, 0]
  with client(exports['pose_mask']) as c:
    body = predict(c, poses=json.dumps([pose.tolist(), shifted.tolist()]))
    assert len(body['people']) == 2
    check_people(body['people'], with_masks=True)
    np.testing.assert_allclose(
        np.array(body['people'][1]['keypoints']).reshape(k, 3)[:, :2],
        shifted[:, :2], atol=1e-3)
    unseen = predict(c, poses=json.dumps([(pose * [1, 1, 0]).tolist()]))
    assert unseen['people'] == []
    assert label_map(unseen['label_maps']['labels']).max() == 0
    missing = c.post('/v1/predict', content=image_bytes(),
                     headers={'content-type': 'image/png'})
    assert missing.status_code == 400
    assert 'poses' in missing.json()['error']


def test_keypoint_model_takes_boxes_from_a_detector(exports):
  detector = serving.load(exports['part_rcnn'])
  found = detector.predict(cv2.cvtColor(cv2.imdecode(
      np.frombuffer(image_bytes(), np.uint8), 1), cv2.COLOR_BGR2RGB))
  with client(exports['keypoints'], exports['part_rcnn'],
              detector_min_score=0.0) as c:
    assert c.get('/v1/model').json()['detector'] is True
    body = predict(c)
    assert len(body['people']) == len(found['people']) > 1
    check_people(body['people'], with_masks=False)
    # Boxes in the request come before the detector's; none means nobody.
    given = predict(c, boxes='[[1, 1, 30, 40]]')
    assert len(given['people']) == 1
    assert predict(c, boxes='[]')['people'] == []
  with pytest.raises(serving.ExportError, match='does not take'):
    client(exports['segmentation'], exports['part_rcnn'])
