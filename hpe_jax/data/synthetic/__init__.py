"""Procedurally drawn synthetic people: the built-in default dataset.

`SyntheticPeople` draws images of articulated human figures on cluttered
backgrounds together with exact ground truth for every task of hpe_jax: COCO
keypoints with visibility, person boxes and masks, head boxes (PCKh) and
six-part label maps (`skeletons.BODY_PARTS6`). Nothing is downloaded, so every
config can train on it on a fresh machine and tests use it as ground truth.

How a figure is made. A 3-D skeleton in human proportions (unit = standing
height) is posed with joint limits: elbows and knees bend one way only,
shoulders, hips, spine, neck and head turn within plausible ranges. It is
turned to a random view (mostly frontal, also profile and back), projected
orthographically, then scaled (25% to 100% of the image height by default),
stretched a little (thin/wide) and rotated in the image plane (mostly near
upright, rarely upside down). Each body segment becomes a 2-D polygon: a
tapered capsule, ellipse or chamfered bar for limbs, the convex hull of
elliptical cross-sections for the torso, a projected ellipsoid for the head
with a face region, eyes, nose and ears that follow the head's yaw and pitch,
so that the face keypoints are learnable from the drawing.

Draw order is a painter's algorithm: people from far to near; within a person
segment groups from far to near by camera depth (the far arm goes behind the
torso, the near arm in front). Every polygon is rasterised with sub-pixel
accuracy into one *owner map* (which surface is front-most at each pixel), from
which masks, the part map, boxes and visibility are read, so they agree with
the pixels exactly. Colours and textures (stripes, gradients, noise, limb
shading, outlines) are applied per owner afterwards; about half of the people
wear one material everywhere so that models must use shape and context rather
than colour. Backgrounds have gradients, noise, clutter shapes and distractor
sticks and blobs in the people's own materials; sometimes objects occlude the
people.

Visibility rule. Each joint belongs to the segments that meet at it (a wrist
to its forearm and hand, a knee to its thigh and shank, a shoulder to the
torso, neck and its upper arm, a hip to the torso and its thigh, face points
to the head). Joint ``k`` of person ``p`` is

* 0 with x = y = 0 when its pixel ``round(x), round(y)`` is outside the image
  (COCO convention);
* 2 (visible) when the front-most surface at that pixel is one of the joint's
  own segments of person ``p`` and the joint is not turned away from the
  camera;
* 1 (labelled, hidden) otherwise: another person, an occluding object, or
  another segment of the same person (e.g. the near arm over the far hip) is
  in front, or the joint faces away: the head turned more than about 57
  degrees away from an eye, 34 degrees from an ear or 105 degrees from the
  nose (profiles hide the far eye and ear, back views the face), or a
  shoulder or hip on the far side of a body turned more than about 49 degrees.
  Turned-away eyes, ears and noses are not drawn either.

The pixel tested is the one the keypoint rounds to. Limb outlines contain
their end joints (radii are at least 1.2 px) and face features are drawn
around their keypoints, so a joint that nothing covers lands on its own
segment.

Samples are a pure function of (seed, index): the geometry uses
``default_rng((seed, index, 0))`` and the pixels ``default_rng((seed, index,
1))``, so `annotation` never pays for texturing and any sample can be made on
its own in any process.

Run as a program, the package writes a COCO-format copy of the dataset::

  python -m hpe_jax.data.synthetic --output=DIR --num_images=N --seed=S

(also ``--image_size=H,W``, ``--min_people``, ``--max_people``,
``--jpeg_quality``) giving ``DIR/images/<id>.jpg``, ``DIR/parts/<id>.png``
(part labels) and ``DIR/annotations.json`` (keypoints in the same pixel-index
coordinates as the `Example`s, masks as RLE). `export` does the same from
Python.

Modules, each using only those before it: `shapes` (polygon outlines in
OpenCV's fixed-point units), `body` (segments, joints, posed people),
`render` (the owner map and the ground truth read off it), `materials`
(colours and textures), `scene` (people placement, occluders, backgrounds),
`pixels` (painting and camera effects), `dataset` (`SyntheticPeople`) and
`coco_export` (`export` and the command line).
"""

from hpe_jax.data.synthetic.body import joint_primitives
from hpe_jax.data.synthetic.body import PRIMITIVES
from hpe_jax.data.synthetic.coco_export import export
from hpe_jax.data.synthetic.dataset import SyntheticPeople
from hpe_jax.data.synthetic.render import Scene

__all__ = ['PRIMITIVES', 'Scene', 'SyntheticPeople', 'export',
           'joint_primitives']
