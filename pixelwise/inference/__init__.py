"""Inference: the Predictor (model directory -> label maps)."""
