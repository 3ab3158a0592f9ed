"""SLIC superpixels and graph cut seeded from the skeleton: the min cut
against brute force, and the person mask of a drawn person."""

import itertools

import cv2
import numpy as np
import pytest

from hpe_jax.data import skeletons
from hpe_jax.refinement import superpixel_graphcut as sg

SKELETON = skeletons.LSP14
JOINTS = {
    'head_top': (48, 10), 'neck': (48, 26), 'right_shoulder': (40, 29),
    'left_shoulder': (56, 29), 'right_elbow': (33, 42),
    'left_elbow': (63, 42), 'right_wrist': (30, 55), 'left_wrist': (66, 55),
    'right_hip': (43, 56), 'left_hip': (53, 56), 'right_knee': (41, 71),
    'left_knee': (55, 71), 'right_ankle': (40, 86), 'left_ankle': (56, 86)}
# (joint, joint, thickness in pixels) of the drawn limbs.
LIMBS = (('right_shoulder', 'right_elbow', 5), ('right_elbow', 'right_wrist', 4),
         ('left_shoulder', 'left_elbow', 5), ('left_elbow', 'left_wrist', 4),
         ('right_hip', 'right_knee', 7), ('right_knee', 'right_ankle', 6),
         ('left_hip', 'left_knee', 7), ('left_knee', 'left_ankle', 6))
BACKGROUND_COLOURS = ((40, 120, 60), (50, 70, 160), (110, 110, 110),
                      (20, 160, 140), (90, 140, 40))


def keypoints(visible=JOINTS):
  return np.array([JOINTS[n] + ((2,) if n in visible else (0,))
                   for n in SKELETON.joint_names], np.float32)


def drawn_person(seed=0):
  """A red person (head and torso ellipses, thick limbs) over a tiling of
  green, blue and grey blocks, with noise; the image and its mask."""
  rng = np.random.default_rng(seed)
  mask = np.zeros((96, 96), np.uint8)
  cv2.ellipse(mask, (48, 18), (6, 8), 0, 0, 360, 1, -1)
  cv2.ellipse(mask, (48, 42), (9, 16), 0, 0, 360, 1, -1)
  for a, b, width in LIMBS:
    cv2.line(mask, JOINTS[a], JOINTS[b], 1, width)
  yy, xx = np.mgrid[:96, :96]
  tiles = (xx // 12 + 2 * (yy // 16)) % len(BACKGROUND_COLOURS)
  background = np.array(BACKGROUND_COLOURS)[tiles]
  person = np.array((200, 70, 60))
  image = np.where(mask[..., None] == 1, person, background)
  image = image + rng.normal(0, 12, image.shape)
  return np.clip(image, 0, 255).astype(np.uint8), mask


def iou(a, b):
  a, b = a.astype(bool), b.astype(bool)
  return (a & b).sum() / (a | b).sum()


def energy(labels, unary_fg, unary_bg, edges, weights):
  """Energies of labellings [..., N] (bool, True foreground)."""
  unary = np.where(labels, unary_fg, unary_bg).sum(-1)
  cut = labels[..., edges[:, 0]] != labels[..., edges[:, 1]]
  return unary + (cut * weights).sum(-1)


def test_min_cut_finds_the_least_energy_of_small_graphs():
  rng = np.random.default_rng(0)
  for _ in range(150):
    n = int(rng.integers(1, 13))
    unary_fg = rng.uniform(0, 5, n)
    unary_bg = rng.uniform(0, 5, n)
    seed = rng.random(n)
    unary_fg[seed < 0.1] = np.inf  # held to the background
    unary_bg[(seed >= 0.1) & (seed < 0.2)] = np.inf  # held to the person
    edges = rng.integers(0, n, (int(rng.integers(0, 2 * n + 1)), 2))
    edges = edges[edges[:, 0] != edges[:, 1]]  # repeats stay: they add
    weights = rng.uniform(0, 4, len(edges))
    got = sg.min_cut(unary_fg, unary_bg, edges, weights)
    assert got.dtype == bool and got.shape == (n,)
    every = np.array(list(itertools.product((False, True), repeat=n)))
    best = energy(every, unary_fg, unary_bg, edges, weights).min()
    found = energy(got, unary_fg, unary_bg, edges, weights)
    assert np.isfinite(best)
    assert found == pytest.approx(best, abs=1e-6), (n, found, best)


def test_min_cut_by_hand():
  # Node 0 prefers the person by 6, node 1 the background by 4.
  fg, bg = [0.0, 4.0], [6.0, 0.0]
  edge = [[0, 1]]
  # A weak edge is cut (cost 1); a strong one is not: both take the person
  # (cost 4) rather than the background (6).
  np.testing.assert_array_equal(sg.min_cut(fg, bg, edge, [1.0]),
                                [True, False])
  np.testing.assert_array_equal(sg.min_cut(fg, bg, edge, [10.0]),
                                [True, True])
  # Holding node 0 to the background makes both background.
  np.testing.assert_array_equal(
      sg.min_cut([np.inf, 4.0], bg, edge, [10.0]), [False, False])
  assert sg.min_cut([], [], np.zeros((0, 2)), []).shape == (0,)
  with pytest.raises(ValueError, match='both labels'):
    sg.min_cut([np.inf], [np.inf], np.zeros((0, 2)), [])
  with pytest.raises(ValueError, match='>= 0'):
    sg.min_cut(fg, bg, edge, [-1.0])


def test_region_graph_counts_shared_boundaries():
  segments = np.array([[0, 0, 1],
                       [2, 2, 1]])
  edges, boundary = sg.region_graph(segments)
  # 0|1 once across, 0/2 twice down, 2|1 once across.
  np.testing.assert_array_equal(edges, [[0, 1], [0, 2], [1, 2]])
  np.testing.assert_array_equal(boundary, [1, 2, 1])


def test_graph_cut_recovers_a_drawn_person_beyond_its_seeds():
  image, mask = drawn_person()
  kp = keypoints()
  result = sg.segment(image, kp, SKELETON)
  assert result.dtype == np.uint8 and set(np.unique(result)) <= {0, 1}
  sure_fg, sure_bg, near = sg.seeds(mask.shape, kp, SKELETON)
  # The seeds are right as far as they go (the head top's disc pokes out
  # of the head) ...
  assert (mask[sure_fg] == 1).mean() > 0.97 and (mask[sure_bg] == 0).all()
  # ... and the cut goes much further than GrabCut's seed mask (the near
  # zone, IoU 0.60) and the thin limbs (0.39). When this was written:
  # IoU 0.886.
  assert iou(near, mask) < 0.65 and iou(sure_fg, mask) < 0.45
  assert iou(result, mask) > 0.84


def test_network_probabilities_refine_the_cut():
  image, mask = drawn_person()
  # A network that roughly knows the person: its blurred mask.
  probs = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 1.5) * 0.8 + 0.1
  # When this was written: 0.937 with the probabilities, 0.886 without.
  assert iou(sg.segment(image, keypoints(), SKELETON, probs=probs),
             mask) > 0.9


