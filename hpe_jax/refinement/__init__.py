"""Mask refinement after a network: a dense CRF (`dense_crf`), SLIC
superpixels with graph cut seeded from the skeleton (`superpixel_graphcut`),
and the ``eval.refine`` option that runs either in evaluate and predict
(`refine_option`)."""
