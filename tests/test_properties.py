"""Property-based robustness tests: hostile inputs meet pixelwise's own one-line errors, nothing else.

Random config.json documents (mostly near-valid mutations of a real one) and random weights go through
`load_model`; random recipe documents and overrides through `load_config`; random and mutated image bytes
through `read_image` / `read_mask` / `decode_image`; small random folder datasets through `check_dataset`.
The property each time: the call succeeds with a result of the promised shape, or raises a `PixelwiseError`
whose message is one non-empty line. Any other exception is a bug in pixelwise.

The searches are derandomized (the same examples every run; no example database is written). Set
PIXELWISE_FUZZ=N to search randomly with N times as many examples, e.g. `PIXELWISE_FUZZ=20 pytest
tests/test_properties.py`.

Inputs the searches found breaking the property (fixed since) are kept below as plain tests (the
`test_found_*` ones, each docstring saying what escaped before the fix); the generators leave out only
inputs that ask for real work (see `_affordable`: models of 50M+ parameters built for real).
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
import io
import json
import os
import shutil
import signal
import struct
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

import pixelwise as pw
from pixelwise import config as pwconfig
from pixelwise.data.check import CheckReport, check_dataset
from pixelwise.data.io import decode_image, read_image, read_mask
from pixelwise.errors import PixelwiseError
from pixelwise.models import MODELS
from pixelwise.models.base import MAX_DEPTH

FUZZ = int(os.environ.get("PIXELWISE_FUZZ", "0") or 0)


def fuzz_settings(examples: int):
    """Settings of every property: `examples` derandomized examples (PIXELWISE_FUZZ=N: N times as many,
    random), no deadline, no example database, no health checks about slow or filtered data."""
    return settings(max_examples=examples * max(FUZZ, 1), deadline=None, database=None, derandomize=not FUZZ,
                    suppress_health_check=list(HealthCheck), print_blob=bool(FUZZ))


def check_error(exc: BaseException) -> None:
    """`exc` is one of pixelwise's own errors with a one-line, non-empty message."""
    assert isinstance(exc, PixelwiseError), f"{type(exc).__name__} escaped: {exc}"
    message = str(exc)
    assert message.strip(), f"{type(exc).__name__} with an empty message"
    assert "\n" not in message, f"{type(exc).__name__} message is not one line: {message!r}"


def outcome(fn, *args, **kwargs):
    """fn(*args) with warnings silenced: its result, or None after a PixelwiseError checked by `check_error`.
    Any other exception propagates (and fails the test with its own traceback)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(*args, **kwargs)
    except PixelwiseError as exc:
        check_error(exc)
        return None


# ---- random JSON / YAML values -------------------------------------------------------------------------

HUGE_INTS = [-2**63, -10**6, 2**31, 2**53 + 1, 2**63, 2**64, 10**30]
ints = st.one_of(st.integers(-8, 8), st.sampled_from([0, 1, 3, 255, 256, 65535, 65536, 65537, 10**6, *HUGE_INTS]),
                 st.integers(-10**6, 10**6))
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.5, -0.0, 1e308, 1e-320]))
texts = st.one_of(st.text(max_size=12), st.sampled_from(["", "inf", "nan", "-inf", "1e309", "NaN", "null", "true",
                                                         "unet", "resnet18", "\n", "a\nb", "ü", "\x00"]))
scalars = st.one_of(st.none(), st.booleans(), ints, floats, texts)

MODEL_KEYS = ["format", "version", "arch", "name", "num_classes", "kwargs", "classes", "palette", "preprocessing",
              "mean", "std", "resize", "things", "task", "task_options", "encoder", "base_channels", "depth",
              "bilinear", "pretrained", "width", "epoch"]
model_keys = st.one_of(st.sampled_from(MODEL_KEYS), st.text(max_size=6))


def json_values(keys=model_keys, leaves: int = 8):
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
                        max_leaves=leaves)


# ---- 1. load_model on random config.json and random weights ---------------------------------------------

@pytest.fixture(scope="module")
def valid_model(tmp_path_factory) -> tuple[Path, dict]:
    """A tiny saved U-Net (classes a, b, c) and its config.json as a dict."""
    directory = tmp_path_factory.mktemp("props") / "model"
    pw.save_model(pw.create_model("unet", 3, base_channels=4, depth=2), directory, classes=["a", "b", "c"])
    return directory, json.loads((directory / "config.json").read_text())


def _paths(node, prefix=()):
    """Every path (tuple of keys / indices) into a JSON document, the root () included."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


