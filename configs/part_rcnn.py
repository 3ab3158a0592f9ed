r"""Top-down multi-person body parts: CenterNet person detector + RoIAlign
head with 7 mask channels (6 body parts + whole body) and 17 keypoints.

Full 256x256 synthetic scenes of 1 to 4 people; 64-channel stride-4
backbone, up to 20 detections, masks and keypoint heatmaps at 56x56 per
person (``--config.model.mask_size=112`` for 112x112), at most 8 RoIs per
image in training, Adam at 1e-3 with a cosine schedule:

  python -m hpe_jax.main --config=configs/part_rcnn.py --workdir=/tmp/prcnn

Meant for a GPU; not yet run here.

Arguments (comma-separated):

* ``smoke``: 96x96 scenes of 1 to 3 people at least 40% of the image
  tall, 32-channel backbone and head (2 convs), 10 detections, 3 RoIs per
  image, batch 16, 1000 Adam steps at 2e-3. On 2 CPU cores: 12.6 minutes
  (757 s with evaluations); validation (100 images, 199 people) box AP
  0.000 untrained -> 0.095 (AP50 0.327), part mIoU over matched people
  none matched -> 0.092; mask AP stays near 0 (0.002) and keypoints do not
  learn in so few steps.
* ``coco``: COCO-format data with person masks under
  ``--config.dataset.root`` (e.g. COCO-2017, or OCHuman with
  ``--config.dataset.coco.eval_annotations=...``); trains the body mask,
  boxes and keypoints (COCO has no part labels).
"""

from hpe_jax.training import base_config


def get_config(arg=None):
  args = base_config.parse_args(arg, ('smoke', 'coco'))
  config = base_config.get_base_config('part_rcnn', 'part_rcnn')
  config.dataset.synthetic.update(image_size=(256, 256), max_people=4)
  config.input.update(mode='full_image', image_size=(256, 256),
                      output_stride=1, max_people=8, batch_size=16,
                      eval_batch_size=16)
  config.model.update(features=64, levels=3, head_features=128,
                      head_convs=4, mask_size=56, max_detections=20,
                      max_rois=8)
  config.optimizer.update(name='adam', learning_rate=1e-3)
  config.optimizer.schedule.update(name='cosine', warmup_steps=500)
  # COCO-style AP ranks every detection; previews and predict show fewer.
  config.eval.min_detection_score = 0.05
  config.update(total_steps=30_000, eval_every=2500, checkpoint_every=2500)

  if 'coco' in args:
    config.dataset.update(name='coco', root='')
  if 'smoke' in args:
    base_config.use_smoke_schedule(config, total_steps=1000, batch_size=16)
    # People of at least 40% of the image height: at 96x96 a smaller one
    # spans under 10 cells of the stride-4 features the RoIs are cut from.
    config.dataset.synthetic.update(image_size=(96, 96), max_people=3,
                                    person_height=(0.4, 1.0))
    config.input.update(image_size=(96, 96), max_people=3)
    config.model.update(features=32, head_features=32, head_convs=2,
                        max_detections=10, max_rois=3)
  config.lock()
  return config
