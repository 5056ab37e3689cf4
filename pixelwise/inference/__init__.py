"""Inference: the Predictor (model directory or ONNX file -> label maps) and what it is built from.

predictor.py  Predictor / Prediction: precision choice and its fp32 check, any image size, TTA
fastpath.py   BN folding, channels_last, low-precision weights, dilated conv as matrix products
sliding.py    sliding-window inference with bounded memory (tiles, blending, row bands)
tta.py        flips, 90-degree rotations (d4) and multi-scale test-time augmentation
batch.py      prediction over many files: parallel decoding, resumable, PNG / overlay / npy / RLE outputs
"""
