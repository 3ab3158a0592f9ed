"""Keypoints along a video: smoothing tracks (`smoothing`)."""