def _set(doc, path, value):
    if not path:
        return value
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = value
    return doc


def _drop(doc, path):
    if not path:
        return doc
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    del parent[path[-1]]
    return doc


# A mutation: (operation, which node: an index into the document's paths, a value)
mutations = st.one_of(
    st.tuples(st.just("drop"), st.integers(0, 10**4), st.none()),
    st.tuples(st.just("replace"), st.integers(0, 10**4), json_values()),
    st.tuples(st.just("num_classes"), st.just(0), ints),
    st.tuples(st.just("name"), st.just(0), st.one_of(texts, st.sampled_from(list(MODELS)), scalars)),
    st.tuples(st.just("kwargs"), st.just(0), st.dictionaries(model_keys, json_values(leaves=4), max_size=4)),
    st.tuples(st.just("kwarg"), st.sampled_from(["encoder", "base_channels", "depth", "bilinear", "pretrained"]),
              scalars),
    st.tuples(st.just("classes"), st.just(0), st.lists(texts, max_size=5)),
)


def apply_mutations(base: dict, ops) -> object:
    doc = copy.deepcopy(base)
    for op, where, value in ops:
        if op in ("drop", "replace"):
            paths = list(_paths(doc))
            path = paths[where % len(paths)]
            doc = _drop(doc, path) if op == "drop" else _set(doc, path, value)
            continue
        if not isinstance(doc, dict):
            continue
        arch = doc.get("arch")
        if op == "classes":
            doc["classes"] = value
        elif isinstance(arch, dict):
            if op in ("num_classes", "name", "kwargs"):
                arch[op] = value
            elif isinstance(arch.get("kwargs"), dict):  # one kwarg
                arch["kwargs"][where] = value
    return doc


def _estimated_params(name: str, kwargs: dict) -> float:
    """Rough parameter count of the plain U-Net / SegNet-Basic a config asks for (0 where unknown)."""
    def get(key, default):
        value = kwargs.get(key, default)
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if name == "unet" and kwargs.get("encoder") is None:
        width, depth = get("base_channels", 64), get("depth", 4) if kwargs.get("depth") is not None else 4
        if width is None or depth is None or width < 1 or depth < 1:
            return 0
        return 0 if depth > MAX_DEPTH else 0.45 * width ** 2 * 4.0 ** (depth - 2)
    if name == "segnet_basic":
        width, depth = get("width", 64), get("depth", 4)
        if width is None or depth is None or width < 1 or depth < 1:
            return 0
        return 0 if depth > MAX_DEPTH else 100.0 * depth * width ** 2
    return 0


def _affordable(doc) -> bool:
    """False for a document that asks for real work rather than testing robustness: a full-size model of
    another architecture (its defaults build tens of millions of weights), a U-Net / SegNet-Basic between
    50M and 1.2G parameters (built for real: seconds each, GBs). A depth past MAX_DEPTH is refused at once
    (test_found_huge_depth_hangs_load_model), so it is affordable."""
    arch = doc.get("arch") if isinstance(doc, dict) else None
    if not isinstance(arch, dict) or not isinstance(arch.get("kwargs", {}), dict):
        return True
    name, kwargs = arch.get("name"), dict(arch.get("kwargs", {}))
    kwargs.pop("pretrained", None)
    if name in ("unet", "segnet_basic"):
        return not 5e7 < _estimated_params(name, kwargs) < 1.2e9
    if isinstance(name, str) and name in MODELS:
        accepted = set(inspect.signature(MODELS[name]).parameters) - {"num_classes"}
        return not set(kwargs) <= accepted  # an unknown option: refused before anything is built
    return True


def write_model(valid: Path, root: Path, config_text: str | bytes | None = None,
                weights: bytes | None = None) -> Path:
    """A copy of the valid model directory under `root`, with config.json and/or model.safetensors replaced."""
    directory = root / "model"
    shutil.copytree(valid, directory)
    if config_text is not None:
        target = directory / "config.json"
        target.write_bytes(config_text if isinstance(config_text, bytes) else config_text.encode("utf-8", "surrogatepass"))
    if weights is not None:
        (directory / "model.safetensors").write_bytes(weights)
    return directory


def check_load_model(directory: Path) -> None:
    model = outcome(pw.load_model, directory)
    if model is not None:
        assert isinstance(model, torch.nn.Module)
        assert isinstance(model.pixelwise_config, dict)


