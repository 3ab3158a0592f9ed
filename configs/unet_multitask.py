r"""U-Net with a person-mask head and joint heads (the design's combined
models), on single-person images.

The argument picks the joint head (default ``softmax``):

* ``reg``: one regressed heatmap channel per joint, MSE against Gaussian
  targets scaled x100;
* ``softmax``: a per-pixel softmax over background + K joints,
  cross-entropy against hard labels (pixels within one sigma of a joint);
* ``regsoftmax``: as ``softmax`` with Gaussian soft targets;
* ``triple``: ``reg`` and ``softmax`` together.

The mask head is trained with soft Dice; the total is the weighted sum
``loss.dice_weight * Dice + loss.ce_weight * CE + loss.joint_*_weight *
joint losses``. The skeleton is read from each joint channel's argmax and
drawn with the skeleton's limbs (TensorBoard, predict). Evaluation reports
the mask metrics and ``<head>_pck@0.2_torso`` per joint head. The design
found ``softmax`` best (validation Dice 0.922).

  python -m hpe_jax.main --config=configs/unet_multitask.py:softmax \
      --workdir=/tmp/unet_mt

Combine with ``smoke`` (``:triple,smoke``) for the CPU variant: 16 to 256
channels, no dropout, 64x64 single-person synthetic scenes, batch 16, 400
Adam steps, Dice + cross-entropy on the mask, joint sigma 1.5 pixels. On 2
CPU cores each takes about 4 minutes (239-254 s with evaluations);
validation mask Dice from 0.003 untrained to 0.415 (``reg``), 0.261
(``softmax``), 0.207 (``regsoftmax``), 0.175 (``triple``). The joint heads
do not learn to place joints in so few steps: PCK@0.2 stays at 0.01-0.03,
as untrained.

Sweep (`get_hyper`): the four heads, smoke-sized:

  python -m launch.sweep --config=configs/unet_multitask.py \
      --workdir_root=/tmp/unet_heads
"""

from hpe_jax.training import base_config

HEADS = {'reg': ('regression', 'hard'), 'softmax': ('softmax', 'hard'),
         'regsoftmax': ('softmax', 'gaussian'), 'triple': ('both', 'hard')}


def get_config(arg=None):
  args = base_config.parse_args(arg, ('smoke',) + tuple(HEADS))
  heads = args & set(HEADS)
  if len(heads) > 1:
    raise ValueError(f'choose one joint head of {sorted(HEADS)}, got '
                     f'{sorted(heads)}')
  joint_head, softmax_target = HEADS[heads.pop() if heads else 'softmax']
  config = base_config.get_segmentation_config('unet')
  config.model.update(features=64, levels=4, dropout_rate=0.3,
                      joint_head=joint_head)
  config.loss.joint_softmax_target = softmax_target
  # One person per image: a skeleton read from per-channel argmaxes
  # describes one person.
  config.dataset.synthetic.max_people = 1

  if 'smoke' in args:
    config.model.features = 16
    base_config.use_segmentation_smoke_schedule(config, total_steps=400)
    config.codec.sigma = 1.5
  config.lock()
  return config


def get_hyper(h):
  return h.sweep('arg', [f'{head},smoke' for head in HEADS])
