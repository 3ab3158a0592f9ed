"""Writes a COCO-format copy of the synthetic people::

  python -m hpe_jax.data.synthetic --output=DIR --num_images=N --seed=S

(also ``--image_size=H,W``, ``--min_people``, ``--max_people``,
``--jpeg_quality``) giving ``DIR/images/<id>.jpg``, ``DIR/parts/<id>.png``
(part labels) and ``DIR/annotations.json``.
"""

from absl import app
from absl import flags

from hpe_jax.data.synthetic import coco_export

if __name__ == '__main__':
  coco_export.define_flags()
  # So that --helpshort lists them, as flags of this program.
  flags.adopt_module_key_flags(coco_export)
  app.run(coco_export.main)
