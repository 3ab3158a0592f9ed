"""Codecs: how targets are encoded for training and decoded in prediction.

One module per kind of target, each holding both directions so that the
data, the loss and the decoding share one set of parameters:

* `heatmap`: Gaussian keypoint heatmaps (argmax / quarter / DARK decoding,
  flip test, grid <-> input <-> image coordinates);
* `centers`: CenterNet person centres and boxes for the detector;
* `roi_keypoints`: keypoints on the grids of person RoIs.
"""
