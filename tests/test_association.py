"""Person identities across frames: OKS similarity by hand, the optimal
assignment where greedy matching goes wrong, and track ids through order
changes, newcomers and short absences."""

import numpy as np

from hpe_jax.data import skeletons
from hpe_jax.video import association

SIGMAS = np.asarray(skeletons.COCO17.oks_sigmas)


def person(x, y, score=0.9):
  """A 17-joint pose in a 40 x 100 box whose top-left corner is (x, y)."""
  rng = np.random.default_rng(int(x * 7 + y))
  xy = np.stack([x + rng.uniform(0, 40, 17), y + rng.uniform(0, 100, 17)],
                -1)
  return (np.concatenate([xy, np.full((17, 1), score)], -1),
          np.array([x, y, x + 40, y + 100], np.float64))


def test_similarity_by_hand():
  kp, box = person(10, 20)
  moved = kp.copy()
  moved[:, 0] += 2.0  # two pixels to the right
  sim = association.similarity(kp[None], box[None], moved[None], box[None],
                               SIGMAS)
  # OKS: mean over joints of exp(-d^2 / (2 * area * (2 sigma)^2)).
  want = np.exp(-4.0 / (2 * 4000 * (2 * SIGMAS) ** 2)).mean()
  np.testing.assert_allclose(sim, [[want]], rtol=1e-9)
  # No confident joint in common: the boxes' IoU.
  faint = kp.copy()
  faint[:, 2] = 0.1
  other_box = box + [20, 0, 20, 0]
  sim = association.similarity(kp[None], box[None], faint[None],
                               other_box[None], SIGMAS)
  np.testing.assert_allclose(sim, [[20 * 100 / (2 * 4000 - 20 * 100)]])


def test_assignment_is_optimal_where_greedy_is_not():
  scores = np.array([[0.9, 0.8], [0.85, 0.1]])
  # Greedy takes 0.9 first and is left with 0.1 (total 1.0); 0.8 + 0.85.
  assert association.assign(scores, 0.3) == [(0, 1), (1, 0)]
  assert association.assign(scores, 0.82) == [(1, 0)]
  assert association.assign(np.zeros((0, 3)), 0.3) == []


def test_track_ids_follow_people():
  tracker = association.Tracker(SIGMAS, max_age=3)
  a, b = person(0, 0), person(200, 0)
  assert tracker.update(*map(np.stack, zip(a, b))) == [0, 1]
  # Listed in the other order and moved a little: the same ids.
  a2 = (a[0] + [3, 1, 0], a[1] + [3, 1, 3, 1])
  b2 = (b[0] + [3, 1, 0], b[1] + [3, 1, 3, 1])
  assert tracker.update(*map(np.stack, zip(b2, a2))) == [1, 0]
  # A newcomer gets a new id.
  c = person(400, 0)
  assert tracker.update(*map(np.stack, zip(a2, b2, c))) == [0, 1, 2]
  # b is away for two frames and comes back within max_age: its id.
  for _ in range(2):
    assert tracker.update(*map(np.stack, zip(a2, c))) == [0, 2]
  assert tracker.update(*map(np.stack, zip(a2, b2, c))) == [0, 1, 2]
  # Away for longer than max_age: a new id.
  for _ in range(4):
    tracker.update(*map(np.stack, zip(a2, c)))
  assert tracker.update(*map(np.stack, zip(a2, b2, c))) == [0, 3, 2]
  # A frame without people.
  assert tracker.update(np.zeros((0, 17, 3)), np.zeros((0, 4))) == []
