"""int8 for CPUs without bf16 units: post-training static quantization of the exported ONNX graph.

    report = quantize_model("runs/camvid/best", "model.int8.onnx", calibration="camvid:../shared/data/camvid")
    Predictor.from_dir("model.int8.onnx").predict(image)          # onnxruntime runs the int8 graph
    quantize_model("runs/camvid/best")                             # into the model directory (model.int8.onnx):
    Predictor.from_dir("runs/camvid/best", precision="auto")       # then an "auto" candidate, timed

The model is exported as for `pixelwise export` (normalisation inside the graph), then quantized by
onnxruntime's static quantization (QDQ format): weights int8 per output channel, activations uint8 with
ranges from CALIBRATION_IMAGES images of the training set (or the images given), clipped at the 99.99th
percentile (plain min/max ranges, widened by a few outliers, agreed less with fp32 on the CamVid model);
the layers that produce the outputs (the last convolution or matrix product before each graph output)
stay in float, as the logits should not be rounded to 256 levels. The int8 graph is then checked against
the fp32 graph on other images of the same set: below MIN_AGREEMENT argmax agreement it is not kept, the
fp32 graph is written instead, and one line says so. onnxruntime runs the uint8 x int8 convolutions with
the CPU's VNNI instructions where it has them (AVX-512 VNNI, AVX-VNNI), which CPUs without bf16 often do.
Without VNNI (AVX2 only) its uint8 x int8 products go through 16-bit sums that can saturate: on such a CPU
here a CamVid model's 8-bit graph agreed with fp32 on only 83% of the pixels. So the check decides, not a
flag: when the 8-bit-weight graph falls below the bar, the graph is quantized again with 7-bit weights
(onnxruntime's reduce_range, which keeps those sums in range) and the better of the two is kept.

RGB models only: a multi-band model's graph takes its channels as floats whose calibration set would be
its own rasters, which this module does not read yet.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from pixelwise.errors import ConfigError, PixelwiseError
from pixelwise.export import export_onnx
from pixelwise.data.formats import spread_images
from pixelwise.inference.onnx import META_KEY, session as onnx_session
from pixelwise.inference.predictor import resize_shorter
from pixelwise.modeldir import int8_graph_path, training_set

CALIBRATION_IMAGES = 16
CHECK_IMAGES = 8
CALIBRATION_PERCENTILE = 99.99  # activation ranges: this percentile of |x| over the calibration images
MIN_AGREEMENT = 0.99
PRODUCERS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def calibration_arrays(spec: str, count: int, skip: int = 0, resize: int | None = None,
                       split: str = "train") -> list[np.ndarray]:
    """`count` images of a dataset split (evenly spaced, after `skip` of the same spacing are left for other
    uses) as float32 (1, 3, H, W) in 0..255, resized to the model's shorter side when it has one."""
    try:
        images = spread_images(spec, split, count, skip)
    except PixelwiseError as exc:
        raise ConfigError(f"calibration images '{spec}' [{split}]: {exc}") from None
    if not images:
        raise ConfigError(f"calibration images '{spec}' [{split}]: the split has no images")
    out = []
    for i, image in enumerate(images):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ConfigError(f"calibration images '{spec}': int8 calibration reads RGB images; image {i} of "
                              f"those picked has shape {image.shape}")
        x = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)[None].float()
        out.append((resize_shorter(x, resize)[0] if resize else x).numpy())
    return out


def output_producers(model) -> list[str]:
    """Names of the nodes that compute the graph outputs: walking back from each output through shape and
    elementwise ops to the first convolution / matrix product."""
    by_output = {o: node for node in model.graph.node for o in node.output}
    found, seen = [], set()
    stack = [o.name for o in model.graph.output]
    while stack:
        name = stack.pop()
        node = by_output.get(name)
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type in PRODUCERS:
            found.append(node.name)
        else:
            stack.extend(node.input)
    return found


def _reader(arrays: list[np.ndarray]):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(arrays)

        def get_next(self):
            x = next(self.items, None)
            return None if x is None else {"image": x}

    return Reader()


def agreement(fp32_path: Path, int8_path: Path, arrays: list[np.ndarray]) -> float:
    """Share of pixels whose argmax (of the first output, the class scores) is the same in both graphs."""
    a, b = onnx_session(fp32_path, torch.get_num_threads()), onnx_session(int8_path, torch.get_num_threads())
    same = total = 0
    for x in arrays:
        la, lb = a.run(None, {"image": x})[0].argmax(1), b.run(None, {"image": x})[0].argmax(1)
        same += int((la == lb).sum())
        total += la.size
    return same / max(1, total)