def test_probabilities_that_disagree_with_the_colours_move_the_mask():
  image, mask = drawn_person()
  kp = keypoints()
  probs = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 1.5) * 0.8 + 0.1
  # Between the legs: background colours, 108 pixels.
  gap = np.zeros(mask.shape, bool)
  gap[62:86, 46:51] = True
  gap &= mask == 0
  head = np.zeros(mask.shape, bool)
  head[9:27, 40:57] = True
  head &= mask == 1

  def person_pixels(probs, where, **kwargs):
    return int(sg.segment(image, kp, SKELETON, probs=probs, **kwargs)[
        where].sum())

  # When this was written: 6 gap pixels of the person with the agreeing
  # probabilities, 38 when they call the gap the person, 78 when their
  # weight is 3; the head kept 169 of 169 pixels, 152 when the
  # probabilities call it background with weight 3.
  agreeing = person_pixels(probs, gap)
  assert agreeing <= 12
  on_gap = np.where(gap, 0.99, probs)
  assert person_pixels(on_gap, gap) >= agreeing + 20
  assert person_pixels(on_gap, gap, probability_weight=3.0) >= agreeing + 50
  kept = person_pixels(probs, head, probability_weight=3.0)
  assert kept == head.sum()
  assert person_pixels(np.where(head, 0.01, probs), head,
                       probability_weight=3.0) <= kept - 8


def test_no_labelled_limb_gives_an_empty_mask():
  image, _ = drawn_person()
  for visible in ((), ('neck',)):
    result = sg.segment(image, keypoints(visible), SKELETON)
    assert result.shape == (96, 96) and not result.any()
  assert not sg.has_limbs(np.zeros((2, 14, 3)), SKELETON)


def test_hidden_joints_seed_no_foreground():
  kp = keypoints()
  hidden = kp.copy()
  arm = [SKELETON.index(n) for n in ('left_elbow', 'left_wrist')]
  hidden[arm, 2] = 1
  fg, bg, _ = sg.seeds((96, 96), kp, SKELETON)
  fg_hidden, bg_hidden, _ = sg.seeds((96, 96), hidden, SKELETON)
  elbow_to_wrist = np.zeros((96, 96), np.uint8)
  cv2.line(elbow_to_wrist, JOINTS['left_elbow'], JOINTS['left_wrist'], 1, 1)
  forearm = elbow_to_wrist.astype(bool)
  forearm[40:45] = forearm[53:58] = False  # away from both joints
  assert fg[forearm].all() and not fg_hidden[forearm].any()
  # A hidden joint still bounds where the person may be.
  np.testing.assert_array_equal(bg, bg_hidden)


def test_several_people_are_one_union():
  image, mask = drawn_person()
  kp = keypoints()
  far = kp.copy()
  far[:, 2] = 0
  both = sg.segment(image, np.stack([kp, far]), SKELETON)
  np.testing.assert_array_equal(both, sg.segment(image, kp, SKELETON))
  with pytest.raises(ValueError, match='sizes differ'):
    sg.segment(image, kp, SKELETON, probs=np.zeros((10, 10)))
