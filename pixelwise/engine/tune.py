"""The inference setting a model directory stores: test-time augmentation and the dense CRF, chosen on val.

Every pair of a TTA candidate and a CRF candidate runs the saved model the way `pixelwise predict` runs it
(the Predictor: fast path, precision "auto", prepared once and shared by the candidates), on the same val
images, scored by the task's full metric at its `best_key` (mIoU for semantic models, PQ for panoptic).
The plain pass (no TTA, no CRF) is always among them: it is what every gain is measured against. Kept:
the cheapest candidate (median ms per image, model run and decoding, timed in the same pass) whose score
lies within `min_gain` of the best, so an augmentation that gains less than `min_gain` is not paid for.
The choice and every candidate's score and cost go to config.json "inference"
(`pixelwise.modeldir.store_inference`); predict, eval and serve use it unless told otherwise (`--tta none`,
`--crf none`).

The U-Net paper (Ronneberger et al., arXiv 1505.04597) averages the 8 flips and rotations on EM slices
("d4" here); DeepLab (arXiv 1606.00915) scores multi-scale inputs with flips and a dense CRF. Which of them
pays for a given model is a measurement, not a rule: this module makes it.

The ms figures depend on the machine (config.json "inference.tuned" names the CPU and the precision);
the choice is made once, where the model was trained or tuned.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

from pixelwise.errors import ConfigError, PixelwiseError
from pixelwise.inference.predictor import CRF_PRESETS, Predictor
from pixelwise.inference.tta import parse_tta, spell_tta
from pixelwise.modeldir import store_inference

BASELINE = ("none", "none")


def check_candidates(ttas, crfs, key: str = "infer") -> tuple[list[str], list[str]]:
    """The candidates as normalised spellings, the plain pass first; an unreadable one is an error naming
    `key`.tta / `key`.crf (checked before training starts, so a typo does not cost a run)."""
    out_tta = []
    for item in ttas:
        try:
            out_tta.append(spell_tta(*parse_tta(item)))
        except PixelwiseError as exc:
            raise ConfigError(f"config key '{key}.tta': {exc}") from None
    out_crf = []
    for item in crfs:
        name = str(item).strip().lower()
        if name not in ("none", *CRF_PRESETS):
            raise ConfigError(f"config key '{key}.crf': {item!r} is not one of none, {', '.join(CRF_PRESETS)}")
        out_crf.append(name)
    return list(dict.fromkeys(["none", *out_tta])), list(dict.fromkeys(["none", *out_crf]))


def wants_tuning(ttas, crfs) -> bool:
    """Whether the candidates hold anything beside the plain pass."""
    t, c = check_candidates(ttas, crfs)
    return len(t) * len(c) > 1


def choose(rows: list[dict], min_gain: float) -> dict:
    """The cheapest scored row whose score is within `min_gain` of the best score (ties: the plain pass)."""
    scored = [r for r in rows if r.get("score") is not None]
    best = max(r["score"] for r in scored)
    near = [r for r in scored if r["score"] >= best - min_gain]
    return min(near, key=lambda r: ((r["tta"], r["crf"]) != BASELINE, r["ms"]))


def spread(n: int, count: int | None) -> list[int]:
    """`count` indices evenly spread over range(n) (all of them when count is None or >= n)."""
    if count is None or count >= n:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, count).round().astype(int).tolist()))


def score_candidate(predictor, samples: list, best_key: str) -> tuple[float, float]:
    """(score, median ms per image) of one Predictor over pre-read samples."""
    metric = predictor.task.metric(True)
    times = []
    for sample in samples:
        t0 = time.perf_counter()
        pred = predictor.predict(sample.image)
        times.append((time.perf_counter() - t0) * 1000)
        metric.update(pred, predictor.task.truth(sample))
    return float(metric.compute()[best_key]), statistics.median(times)


def tune(model_dir: str | Path, dataset, ttas=("none",), crfs=("none",), min_gain: float = 0.002,
         images: int | None = None, device: str | None = None, store: bool = True, log=print) -> dict:
    """Score every (tta, crf) candidate of a model directory on `dataset` (a SegmentationDataset: the
    val split) and, with `store`, write the choice into its config.json. Returns {"tta", "crf", "metric",
    "score", "baseline", "gain", "ms", "baseline_ms", "candidates": [{tta, crf, score, ms} or {tta, crf,
    skipped}], ...}; `log` gets one line per candidate."""
    ttas, crfs = check_candidates(ttas, crfs)
    base = Predictor.from_dir(model_dir, device=device, tta=None, crf=None)
    base.task.check_dataset(dataset)
    indices = spread(len(dataset), images)
    if not indices:
        raise PixelwiseError(f"{dataset.name}: no images to tune the inference setting on")
    samples = [dataset[i] for i in indices]
    key = base.task.best_key
    rows = []
    for tta in ttas:
        for crf in crfs:
            row = {"tta": tta, "crf": crf}
            try:
                predictor = base.with_options(tta=tta, crf=crf)
            except PixelwiseError as exc:
                rows.append({**row, "skipped": str(exc)})
                log(f"  tta {tta:<18} crf {crf:<10} skipped: {exc}")
                continue
            with torch.inference_mode():
                score, ms = score_candidate(predictor, samples, key)
            rows.append({**row, "score": round(score, 5), "ms": round(ms, 1)})
            log(f"  tta {tta:<18} crf {crf:<10} {key} {score:.4f}  {ms:8.1f} ms/image")
    baseline = next(r for r in rows if (r["tta"], r["crf"]) == BASELINE)
    pick = choose(rows, min_gain)
    from pixelwise.hardware import describe_cpu

    result = {"tta": pick["tta"], "crf": pick["crf"], "metric": key, "score": pick["score"],
              "baseline": baseline["score"], "gain": round(pick["score"] - baseline["score"], 5),
              "ms": pick["ms"], "baseline_ms": baseline["ms"], "min_gain": min_gain,
              "dataset": dataset.name, "images": len(samples), "precision": base.precision,
              "cpu": describe_cpu(), "torch": torch.__version__, "candidates": rows}
    if store:
        store_inference(model_dir, {"tta": result["tta"], "crf": result["crf"],
                                    "tuned": {k: v for k, v in result.items() if k not in ("tta", "crf")}})
    return result


def summary(result: dict) -> str:
    """One line: what was stored, its gain over the plain pass and its cost."""
    key = "mIoU" if result["metric"] == "miou" else result["metric"].upper()
    if (result["tta"], result["crf"]) == BASELINE:
        best = max((r for r in result["candidates"] if r.get("score") is not None), key=lambda r: r["score"])
        if (best["tta"], best["crf"]) == BASELINE:
            return (f"inference setting: plain pass kept ({key} {result['baseline']:.4f}, "
                    f"{result['baseline_ms']:.0f} ms/image; no candidate scored higher)")
        return (f"inference setting: plain pass kept ({key} {result['baseline']:.4f}, {result['baseline_ms']:.0f} "
                f"ms/image; the best candidate, tta {best['tta']} crf {best['crf']}, gained "
                f"{best['score'] - result['baseline']:+.4f} < {result['min_gain']:g})")
    return (f"inference setting: tta {result['tta']}, crf {result['crf']}: {key} {result['score']:.4f} vs "
            f"{result['baseline']:.4f} plain ({result['gain']:+.4f}), {result['ms']:.0f} vs "
            f"{result['baseline_ms']:.0f} ms/image on {result['images']} images of {result['dataset']}")