def quantize_model(model_dir: str | Path, path: str | Path | None = None, calibration: str | None = None,
                   images: int = CALIBRATION_IMAGES, check_images: int = CHECK_IMAGES,
                   min_agreement: float | None = None) -> dict:
    """Write the int8 graph of a model directory to `path` (or, when it disagrees with fp32, the fp32 graph);
    path None: into the model directory (`pixelwise.modeldir.INT8_NAME`), where precision "auto" finds it (and where a graph
    that disagrees is not written at all: "auto" has fp32 already).
    calibration: a dataset spec ("camvid:DIR", "images:DIR", ...) whose train split calibrates; None: the
    model's own training set. min_agreement: the bar (default MIN_AGREEMENT; 0 keeps the int8 graph whatever
    it agrees, for measuring it). Returns {"path", "precision" ("int8" | "fp32"), "agreement", "excluded",
    "calibration", "images", "check_images", "message"}."""
    try:
        import onnx
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise PixelwiseError("int8 quantization needs onnx and onnxruntime: pip install 'pixelwise[export]'") from None
    from pixelwise.modeldir import read_model_config

    config = read_model_config(model_dir)
    pre = config.get("preprocessing") or {}
    if pre.get("bands"):
        raise ConfigError(f"{model_dir}: int8 quantization reads RGB calibration images; this model takes "
                          f"{len(pre.get('mean', []))} channels (multi-band models run in fp32 or bf16)")
    trained = training_set(config)
    spec = calibration or (trained[0] if trained else None)
    if spec is None:
        raise ConfigError(f"{model_dir}: config.json names no training set to calibrate on; pass calibration "
                          "images (--calibration FORMAT:PATH)")
    split = trained[1] if calibration is None else "train"
    calib = calibration_arrays(spec, images, resize=pre.get("resize"), split=split)
    held_out = calibration_arrays(spec, check_images, skip=images, resize=pre.get("resize"), split=split)
    inside = path is None
    path = int8_graph_path(model_dir) if inside else Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pixelwise-int8-"))
    try:
        fp32 = work / "fp32.onnx"
        export_onnx(model_dir, fp32, check=False)
        prepared = work / "prepared.onnx"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001 - the pre-pass is an optimisation; quantize the export as it is
            shutil.copy(fp32, prepared)
        excluded = output_producers(onnx.load(str(prepared)))
        bar = MIN_AGREEMENT if min_agreement is None else min_agreement
        tried: dict[bool, float] = {}  # reduce_range -> agreement
        graphs = {False: work / "int8.onnx", True: work / "int8_reduced.onnx"}
        for reduce, candidate in graphs.items():  # 8-bit weights first; 7-bit (reduce_range) only if those disagree
            quantize_static(str(prepared), str(candidate), _reader(calib), quant_format=QuantFormat.QDQ,
                            per_channel=True, reduce_range=reduce, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                            calibrate_method=CalibrationMethod.Percentile,
                            extra_options={"CalibPercentile": CALIBRATION_PERCENTILE})
            tried[reduce] = agreement(fp32, candidate, held_out)
            if tried[reduce] >= bar:
                break
        reduced = max(tried, key=tried.get)
        int8, agreed = graphs[reduced], tried[reduced]
        keep = agreed >= bar
        if inside and not keep:
            path.unlink(missing_ok=True)  # an older int8 graph that the model no longer matches
        else:
            proto = onnx.load(str(int8 if keep else fp32))
            meta = {p.key: p.value for p in onnx.load(str(fp32)).metadata_props}
            record = json.loads(meta[META_KEY])
            record["int8"] = {"kept": keep, "agreement": agreed, "calibration": spec, "images": len(calib),
                              "check_images": len(held_out), "float_layers": excluded, "reduce_range": reduced,
                              "tried": {("7-bit" if k else "8-bit") + " weights": v for k, v in tried.items()}}
            del proto.metadata_props[:]
            entry = proto.metadata_props.add()
            entry.key, entry.value = META_KEY, json.dumps(record)
            tmp = path.with_name(path.name + ".tmp")
            onnx.save(proto, str(tmp))
            tmp.replace(path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    weights = "7-bit weights (reduce_range: 8-bit ones agreed on only " \
        f"{tried[False]:.3%})" if reduced else "8-bit weights"
    message = (f"int8 ({weights}) agrees with fp32 on {agreed:.3%} of the pixels of {len(held_out)} held-out images"
               if keep else
               f"int8 agreed with fp32 on only {agreed:.3%} of the pixels of {len(held_out)} held-out images "
               + (f"(< {bar:.0%}): no int8 graph kept in the model directory; it runs in fp32 or bf16" if inside
                  else f"(< {bar:.0%}): wrote the fp32 graph instead"))
    if not keep and len(tried) > 1:
        message += f" (8-bit weights {tried[False]:.3%}, 7-bit {tried[True]:.3%})"
    return {"path": str(path), "precision": "int8" if keep else "fp32", "agreement": agreed, "excluded": excluded,
            "reduce_range": reduced, "tried": tried,
            "calibration": spec, "images": len(calib), "check_images": len(held_out), "message": message}