@fuzz_settings(60)
@given(ops=st.lists(mutations, min_size=1, max_size=4))
def test_load_model_survives_mutated_config(valid_model, ops):
    valid, base = valid_model
    doc = apply_mutations(base, ops)
    assume(_affordable(doc))
    with tempfile.TemporaryDirectory() as tmp:
        check_load_model(write_model(valid, Path(tmp), json.dumps(doc, allow_nan=True)))


@fuzz_settings(30)
@given(doc=st.one_of(json_values(leaves=12),
                     st.dictionaries(model_keys, json_values(), max_size=6).map(
                         lambda d: {**d, "format": "pixelwise-model"})))
def test_load_model_survives_random_config(valid_model, doc):
    assume(_affordable(doc))
    valid, _ = valid_model
    with tempfile.TemporaryDirectory() as tmp:
        check_load_model(write_model(valid, Path(tmp), json.dumps(doc, allow_nan=True)))


@fuzz_settings(20)
@given(raw=st.one_of(st.binary(max_size=200), st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_load_model_survives_config_that_is_not_json(valid_model, raw):
    valid, _ = valid_model
    with tempfile.TemporaryDirectory() as tmp:
        check_load_model(write_model(valid, Path(tmp), raw))


@st.composite
def mutated_weights(draw, original: bytes):
    """The valid model.safetensors with its header JSON rewritten or its bytes flipped / cut."""
    data = bytearray(original)
    kind = draw(st.sampled_from(["flip", "truncate", "header_len", "header_json"]))
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, min(len(data) - 1, 4000)))
            data[i] = draw(st.integers(0, 255))
    elif kind == "truncate":
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif kind == "header_len":
        data[:8] = struct.pack("<Q", draw(st.one_of(st.integers(0, 2**16), st.sampled_from([2**63, 2**64 - 1]))))
    else:
        (n,) = struct.unpack("<Q", bytes(data[:8]))
        header = json.loads(bytes(data[8:8 + n]))
        key = draw(st.sampled_from(sorted(header)))
        path = draw(st.sampled_from([(), ("dtype",), ("shape",), ("data_offsets",)]))
        value = draw(st.one_of(json_values(leaves=4), st.sampled_from(["F16", "BF16", "I64", "BOOL", "F64", "U8"]),
                               st.lists(st.integers(-1, 10**6), max_size=5)))
        if path and isinstance(header[key], dict):
            header[key][path[0]] = value
        else:
            header[key] = value
        text = json.dumps(header, allow_nan=True).encode()
        data = bytearray(struct.pack("<Q", len(text)) + text + bytes(data[8 + n:]))
    return bytes(data)


@fuzz_settings(30)
@given(data=st.data())
def test_load_model_survives_random_weights(valid_model, data):
    valid, _ = valid_model
    original = (valid / "model.safetensors").read_bytes()
    weights = data.draw(st.one_of(st.binary(max_size=300), mutated_weights(original)))
    with tempfile.TemporaryDirectory() as tmp:
        check_load_model(write_model(valid, Path(tmp), weights=weights))


# ---- 2. load_config on random recipes and overrides ------------------------------------------------------

SECTIONS = {f.name: [g.name for g in dataclasses.fields(f.type if isinstance(f.type, type) else
                                                     getattr(pwconfig, f.type))]
            for f in dataclasses.fields(pwconfig.Config)}
FIELD_NAMES = sorted({name for names in SECTIONS.values() for name in names})
yaml_keys = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8))
yaml_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(yaml_keys, inner,
                                                                                                max_size=3),
                           max_leaves=8)


@st.composite
def recipes(draw):
    """A nested dict: mostly real sections with real field names, some random keys, random values."""
    doc = {}
    for section in draw(st.lists(st.one_of(st.sampled_from(sorted(SECTIONS)), st.text(max_size=6)), max_size=5)):
        if section in SECTIONS and draw(st.integers(0, 9)):
            keys = st.one_of(st.sampled_from(SECTIONS[section]), st.text(max_size=6))
            doc[section] = draw(st.dictionaries(keys, yaml_values, max_size=5))
        else:
            doc[section] = draw(yaml_values)
    return doc


def _keys(node):
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _keys(value)
    elif isinstance(node, list):
        for value in node:
            yield from _keys(value)


def check_load_config(path, overrides=()):
    cfg = outcome(pwconfig.load_config, path, list(overrides))
    if cfg is not None:
        assert isinstance(cfg, pwconfig.Config)


