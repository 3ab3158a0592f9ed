"""The whole keypoint evaluation path on real COCO data.

Ground truth goes through everything a prediction goes through: the
evaluation pipeline's crops, Gaussian heatmaps on the output grid, DARK
decoding, the inverse affine back to the image, a COCO results file and
pycocotools. A perfect heatmap must come out as a perfect score.
"""

import jax
import numpy as np

from hpe_jax.codecs import heatmap as heatmap_decoding
from hpe_jax.codecs import heatmap as heatmaps
from hpe_jax.data import coco
from hpe_jax.data import pipeline
from hpe_jax.data import skeletons
from hpe_jax.evaluation import coco_keypoints
from hpe_jax.evaluation import pck


@jax.jit
def _decode_to_image(keypoints, affine):
  """Heatmaps of the batch's own keypoints, decoded back to the image."""
  heat, _ = heatmaps.heatmap_targets(keypoints[..., :2], keypoints[..., 2],
                                     (64, 48), 2.0)
  coords, scores = heatmap_decoding.decode_heatmaps(heat, 'dark')
  return heatmap_decoding.heatmap_to_image_coords(coords, affine), scores


def _predict_ground_truth(dataset, input_cfg):
  it, count = pipeline.eval_dataset(dataset, input_cfg, batch_size=8)
  image_ids, keypoints, gts, valid = [], [], [], []
  for batch in it:
    xy, scores = _decode_to_image(batch['keypoints'], batch['affine'])
    image_ids.append(batch['image_id'])
    keypoints.append(np.concatenate([xy, scores[..., None]], -1))
    gts.append(batch['gt_keypoints'])
    valid.append(batch['valid'])
  valid = np.concatenate(valid)
  assert valid.sum() == count
  return (np.concatenate(image_ids)[valid], np.concatenate(keypoints)[valid],
          np.concatenate(gts)[valid])


def test_ground_truth_heatmaps_score_oks_ap_one(shared_data, tmp_path):
  root = shared_data / 'fixtures' / 'coco'
  dataset = coco.CocoKeypoints(str(root / 'test_coco.json'), str(root))
  cfg = pipeline.default_config()
  cfg.image_size = (256, 192)
  image_ids, keypoints, gt = _predict_ground_truth(dataset, cfg)
  assert len(image_ids) == 12  # the people with labelled keypoints

  labelled = gt[..., 2] > 0
  err = np.linalg.norm(keypoints[..., :2] - gt[..., :2], axis=-1)[labelled]
  assert err.max() < 0.1, err.max()

  results = coco.keypoint_results(
      image_ids, keypoints, np.ones(len(image_ids)))
  path = tmp_path / 'results.json'
  coco.write_results(path, results)
  metrics = coco_keypoints.evaluate_keypoints(
      dataset.coco, str(path),
      coco_keypoints.protocol_suffix_for('gt', flip=False))
  assert metrics['oks_ap_gtbox'] == 1.0
  assert metrics['oks_ar_gtbox'] == 1.0

  torso = pck.torso_size(gt, skeletons.COCO17)
  result = pck.pck_accuracy(keypoints[..., :2], gt[..., :2], labelled, torso,
                            0.05)
  assert result.mean == 1.0 and result.count > 100
