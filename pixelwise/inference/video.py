"""Video in and out through PyAV (FFmpeg's libraries; `pip install 'pixelwise[video]'`).

A source is a video file, a stream URL (rtsp://, http://, ...) or a camera index ("0" is /dev/video0 on
Linux, the first AVFoundation / DirectShow device elsewhere). Frames come out as uint8 (H, W, 3) RGB.

Written videos keep the source's frame rate (divided by `every` when only every N-th frame is predicted):
- the overlay video: H.264 (yuv420p, so odd sizes are padded by one pixel to even), `<name>_overlay.mp4`;
- the mask video: the class ids as lossless FFV1 grey frames (one byte per pixel, values 0..255, 255 =
  void), `<name>_mask.mkv`, which any FFmpeg-based reader decodes back to the exact label maps.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from pixelwise.errors import PixelwiseError

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".wmv", ".flv"})
DEFAULT_RATE = Fraction(30)  # a stream that states no frame rate


def is_video(source: str) -> bool:
    """Whether `source` names a video: a file with a video suffix, a stream URL or a camera index."""
    source = str(source)
    return source.isdigit() or "://" in source or Path(source).suffix.lower() in VIDEO_SUFFIXES


def _av():
    try:
        import av
    except ImportError:
        raise PixelwiseError("video input and output need PyAV: pip install 'pixelwise[video]'") from None
    return av


def _open_container(av, source: str):
    if source.isdigit():  # a camera
        if sys.platform.startswith("linux"):
            return av.open(f"/dev/video{source}", format="v4l2")
        if sys.platform == "darwin":
            return av.open(source, format="avfoundation")
        return av.open(f"video={source}", format="dshow")
    if "://" not in source and not Path(source).is_file():
        raise PixelwiseError(f"{source}: no such video file")
    return av.open(source, timeout=30 if "://" in source else None)


class VideoSource:
    """Decoded RGB frames of a video file, stream or camera; a context manager and an iterator.

    Attributes: `name` (for output file names), `rate` (frames per second, a Fraction), `frames` (the count
    the container states, None for live input or when unknown), `width`, `height`, `live`.
    """

    def __init__(self, source: str | int):
        av = _av()
        self.source = str(source)
        self.live = self.source.isdigit() or "://" in self.source
        try:
            self.container = _open_container(av, self.source)
        except PixelwiseError:
            raise
        except Exception as exc:  # noqa: BLE001 - FFmpeg's errors (missing file, bad data, no device) -> one line
            raise PixelwiseError(f"{self.source}: cannot open as video: {' '.join(str(exc).split())[:200]}") from None
        if not self.container.streams.video:
            self.container.close()
            raise PixelwiseError(f"{self.source}: has no video stream")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self.rate = Fraction(self.stream.average_rate or self.stream.guessed_rate or DEFAULT_RATE)
        self.frames = int(self.stream.frames) or None if not self.live else None
        self.width, self.height = int(self.stream.width), int(self.stream.height)
        self.name = ("camera" + self.source if self.source.isdigit() else
                     Path(self.source.split("?")[0].rstrip("/")).stem or "stream")

    def __iter__(self) -> Iterator[np.ndarray]:
        av = _av()
        try:
            for frame in self.container.decode(self.stream):
                yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as exc:  # a damaged packet or a dropped stream: one line, frames so far kept
            raise PixelwiseError(f"{self.source}: decoding failed: {' '.join(str(exc).split())[:200]}") from None

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VideoWriter:
    """Writes uint8 frames to a video file at `rate`: kind "overlay" (RGB (H, W, 3) -> H.264 in .mp4) or
    "mask" (label maps (H, W) uint8 -> lossless FFV1 grey in .mkv). Closing flushes the encoder and writes
    the container's index, so a video stopped early (Ctrl-C on a camera) is still a whole file."""

    def __init__(self, path: str | Path, rate: Fraction, kind: str = "overlay"):
        if kind not in ("overlay", "mask"):
            raise ValueError(f"kind must be overlay or mask, got {kind!r}")
        self.av, self.path, self.rate, self.kind = _av(), Path(path), Fraction(rate).limit_denominator(1001 * 1000), kind
        self.container, self.stream, self.count = None, None, 0

    def _open(self, h: int, w: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.container = self.av.open(str(self.path), mode="w")
        if self.kind == "overlay":
            self.stream = self.container.add_stream("libx264", rate=self.rate)
            self.stream.pix_fmt = "yuv420p"
            self.stream.options = {"crf": "20", "preset": "veryfast"}
            h, w = h + h % 2, w + w % 2  # yuv420p subsamples chroma 2x2
        else:
            self.stream = self.container.add_stream("ffv1", rate=self.rate)
            self.stream.pix_fmt = "gray"
        self.stream.height, self.stream.width = h, w

    def write(self, frame: np.ndarray) -> None:
        if self.container is None:
            self._open(*frame.shape[:2])
        if self.kind == "overlay":
            ph, pw = self.stream.height - frame.shape[0], self.stream.width - frame.shape[1]
            if ph or pw:
                frame = np.pad(frame, ((0, ph), (0, pw), (0, 0)), mode="edge")
            video_frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(frame, np.uint8), format="rgb24")
        else:
            video_frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(frame, np.uint8), format="gray")
        for packet in self.stream.encode(video_frame):
            self.container.mux(packet)
        self.count += 1

    def close(self) -> None:
        if self.container is None:
            return
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        self.container = None


