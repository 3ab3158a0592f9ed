r"""SLIC superpixels and graph cut seeded from the skeleton.

A person's mask from an image crop and that person's keypoints, optionally
refining the pose-mask network's person probabilities (``eval.refine=
superpixel_graphcut``, see `refine_option`): the image is cut into SLIC
superpixels (scikit-image) several times, at several superpixel sizes;
each segmentation is labelled person / background by a minimum s-t cut on
its region adjacency graph (SciPy's max-flow); the masks of the ensemble
vote per pixel. It stands beside the GrabCut baseline
(`hpe_jax.evaluation.grabcut_baseline`), whose skeleton drawing and sizes
it reuses.

Seeds. The skeleton is drawn by `grabcut_baseline.seed_labels` (limbs and
joints one pixel wide, zones by the distance ``d`` from them), with the
sizes of `grabcut_baseline.default_sizes`, fractions of the diagonal of the
box around the person's labelled joints:

* foreground seed: every superpixel touched by the sure foreground, the
  limbs drawn ``fg_thickness = 0.03 diagonal`` wide, of the joints marked
  visible (v = 2; COCO's v = 1 joints are labelled but hidden, often
  behind someone else, whose colours must not seed this person);
* background seed: every superpixel lying wholly beyond
  ``background_distance = 1.5 x`` GrabCut's ``bg_distance`` (0.15
  diagonal) of the labelled joints: a much wider skeleton than GrabCut's
  sure background, as a superpixel (unlike a pixel) may straddle the
  person's outline, and only one that lies wholly far from the skeleton is
  surely background.

The cut holds the seeds to their labels and decides the rest.

Energy of superpixel i (area ``a_i`` pixels, mean CIELAB colour ``c_i``):

* colour: Gaussian kernel densities of the mean colours of the two seeds'
  superpixels (weighted by area, bandwidth `COLOUR_BANDWIDTH`), each mixed
  with a uniform density over the Lab gamut of weight
  `COLOUR_OUTLIER_WEIGHT`, give ``q_i = p_fg(c_i) / (p_fg(c_i) +
  p_bg(c_i))``: a colour that neither seed has stays near 0.5 instead of
  going to whichever seed is a little less far;
* person probability ``n_i``: the network's probability averaged over the
  superpixel when `probs` is given (what makes this a refinement of the
  network); without it the skeleton stands in for the network:
  `NEAR_PRIOR` inside GrabCut's foreground zone (``d <= bg_distance / 2``),
  ``1 - NEAR_PRIOR`` beyond;
* unaries: labelling i person costs ``-a_i (log q_i + probability_weight
  log n_i)``, background ``-a_i (log (1 - q_i) + probability_weight
  log (1 - n_i))`` (q and n clipped to [0.01, 0.99]): the colour model and
  the network pool their log-odds;
* pairwise: neighbours sharing ``b_ij`` 4-neighbour pixel edges pay
  ``smoothness b_ij exp(-|c_i - c_j|^2 / (2 s^2))`` when labelled apart,
  ``s^2`` the mean ``|c_i - c_j|^2`` over the graph's edges (GrabCut's
  contrast normalisation).

Unaries are areas and the pairwise terms boundary lengths, both in pixels,
so the balance holds at every superpixel size. The ensemble's mask is the
strict majority of its members': a superpixel of one segmentation that
straddles the outline is outvoted where the others follow the outline.

Defaults (the constants below), chosen on the pose-mask smoke recipe's
synthetic validation crops (64 x 64; every other crop, 100 people) and the
12 people of the COCO test fixture, by coordinate search on the sum of
mask IoUs with and without the smoke model's probabilities: superpixels of
0.04, 0.06 and 0.08 of the person's diagonal (the smaller the better, at
a cost in time: 0.03-0.06 gained 0.005 IoU on the synthetic crops and ran
4 times slower; a single size of 0.06 lost 0.015-0.02), SLIC compactness
30 (10: -0.01 to -0.02, 60: -0.02 with probabilities), background seed at
1.5 x GrabCut's bg_distance (2: -0.006 on synthetic, 3: -0.03), smoothness
6 (1-12 within 0.01), colour bandwidth 4 Lab units (8: -0.007, 32: -0.04),
outlier weight 0.9 (0.1-0.5 within 0.005), probability weight 1 (0.5 and
4: -0.02 to -0.03), near prior 0.9 (0.6: -0.03 without probabilities).

Min cut. `min_cut` solves the binary labelling by max-flow
(`scipy.sparse.csgraph.maximum_flow`, which takes int32 capacities: the
costs are scaled and rounded) and reads the cut off the residual graph:
the nodes reachable from the source through edges with spare capacity are
the foreground. SciPy is BSD-licensed; nothing GPL is used.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import sparse
from scipy.sparse import csgraph
from skimage import color
from skimage import segmentation as sk_segmentation

from hpe_jax.data import skeletons
from hpe_jax.evaluation import grabcut_baseline

# The ensemble's superpixel sizes (the side of a square of the same area)
# as fractions of the person's diagonal: 2.6, 3.8 and 5.1 pixels for a
# person whose joints span 64 pixels.
SUPERPIXEL_SIZES = (0.04, 0.06, 0.08)
# A small person in a whole image (segmentation runs) would otherwise ask
# for superpixels of a pixel or two: tens of thousands of nodes, seconds
# and gigabytes per image. In a 64x64 person crop it binds only where the
# joints span less than 36 pixels.
MAX_SUPERPIXELS = 2000
# SLIC's compactness: weight of position against colour.
COMPACTNESS = 30.0
# The background seed's distance, a multiple of GrabCut's bg_distance.
BACKGROUND_SCALE = 1.5
# Weight of one shared boundary pixel edge against a pixel's unary (nats).
SMOOTHNESS = 6.0
# Kernel width of the colour models, in Lab units.
COLOUR_BANDWIDTH = 4.0
# Weight of the uniform "some other colour" part of each colour model.
COLOUR_OUTLIER_WEIGHT = 0.9
# Weight of the network's log-odds against the colour model's.
PROBABILITY_WEIGHT = 1.0
# Person probability near the skeleton when no network probabilities are
# given (1 - NEAR_PRIOR farther away).
NEAR_PRIOR = 0.9
# Probabilities are clipped to [_CLIP, 1 - _CLIP] before the log: no single
# cue may veto a label.
_CLIP = 0.01
# The volume of the Lab gamut's box (L 0-100, a and b -128-127): the
# uniform density's support.
_LAB_VOLUME = 100.0 * 256 * 256
_DENSITY_CHUNK = 256

# Max-flow capacities are int32. Finite costs are scaled to sum at most
# _FINITE_TOTAL, so no cut without a hard edge exceeds it, and hard seeds
# get _HARD > _FINITE_TOTAL: a minimum cut never cuts one.
_FINITE_TOTAL = 1 << 27
_HARD = 1 << 29


def min_cut(unary_fg, unary_bg, edges, weights) -> np.ndarray:
  """The labelling of least energy of a binary pairwise graph.

  Energy: ``sum_i (unary_fg[i] if x_i else unary_bg[i]) +
  sum_e weights[e] [x_a != x_b]`` for edges ``e = (a, b)``.

  Args:
    unary_fg: float [N] cost of labelling each node foreground; +inf
      forbids it (a hard background seed).
    unary_bg: float [N] cost of background; +inf forbids it (a hard
      foreground seed).
    edges: int [E, 2] node pairs (an undirected edge each; repeats add).
    weights: float [E] >= 0 cost of cutting each edge.

  Returns:
    bool [N], True for foreground. Costs are rounded to integers after
    scaling their total to 2^27, so energies within about 1e-7 of their
    total of the least may be returned instead.

  Raises:
    ValueError: a node is forbidden both labels, a weight is negative or
      not finite, or the shapes disagree.
  """
  unary_fg = np.asarray(unary_fg, np.float64)
  unary_bg = np.asarray(unary_bg, np.float64)
  edges = np.asarray(edges, np.int64).reshape(-1, 2)
  weights = np.asarray(weights, np.float64).reshape(-1)
  n = len(unary_fg)
  if unary_bg.shape != (n,) or unary_fg.ndim != 1 or len(weights) != len(
      edges):
    raise ValueError(f'expected unaries [N] and edges [E, 2] with weights '
                     f'[E], got {unary_fg.shape}, {unary_bg.shape}, '
                     f'{edges.shape} and {weights.shape}')
  if len(edges) and (edges.min() < 0 or edges.max() >= n):
    raise ValueError(f'edge nodes outside [0, {n})')
  if not np.all(np.isfinite(weights) & (weights >= 0)):
    raise ValueError('edge weights must be finite and >= 0')
  hard_fg = np.isposinf(unary_bg)
  hard_bg = np.isposinf(unary_fg)
  if (hard_fg & hard_bg).any():
    raise ValueError('a node is forbidden both labels')
  soft = ~(hard_fg | hard_bg)
  if not np.all(np.isfinite(unary_fg[soft]) & np.isfinite(unary_bg[soft])):
    raise ValueError('unaries must be finite or +inf')
  if n == 0:
    return np.zeros(0, bool)
  # Only the difference of a node's two costs matters: it goes on the
  # source edge (cut when the node ends up background) or the sink edge.
  prefers_fg = np.where(soft, unary_bg - unary_fg, 0.0)
  source = np.maximum(prefers_fg, 0.0)
  sink = np.maximum(-prefers_fg, 0.0)
  total = source.sum() + sink.sum() + 2 * weights.sum()
  scale = _FINITE_TOTAL / total if total > 0 else 1.0
  source = np.round(source * scale).astype(np.int64)
  sink = np.round(sink * scale).astype(np.int64)
  pair = np.round(weights * scale).astype(np.int64)
  source[hard_fg] = _HARD
  sink[hard_bg] = _HARD
  s, t = n, n + 1
  nodes = np.arange(n)
  rows = np.concatenate([np.full(n, s), nodes, edges[:, 0], edges[:, 1]])
  cols = np.concatenate([nodes, np.full(n, t), edges[:, 1], edges[:, 0]])
  capacity = np.concatenate([source, sink, pair, pair])
  keep = capacity > 0
  graph = sparse.csr_array(
      (capacity[keep].astype(np.int32), (rows[keep], cols[keep])),
      shape=(n + 2, n + 2))
  graph.sum_duplicates()
  flow = csgraph.maximum_flow(graph, s, t).flow
  # The flow is antisymmetric, so capacity - flow is the residual capacity
  # of every edge and of its reverse alike.
  residual = sparse.csr_array(graph.astype(np.int64) - flow.astype(np.int64))
  residual.data = (residual.data > 0).astype(np.int8)
  residual.eliminate_zeros()
  reached = csgraph.breadth_first_order(residual, s, directed=True,
                                        return_predecessors=False)
  labels = np.zeros(n + 2, bool)
  labels[reached] = True
  return labels[:n]


def region_graph(segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Adjacent superpixels of a label image and their shared boundaries.

  Args:
    segments: int [h, w] superpixel labels in [0, N).

  Returns:
    (edges int [E, 2] with a < b, boundary int [E]: the number of
    4-neighbour pixel pairs across which a and b meet).
  """
  pairs = [np.stack([segments[:, :-1].ravel(), segments[:, 1:].ravel()], 1),
           np.stack([segments[:-1].ravel(), segments[1:].ravel()], 1)]
  pairs = np.concatenate(pairs).astype(np.int64)
  pairs = pairs[pairs[:, 0] != pairs[:, 1]]
  pairs.sort(axis=1)
  if not len(pairs):
    return np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
  edges, boundary = np.unique(pairs, axis=0, return_counts=True)
  return edges, boundary


