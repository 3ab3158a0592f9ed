"""Mask refinement after a network: a dense CRF (`dense_crf`) and SLIC
superpixels with graph cut seeded from the skeleton (`superpixel_graphcut`)."""
