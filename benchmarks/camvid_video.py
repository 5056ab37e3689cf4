"""A CamVid sequence through `pixelwise predict` as a video: the val frames of sequence 0016E5, in order, made
into an H.264 .mp4 at 15 frames/s (the sequence's labelled frames are every other frame of its 30 Hz camera),
predicted with --overlay; the written overlay video read back (frame count, rate) and one of its frames saved
as a PNG.

    python benchmarks/camvid_video.py runs/camvid_realtime/best --data ../shared/data/camvid \
        [--frame 50] [--png docs/camvid_video_frame.png]

Prints a table and appends it to benchmarks/RESULTS.md with the machine. The frames/s is `predict`'s own figure
for the whole loop: decode, resize, model, decode of the prediction, overlay drawing, two encoders.
"""
from __future__ import annotations

import argparse
import datetime
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SEQUENCE = "0016E5"
RATE = 15


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "camvid"))
    ap.add_argument("--frame", type=int, default=50, help="which frame of the overlay video to save as a PNG")
    ap.add_argument("--png", default=str(ROOT / "docs" / "camvid_video_frame.png"))
    args = ap.parse_args()
    from pixelwise.hardware import describe_cpu
    from pixelwise.inference.video import read_frames, write_frames

    files = sorted((Path(args.data) / "val").glob(f"{SEQUENCE}_*.png"))
    if not files:
        sys.exit(f"{args.data}/val: no {SEQUENCE}_*.png frames")
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_frames(Path(tmp) / f"{SEQUENCE}.mp4", (np.asarray(Image.open(f).convert("RGB")) for f in files),
                            rate=RATE)
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "pixelwise", "predict", args.model_dir, str(clip), "--out", str(out), "--overlay"]
        print("+", " ".join(cmd), flush=True)
        done = subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, text=True)
        print(done.stdout.strip())
        fps = float(re.search(r"at ([0-9.]+) frames/s", done.stdout).group(1))
        overlay, rate = read_frames(out / f"{SEQUENCE}_overlay.mp4")
        masks, mask_rate = read_frames(out / f"{SEQUENCE}_mask.mkv")
        size = overlay[0].shape
        Image.fromarray(overlay[min(args.frame, len(overlay) - 1)]).save(args.png)
    head = ["input", "frames in", "overlay video: frames, rate, size", "mask video: frames, rate", "frames/s"]
    row = [f"CamVid {SEQUENCE} val frames as .mp4 ({RATE} fps, 480x360)", str(len(files)),
           f"{len(overlay)}, {float(rate):g} fps, {size[1]}x{size[0]}", f"{len(masks)}, {float(mask_rate):g} fps",
           f"{fps:.1f}"]
    table = "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head), "| " + " | ".join(row) + " |"])
    print(table)
    print(f"frame {args.frame} of the overlay video -> {args.png}")
    with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
        f.write(f"\n## A CamVid sequence through `pixelwise predict` as video ({datetime.date.today()})\n\n"
                f"Machine: {describe_cpu()}. Command: `python benchmarks/camvid_video.py {args.model_dir}`; "
                "frames/s is predict's figure for the whole loop (decode, model, overlay, both encoders).\n\n"
                + table + "\n")


if __name__ == "__main__":
    main()
