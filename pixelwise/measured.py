"""Decisions measured on this machine, kept so a second run does not pay for them again.

"auto" choices (the inference precision, the training precision) are made by timing the candidates on
the machine at hand, never from CPU flags alone. A decision depends on the model, the input size, the
CPU, the torch version and the thread count, so those make its key (`key`); the decisions live in one
JSON file, `$PIXELWISE_CACHE_DIR/precision.json` (default `~/.cache/pixelwise`), written atomically.
PIXELWISE_PRECISION_CACHE=off measures every time. A missing or damaged file is started afresh, and a
read-only home is not an error (the decision is simply not kept).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from pixelwise.hardware import describe_cpu

log = logging.getLogger("pixelwise")


def cache_path() -> Path | None:
    """The decisions file, or None when caching is off."""
    if os.environ.get("PIXELWISE_PRECISION_CACHE", "").lower() in ("off", "0", "false", "no"):
        return None
    root = os.environ.get("PIXELWISE_CACHE_DIR") or Path.home() / ".cache" / "pixelwise"
    return Path(root) / "precision.json"


def key(**fields) -> str:
    """The cache key of a decision: the caller's fields (what, model, sizes) plus this machine's CPU
    model, torch version and thread count (describe_cpu)."""
    return json.dumps({**fields, "cpu": describe_cpu(), "torch": torch.__version__}, sort_keys=True, default=str)


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):  # missing or damaged: start afresh
        return {}


def lookup(name: str) -> dict | None:
    """The decision kept under `name` (a `key`), or None."""
    path = cache_path()
    if path is None:
        return None
    hit = _read(path).get(name)
    return hit if isinstance(hit, dict) else None


def store(name: str, decision: dict) -> None:
    """Keep one decision under `name`, atomically."""
    path = cache_path()
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read(path)
        data[name] = decision
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)
    except OSError as exc:
        log.info("measured decision not kept (%s): %s", path, exc)
