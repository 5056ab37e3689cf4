"""Run logs: one JSON line per epoch in metrics.jsonl, and a PNG of the training curves."""
from __future__ import annotations

import json
from pathlib import Path


def append_jsonl(path: str | Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def write_jsonl(path: str | Path, records: list[dict]) -> None:
    """Replace the log with `records`, atomically (a resumed run rewrites it up to its checkpoint)."""
    from pixelwise.data.io import write_atomic

    write_atomic(path, "".join(json.dumps(r) + "\n" for r in records).encode())


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
    return out


def plot_curves(records: list[dict], out: str | Path) -> Path | None:
    """Train loss, the validation scores (every number the task logs: mIoU, pixel accuracy, PQ, F1, ...) and
    the learning rate against epoch."""
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in records]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, [r.get("train_loss") for r in records], "o-", ms=3)
    axes[0].set_title("train loss")
    val = [(r["epoch"], r["val"]) for r in records if r.get("val")]
    keys = [k for k, x in val[0][1].items() if isinstance(x, (int, float)) and not isinstance(x, bool)] if val else []
    for key, marker in zip(keys, "os^vD<>p*h"):
        axes[1].plot([e for e, v in val if key in v], [v[key] for _, v in val if key in v], f"{marker}-", ms=3,
                     label=key)
    if keys:
        axes[1].set_ylim(0, 1)
        axes[1].legend()
    axes[1].set_title("validation")
    axes[2].plot(epochs, [r.get("lr") for r in records], "-")
    axes[2].set_title("learning rate")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
