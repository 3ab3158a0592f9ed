"""Pose estimation models (Flax linen) and the registry that builds them."""