def _segment_means(segments, values, n):
  """[n, C] mean of `values` [h, w, C] over each superpixel; [n] areas."""
  flat = segments.ravel()
  area = np.bincount(flat, minlength=n).astype(np.float64)
  values = values.reshape(len(flat), -1)
  sums = np.stack([np.bincount(flat, values[:, c], minlength=n)
                   for c in range(values.shape[1])], 1)
  return sums / np.maximum(area, 1)[:, None], area


def _log_density(points, centres, weights, bandwidth: float,
                 outlier_weight: float):
  """log of a mixture at `points` [N, 3]: weighted Gaussian kernels at
  `centres` [M, 3] (weight 1 - outlier_weight) and a uniform density over
  the Lab box (outlier_weight)."""
  log_weights = (np.log(weights / weights.sum())
                 - 1.5 * np.log(2 * np.pi * bandwidth ** 2))
  log_gaussians = np.empty(len(points))
  # In chunks of points: [chunk, M, 3] differences, not [N, M, 3].
  for start in range(0, len(points), _DENSITY_CHUNK):
    d2 = np.sum(np.square(points[start:start + _DENSITY_CHUNK, None] -
                          centres[None]), -1)
    log_kernels = -d2 / (2 * bandwidth ** 2) + log_weights
    top = log_kernels.max(1)
    log_gaussians[start:start + _DENSITY_CHUNK] = top + np.log(
        np.exp(log_kernels - top[:, None]).sum(1))
  if not outlier_weight:
    return log_gaussians
  return np.logaddexp(np.log1p(-outlier_weight) + log_gaussians,
                      np.log(outlier_weight / _LAB_VOLUME))