override_values = st.one_of(texts, st.sampled_from(["5", "-1", "0.5", "1e400", ".nan", ".inf", "[1, 2]", "{a: 1}",
                                                    "[0.5, 2]", "null", "true", "off", "adamw", "'x", "[", "{"]))
overrides = st.one_of(
    st.builds(lambda s, k, v: f"{s}.{k}={v}", st.sampled_from(sorted(SECTIONS)), st.sampled_from(FIELD_NAMES),
              override_values),
    st.builds(lambda k, v: f"{k}={v}", st.one_of(st.sampled_from(["init_from", "data", "train", "a.b.c", ""]),
                                                  st.text(max_size=8)), override_values),
    st.text(max_size=20),
)


@fuzz_settings(80)
@given(doc=recipes(), extra=st.lists(overrides, max_size=3))
def test_load_config_survives_random_recipes(doc, extra):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recipe.yaml"
        path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        check_load_config(path, extra)


@fuzz_settings(40)
@given(raw=st.one_of(st.text(max_size=200), st.binary(max_size=100),
                     st.sampled_from(["data:\n  root: [\n", "train: {epochs: 5", "- a\n- b\n", "42", "data:\n",
                                      "data: &a [*a]", "data: !!python/object:os.system x", "\ufeffdata: {}",
                                      "data: {crop_size: 1e400}", "train: {lr: .nan}", "data: {options: &a {x: *a}}"])))
def test_load_config_survives_random_text(raw):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recipe.yaml"
        path.write_bytes(raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass"))
        check_load_config(path)


@fuzz_settings(60)
@given(extra=st.lists(overrides, min_size=1, max_size=4))
def test_load_config_survives_random_overrides(extra):
    check_load_config(None, extra)


# ---- 3. the image loader on random and mutated bytes -----------------------------------------------------

FORMATS = {"PNG": ["RGB", "L", "P", "RGBA", "1", "I;16", "LA"], "JPEG": ["RGB", "L", "CMYK"],
           "TIFF": ["RGB", "L", "P", "RGBA", "1", "I;16", "F", "CMYK", "LAB", "I"], "GIF": ["P", "L"],
           "BMP": ["RGB", "L", "P", "1"], "WEBP": ["RGB", "RGBA"]}
SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp"}


@st.composite
def encoded_images(draw, fmt=None, size=None, mode=None):
    """(format, bytes) of a small random image in a random mode (some multi-frame), encoded with PIL."""
    fmt = fmt or draw(st.sampled_from(sorted(FORMATS)))
    mode = mode or draw(st.sampled_from(FORMATS[fmt]))
    w, h = size or (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    seed = draw(st.integers(0, 2**16))
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    if mode == "I;16":
        img = Image.fromarray((pixels[..., 0].astype(np.uint16) * 257))
    elif mode in ("F", "I"):
        img = Image.fromarray(pixels[..., 0].astype(np.float32 if mode == "F" else np.int32) * 300)
    else:
        img = Image.fromarray(pixels).convert(mode)
    buf = io.BytesIO()
    frames = draw(st.integers(1, 3)) if fmt in ("GIF", "TIFF") else 1
    extra = [img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)] * (frames - 1)
    img.save(buf, format=fmt, save_all=frames > 1, append_images=extra)
    return fmt, buf.getvalue()


def png_chunk(kind: bytes, body: bytes, good_crc: bool = True) -> bytes:
    crc = zlib.crc32(kind + body) if good_crc else 0
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


@st.composite
def mutated_images(draw):
    """(format, bytes): a real encoded image with bytes flipped, cut, inserted, or its header lying."""
    fmt, data = draw(encoded_images())
    data = bytearray(data)
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "header", "exif"]))
    if kind == "flip":
        for _ in range(draw(st.integers(1, 6))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    elif kind == "truncate":
        data = data[:draw(st.integers(1, max(1, len(data) - 1)))]
    elif kind == "insert":
        i = draw(st.integers(0, len(data)))
        data[i:i] = draw(st.binary(min_size=1, max_size=16))
    elif kind == "exif":  # a JPEG / PNG / TIFF with a random or hostile EXIF orientation block
        img = Image.open(io.BytesIO(bytes(data)))
        exif = Image.Exif()
        exif[0x0112] = draw(st.one_of(st.integers(0, 9), st.just(65535)))
        raw = exif.tobytes()
        if draw(st.booleans()):
            raw = bytearray(raw)
            for _ in range(draw(st.integers(1, 4))):
                raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
            raw = bytes(raw)
        buf = io.BytesIO()
        try:
            img.save(buf, format=fmt if fmt in ("JPEG", "PNG", "WEBP", "TIFF") else "PNG", exif=raw)
        except Exception:  # PIL refuses to write some of these; the original bytes are used then
            return fmt, bytes(data)
        return fmt, buf.getvalue()
    else:  # a header that claims another size (zero, huge, negative)
        w = draw(st.sampled_from([0, 1, 2**15, 2**16 - 1, 2**31 - 1, 2**32 - 1, 100000]))
        h = draw(st.sampled_from([0, 1, 2**15, 2**16 - 1, 2**31 - 1, 2**32 - 1, 100000]))
        if fmt == "PNG" and data[12:16] == b"IHDR":
            body = struct.pack(">II", w, h) + bytes(data[24:29])
            data[8:33] = png_chunk(b"IHDR", body, draw(st.booleans()))
        elif fmt == "GIF":
            data[6:10] = struct.pack("<HH", w & 0xFFFF, h & 0xFFFF)
        elif fmt == "BMP":
            data[18:26] = struct.pack("<ii", w - 2**32 if w >= 2**31 else w, -h if h < 2**31 and draw(st.booleans())
                                      else (h - 2**32 if h >= 2**31 else h))
        else:
            i = draw(st.integers(0, max(0, len(data) - 8)))
            data[i:i + 8] = struct.pack(">II", w, h)
    return fmt, bytes(data)


def check_image_bytes(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"x{suffix}"
        path.write_bytes(data)
        image = outcome(read_image, path)
        if image is not None:
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and image.size > 0
        decoded = outcome(decode_image, data)
        if decoded is not None:
            assert decoded.dtype == np.uint8 and decoded.ndim == 3 and decoded.shape[2] == 3 and decoded.size > 0
        mask = outcome(read_mask, path)
        if mask is not None:
            assert mask.ndim == 2 and np.issubdtype(mask.dtype, np.integer) and mask.size > 0


@fuzz_settings(60)
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".png", ".jpg", ".tif", ".bmp", ".gif"]))
def test_image_loader_survives_random_bytes(data, suffix):
    check_image_bytes(data, suffix)


