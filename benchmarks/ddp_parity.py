"""One process against two (torchrun, DDP on CPU with gloo): the same recipe, the same global batch.

    python benchmarks/ddp_parity.py [--epochs 12]

Trains configs/synthetic/unet.yaml (fixed epochs, no time budget) both ways, scores both best models on
the synthetic val split with `pixelwise eval`, prints a table and appends it to benchmarks/RESULTS.md.
The two runs differ in batch-norm statistics (each process normalises over its half of the batch) and
in the shuffling, so they agree within noise, not to the bit.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--out", default=str(ROOT / "runs" / "ddp_parity"))
    args = ap.parse_args()
    from pixelwise.hardware import describe_cpu

    common = ["train", "configs/synthetic/unet.yaml", f"train.epochs={args.epochs}", "train.val_every=100",
              "train.time_limit_min=null",  # fixed epochs: a time budget would cut the two runs differently
              "--no-report"]
    runs = {
        "1 process": [sys.executable, "-m", "pixelwise", *common, "--out", f"{args.out}/one"],
        "2 processes (torchrun)": [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                   "--nproc_per_node=2", "-m", "pixelwise", *common, "--out", f"{args.out}/two"],
    }
    rows = []
    for name, cmd in runs.items():
        out = Path(cmd[cmd.index("--out") + 1])
        env = {**os.environ, "OMP_NUM_THREADS": "1" if "torchrun" in name else "2"}
        t0 = time.time()
        if not (out / "best" / "config.json").is_file():
            subprocess.run(cmd, check=True, cwd=ROOT, env=env)
        minutes = (time.time() - t0) / 60
        subprocess.run([sys.executable, "-m", "pixelwise", "eval", str(out / "best"), "--data", "synthetic:default",
                        "--json", str(out / "val.json")], check=True, cwd=ROOT, capture_output=True)
        s = json.loads((out / "val.json").read_text())
        rows.append(f"| {name} | {args.epochs} | {minutes:.1f} | {s['miou']:.4f} | {s['pixel_acc']:.4f} |")
        print(rows[-1], flush=True)
    table = "| run | epochs | wall min | val mIoU | val pixel acc |\n|---|---|---|---|---|\n" + "\n".join(rows)
    print(table)
    with open(ROOT / "benchmarks" / "RESULTS.md", "a") as f:
        f.write(f"\n## DDP parity on synthetic scenes ({datetime.date.today()})\n\nMachine: {describe_cpu()}. "
                f"Command: `python benchmarks/ddp_parity.py --epochs {args.epochs}`\n\n{table}\n")


if __name__ == "__main__":
    main()