def read_frames(path: str | Path) -> tuple[list[np.ndarray], Fraction]:
    """Every frame of a video file as arrays (RGB (H,W,3), or (H,W) for grey video) and its frame rate."""
    av = _av()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        gray = stream.codec_context.pix_fmt in ("gray", "gray8")
        frames = [f.to_ndarray(format="gray" if gray else "rgb24") for f in container.decode(stream)]
        return frames, Fraction(stream.average_rate or stream.guessed_rate or DEFAULT_RATE)


def write_frames(path: str | Path, frames, rate: Fraction | int = 30) -> Path:
    """RGB frames (H, W, 3) uint8 -> an H.264 .mp4 (used to make test clips from image sequences)."""
    writer = VideoWriter(path, Fraction(rate), "overlay")
    for frame in frames:
        writer.write(frame)
    writer.close()
    return Path(path)


@dataclass
class VideoResult:
    """What `predict_video_file` did: frames read and predicted, frames/s of the whole loop (decode,
    model, encode), the videos written (and the task writer's extra files), how many frames went to
    per-frame files, whether Ctrl-C stopped it, the output rate."""

    frames_read: int = 0
    frames_predicted: int = 0
    seconds: float = 0.0
    rate: Fraction = DEFAULT_RATE
    written: list[Path] = field(default_factory=list)
    frame_files: int = 0
    frame_dir: Path | None = None
    interrupted: bool = False

    @property
    def fps(self) -> float:
        return self.frames_predicted / self.seconds if self.seconds > 0 else 0.0


def predict_video_file(predictor, source: str, out_dir: str | Path, formats=(), overlay: bool = False,
                       every: int = 1, smooth: float = 0.0, batch: int | None = None, mask_video: bool = True,
                       progress: bool = True) -> VideoResult:
    """Predict a video (file, stream or camera) into `out_dir`: the mask video (when `mask_video` and the
    task gives a label map; a multi-label model's overlapping masks go to per-frame files instead), the
    overlay video (`overlay`), and per-frame files in the task's `formats` (e.g. png) named
    `<name>_<frame:06d>` under `out_dir/<name>/`. Ctrl-C stops cleanly: every file written so far is closed
    whole and `interrupted` is set."""
    from tqdm import tqdm

    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise PixelwiseError(f"--every must be a positive whole number of frames, got {every!r}")
    out_dir = Path(out_dir)
    result = VideoResult()
    with VideoSource(source) as video:
        writer = predictor.task.writer(out_dir / video.name, formats, overlay=False) if formats else None
        result.rate = video.rate / every
        masks = VideoWriter(out_dir / f"{video.name}_mask.mkv", result.rate, "mask") if mask_video else None
        overlays = VideoWriter(out_dir / f"{video.name}_overlay.mp4", result.rate, "overlay") if overlay else None
        total = -(-video.frames // every) if video.frames else None
        bar = tqdm(total=total, desc="video", unit="frame", disable=not progress)
        stems: list[str] = []
        start = time.perf_counter()
        try:
            for frame in predictor.predict_video(video, batch=batch, every=every, smooth=smooth):
                if masks is not None and frame.prediction.semantic is None:  # overlapping masks: no label map
                    masks = None
                    if writer is None and overlays is None:
                        raise PixelwiseError(f"the {predictor.task.name} task gives no single label map for a mask "
                                             "video: ask for per-frame files (--format) or --overlay")
                if masks is not None:
                    if predictor.num_classes > 255:
                        raise PixelwiseError(f"a mask video holds class ids 0..254; this model has "
                                             f"{predictor.num_classes} classes (use --format png)")
                    masks.write(frame.prediction.semantic.astype(np.uint8))
                if overlays is not None:
                    overlays.write(predictor.task.overlay(frame.prediction, predictor.display(frame.image),
                                                          legend=False))
                if writer is not None:
                    stem = f"{video.name}_{frame.index:06d}"
                    writer.add(stem, frame.image, frame.prediction)
                    stems.append(stem)
                result.frames_predicted += 1
                result.frames_read = frame.index + 1
                bar.update(1)
                bar.set_postfix(fps=f"{result.frames_predicted / (time.perf_counter() - start):.1f}")
        except KeyboardInterrupt:
            result.interrupted = True
        finally:
            result.seconds = time.perf_counter() - start
            bar.close()
            for w in (masks, overlays):
                if w is not None:
                    w.close()
                    if w.count:
                        result.written.append(w.path)
            if writer is not None:
                result.written += writer.close(stems)
                result.frame_files, result.frame_dir = len(stems), out_dir / video.name
    return result