@fuzz_settings(60)
@given(image=st.one_of(encoded_images(), mutated_images()),
       rename=st.booleans())
def test_image_loader_survives_mutated_images(image, rename):
    fmt, data = image
    check_image_bytes(data, ".png" if rename else SUFFIXES[fmt])


# ---- 4. data check on small random folder datasets --------------------------------------------------------

@st.composite
def png_of(draw, shape, values):
    arr = np.asarray(draw(st.lists(values, min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))))
    arr = arr.reshape(shape)
    img = Image.fromarray(arr.astype(np.uint16) if arr.max(initial=0) > 255 else arr.astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@st.composite
def file_bytes(draw, valid):
    """Mostly the valid bytes, else random bytes or a mutated / truncated copy of them."""
    kind = draw(st.sampled_from(["valid", "valid", "valid", "random", "mutated", "empty"]))
    if kind == "valid":
        return valid
    if kind == "random":
        return draw(st.binary(max_size=64))
    if kind == "empty":
        return b""
    data = bytearray(valid)
    data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    return bytes(data[:draw(st.integers(1, len(data)))])


class_files = st.one_of(
    st.none(),
    st.lists(st.text(max_size=6), max_size=5).map(lambda names: "\n".join(names).encode("utf-8", "surrogatepass")),
    st.sampled_from([b"a\nb\nc\n", b"a\n", b"\xef\xbb\xbfa\nb\n", b"a\na\n", b"# none\n", b"\xff\xfe\x00",
                     "\n".join(f"c{i}" for i in range(300)).encode()]),
    st.binary(max_size=32),
)


@st.composite
def folder_datasets(draw):
    """{relative path: bytes} of a small folder dataset, anything in it possibly broken or missing."""
    files = {}
    classes = draw(class_files)
    if classes is not None:
        files["classes.txt"] = classes
    multilabel = draw(st.integers(0, 5)) == 0
    for i in range(draw(st.integers(1, 4))):
        stem = f"s{i}"
        h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
        suffix = draw(st.sampled_from([".png", ".png", ".jpg", ".tif"]))
        if draw(st.integers(0, 9)):
            _, image = draw(encoded_images(fmt={".png": "PNG", ".jpg": "JPEG", ".tif": "TIFF"}[suffix], size=(w, h)))
            files[f"images/{stem}{suffix}"] = draw(file_bytes(image))
        if draw(st.integers(0, 9)):
            mh, mw = (h, w) if draw(st.integers(0, 4)) else (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
            values = st.one_of(st.integers(0, 3), st.sampled_from([255, 254, 256, 1000, 65535]))
            if multilabel:
                for cls in draw(st.lists(st.sampled_from(["a", "b", "c", "z"]), max_size=3, unique=True)):
                    files[f"masks/{cls}/{stem}.png"] = draw(file_bytes(draw(png_of((mh, mw), values))))
            elif draw(st.integers(0, 9)):
                files[f"masks/{stem}.png"] = draw(file_bytes(draw(png_of((mh, mw), values))))
            else:  # a colour-coded mask where an index one belongs
                _, rgb = draw(encoded_images(fmt="PNG", size=(mw, mh), mode="RGB"))
                files[f"masks/{stem}.png"] = rgb
    if draw(st.integers(0, 5)) == 0:
        stems = draw(st.lists(st.sampled_from(["s0", "s1", "s9", "# c", "s0.png", ""]), max_size=3))
        files[draw(st.sampled_from(["val.txt", "train.txt", "splits/test.txt"]))] = "\n".join(stems).encode()
    return files


PYTHON_ERROR_PREFIX = tuple(f"{name}: " for name in dir(__builtins__ if isinstance(__builtins__, dict) else
                                                        vars(__builtins__))
                            if name.endswith(("Error", "Exception")))


def check_report(report) -> None:
    assert isinstance(report, CheckReport)
    text = report.to_text()
    assert isinstance(text, str) and text
    json.dumps(report.to_dict())
    for problem in report.problems:
        assert problem.message and "\n" not in problem.message, f"problem not one line: {problem}"
        # a problem made from anything but a DataError reads 'TypeName: message' (check._problem)
        assert not problem.message.startswith(PYTHON_ERROR_PREFIX), f"a non-pixelwise error was reported: {problem}"


@fuzz_settings(40)
@given(files=folder_datasets(), splits=st.sampled_from([None, None, ["train"], ["all"], ["val", "train"]]))
def test_data_check_survives_random_folders(files, splits):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "set"
        root.mkdir()
        for name, data in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        report = outcome(check_dataset, f"folder:{root}", splits)
        if report is not None:
            check_report(report)


# ---- what the properties found, fixed: each input kept as a plain test ----------------------------------

def refused(match: str, fn, *args, **kwargs) -> str:
    """fn(*args) raises a one-line PixelwiseError matching `match` (no other exception, no success)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(PixelwiseError, match=match) as info:
            fn(*args, **kwargs)
    check_error(info.value)
    return str(info.value)


def _with_config(valid_model, tmp_path, change) -> Path:
    valid, base = valid_model
    doc = copy.deepcopy(base)
    change(doc)
    return write_model(valid, tmp_path, json.dumps(doc))


@pytest.mark.parametrize("kwargs", [{"num_classes": 3}, {"name": "unet"}])
def test_found_kwargs_named_like_create_model_arguments(valid_model, tmp_path, kwargs):
    """arch.kwargs holding 'num_classes' or 'name': load_model's create_model(name, num_classes, **kwargs)
    raises TypeError 'got multiple values for argument' (modeldir.load_model)."""
    directory = _with_config(valid_model, tmp_path, lambda doc: doc["arch"]["kwargs"].update(kwargs))
    refused(rf"config.json: model 'unet' has no option '{next(iter(kwargs))}'", pw.load_model, directory)


@pytest.mark.parametrize("value", [5, [None], "ab"])
def test_found_kwargs_kwargs(valid_model, tmp_path, value):
    """arch.kwargs.kwargs not a mapping: create_model's `dict(kwargs or {})`, before its try, raises TypeError
    / ValueError (models/__init__.py create_model)."""
    directory = _with_config(valid_model, tmp_path, lambda doc: doc["arch"]["kwargs"].update(kwargs=value))
    refused(r"config.json: model 'unet' has no option 'kwargs'", pw.load_model, directory)


@pytest.mark.parametrize("value", [5, True, ["resnet18"], {}])
def test_found_encoder_not_a_string(valid_model, tmp_path, value):
    """arch.kwargs.encoder not a string: create_encoder's hint `name.split('.')` raises AttributeError
    (models/encoders.py create_encoder), which create_model does not turn into a ModelError."""
    directory = _with_config(valid_model, tmp_path, lambda doc: doc["arch"]["kwargs"].update(encoder=value))
    refused(r"config.json: encoder must be a timm model name \(a string\)", pw.load_model, directory)


class _TookTooLong(BaseException):
    pass


@pytest.mark.parametrize("arch", [{"name": "unet", "kwargs": {"base_channels": 4, "depth": 10**6}},
                                  {"name": "segnet_basic", "kwargs": {"depth": 10**6}}])
def test_found_huge_depth_hangs_load_model(valid_model, tmp_path, arch):
    """A config.json asking for depth 1000000 was refused only by the 1e9-parameter limit, after
    the builder ran for minutes before the limit is checked: unet computes 10**6 widths
    base_channels * 2**i (quadratic big-int work and memory), segnet_basic builds 10**6 layers on the meta
    device. Given 3 s here."""
    directory = _with_config(valid_model, tmp_path, lambda doc: doc["arch"].update(arch))

    def stop(*_):
        raise _TookTooLong

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, 3.0)
    try:
        refused(r"depth must be an integer in 1\.\.10, got 1000000", pw.load_model, directory)
    except _TookTooLong:
        pytest.fail(f"load_model with arch {arch} still running after 3 s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_found_folder_with_over_256_classes(tmp_path):
    """A folder dataset whose classes.txt lists 257+ names: open_folder's identity_lut writes into a
    256-entry table, IndexError (data/formats/__init__.py label_lut); `data check` (and training) crash."""
    (tmp_path / "classes.txt").write_text("\n".join(f"c{i}" for i in range(257)))
    for folder, array in (("images", np.zeros((4, 4, 3), np.uint8)), ("masks", np.zeros((4, 4), np.uint8))):
        (tmp_path / folder).mkdir()
        Image.fromarray(array).save(tmp_path / folder / "a.png")
    try:
        report = check_dataset(f"folder:{tmp_path}")
    except PixelwiseError as exc:
        check_error(exc)
        message = str(exc)
    else:
        check_report(report)
        message = " ".join(f"{p.file}: {p.message}" for p in report.problems)
    assert "classes.txt: 257 classes; index masks hold at most 255" in message


def test_a_folder_remap_outside_the_mask_range_is_refused(tmp_path):
    """remap keys past a 16-bit mask's values, or labels that are no class, name the option (label_lut
    raised IndexError on a key over 255 before)."""
    (tmp_path / "classes.txt").write_text("a\nb\n")
    for folder, array in (("images", np.zeros((4, 4, 3), np.uint8)), ("masks", np.zeros((4, 4), np.uint8))):
        (tmp_path / folder).mkdir()
        Image.fromarray(array).save(tmp_path / folder / "a.png")
    from pixelwise.data.formats import FORMATS
    open_folder = FORMATS["folder"]
    refused(r"option remap 70000: 1 must map", open_folder, tmp_path, "all", remap={70000: 1})
    refused(r"option remap 3: 7 must map a mask value 0\.\.65535 to a class id 0\.\.1 or 255", open_folder,
            tmp_path, "all", remap={3: 7})
    dataset = open_folder(tmp_path, "all", remap={1000: 1, 0: 255})
    assert set(np.unique(dataset[0].semantic)) == {255}


def _two_frame_tiff() -> bytearray:
    img = Image.new("L", (1, 1))
    buf = io.BytesIO()
    img.save(buf, format="TIFF", save_all=True, append_images=[img])
    return bytearray(buf.getvalue())


def _second_frame_tiff(tag: int, type_: int, at: int, new: bytes) -> bytes:
    """A 2-frame 1x1 TIFF whose second IFD entry `tag` has bytes at offset `at` (0: the tag number, 8: the
    value) replaced by `new`."""
    data = _two_frame_tiff()
    entry = struct.pack("<HHI", tag, type_, 1)
    i = data.find(entry, data.find(entry) + 1)
    assert i > 0
    data[i + at:i + at + len(new)] = new
    return bytes(data)


CORRUPT_LATER_FRAME = {
    # the second IFD's compression is 0 (no such scheme): KeyError: 0 ...
    "tiff-compression-0": _second_frame_tiff(0x0103, 3, 8, struct.pack("<H", 0)),
    # ... its width tag renumbered (unknown), so it has no width: TypeError: Missing dimensions
    "tiff-no-width": _second_frame_tiff(0x0100, 4, 0, struct.pack("<H", 0x9999)),
    # a 55-byte GIF cut inside its second frame: struct.error
    "gif-cut": b"GIF87a\x02\x00\x02\x00\x81\x00\x00999:::ooo\x8a\x8a\x8a,\x00\x00\x00\x00\x02\x00\x02\x00\x00"
               b"\x08\x07\x00\x07\xc1\x10\x10  \x00!\xf9\x04\x01\x00\x00\x04\x00,\x00",
}


@pytest.mark.parametrize("name", sorted(CORRUPT_LATER_FRAME))
def test_found_corrupt_later_frame_escapes(tmp_path, name):
    """open_image's `getattr(img, "n_frames", 1)` (data/io.py, outside any try) seeks through every frame:
    a multi-frame TIFF / GIF whose later frame is broken raises PIL's KeyError, TypeError, IndexError,
    struct.error, SyntaxError... instead of a DataError."""
    data = CORRUPT_LATER_FRAME[name]
    path = tmp_path / ("x.tif" if name.startswith("tiff") else "x.gif")
    path.write_bytes(data)
    refused(r"the upload: truncated or corrupt image", decode_image, data)
    refused(rf"{path.name}: truncated or corrupt image", read_image, path)
    refused(rf"{path.name}: truncated or corrupt image", read_mask, path)


def test_found_memory_error_escapes():
    """A 62-byte 24-bit BMP header declaring 369098755 x 2 pixels (under MAX_PIXELS = 2**30): PIL's decoder
    raises MemoryError (a 1.1 GB scan line) in open_image's img.load(), which catches only OSError,
    SyntaxError, ValueError, EOFError (data/io.py)."""
    w, h = 0x16000003, 2
    data = b"BM" + struct.pack("<IHHI", 62, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, 0, 0, 0, 0, 0)
    refused(r"the upload: (not enough memory to decode|truncated or corrupt image)", decode_image,
            data + b"\0" * 8)


def test_found_lab_mask_escapes(tmp_path):
    """A LAB TIFF as a mask: read_mask's img.convert("L") raises ValueError 'conversion from LAB to L not
    supported' (data/io.py read_mask); `data check` lists it as 'ValueError: ...'. read_image reads it."""
    Image.new("LAB", (3, 2)).save(tmp_path / "x.tif")
    assert outcome(read_image, tmp_path / "x.tif").shape == (2, 3, 3)
    refused(r"x.tif: a LAB image cannot be read as a mask", read_mask, tmp_path / "x.tif")


@pytest.mark.parametrize("where", ["recipe", "override"])
def test_found_deeply_nested_yaml(tmp_path, where):
    """A recipe (or an override value) nested 5000 deep: PyYAML's composer raises RecursionError, and
    load_config catches only yaml.YAMLError / UnicodeDecodeError (config.py load_config, apply_overrides)."""
    if where == "recipe":
        (tmp_path / "r.yaml").write_text("data: {options: {x: " + "[" * 5000 + "]" * 5000 + "}}")
        refused(r"r.yaml: not valid YAML \(lists or mappings nested deeper than 32 levels\)",
                pwconfig.load_config, tmp_path / "r.yaml")
    else:
        refused(r"override 'data.options': lists or mappings nested deeper than 32 levels", pwconfig.load_config,
                None, ["data.options=" + "[" * 5000 + "]" * 5000])


@pytest.mark.parametrize("where", ["recipe-key", "override-key", "override-value"])
def test_found_line_break_in_a_key_makes_a_multiline_error(tmp_path, where):
    """ConfigError messages quote keys and override strings raw (config.py build_dataclass, apply_overrides):
    a line break in them gives a multi-line message, which the one-line contract forbids."""
    if where == "recipe-key":
        (tmp_path / "r.yaml").write_text('data: {"crop\\nsize": 5}')
        refused(r"config key 'data.crop\\nsize' does not exist", pwconfig.load_config, tmp_path / "r.yaml")
    elif where == "override-key":
        refused(r"config key 'train.ep\\nochs' does not exist", pwconfig.load_config, None, ["train.ep\nochs=5"])
    else:
        refused(r"override 'data.root=\\n': 'data' is not a section", pwconfig.load_config, None,
                ["data=1", "data.root=\n"])