def foreground_posterior(colours, area, fg_seed, bg_seed, *,
                         bandwidth: float = COLOUR_BANDWIDTH,
                         outlier_weight: float = COLOUR_OUTLIER_WEIGHT
                         ) -> np.ndarray:
  """q [N]: the colour models' probability that each superpixel is the
  person, from its mean colour (0.5 everywhere when a seed is empty: no
  colour evidence)."""
  if not fg_seed.any() or not bg_seed.any():
    return np.full(len(colours), 0.5)
  log_fg = _log_density(colours, colours[fg_seed], area[fg_seed], bandwidth,
                        outlier_weight)
  log_bg = _log_density(colours, colours[bg_seed], area[bg_seed], bandwidth,
                        outlier_weight)
  return 1 / (1 + np.exp(np.clip(log_bg - log_fg, -50, 50)))


def cut_superpixels(segments: np.ndarray, lab: np.ndarray,
                    sure_fg: np.ndarray, sure_bg: np.ndarray,
                    probs: np.ndarray, *,
                    smoothness: float = SMOOTHNESS,
                    colour_bandwidth: float = COLOUR_BANDWIDTH,
                    colour_outlier_weight: float = COLOUR_OUTLIER_WEIGHT,
                    probability_weight: float = PROBABILITY_WEIGHT
                    ) -> np.ndarray:
  """One member of the ensemble: the graph cut of one segmentation.

  Args:
    segments: int [h, w] superpixel labels, every one of [0, N) present.
    lab: float [h, w, 3] the image in CIELAB.
    sure_fg: bool [h, w]; superpixels it touches are held to the person.
    sure_bg: bool [h, w]; superpixels wholly in it are held to the
      background.
    probs: float [h, w] person probability (the network's, or the
      skeleton's stand-in).
    smoothness, colour_bandwidth, colour_outlier_weight,
    probability_weight: the module docstring's.

  Returns:
    uint8 [h, w] 0/1 mask.
  """
  n = int(segments.max()) + 1
  colours, area = _segment_means(segments, lab, n)
  flat = segments.ravel()
  fg_seed = np.bincount(flat, sure_fg.ravel(), minlength=n) > 0
  bg_seed = (np.bincount(flat, sure_bg.ravel(), minlength=n) == area) & (
      ~fg_seed)
  q = np.clip(foreground_posterior(colours, area, fg_seed, bg_seed,
                                   bandwidth=colour_bandwidth,
                                   outlier_weight=colour_outlier_weight),
              _CLIP, 1 - _CLIP)
  person, _ = _segment_means(segments, np.asarray(probs, np.float64), n)
  p = np.clip(person[:, 0], _CLIP, 1 - _CLIP)
  cost_fg = -area * (np.log(q) + probability_weight * np.log(p))
  cost_bg = -area * (np.log1p(-q) + probability_weight * np.log1p(-p))
  cost_fg[bg_seed] = np.inf
  cost_bg[fg_seed] = np.inf
  edges, boundary = region_graph(segments)
  difference = np.sum(np.square(colours[edges[:, 0]] - colours[edges[:, 1]]),
                      -1)
  spread = 2 * difference.mean() if len(difference) else 1.0
  weights = smoothness * boundary * np.exp(-difference / max(spread, 1e-9))
  labels = min_cut(cost_fg, cost_bg, edges, weights)
  return labels[segments].astype(np.uint8)


