"""Array code that runs under jit: affine geometry, image normalisation,
skeleton prior masks, RoIAlign."""
