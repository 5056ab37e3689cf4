"""Video in and out: a CamVid sequence made into an .mp4 predicted through `pixelwise predict` and
`Predictor.predict_video`, the mask video decoded back to the exact label maps, --every, smoothing,
Ctrl-C, and the one-line errors."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

import pixelwise as pw
from pixelwise.errors import PixelwiseError
from pixelwise.inference.predictor import Predictor
from pixelwise.inference.video import VideoSource, is_video, predict_video_file, read_frames, write_frames
from conftest import run_cli, shared_dataset

pytest.importorskip("av")

FRAMES = 8  # the first val frames of CamVid sequence 0016E5, in order, at half resolution


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    files = sorted((shared_dataset("camvid") / "val").glob("0016E5_*.png"))[:FRAMES]
    frames = [np.asarray(Image.open(f).convert("RGB").resize((240, 180))) for f in files]
    return write_frames(tmp_path_factory.mktemp("video") / "0016E5.mp4", frames, rate=15), frames


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = pw.create_model("lraspp", 11, encoder="mobilenetv3_small_100")
    return pw.save_model(model, tmp_path_factory.mktemp("video_model") / "lraspp", classes=[f"c{i}" for i in range(11)])


def _predictor(model_dir):
    return Predictor.from_dir(model_dir, precision="fp32")


def test_clip_round_trip(clip):
    path, frames = clip
    back, rate = read_frames(path)
    assert len(back) == FRAMES and rate == 15 and back[0].shape == (180, 240, 3)
    # H.264 is lossy; the decoded frames stay close to what went in
    assert np.abs(back[3].astype(int) - frames[3]).mean() < 6
    assert is_video(str(path)) and is_video("0") and is_video("rtsp://host/stream") and not is_video("a.png")


def test_predict_video_cli_writes_mask_and_overlay_videos(clip, model_dir, tmp_path, capsys):
    path, _ = clip
    code, out, err = run_cli(["predict", str(model_dir), str(path), "--out", str(tmp_path), "--overlay",
                              "--format", "png"], capsys)
    assert code == 0, err
    assert f"predicted {FRAMES} frames" in out and "frames/s" in out
    overlay, rate = read_frames(tmp_path / "0016E5_overlay.mp4")
    assert len(overlay) == FRAMES and rate == 15 and overlay[0].shape == (180, 240, 3)
    masks, mask_rate = read_frames(tmp_path / "0016E5_mask.mkv")
    assert len(masks) == FRAMES and mask_rate == 15 and masks[0].dtype == np.uint8
    # the mask video is lossless: each frame is the label map of that frame, as the PNG written beside it
    pngs = sorted((tmp_path / "0016E5").glob("*.png"))
    assert len(pngs) == FRAMES
    for mask, png in zip(masks, pngs):
        assert np.array_equal(mask, np.asarray(Image.open(png)))
    # and what predict() gives on the decoded frame
    decoded, _ = read_frames(path)
    expected = _predictor(model_dir).predict(decoded[5]).semantic
    assert np.array_equal(masks[5], expected)


def test_every_and_smoothing(clip, model_dir, tmp_path):
    path, _ = clip
    predictor = _predictor(model_dir)
    plain = list(predictor.predict_video(str(path), batch=3))
    assert [f.index for f in plain] == list(range(FRAMES))
    every = list(predictor.predict_video(str(path), every=3))
    assert [f.index for f in every] == [0, 3, 6]
    assert all(np.array_equal(a.prediction.semantic, plain[a.index].prediction.semantic) for a in every)
    # smoothing: the first frame is its own; later frames mix in the earlier ones, as the EMA says
    frames, _ = read_frames(path)
    smooth = list(predictor.predict_video(frames, smooth=0.6))
    assert np.array_equal(smooth[0].prediction.semantic, plain[0].prediction.semantic)
    probs = [predictor.predict(f, return_probs=True).probs for f in frames[:3]]
    ema = probs[0]
    for p in probs[1:]:
        ema = 0.6 * ema + 0.4 * p
    assert (smooth[2].prediction.semantic == ema.argmax(0)).mean() > 0.999
    result = predict_video_file(predictor, str(path), tmp_path, every=2, progress=False)
    masks, rate = read_frames(result.written[0])
    assert len(masks) == 4 and rate == Fraction(15, 2) and result.frames_predicted == 4


def test_ctrl_c_leaves_whole_files(clip, model_dir, tmp_path, monkeypatch):
    path, _ = clip
    predictor = _predictor(model_dir)
    real = predictor.predict_video

    def interrupted(*args, **kwargs):
        for n, frame in enumerate(real(*args, **kwargs)):
            if n == 5:
                raise KeyboardInterrupt
            yield frame

    monkeypatch.setattr(predictor, "predict_video", interrupted)
    result = predict_video_file(predictor, str(path), tmp_path, overlay=True, progress=False)
    assert result.interrupted and result.frames_predicted == 5
    for video in result.written:
        frames, _ = read_frames(video)
        assert len(frames) == 5


def test_video_errors(clip, model_dir, tmp_path, capsys):
    path, _ = clip
    code, _, err = run_cli(["predict", str(model_dir), str(tmp_path / "missing.mp4"), "--out", str(tmp_path)], capsys)
    assert code != 0 and "missing.mp4: no such video file" in err
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    code, _, err = run_cli(["predict", str(model_dir), str(bad), "--out", str(tmp_path)], capsys)
    assert code != 0 and "broken.mp4: cannot open as video" in err and "Traceback" not in err
    code, _, err = run_cli(["predict", str(model_dir), str(path), "--out", str(tmp_path), "--workers", "3"], capsys)
    assert code != 0 and "--workers does not apply to video input" in err
    code, _, err = run_cli(["predict", str(model_dir), str(path), str(path), "--out", str(tmp_path)], capsys)
    assert code != 0 and "one input" in err
    png = tmp_path / "frame.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(png)
    code, _, err = run_cli(["predict", str(model_dir), str(png), "--out", str(tmp_path), "--smooth", "0.5"], capsys)
    assert code != 0 and "--smooth applies to video input only" in err
    predictor = _predictor(model_dir)
    with pytest.raises(PixelwiseError, match="smooth must lie in"):
        next(predictor.predict_video(str(path), smooth=1.0))
    with VideoSource(str(path)) as video:
        assert video.frames == FRAMES and video.rate == 15 and (video.width, video.height) == (240, 180)