def _people(keypoints) -> np.ndarray:
  kp = np.asarray(keypoints, np.float64)
  return kp[None] if kp.ndim == 2 else kp


def has_limbs(keypoints, skeleton: skeletons.Skeleton) -> bool:
  """Whether any person of `keypoints` ([K, 3] or [P, K, 3]) has a limb
  with both joints labelled (what the seeds need)."""
  return any(len(grabcut_baseline.labelled_limbs(kp, skeleton))
             for kp in _people(keypoints))


def seeds(shape, keypoints, skeleton: skeletons.Skeleton, *,
          fg_thickness: float | None = None,
          background_distance: float | None = None
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """bool [h, w] pixels (sure foreground, sure background, near) of the
  module docstring's seeds for one or more people; near is GrabCut's
  foreground zone (its seed mask), where `NEAR_PRIOR` applies.

  Args:
    shape: (h, w).
    keypoints: [K, 3] or [P, K, 3] on the image's pixel grid, visibility 0
      unlabelled, 1 labelled but hidden, 2 visible.
    skeleton: gives the limbs.
    fg_thickness: limb width in pixels; None: from each person's scale.
    background_distance: pixels; None: from each person's scale.
  """
  sure_fg = np.zeros(shape, bool)
  sure_bg = np.ones(shape, bool)
  near = np.zeros(shape, bool)
  for kp in _people(keypoints):
    thickness, bg_distance = grabcut_baseline.default_sizes(kp)
    if fg_thickness is not None:
      thickness = fg_thickness
    far = (BACKGROUND_SCALE * bg_distance if background_distance is None
           else background_distance)
    labels = grabcut_baseline.seed_labels(shape, kp, skeleton,
                                          fg_thickness=thickness,
                                          bg_distance=far)
    sure_bg &= labels == cv2.GC_BGD
    labels = grabcut_baseline.seed_labels(shape, kp, skeleton,
                                          fg_thickness=thickness,
                                          bg_distance=bg_distance)
    near |= (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    visible = kp.copy()
    visible[visible[:, 2] < 2, 2] = 0
    labels = grabcut_baseline.seed_labels(shape, visible, skeleton,
                                          fg_thickness=thickness,
                                          bg_distance=thickness)
    sure_fg |= labels == cv2.GC_FGD
  return sure_fg, sure_bg, near


def segment(image, keypoints, skeleton: skeletons.Skeleton, *,
            probs=None, n_segments=None,
            superpixel_sizes=SUPERPIXEL_SIZES,
            compactness: float = COMPACTNESS,
            fg_thickness: float | None = None,
            background_distance: float | None = None,
            smoothness: float = SMOOTHNESS,
            colour_bandwidth: float = COLOUR_BANDWIDTH,
            colour_outlier_weight: float = COLOUR_OUTLIER_WEIGHT,
            probability_weight: float = PROBABILITY_WEIGHT,
            near_prior: float = NEAR_PRIOR) -> np.ndarray:
  """The person mask of the module docstring's superpixel graph cut.

  Args:
    image: uint8 [h, w, 3] RGB.
    keypoints: [K, 3] (one person) or [P, K, 3] (the union of several): x,
      y on the image's pixel grid and visibility (0 unlabelled, 1 hidden,
      2 visible).
    skeleton: gives the limbs.
    probs: float [h, w] the network's person probability in [0, 1]; None:
      the skeleton's stand-in (`near_prior`).
    n_segments: SLIC superpixel counts of the ensemble; None: from
      `superpixel_sizes` and the smallest person's diagonal, at most
      `MAX_SUPERPIXELS`.
    superpixel_sizes: superpixel sides as fractions of the diagonal.
    compactness: SLIC's.
    fg_thickness: sure-foreground limb width in pixels; None: 0.03 of each
      person's diagonal.
    background_distance: background seed distance in pixels; None:
      `BACKGROUND_SCALE` times GrabCut's default.
    smoothness, colour_bandwidth, colour_outlier_weight,
    probability_weight, near_prior: see the module docstring.

  Returns:
    uint8 [h, w] 0/1 mask; all zeros when no limb is labelled.
  """
  image = np.asarray(image)
  shape = image.shape[:2]
  if probs is not None and np.shape(probs) != shape:
    raise ValueError(f'probs {np.shape(probs)} and image {image.shape} '
                     'sizes differ')
  if not has_limbs(keypoints, skeleton):
    return np.zeros(shape, np.uint8)
  sure_fg, sure_bg, near = seeds(shape, keypoints, skeleton,
                                 fg_thickness=fg_thickness,
                                 background_distance=background_distance)
  if probs is None:
    probs = np.where(near, near_prior, 1 - near_prior)
  if n_segments is None:
    diagonal = min(d for d in map(grabcut_baseline.joint_diagonal,
                                  _people(keypoints)) if d > 0)
    n_segments = [min(MAX_SUPERPIXELS, max(1, round(
        shape[0] * shape[1] / (f * diagonal) ** 2))) for f in superpixel_sizes]
  lab = color.rgb2lab(image)
  votes = np.zeros(shape, np.int32)
  for count in n_segments:
    segments = sk_segmentation.slic(
        image, n_segments=int(count), compactness=compactness,
        start_label=0, channel_axis=-1)
    # Consecutive labels: the graph's nodes.
    segments = np.unique(segments, return_inverse=True)[1].reshape(shape)
    votes += cut_superpixels(
        segments, lab, sure_fg, sure_bg, probs, smoothness=smoothness,
        colour_bandwidth=colour_bandwidth,
        colour_outlier_weight=colour_outlier_weight,
        probability_weight=probability_weight)
  return (2 * votes > len(n_segments)).astype(np.uint8)
