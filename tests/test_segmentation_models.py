"""U-Net, its joint heads, the pose-conditioned mask network, their losses
and joint targets."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from hpe_jax import tasks
from hpe_jax.codecs import heatmap as heatmaps
from hpe_jax.data import skeletons
from hpe_jax.models import registry
from hpe_jax.ops import skeleton_prior
from hpe_jax.tasks import pose_mask
from hpe_jax.tasks import segmentation
from hpe_jax.training import losses


def build(name, skeleton=skeletons.COCO17, **fields):
  cfg = registry.default_config(name)
  cfg.update(fields)
  return registry.build(cfg, skeleton)


def init_apply(model, *inputs, train=False):
  variables = model.init(jax.random.key(0), *inputs, train=False)
  out = model.apply(variables, *inputs, train=train,
                    rngs={'dropout': jax.random.key(1)},
                    mutable=['batch_stats'] if train else False)
  return out[0] if train else out


@pytest.mark.parametrize('joint_head,keys', [
    ('none', {'mask_logits'}),
    ('regression', {'mask_logits', 'joint_heatmaps'}),
    ('softmax', {'mask_logits', 'joint_logits'}),
    ('both', {'mask_logits', 'joint_heatmaps', 'joint_logits'})])
def test_unet_heads_and_shapes(joint_head, keys):
  model = build('unet', features=4, levels=2, joint_head=joint_head,
                num_classes=3)
  out = init_apply(model, jnp.zeros((2, 16, 24, 3)))
  assert set(out) == keys
  assert out['mask_logits'].shape == (2, 16, 24, 3)
  if 'joint_heatmaps' in out:
    assert out['joint_heatmaps'].shape == (2, 16, 24, 17)
  if 'joint_logits' in out:
    assert out['joint_logits'].shape == (2, 16, 24, 18)
  assert all(v.dtype == jnp.float32 for v in out.values())


def test_unet_paper_channels_and_options():
  model = build('unet', skeleton=None)
  variables = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                         train=False))
  kernels = [v.shape for v in jax.tree.leaves(variables['params'])
             if len(v.shape) == 4]
  assert max(k[-1] for k in kernels) == 1024  # 64 -> 1024
  assert model.dropout_rate == 0.3 and model.upsample == 'resize'
  transpose = build('unet', features=4, levels=2, upsample='transpose')
  out = init_apply(transpose, jnp.zeros((1, 8, 8, 3)), train=True)
  assert out['mask_logits'].shape == (1, 8, 8, 2)
  with pytest.raises(ValueError, match='divisible by 4'):
    init_apply(build('unet', features=4, levels=2), jnp.zeros((1, 6, 8, 3)))
  with pytest.raises(ValueError, match='upsample'):
    init_apply(build('unet', features=4, levels=2, upsample='bilinear'),
               jnp.zeros((1, 8, 8, 3)))


def test_dropout_acts_in_training_only():
  model = build('unet', features=4, levels=2, dropout_rate=0.5)
  x = jax.random.normal(jax.random.key(2), (1, 8, 8, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  a = model.apply(variables, x, train=False)['mask_logits']
  b = model.apply(variables, x, train=False)['mask_logits']
  c, _ = model.apply(variables, x, train=True, mutable=['batch_stats'],
                     rngs={'dropout': jax.random.key(3)})
  d, _ = model.apply(variables, x, train=True, mutable=['batch_stats'],
                     rngs={'dropout': jax.random.key(4)})
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(c['mask_logits'], d['mask_logits'])


def test_soft_dice_loss_by_hand():
  # Two pixels, one person pixel; a confident correct prediction gives
  # Dice (2*1 + 1) / (2 + 1) = 1 for the person class.
  labels = jnp.array([[0, 1]])
  perfect = jnp.array([[[20.0, -20.0], [-20.0, 20.0]]])
  assert losses.soft_dice_loss(perfect, labels) == pytest.approx(0, abs=1e-6)
  # Uniform softmax: p = 0.5 everywhere; overlap 0.5, sums 1 + 1.
  uniform = jnp.zeros((1, 2, 2))
  expected = 1 - (2 * 0.5 + 1) / (1 + 1 + 1)
  assert losses.soft_dice_loss(uniform, labels) == pytest.approx(expected)
  # Ignored pixels change nothing.
  ignored = jnp.array([[0, 1, 255]])
  padded = jnp.concatenate([uniform, jnp.array([[[5.0, -5.0]]])], 1)
  assert losses.soft_dice_loss(padded, ignored) == pytest.approx(expected)


def test_cross_entropies_ignore_and_weight():
  logits = jnp.array([[[2.0, 0.0], [0.0, 2.0], [9.0, -9.0]]])
  labels = jnp.array([[0, 0, 255]])
  ce = losses.softmax_cross_entropy(logits, labels)
  expected = (np.log1p(np.exp(-2.0)) + np.log1p(np.exp(2.0))) / 2
  assert ce == pytest.approx(expected, rel=1e-5)
  soft = losses.soft_target_cross_entropy(
      logits, jax.nn.one_hot(jnp.array([[0, 0, 1]]), 2),
      jnp.array([[1.0, 1.0, 0.0]]))
  assert soft == pytest.approx(expected, rel=1e-5)


def test_people_heatmaps_merge_people_and_skip_padding():
  kp = np.zeros((1, 3, 2, 3), np.float32)
  kp[0, 0, 0] = (2, 3, 2)
  kp[0, 1, 0] = (6, 5, 2)
  kp[0, 2, 1] = (4, 4, 2)  # a padding row: person_valid False
  maps, weights = heatmaps.people_heatmaps(
      jnp.asarray(kp), jnp.array([[True, True, False]]), (8, 8), 1.0)
  assert maps.shape == (1, 8, 8, 2)
  assert maps[0, 3, 2, 0] == pytest.approx(1) and maps[0, 5, 6, 0] == 1
  np.testing.assert_array_equal(weights, [[1, 0]])
  assert float(maps[..., 1].max()) == 0


def test_joint_label_targets_hard_and_soft():
  maps = heatmaps.gaussian_heatmaps(jnp.array([[[2.0, 2.0], [6.0, 2.0]]]),
                                    jnp.ones((1, 2)), (5, 9), 1.0)
  hard = np.asarray(heatmaps.joint_label_targets(maps, soft=False))
  assert hard[0, 2, 2] == 1 and hard[0, 2, 6] == 2 and hard[0, 4, 0] == 0
  # Within one sigma (4-neighbours at distance 1) but not diagonals.
  assert hard[0, 3, 2] == 1 and hard[0, 3, 3] == 0
  soft = np.asarray(heatmaps.joint_label_targets(maps, soft=True))
  np.testing.assert_allclose(soft.sum(-1), 1, atol=1e-6)
  assert soft[0, 2, 2, 1] == pytest.approx(1, abs=1e-3)
  # Two pixels from joint 2 on both axes: background 1 - exp(-4).
  assert soft[0, 0, 8, 0] == pytest.approx(1 - np.exp(-4), rel=1e-5)


def _segmentation_batch(b=2, h=8, w=8, k=17):
  rng = np.random.default_rng(0)
  kp = np.zeros((b, 1, k, 3), np.float32)
  kp[..., :2] = rng.uniform(0, 7, (b, 1, k, 2))
  kp[..., 2] = 2
  return dict(image=rng.integers(0, 255, (b, h, w, 3), np.uint8),
              mask=rng.integers(0, 2, (b, h, w)).astype(np.uint8),
              part_map=rng.integers(0, 7, (b, h, w)).astype(np.uint8),
              keypoints=kp, person_valid=np.ones((b, 1), bool),
              valid=np.array([True, False]))


def _segmentation_task(**loss):
  cfg = tasks.default_loss_config('segmentation')
  cfg.update(loss)
  return segmentation.SegmentationTask(cfg, (8, 8))


def test_segmentation_task_loss_parts_and_weights():
  batch = _segmentation_batch()
  out = init_apply(build('unet', features=2, levels=1, joint_head='both'),
                   jnp.zeros((2, 8, 8, 3)))
  task = _segmentation_task(ce_weight=0.5, joint_regression_weight=0.01)
  total, parts = task.loss(out, batch)
  assert set(parts) == {'mask_dice', 'mask_ce', 'joint_regression',
                        'joint_softmax'}
  expected = (parts['mask_dice'] + 0.5 * parts['mask_ce'] +
              0.01 * parts['joint_regression'] + parts['joint_softmax'])
  assert total == pytest.approx(float(expected), rel=1e-5)
  # Targets are scaled by 100: a zero prediction costs 100^2 times more
  # than against unscaled targets.
  _, small_parts = _segmentation_task(joint_regression_scale=1.0).loss(
      {'mask_logits': out['mask_logits'],
       'joint_heatmaps': jnp.zeros_like(out['joint_heatmaps'])}, batch)
  _, big_parts = task.loss(
      {'mask_logits': out['mask_logits'],
       'joint_heatmaps': jnp.zeros_like(out['joint_heatmaps'])}, batch)
  assert float(big_parts['joint_regression']) == pytest.approx(
      1e4 * float(small_parts['joint_regression']), rel=1e-4)


def test_segmentation_task_rejects_bad_settings():
  with pytest.raises(ValueError, match='mask_target'):
    _segmentation_task(mask_target='parts')
  with pytest.raises(ValueError, match='joint_softmax_target'):
    _segmentation_task(joint_softmax_target='soft')
  with pytest.raises(ValueError, match='task must be one of'):
    tasks.default_loss_config('detection')


def _pose_inputs(b=2, size=32):
  kp = np.zeros((b, 14, 3), np.float32)
  kp[..., 0] = np.linspace(8, 24, 14)
  kp[..., 1] = np.linspace(4, 28, 14)
  kp[..., 2] = 2
  kp[1, 5:, 2] = 0
  images = jax.random.normal(jax.random.key(0), (b, size, size, 3))
  return images, jnp.asarray(kp)


def test_pose_mask_net_starts_at_its_prior():
  model = build('pose_mask', skeleton=skeletons.LSP14, features=4, levels=3)
  images, kp = _pose_inputs()
  out = init_apply(model, images, kp)
  assert out['mask'].shape == out['prior'].shape == (2, 32, 32)
  expected_prior = skeleton_prior.limb_prior(
      kp, skeletons.LSP14.limb_indices, (32, 32), model.limb_sigma * 32)
  np.testing.assert_allclose(out['prior'], expected_prior, atol=1e-6)
  # The residual conv starts at zero: output = 2 * clip(prior) - 1.
  p = np.clip(np.asarray(out['prior']), 1e-3, 1 - 1e-3)
  np.testing.assert_allclose(out['mask'], 2 * p - 1, atol=1e-5)
  assert out['mask'][0].max() > 0 and out['mask'][0].min() < -0.99


def test_pose_mask_net_uses_the_pose_and_checks_inputs():
  model = build('pose_mask', skeleton=skeletons.LSP14, features=4, levels=3)
  images, kp = _pose_inputs()
  variables = model.init(jax.random.key(0), images, kp, train=False)
  # Give the residual conv weights so the network's own output shows.
  params = jax.tree.map(lambda x: x, variables['params'])
  params['residual']['kernel'] = jnp.full_like(
      params['residual']['kernel'], 0.1)
  variables = {**variables, 'params': params}
  moved = kp.at[..., 0].add(4.0)
  a = model.apply(variables, images, kp, train=False)['mask']
  b = model.apply(variables, images, moved, train=False)['mask']
  assert not np.allclose(a, b)
  with pytest.raises(ValueError, match='14 joints'):
    model.init(jax.random.key(0), images, kp[:, :10], train=False)
  with pytest.raises(ValueError, match='limbs'):
    build('pose_mask', skeleton=14, features=4, levels=3).init(
        jax.random.key(0), images, kp, train=False)


@pytest.mark.parametrize('name', ['mse', 'bce'])
def test_pose_mask_loss_ignores_unknown_pixels(name):
  task = pose_mask.PoseMaskTask(ml_collections.ConfigDict(dict(name=name)),
                            (2, 2))
  mask = np.array([[[1, 0], [255, 1]]], np.uint8)
  good = {'mask': jnp.array([[[0.999, -0.999], [0.3, 0.999]]])}
  bad = {'mask': jnp.array([[[-0.999, 0.999], [0.3, -0.999]]])}
  low, _ = task.loss(good, {'mask': mask})
  high, _ = task.loss(bad, {'mask': mask})
  assert low < 0.01 < high
  if name == 'mse':
    assert high == pytest.approx(1.999 ** 2, rel=1e-4)


class _Replay:
  """A stand-in model whose outputs are passed in as its variables."""

  def apply(self, variables, images, train):
    del images, train
    return variables


def test_ground_truth_joint_maps_through_the_evaluation_path():
  from hpe_jax.data import datasets  # pylint: disable=import-outside-toplevel
  from hpe_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  from hpe_jax.evaluation import pck  # pylint: disable=import-outside-toplevel
  se = segmentation
  cfg = datasets.default_config()
  cfg.synthetic.update(num_eval=6, image_size=(48, 64), max_people=1)
  dataset = datasets.build(cfg, 'eval')
  input_cfg = pipeline.default_config()
  input_cfg.update(mode='full_image', image_size=(32, 32), output_stride=1,
                   max_people=1, num_threads=1)
  batch, = list(pipeline.eval_dataset(dataset, input_cfg, batch_size=8)[0])
  maps, _ = heatmaps.people_heatmaps(
      jnp.asarray(batch['keypoints']), jnp.asarray(batch['person_valid']),
      (32, 32), 1.0)
  # Softmax logits whose joint channels peak where the Gaussians do.
  logits = jnp.concatenate([jnp.zeros_like(maps[..., :1]), 20 * maps], -1)
  outputs = {'mask_logits': jnp.zeros((8, 32, 32, 2)),
             'joint_heatmaps': maps, 'joint_logits': logits}
  pred = se.predict_segmentation(
      outputs, batch, model=_Replay(), flip=False, class_flip_lut=None,
      joint_flip_permutation=None, dtype=jnp.float32)
  gt = batch['gt_keypoints'][:, 0]
  ok = batch['valid'] & batch['person_valid'][:, 0]
  labelled = (gt[..., 2] > 0) & ok[:, None]
  for head in ('regression', 'softmax'):
    err = np.linalg.norm(np.asarray(pred[f'{head}_keypoints'])
                         - gt[..., :2], axis=-1)[labelled]
    # Letterboxing 64 wide into 32: one grid pixel is 2 image pixels, and
    # the argmax is within half a grid pixel on each axis.
    assert err.max() <= np.sqrt(2) + 1e-3, (head, err.max())
    assert err.mean() < 1.0, (head, err.mean())
  assert pck.torso_size(gt[ok], dataset.skeleton).min() > 0
