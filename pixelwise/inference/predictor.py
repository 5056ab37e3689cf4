"""Predictor: a saved model directory (or exported ONNX file) -> the task's Prediction for numpy images of
any size. One path for every task: precision and the fast path, tiles, TTA and the CRF are the same code
whether the model is semantic, panoptic or multi-label; only the last step, `task.decode`, differs.

    pred = Predictor.from_dir("runs/camvid/best").predict(image)   # uint8 (H,W,3) -> Prediction
    pred.semantic  # int64 (H,W);  pred.probs  # float32 (C,H,W) when asked for
    Predictor.from_dir(d, precision="auto", tile=1024, overlap=0.25, tta="flip", task="instance")

The model's own preprocessing (mean/std, optional resize of the shorter side, and for a multi-band model
its band record: which raw bands, which derived indices, the divisor; `pixelwise.data.bands`) comes from
its config.json. A multi-band model takes raw (H, W, B) arrays of any real dtype; every other takes uint8
RGB (grey and RGBA are converted). `display(image)` is the RGB picture overlays are drawn on.
outputs are resized back to the input size before decoding. The task is the model's own (config.json
"task") unless `task` names another that reads it (e.g. "instance" for a panoptic model, "panoptic" for a
semantic one); an inference option the task cannot honour is an error.

Speed: the model runs through the fast path of `pixelwise.inference.fastpath` (batch norm folded, ASPP
without copies, channels_last, weights cast to the precision, convolutions as prepacked oneDNN calls).
precision="auto" picks bf16 on CUDA; on a CPU with bf16 instructions it times the model in fp32 and bf16
and keeps the faster (`pixelwise.inference.autoprecision`: bf16 must win by 5%; decisions cached), fp32
elsewhere (and the model directory's int8 graph, when `pixelwise export MODEL_DIR --int8` wrote one); before
a low-precision model is used, its argmax is compared with the fp32 model's on CHECK_IMAGES images of the
model's own training set (config.json "dataset", when it is readable here; else a synthetic scene: a
synthetic scene is far from most models' data: it has failed bf16 for a CamVid model that agrees with fp32
on CamVid's own images, benchmarks/RESULTS.md), and below `MIN_AGREEMENT` of the pixels "auto" falls back to fp32
(a warning says so; an explicit "bf16"/"fp16" is kept, with the same warning); agreement is the task's
(argmax, or each class's yes/no for multi-label). Size: with `tile`, images
larger than a tile run as overlapping tiles (`pixelwise.inference.sliding`), with memory bounded by one
row of tiles (pointwise tasks decode band by band); `tta` adds flips and scales (`pixelwise.inference.tta`)
inside each tile; `crf` refines the class scores ("out") with the dense CRF before decoding.
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pixelwise.constants import IMAGENET_MEAN, IMAGENET_STD
from pixelwise.data.bands import BandSpec
from pixelwise.data.io import label_dtype
from pixelwise.data.transforms import normalize_image
from pixelwise.data.formats import spread_images
from pixelwise.errors import ConfigError, PixelwiseError
from pixelwise.hardware import release_freed_memory
from pixelwise.inference import sliding
from pixelwise.inference.fastpath import fold_batchnorm, prepare_model
from pixelwise.inference.tta import parse_tta, resize_outputs, spell_tta, with_tta
from pixelwise.modeldir import training_set
from pixelwise.precision import DTYPES, resolve_precision
from pixelwise.tasks import Prediction, TaskBase, task_for_model

MIN_AGREEMENT = 0.995  # low precision is trusted when its answer matches fp32's on this share of pixels
CALIBRATION_SIZE = 256
STORED = "stored"  # tta / crf: the model's own setting (config.json "inference"), none where it stores none
CRF_PRESETS = ("default", "deeplab_v1", "deeplab_v2")
ONE_PASS_PIXELS = 4096 * 4096  # an image larger than this, given no tile size, runs as AUTO_TILE-px tiles
AUTO_TILE = 1024
# precision="auto" times at the tile size up to this: a 1024-px fp32 timing call alone would need more
# memory than the whole tiled prediction that follows, and the fp32/bf16 ratio changes little above it
TIMING_SIZE_MAX = 512
Outputs = dict[str, torch.Tensor]
log = logging.getLogger("pixelwise.inference")


def as_rgb(image, source: str = "image") -> np.ndarray:
    """Accept uint8 (H,W,3), (H,W) grey or (H,W,4) RGBA; return uint8 (H,W,3) or raise naming the source."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise PixelwiseError(f"{source}: expected a uint8 image, got dtype {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise PixelwiseError(f"{source}: expected an HxWx3 image, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise PixelwiseError(f"{source}: image has zero size")
    return np.ascontiguousarray(image[..., :3])


def resolve_crf(crf):
    """None / 'none' -> None; a preset name or a CRFConfig -> CRFConfig (pixelwise.postprocess.crf)."""
    if crf is None or crf == "none":
        return None
    from pixelwise.postprocess.crf import CRFConfig

    if isinstance(crf, CRFConfig):
        return crf
    if crf == "default":
        return CRFConfig()
    if crf in ("deeplab_v1", "deeplab_v2"):
        return getattr(CRFConfig, crf)()
    raise PixelwiseError(f"crf '{crf}': expected none, {', '.join(CRF_PRESETS)} or a CRFConfig")


def calibration_image(size: int = CALIBRATION_SIZE) -> np.ndarray:
    """A deterministic synthetic street scene, uint8 (size, size, 3)."""
    from pixelwise.data.synthetic import make_scene

    return make_scene(seed=0, size=size).image


CHECK_IMAGES = 2  # training images the low-precision agreement check reads, when the model names its set


def resize_shorter(x: torch.Tensor, shorter: int) -> tuple[torch.Tensor, float]:
    """(N, C, H, W) -> the same with its shorter side `shorter` (bilinear, antialiased when shrinking, as the
    training preset's Resize(antialias=True) is), and the scale."""
    h, w = x.shape[-2:]
    scale = shorter / min(h, w)
    return torch.nn.functional.interpolate(x.float(), size=(round(h * scale), round(w * scale)), mode="bilinear",
                                           align_corners=False, antialias=scale < 1), scale


def training_images(config: dict, count: int = CHECK_IMAGES) -> tuple[list[np.ndarray], str | None]:
    """`count` RGB images (uint8 (H, W, 3), evenly spaced) of the training split the model's config.json
    names, and its spec; ([], None) when it names none or the set cannot be read here (the model moved to
    another machine): the caller then uses the synthetic scene."""
    trained = training_set(config)
    if trained is None:
        return [], None
    try:
        images = spread_images(*trained, count)
    except Exception as exc:  # noqa: BLE001 - unreadable here: the synthetic scene checks instead
        log.info("%s: not readable for the precision check (%s); using the synthetic scene", trained[0], exc)
        return [], None
    images = [im for im in images if im.ndim == 3 and im.shape[2] == 3 and im.dtype == np.uint8]
    return images, (trained[0] if images else None)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_for_inference(directory: str | Path):
    """(model, config.json dict) of a model directory, a run directory (its best/) or an exported .onnx
    file (an OnnxModel)."""
    if str(directory).endswith(".onnx"):
        from pixelwise.inference.onnx import OnnxModel

        model = OnnxModel(directory)
        return model, model.config
    from pixelwise.modeldir import load_model

    model = load_model(directory, device="cpu")
    return model, model.pixelwise_config


def _int8_candidate(path: Path | None):
    """The int8 graph of a model directory as an OnnxModel, when there is one that was kept and
    onnxruntime is installed (else None: "auto" then times the torch precisions only)."""
    if path is None or not path.is_file():
        return None
    import importlib

    try:
        importlib.import_module("onnxruntime")
    except ImportError:
        log.info("%s: onnxruntime is not installed, so precision auto leaves the int8 graph out", path)
        return None
    from pixelwise.inference.onnx import OnnxModel

    model = OnnxModel(path)
    return model if (model.config.get("int8") or {}).get("kept") else None


def _as_dict(out) -> Outputs:
    """A model's output as a dict of float32 maps: a plain tensor is {"out": logits}."""
    out = out if isinstance(out, dict) else {"out": out}
    return {k: v.float() for k, v in out.items()}


@dataclass
class VideoFrame:
    """One predicted video frame: its index in the source, the decoded image, the task's Prediction."""

    index: int
    image: np.ndarray
    prediction: Prediction


class Predictor:
    """Runs a segmentation model on images. Build it with `Predictor.from_dir(directory)`.

    model: an nn.Module (its fast-path copy is what runs; the module given is left as it is, but for a
    mask-classification model's `query_outputs` flag, set to whether the task reads its queries) or a
    `pixelwise.inference.onnx.OnnxModel`. config: the model's config.json (classes, palette,
    preprocessing, task). tile: None or the tile size in input-image pixels (with a config `resize`,
    tiles are resized with the image); overlap: fraction of a tile; tta: None, "flip", scales or a mix
    (see `parse_tta`), or STORED (the default: the model's stored setting, config.json "inference", which
    `pixelwise tune` and a recipe's `infer:` section write; none when it stores none); blend: "gaussian"
    or "linear"; tile_batch: tiles per forward call (None: as many as make about a megapixel, at least
    one); crf: None, a preset / CRFConfig or STORED; task: None (the model's
    own), a task name or a Task object; task_options: the task's options (e.g. {"method": "watershed"});
    fastpath=False runs the module itself in fp32 (validation during training).
    """

    def __init__(self, model, config: dict, device: str | torch.device = "cpu", precision: str = "fp32",
                 tile: int | None = None, overlap: float = 0.25, tta=STORED, blend: str = "gaussian",
                 tile_batch: int | None = None, calibrate: bool = True, crf=STORED, task=None,
                 task_options: dict | None = None, fastpath: bool = True, int8_graph: str | Path | None = None):
        self.device = torch.device(device)
        self.config = config
        if isinstance(task, TaskBase):
            self.task = task
        else:
            self.task = task_for_model(config, task, task_options, defaults=getattr(model, "postprocess", None))
        self.requested_precision = precision
        self.precision = resolve_precision(precision, self.device) if fastpath else "fp32"
        pre = config.get("preprocessing", {})
        self.spec = BandSpec.from_dict(pre.get("bands"))
        self.mean, self.std = pre.get("mean", IMAGENET_MEAN), pre.get("std", IMAGENET_STD)
        self.resize = pre.get("resize")
        if tile is not None and int(tile) < 1:
            raise PixelwiseError(f"tile must be a positive number of pixels, got {tile}")
        if not 0 <= overlap < 1:
            raise PixelwiseError(f"overlap must lie in [0, 1), got {overlap}")
        if blend not in sliding.BLENDS:
            raise PixelwiseError(f"blend must be one of {', '.join(sliding.BLENDS)}, got {blend!r}")
        self.tile, self.overlap, self.blend, self.tile_batch = tile and int(tile), float(overlap), blend, tile_batch
        # a mask-classification model (Mask2Former) gives its per-query outputs only to a task that decodes them
        self.queries = getattr(model, "query_outputs", None) is not None and self.task.reads_queries
        if isinstance(model, torch.nn.Module) and hasattr(model, "query_outputs"):
            model.query_outputs = self.queries
        tta, crf = self._take_stored(config, tta, crf)
        self.tta, self.crf = parse_tta(tta), resolve_crf(crf)
        self._check_options()
        self.calibration: dict | None = None
        self.auto_choice: dict | None = None
        self.onnx = not isinstance(model, torch.nn.Module)
        self.align = int(getattr(model, "stride", 32) or 32)
        if self.onnx:
            if self.precision != "fp32" and precision != "auto":
                raise PixelwiseError("an ONNX model runs as exported, fp32 or int8 (precision 'auto' or 'fp32')")
            self.precision, self.model = "fp32", model
            if (config.get("int8") or {}).get("kept"):  # `pixelwise export --int8` quantized the graph
                self.precision = "int8"
        elif not fastpath:
            self.model = model
        else:
            folded, _ = fold_batchnorm(model)
            int8 = None
            if precision == "auto" and self.device.type == "cpu":
                int8 = _int8_candidate(int8_graph)
                self.precision = self._measure(folded, int8)
            if self.precision == "int8":  # the model directory's int8 graph won the timing: onnxruntime runs it
                self.onnx, self.model = True, int8
                check = int8.config["int8"]
                self.calibration = {"precision": "int8", "agreement": check["agreement"], "ok": True,
                                    "on": f"{check['check_images']} held-out images of {check['calibration']}"}
            else:
                self.model = self._prepare(folded, calibrate and self.precision != "fp32")
            del folded, int8
            release_freed_memory()  # the timing and calibration copies' activations, not needed again
        self.dtype = DTYPES.get(self.precision, torch.float32)  # an int8 graph takes float32 in
        self._wrap_tta()

    def _wrap_tta(self) -> None:
        self._run = with_tta(self._forward, *self.tta)
        # tiles without TTA hand the model's own dtype (bf16 logits) to the blending accumulator, which
        # widens them as it adds: no float32 copy of each tile's logits beside the bf16 ones
        self._run_tiles = self._run if self._asked()["tta"] else self._forward_raw

    def _check_options(self) -> None:
        """Raise in one line when an option asked for cannot apply: the CRF on a multi-band model, an option
        the task cannot honour, tiles or TTA for a task that decodes a mask-classification model's queries."""
        if self.crf is not None and not self.spec.is_rgb:
            raise PixelwiseError(f"the dense CRF compares RGB colours; this model reads {self.spec.raw_bands} bands "
                                 f"({', '.join(self.spec.names)}): drop crf")
        self.task.check_applies(self._asked())
        if self.queries and (self.tile or self._asked()["tta"]):
            raise PixelwiseError(f"the {self.task.name} task decodes this model's per-query masks over the whole "
                                 "image: tile and tta do not apply (drop them, or read it as --task semantic)")

    def with_options(self, tta=None, crf=None) -> "Predictor":
        """The same prepared model (precision, tiles, task) with another TTA and CRF, none of them stored:
        what `pixelwise.engine.tune` scores candidate by candidate without preparing the model again."""
        import copy

        other = copy.copy(self)
        other.tta, other.crf, other.stored = parse_tta(tta), resolve_crf(crf), {}
        other._check_options()
        other._wrap_tta()
        return other

    def _take_stored(self, config: dict, tta, crf) -> tuple:
        """tta / crf with STORED replaced by the model's stored setting (config.json "inference", written by
        `pixelwise.engine.tune`); a stored option this task cannot honour (tta under a task that decodes a
        mask-classification model's queries, the CRF for a multi-band model) is left out, not an error:
        the user did not ask for it. Which options came from the store is kept in self.stored."""
        setting = config.get("inference") or {}
        usable = {"tta": "tta" in self.task.applies and not self.queries,
                  "crf": "crf" in self.task.applies and self.spec.is_rgb}
        self.stored: dict[str, str] = {}
        taken = []
        for name, given in (("tta", tta), ("crf", crf)):
            if not (isinstance(given, str) and given == STORED):
                taken.append(given)
                continue
            value = setting.get(name)
            if value in (None, "none") or not usable[name]:
                taken.append(None)
                continue
            self.stored[name] = value
            taken.append(value)
        return tuple(taken)

    @classmethod
    def from_dir(cls, directory: str | Path, device: str | None = None, precision: str = "auto",
                 tile: int | None = None, overlap: float = 0.25, tta=STORED, blend: str = "gaussian",
                 tile_batch: int | None = None, crf=STORED, task: str | None = None,
                 task_options: dict | None = None) -> "Predictor":
        """A model directory (config.json + model.safetensors), a run directory (its best/), or an
        exported .onnx file (run with onnxruntime on the CPU)."""
        int8_graph = None
        if not str(directory).endswith(".onnx"):
            from pixelwise.modeldir import int8_graph_path

            int8_graph = int8_graph_path(directory)
            if precision == "int8":  # the model directory's own int8 graph, as `pixelwise export --int8` wrote it
                if not int8_graph.is_file():
                    raise ConfigError(f"{directory}: precision int8 needs the model's int8 graph ({int8_graph.name}); "
                                      f"write it with `pixelwise export {directory} --int8`")
                directory, precision = int8_graph, "auto"
        model, config = load_for_inference(directory)
        device = "cpu" if str(directory).endswith(".onnx") else device or default_device()
        return cls(model, config, device, precision, tile=tile, overlap=overlap, tta=tta, blend=blend,
                   tile_batch=tile_batch, crf=crf, task=task, task_options=task_options,
                   int8_graph=int8_graph if int8_graph is not None and int8_graph.is_file() else None)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, revision: str | None = None, cache_dir: str | Path | None = None,
                        token: str | None = None, **options) -> "Predictor":
        """`from_dir` on a local model directory or a Hugging Face Hub repo id (`pixelwise.hub.snapshot`:
        downloaded and cached); `options` are from_dir's."""
        from pixelwise.hub import snapshot

        return cls.from_dir(snapshot(name_or_path, revision, cache_dir, token), **options)

    def for_task(self, task: str, task_options: dict | None = None) -> "Predictor":
        """The same prepared model read as another task (e.g. "instance" for a panoptic model): a
        Predictor sharing the model, its precision, tiles, TTA and CRF."""
        import copy

        other = copy.copy(self)
        other.task = task_for_model(self.config, task, task_options, defaults=getattr(self.model, "postprocess", None))
        dropped = [name for name in self.stored if name not in other.task.applies]  # stored, not asked for
        if dropped:
            other.stored = {k: v for k, v in self.stored.items() if k not in dropped}
            other.tta = parse_tta(None) if "tta" in dropped else self.tta
            other.crf = None if "crf" in dropped else self.crf
            other._wrap_tta()
        other.task.check_applies(other._asked())
        return other

    def _asked(self) -> dict[str, bool]:
        """Which inference options this Predictor uses (each task says which it can honour)."""
        return {"tile": self.tile is not None, "tta": self.tta != parse_tta(None), "crf": self.crf is not None}

    @property
    def classes(self) -> list[str]:
        return self.task.classes

    @property
    def palette(self) -> list[tuple[int, int, int]]:
        return self.task.palette

    @property
    def num_classes(self) -> int:
        return len(self.task.classes)

    # -- the model -------------------------------------------------------------------------------------

    def _prepare(self, folded: torch.nn.Module, calibrate: bool) -> torch.nn.Module:
        """The fast-path copy of the batch-norm-folded model in self.precision; with `calibrate`, checked
        against fp32 first."""
        low = prepare_model(folded, self.device, DTYPES[self.precision], fold=False)
        if not calibrate:
            return low
        reference = prepare_model(folded, self.device, torch.float32, fold=False, inplace=True)
        inputs, source = self._check_inputs()
        same = total = 0
        with torch.inference_mode():
            for x in inputs:
                ref = self._model_outputs(reference, x, torch.float32)["out"]
                got = self._model_outputs(low, x, DTYPES[self.precision])["out"]
                pixels = ref.shape[0] * ref.shape[-2] * ref.shape[-1]
                same += self.task.agreement(ref, got) * pixels
                total += pixels
        agreement = same / total
        ok = agreement >= MIN_AGREEMENT
        self.calibration = {"precision": self.precision, "agreement": agreement, "ok": ok, "on": source}
        if ok:
            return low
        if self.requested_precision == "auto":
            warnings.warn(f"{self.precision} agreed with fp32 on only {agreement:.2%} of the pixels of {source} "
                          f"(< {MIN_AGREEMENT:.1%}); running in fp32", stacklevel=3)
            self.precision = "fp32"
            return reference
        warnings.warn(f"{self.precision} agrees with fp32 on only {agreement:.2%} of the pixels of {source} "
                      f"(< {MIN_AGREEMENT:.1%}); precision='auto' would fall back to fp32", stacklevel=3)
        return low

    def _measure(self, folded: torch.nn.Module, int8=None) -> str:
        """precision="auto" on a CPU: the fastest precision for the (batch-norm-folded) model here, timed at
        the tile size (at most TIMING_SIZE_MAX; else the calibration size) or read from the cache
        (`pixelwise.inference.autoprecision`); kept in self.auto_choice and said by describe()."""
        from pixelwise.inference.autoprecision import measure
        from pixelwise.inference.probe import input_channels

        size = min(self.tile or CALIBRATION_SIZE, TIMING_SIZE_MAX)
        size = max(self.align, size // self.align * self.align)
        self.auto_choice = measure(lambda dtype: prepare_model(folded, self.device, dtype, fold=False),
                                   getattr(folded, "pixelwise_arch", None), input_channels(folded), size, self.device,
                                   int8=int8)
        return self.auto_choice["chosen"]

    def _check_inputs(self) -> tuple[list[torch.Tensor], str]:
        """The normalised inputs the low-precision agreement check runs, and what they are: CHECK_IMAGES
        images of the model's own training set when config.json names one that is readable here (resized
        as inference resizes them), else the synthetic calibration scene."""
        images, spec = training_images(self.config) if self.spec.is_rgb else ([], None)
        if not images:
            return [self.normalize(self._calibration_input())], "the synthetic calibration scene"
        inputs = [self.normalize(image) for image in images]
        if self.resize:
            inputs = [resize_shorter(x, self.resize)[0] for x in inputs]
        return inputs, f"{len(inputs)} training images of {spec}"

    def _calibration_input(self) -> np.ndarray:
        """The calibration scene as this model's input: uint8 RGB, or for a multi-band model raw bands made
        of its colours (band i from colour i mod 3, at the spec's value range)."""
        rgb = calibration_image()
        if self.spec.is_rgb:
            return rgb
        bands = [rgb[..., i % 3].astype(np.float32) * (self.spec.scale / 255.0) for i in range(self.spec.raw_bands)]
        return np.stack(bands, axis=2)

    # -- images --------------------------------------------------------------------------------------

    def check_image(self, image, source: str = "image") -> np.ndarray:
        """The image as this model reads it: uint8 (H,W,3) RGB (`as_rgb`), or for a multi-band model raw
        (H,W,B) with its B bands; else an error naming `source`."""
        if self.spec.is_rgb:
            return as_rgb(image, source)
        image = np.asarray(image)
        if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
            raise PixelwiseError(f"{source}: expected an array of numbers, got dtype {image.dtype}")
        image = self.spec.check_image(image, source)
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise PixelwiseError(f"{source}: image has zero size")
        return image

    def normalize(self, image: np.ndarray) -> torch.Tensor:
        """A checked image -> the model's normalized input (1, C, H, W) float32."""
        return normalize_image(image, self.mean, self.std, self.spec)

    def display(self, image: np.ndarray) -> np.ndarray:
        """uint8 (H,W,3) RGB of an image for overlays: itself, or a multi-band image's RGB composite."""
        return as_rgb(image) if self.spec.is_rgb else self.spec.composite(self.check_image(image))

    def _model_outputs(self, model, x: torch.Tensor, dtype: torch.dtype, widen: bool = True) -> Outputs:
        """Normalized (N,C,H,W) -> the model's outputs as a dict of float32 maps on self.device (widen=False:
        left in the model's dtype, bf16 under a bf16 fast path)."""
        if self.onnx:
            return _as_dict(model(x.float().cpu()))
        out = model(x.to(self.device, dtype).contiguous(memory_format=torch.channels_last))
        return _as_dict(out) if widen else (out if isinstance(out, dict) else {"out": out})

    def _forward(self, x: torch.Tensor) -> Outputs:
        return self._model_outputs(self.model, x, self.dtype)

    def _forward_raw(self, x: torch.Tensor) -> Outputs:
        return self._model_outputs(self.model, x, self.dtype, widen=False)

    # -- images of any size ----------------------------------------------------------------------------

    def _tile_for(self, h: int, w: int) -> int | None:
        """The tile size for an (h, w) input image: `tile`, or for an image past ONE_PASS_PIXELS that was
        given none, AUTO_TILE (one pass over a 12000 x 12000 image needs tens of GB), said in a warning."""
        if self.tile is None and h * w > ONE_PASS_PIXELS:
            warnings.warn(f"a {w}x{h} image is too large for one pass (over {ONE_PASS_PIXELS} pixels): it runs as "
                          f"{AUTO_TILE}-px tiles; set tile= (--tile) to choose", stacklevel=4)
            return AUTO_TILE
        return self.tile

    def _tiled(self, h: int, w: int) -> bool:
        """Whether an (h, w) input image runs as tiles (it is larger than one tile)."""
        tile = self._tile_for(h, w)
        return tile is not None and max(h, w) > tile

    def _streams(self, h: int, w: int) -> bool:
        """Whether an (h, w) image is decoded band by band: tiled, a pointwise task, nothing that needs the
        whole image at once (a resize, the CRF)."""
        return self._tiled(h, w) and self.task.pointwise and not self.resize and self.crf is None

    def _grid(self, h: int, w: int, tile: int, scale: float = 1.0) -> sliding.TileGrid:
        """Tiles over an (h, w) model-space image; `tile` counts input pixels, so with a config `resize`
        (model space = input x scale) a tile covers tile * scale model pixels."""
        return sliding.make_grid(h, w, max(1, round(tile * scale)), self.overlap, self.align)

    def _tile_batch(self, grid: sliding.TileGrid) -> int:
        # Tiles per call: a batch of small tiles keeps the cores busy; one 1024-px tile already does, and
        # a second one would add its activations and logits (~370 MB at 21 classes) to the peak memory.
        return self.tile_batch or max(1, 2**20 // (grid.tile_h * grid.tile_w))

    @torch.inference_mode()
    def outputs(self, images: torch.Tensor) -> Outputs:
        """Normalized images (N,C,H,W) -> the model's outputs at (H, W), float32: {"out": logits (N,C,H,W)}
        and, for panoptic models, "center" and "offset"; tiled and TTA'd as configured, CRF-refined "out"
        (log-probabilities) when a CRF is set."""
        h, w = images.shape[-2:]
        x, scale = images, 1.0
        if self.resize:
            x, scale = resize_shorter(x, self.resize)
        if self._tiled(h, w):
            if self.queries:
                raise PixelwiseError(f"a {w}x{h} image is too large for one pass, and the {self.task.name} task "
                                     "decodes this model's per-query masks over the whole image; read it as "
                                     "--task semantic (tiled), or resize it")
            grid = self._grid(*x.shape[-2:], self._tile_for(h, w), scale)
            parts = [sliding.stitch(self._run_tiles, sliding.tensor_fetcher(img.float().cpu()), grid, self.blend,
                                    self._tile_batch(grid)) for img in x]
            out = {k: parts[0][k][None] if len(parts) == 1 else torch.stack([p[k] for p in parts]) for k in parts[0]}
        else:
            out = self._run(x)
        if tuple(x.shape[-2:]) != (h, w):
            out = resize_outputs(out, (h, w), x.shape[-2] / h)
        out = {k: v.to(self.device) for k, v in out.items()}
        if self.crf is not None:
            out["out"] = self._refine(out["out"], images)
        return out

    def _refine(self, logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """The dense CRF on logits (N,C,H,W) -> log-probabilities; it sees the images un-normalized."""
        from pixelwise.postprocess.crf import crf_refine_logits

        mean = torch.tensor(self.mean, device=logits.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=logits.device).view(1, -1, 1, 1)
        raw = ((images.to(logits.device).float() * std + mean) * 255).clamp_(0, 255)
        return crf_refine_logits(logits, raw, self.crf)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Normalized images (N,C,H,W) -> float32 class scores "out" (N,C,H,W) at the same size, on
        self.device (log-probabilities refined by the CRF when one is set)."""
        return self.outputs(images)["out"]

    def image_outputs(self, image: np.ndarray) -> Outputs:
        """uint8 (H,W,3) (or a multi-band model's raw bands) -> the outputs of `outputs` for that one image,
        batch dim dropped: {"out" (C,H,W), ...}."""
        out = self.outputs(self.normalize(self.check_image(image)))
        return {k: v[0] for k, v in out.items()}

    def predict(self, image, return_probs: bool = False) -> Prediction:
        """uint8 (H,W,3) image -> the task's Prediction (semantic int64 (H,W), ...; probs (C,H,W) if asked)."""
        image = self.check_image(image)
        if self._streams(*image.shape[:2]) and not return_probs:
            return Prediction.cat_rows([pred for _, _, pred in self.iter_rows(image)])
        return self.task.decode(self.image_outputs(image), probs=return_probs)

    def predict_video(self, source, batch: int | None = None, every: int = 1, smooth: float = 0.0) -> Iterator[VideoFrame]:
        """Per-frame predictions of a video, in order: `source` is a video file, stream URL or camera index
        (decoded by `pixelwise.inference.video.VideoSource`, PyAV), an open VideoSource, or any iterable of
        uint8 (H,W,3) frames. Yields VideoFrame(index, image, prediction) for every `every`-th frame.

        batch: frames per forward call (default 4; 1 for live input, where waiting for a batch adds
        latency). smooth: 0 (off, default) or the momentum m in [0, 1) of an exponential moving average of
        class probabilities across the predicted frames, p_t = m p_(t-1) + (1 - m) p(frame t), decoded as
        the task decodes scores (softmax for exclusive classes, sigmoid for multi-label)."""
        from pixelwise.inference.video import VideoSource

        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise PixelwiseError(f"every must be a positive whole number of frames, got {every!r}")
        if not 0 <= float(smooth) < 1:
            raise PixelwiseError(f"smooth must lie in [0, 1) (the weight of the previous frames), got {smooth!r}")
        own = isinstance(source, (str, int, Path))
        video = VideoSource(str(source)) if own else source
        if batch is None:
            batch = 1 if getattr(video, "live", False) else 4
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise PixelwiseError(f"batch must be a positive number of frames, got {batch!r}")
        state: list[torch.Tensor | None] = [None]

        def run(pending) -> list[VideoFrame]:
            done = []
            with torch.inference_mode():  # not across a yield: the caller's code runs outside it
                out = self.outputs(torch.cat([self.normalize(image) for _, image in pending]))
                for j, (index, image) in enumerate(pending):
                    one = {k: v[j] for k, v in out.items()}
                    if smooth:
                        p = self.task.probabilities(one["out"])
                        state[0] = p if state[0] is None else smooth * state[0] + (1 - smooth) * p
                        one["out"] = self.task.scores(state[0])
                    done.append(VideoFrame(index, image, self.task.decode(one)))
            return done

        try:
            pending: list[tuple[int, np.ndarray]] = []
            for index, frame in enumerate(video):
                if index % every:
                    continue
                image = self.check_image(frame, f"frame {index}")
                if pending and image.shape != pending[0][1].shape:  # a stream that changes size mid-way
                    yield from run(pending)
                    pending = []
                pending.append((index, image))
                if len(pending) == batch:
                    yield from run(pending)
                    pending = []
            if pending:
                yield from run(pending)
        finally:
            if own:
                video.close()

    @torch.inference_mode()
    def iter_rows(self, image: np.ndarray) -> Iterator[tuple[int, int, Prediction]]:
        """uint8 (H,W,3) -> (y0, y1, Prediction of rows y0..y1), top to bottom: a huge image's answer band by
        band, never holding more than one row of tiles' outputs (one band, the whole image, when it is not
        tiled or the task needs the whole image to decode)."""
        image = self.check_image(image)
        h, w = image.shape[:2]
        if not self._streams(h, w):
            yield 0, h, self.task.decode(self.image_outputs(image))
            return
        for y0, y1, band in self.tile_bands(image, self._tile_for(h, w)):
            yield y0, y1, self.task.decode(band)

    def tile_bands(self, image, tile: int) -> Iterator[tuple[int, int, sliding.Output]]:
        """(y0, y1, outputs of rows y0..y1) of `image` tiled at `tile` px, top to bottom: the blended model
        outputs ((C, y1 - y0, W) logits, or a dict of maps) band by band, before the task decodes them. `image`
        is an (H, W, B) array already checked (`check_image`), or anything sliced as one (`image[y0:y1, x0:x1]`
        and `.shape`), such as a raster read window by window (pixelwise.inference.geotiff)."""
        h, w = image.shape[:2]
        fetch = (sliding.uint8_fetcher(image, self.mean, self.std) if self.spec.is_rgb
                 else sliding.array_fetcher(image, lambda crop: self.normalize(crop)[0]))
        grid = self._grid(h, w, tile)
        return sliding.iter_bands(self._run_tiles, fetch, grid, self.blend, self._tile_batch(grid))

    def labels(self, image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """uint8 (H,W,3) -> the semantic label map (H,W) as uint8 (int32 past 256 classes), written into `out`
        when given (e.g. an np.memmap). Tiled images are decoded band by band."""
        image = self.check_image(image)
        if out is None:
            out = np.empty(image.shape[:2], label_dtype(self.num_classes))
        for y0, y1, band in self.iter_rows(image):
            if band.semantic is None:
                raise PixelwiseError(f"labels(): the {self.task.name} task gives no single label map; use predict()")
            out[y0:y1] = band.semantic
        return out

    def describe(self) -> str:
        """One line: task, backend, device, precision (and its calibration), tiling, TTA, CRF."""
        backend = "onnxruntime" if self.onnx else "torch"
        cal = (f" (agreement with fp32 {self.calibration['agreement']:.2%} on {self.calibration['on']})"
               if self.calibration else "")
        choice = self.auto_choice
        if choice and choice.get("ms"):
            timed = ", ".join(f"{k} {v:.1f} ms" for k, v in choice["ms"].items())
            cal += f" [auto: {timed} at {choice['size']}px{', cached' if choice.get('cached') else ''}]"
        tile = f", tile {self.tile} overlap {self.overlap:g} {self.blend}" if self.tile else ""
        stored = " (the model's stored setting)"
        tta = f", TTA {spell_tta(*self.tta)}" if self._asked()["tta"] else ""
        tta += stored if "tta" in self.stored else ""
        crf = ", dense CRF" if self.crf is not None else ""
        crf += stored if "crf" in self.stored else ""
        return f"{self.task.name} task, {backend} on {self.device}, {self.precision}{cal}{tile}{tta}{crf}"
