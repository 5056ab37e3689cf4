"""Bad input and kills, case by case: each test is one row of the hostile probe's list (ids in brackets in
the docstrings), checked through the entry point a user meets, for one clear line and no lost work."""
from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pixelwise as pw
from conftest import run_cli
from pixelwise import atomicdir
from pixelwise.config import load_config
from pixelwise.errors import ConfigError, ModelError

CLASSES = ["sky", "grass", "road", "disk", "box", "triangle"]


def one_line(err: str) -> bool:
    return "Traceback" not in err and len([ln for ln in err.strip().splitlines() if ln.startswith("error:")]) == 1


def png_with_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but whose data is a few bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = pw.create_model("unet", 6, base_channels=4, depth=2)
    return pw.save_model(model, tmp_path_factory.mktemp("rob") / "model", classes=CLASSES)


def scene(seed=0, size=64) -> np.ndarray:
    from pixelwise.data.synthetic import make_scene

    return make_scene(seed, size=size).image


# ---- model directories [T1-T7, W4] ----------------------------------------------------------------------

def broken_copy(model_dir, tmp_path, edit) -> Path:
    target = tmp_path / "broken"
    shutil.copytree(model_dir, target)
    config = json.loads((target / "config.json").read_text())
    config = edit(config)
    (target / "config.json").write_text(json.dumps(config))
    return target


@pytest.mark.parametrize("edit, words", [
    (lambda c: [c], "not a pixelwise model config"),                                  # T1 a list
    (lambda c: None, "not a pixelwise model config"),                                 # T1 null
    (lambda c: {k: v for k, v in c.items() if k != "arch"}, "key 'arch'"),             # T2 missing
    (lambda c: {**c, "arch": "unet"}, "key 'arch' must be a mapping"),                 # T2 not a mapping
    (lambda c: {**c, "arch": {"num_classes": 6}}, "key 'arch.name'"),                  # T3
    (lambda c: {**c, "arch": {"name": "unet", "kwargs": {}}}, "key 'arch.num_classes'"),  # T3
    (lambda c: {**c, "arch": {**c["arch"], "num_classes": 4}, "classes": CLASSES[:4]}, "tensor"),  # T4
    (lambda c: {**c, "palette": ["red", "green"]}, "key 'palette'"),                   # T5
    (lambda c: {**c, "arch": {**c["arch"], "kwargs": {"base_channels": 100000, "depth": 2}}},
     "over the limit"),                                                                # T6
    (lambda c: {**c, "preprocessing": {**c["preprocessing"], "resize": 60000}}, "preprocessing.resize"),  # T6
    (lambda c: {**c, "classes": CLASSES[:3]}, "lists 3 names"),                        # W4 short class list
    (lambda c: {**c, "preprocessing": {**c["preprocessing"], "std": [0.2, 0.0, 0.2]}}, "preprocessing.std"),  # W4
], ids=["list", "null", "no arch", "arch str", "no name", "no num_classes", "num_classes vs weights",
        "palette", "base_channels 1e5", "resize 60000", "short class list", "std 0"])
def test_bad_model_directory_is_one_line(model_dir, tmp_path, capsys, edit, words):
    target = broken_copy(model_dir, tmp_path, edit)
    with pytest.raises(ModelError, match=words.replace(".", r"\.")):
        pw.load_model(target)
    Image.fromarray(scene()).save(tmp_path / "a.png")
    code, _, err = run_cli(["predict", str(target), str(tmp_path / "a.png"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and one_line(err) and "config.json" in err or "model.safetensors" in err


def test_nan_weights_are_refused_and_export_fails_clearly(model_dir, tmp_path, capsys):
    """[T7] NaN weights: one line naming the tensor, from load_model, predict and export."""
    from safetensors.torch import load_file, save_file

    target = tmp_path / "nan"
    shutil.copytree(model_dir, target)
    state = load_file(str(target / "model.safetensors"))
    key = next(k for k in state if k.endswith("weight"))
    state[key] = torch.full_like(state[key], float("nan"))
    save_file(state, str(target / "model.safetensors"))
    with pytest.raises(ModelError, match=f"tensor {key} holds NaN"):
        pw.load_model(target)
    code, _, err = run_cli(["export", str(target), "--onnx", str(tmp_path / "m.onnx")], capsys)
    assert code == 2 and one_line(err) and "NaN" in err


def test_onnx_parity_never_passes_on_nan(tmp_path):
    """[W4] the parity check of an export reports NaN outputs as a failure, not as agreement."""
    from pixelwise.export import parity

    class NaNOut(torch.nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 3, *x.shape[-2:]), float("nan"))

    model = pw.create_model("unet", 3, base_channels=4, depth=2).eval()
    directory = pw.save_model(model, tmp_path / "m", classes=["a", "b", "c"])
    from pixelwise.export import export_onnx

    export_onnx(directory, tmp_path / "m.onnx", check=False)
    checks = parity(NaNOut(), tmp_path / "m.onnx", (0.5,) * 3, (0.5,) * 3, 32, sizes=((1, 64, 64),))
    assert checks[0]["agreement"] == 0.0 and checks[0]["max_abs_diff"] == float("inf")


# ---- configs [T8, W5] -------------------------------------------------------------------------------------

@pytest.mark.parametrize("override, words", [
    ("train.loss={ce: abc}", "train.loss.ce"), ("train.weight_decay=-1", "train.weight_decay"),
    ("data.num_workers=-1", "data.num_workers"), ("train.label_smoothing=5", "train.label_smoothing"),
    ("train.lr=.nan", "train.lr"), ("train.warmup_epochs=-1", "train.warmup_epochs"),
    ("train.time_limit_min=-1", "train.time_limit_min"), ("data.classes=[a, a]", "duplicate class names"),
])
def test_bad_config_values_stop_with_one_line(tmp_path, capsys, override, words):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: {name: unet, kwargs: {base_channels: 4, depth: 2}}\n")
    code, _, err = run_cli(["train", str(recipe), override, "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and one_line(err) and words in err
    assert not (tmp_path / "run").exists()


def test_amp_off_is_accepted_as_written_in_files_and_on_the_command_line(tmp_path):
    """[W5] YAML 1.1 read `off` as False and the README's own value was refused."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  amp: off\n  channels_last: true\n")
    assert load_config(recipe).train.amp == "off"
    assert load_config(None, ["train.amp=off"]).train.amp == "off"
    with pytest.raises(ConfigError, match="data.hflip"):
        load_config(None, ["data.hflip=yes"])  # YAML 1.2: only true/false are booleans


def test_empty_recipe_is_refused(tmp_path):
    """[W5] an empty YAML silently started a full default training."""
    for text in ("", "# nothing\n", "{}\n"):
        (tmp_path / "r.yaml").write_text(text)
        with pytest.raises(ConfigError, match="the recipe is empty"):
            load_config(tmp_path / "r.yaml")


def folder_set(root: Path, n: int = 4, classes="a\nb\nc\n", size=32) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        Image.fromarray(scene(i, size)).save(root / "images" / f"{i}.png")
        Image.fromarray((np.arange(size * size).reshape(size, size) % 3).astype(np.uint8)).save(root / "masks" / f"{i}.png")
    if classes is not None:
        (root / "classes.txt").write_bytes(classes if isinstance(classes, bytes) else classes.encode())
    return root


def test_data_classes_that_do_not_match_the_dataset(tmp_path, capsys):
    """[T8] data.classes shorter than the dataset's labels."""
    root = folder_set(tmp_path / "ds")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data: {{format: folder, root: {root}, train_split: all, val_split: all, crop_size: 16, "
                      "num_workers: 0}\nmodel: {name: unet, kwargs: {base_channels: 4, depth: 2}}\n"
                      "train: {epochs: 1, batch_size: 2}\n")
    code, _, err = run_cli(["train", str(recipe), "data.classes=[a, b]", "--out", str(tmp_path / "run"),
                            "--no-report"], capsys)
    assert code == 2 and one_line(err) and "label values out of range: 2" in err


def test_latin1_classes_file_and_duplicate_names(tmp_path, capsys):
    """[T12, W5] a Latin-1 classes.txt, and duplicate class names, in data check: one problem line each."""
    folder_set(tmp_path / "latin", classes=b"caf\xe9\nb\nc\n")
    code, out, _ = run_cli(["data", "check", f"folder:{tmp_path / 'latin'}"], capsys)
    assert code == 1 and "not UTF-8 text (byte 0xe9 on line 1)" in out
    folder_set(tmp_path / "dup", classes="a\nb\na\n")
    code, out, _ = run_cli(["data", "check", f"folder:{tmp_path / 'dup'}"], capsys)
    assert code == 1 and "duplicate class names ['a']" in out


# ---- training runs [L2, T13, T14, W6] ---------------------------------------------------------------------

def tiny_recipe(tmp_path: Path, **train) -> Path:
    recipe = tmp_path / "r.yaml"
    extra = ", ".join(f"{k}: {v}" for k, v in train.items())
    recipe.write_text("data: {format: synthetic, root: '2', crop_size: 32, num_workers: 0, limit: 8, "
                      "val_split: 'val[:2]', options: {count: 8, size: 48}}\n"
                      "model: {name: unet, kwargs: {base_channels: 4, depth: 2}}\n"
                      f"train: {{epochs: 2, batch_size: 4{', ' + extra if extra else ''}}}\n")
    return recipe


def test_a_used_run_directory_is_not_started_over(tmp_path, capsys):
    """[L2] train without --resume in a directory with a checkpoint or a log used to append to the old log
    and overwrite best/."""
    recipe = tmp_path / "r.yaml"
    recipe = tiny_recipe(tmp_path)
    assert run_cli(["train", str(recipe), "--out", str(tmp_path / "run"), "--no-report"], capsys)[0] == 0
    log = (tmp_path / "run" / "metrics.jsonl").read_text()
    shutil.rmtree(tmp_path / "run" / "last")  # even with the checkpoint gone, the log says it is a used run
    code, _, err = run_cli(["train", str(recipe), "--out", str(tmp_path / "run"), "--no-report"], capsys)
    assert code == 2 and one_line(err) and "already holds a training run (metrics.jsonl)" in err
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == log and (tmp_path / "run" / "best").is_dir()


def test_resume_with_other_model_kwargs_is_one_line(tmp_path, capsys):
    """[T13] resuming with changed model.kwargs ended in a size-mismatch traceback."""
    recipe = tiny_recipe(tmp_path)
    assert run_cli(["train", str(recipe), "--out", str(tmp_path / "run"), "--no-report"], capsys)[0] == 0
    code, _, err = run_cli(["train", str(recipe), "model.kwargs={base_channels: 8, depth: 2}", "train.epochs=3",
                            "--out", str(tmp_path / "run"), "--resume", "--no-report"], capsys)
    assert code == 2 and one_line(err) and "Resume with the run's own" in err


def test_disk_full_while_saving_names_the_device_and_keeps_the_checkpoint(model_dir, tmp_path, monkeypatch):
    """[T14] a SafetensorError traceback, and the previous checkpoint must survive."""
    from safetensors import SafetensorError

    from pixelwise import modeldir

    target = tmp_path / "m"
    model = pw.load_model(model_dir)
    pw.save_model(model, target, classes=CLASSES)
    before = (target / "model.safetensors").read_bytes()

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
                              "\"No space left on device\" })")

    monkeypatch.setattr(modeldir, "save_file", full)
    with pytest.raises(ModelError, match=r"no space left on device \(/"):
        pw.save_model(model, target, classes=CLASSES)
    assert (target / "model.safetensors").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_a_time_cut_epoch_logs_the_images_it_saw(tmp_path, monkeypatch):
    """[W6] the last, time-cut epoch logged images/s as if it were whole."""
    from pixelwise.engine import trainer
    from pixelwise.engine.logging import read_jsonl

    class StepClock:  # 0.02 "seconds" a step: the 0.24 s budget runs out at step 12, mid epoch 2
        def __init__(self, before):
            self.before, self.calls = before, 0

        def __call__(self, info):
            self.calls += 1
            return self.before + 0.02 * self.calls

    monkeypatch.setattr(trainer, "_Clock", StepClock)
    cfg = load_config(tiny_recipe(tmp_path, batch_size=1, time_limit_min=0.004, epochs=50))
    trainer.train(cfg, tmp_path / "run", progress=False)
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    last = records[-1]
    assert [r["epoch"] for r in records] == [1, 2]
    assert last["images"] == 4  # cut after 4 of the 8 images of a whole epoch (the old log counted all 8)
    # the logged seconds are rounded to 1 ms: the rate must lie within what that rounding allows
    low, high = last["seconds"] - 0.0005, last["seconds"] + 0.0005
    assert last["images"] / high * 0.99 <= last["images_per_s"] <= last["images"] / max(low, 1e-6) * 1.01


# ---- prediction [L3, T9, T10, W1-W3, W7] -----------------------------------------------------------------

def test_outputs_never_land_on_inputs_or_on_each_other(model_dir, tmp_path, capsys):
    """[L3] `predict MODEL images/ --out images/ --overwrite` wrote masks over the inputs; a.png and a.jpg
    both wrote a.png."""
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(scene()).save(images / "a.png")
    original = (images / "a.png").read_bytes()
    code, _, err = run_cli(["predict", str(model_dir), str(images), "--out", str(images), "--overwrite"], capsys)
    assert code == 2 and one_line(err) and "would overwrite an input image" in err
    assert (images / "a.png").read_bytes() == original
    Image.fromarray(scene(1)).save(images / "a.jpg")
    code, _, err = run_cli(["predict", str(model_dir), str(images), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and one_line(err) and "same file stem" in err


def test_a_bomb_in_a_folder_is_skipped_and_named(model_dir, tmp_path, capsys):
    """[T9] a PNG header claiming 100000x100000 raised DecompressionBombError and stopped the good images."""
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(scene(i)).save(images / f"good{i}.png")
    (images / "bomb.png").write_bytes(png_with_header(100_000, 100_000))
    code, out, err = run_cli(["predict", str(model_dir), str(images), "--out", str(tmp_path / "o"), "--workers",
                              "0", "--precision", "fp32"], capsys)
    assert code == 1 and "wrote 2 semantic predictions" in out and "1 failed" in out
    assert "bomb.png: image too large: 100000x100000" in out + err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["good0.png", "good1.png"]


def test_an_image_too_large_for_one_pass_runs_as_tiles(model_dir, monkeypatch):
    """[T10] a 12000x12000 image fit the pixel limit but not the one-pass memory (here, scaled down)."""
    from pixelwise.inference import predictor as module

    monkeypatch.setattr(module, "ONE_PASS_PIXELS", 100 * 100)
    monkeypatch.setattr(module, "AUTO_TILE", 64)
    p = pw.Predictor.from_dir(model_dir, device="cpu", precision="fp32")
    with pytest.warns(UserWarning, match="too large for one pass.*runs as 64-px tiles"):
        pred = p.predict(scene(2, 160))
    assert pred.semantic.shape == (160, 160)


def test_16_bit_png_is_scaled_not_clipped(model_dir, tmp_path, capsys):
    """[W1] predict turned 99.6% of a 16-bit PNG's pixels white (clipped at 255), so nearly all one class.
    16-bit images are scaled by their maximum, as the server always did."""
    from pixelwise.data.io import read_image

    grey = scene(3)[..., 0]
    grey = (grey.astype(np.float64) * 255 / grey.max()).round().astype(np.uint8)  # uses the whole 8-bit range
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "wide.png")  # 16-bit greyscale
    Image.fromarray(grey).save(tmp_path / "narrow.png")
    wide, narrow = read_image(tmp_path / "wide.png"), read_image(tmp_path / "narrow.png")
    assert np.abs(wide.astype(int) - narrow.astype(int)).max() <= 1
    p = pw.Predictor.from_dir(model_dir, device="cpu", precision="fp32")
    assert (p.predict(wide).semantic == p.predict(narrow).semantic).mean() > 0.99


def _exif_rotated(array: np.ndarray, path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: display rotated 90 degrees clockwise
    Image.fromarray(array).save(path, exif=exif)


def test_exif_orientation_applies_to_images_and_masks_alike(tmp_path):
    """[W2] predict and training ignored EXIF orientation: masks were silently misaligned."""
    from pixelwise.data.io import read_image, read_mask

    image = scene(4, 48)[:, :32]  # 48 high, 32 wide
    mask = (np.arange(48 * 32).reshape(48, 32) % 3).astype(np.uint8)
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    _exif_rotated(image, root / "images" / "a.png")
    _exif_rotated(mask, root / "masks" / "a.png")
    (root / "classes.txt").write_text("a\nb\nc\n")
    assert read_image(root / "images" / "a.png").shape == (32, 48, 3)  # upright: turned
    np.testing.assert_array_equal(read_mask(root / "masks" / "a.png"), np.rot90(mask, -1))
    sample = pw.open_dataset(f"folder:{root}", "all")[0]
    assert sample.image.shape[:2] == sample.semantic.shape == (32, 48)


def test_multi_frame_images_say_only_the_first_frame_is_read(tmp_path):
    """[W3] multi-page TIFF and animated GIF: only the first frame, said."""
    from pixelwise.data.io import read_image

    frames = [Image.fromarray(scene(i, 32)) for i in range(3)]
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    for name in ("pages.tif", "anim.gif"):
        with pytest.warns(UserWarning, match=f"{name}: 3 frames.*only the first is read"):
            image = read_image(tmp_path / name)
        assert image.shape == (32, 32, 3)


def test_predict_a_run_directory_mid_swap(model_dir, tmp_path, capsys):
    """[W7] a run whose best/ is mid-swap (only best.old) said "not a model directory"."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copytree(model_dir, run / "best.old")
    Image.fromarray(scene()).save(tmp_path / "a.png")
    code, out, err = run_cli(["predict", str(run), str(tmp_path / "a.png"), "--out", str(tmp_path / "o"),
                              "--precision", "fp32"], capsys)
    assert code == 0 and "wrote 1" in out, err
    assert not list(run.glob("best"))  # reading moved nothing


# ---- the recovery rule, state by state [L1] ----------------------------------------------------------------

def _copy(src: Path, dst: Path, epoch: int, complete: bool = True) -> None:
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**config, "epoch": epoch}))
    (dst / atomicdir.COMPLETE).unlink(missing_ok=True)
    if complete and ".tmp-" in dst.name:
        (dst / atomicdir.COMPLETE).write_text("")


@pytest.mark.parametrize("state, winner", [
    ({"NAME": 3, "tmp_incomplete": 4}, 3),            # killed while writing the new copy
    ({"NAME": 3, "tmp": 4}, 4),                       # killed after it was complete, before the swap
    ({"NAME.old": 3, "tmp": 4}, 4),                   # killed between moving the old aside and the new in
    ({"NAME": 4, "NAME.old": 3}, 4),                  # killed before dropping the old
    ({"NAME.old": 3}, 3),                             # the old one alone (an older pixelwise's half swap)
    ({"tmp": 4}, 4),                                  # the first save, killed before its swap
    ({"tmp_incomplete": 1}, None),                    # nothing was ever whole
])
def test_recover_keeps_the_newest_complete_copy_and_only_it(model_dir, tmp_path, state, winner):
    directory = tmp_path / "last"
    for kind, epoch in state.items():
        path = {"NAME": directory, "NAME.old": atomicdir.old_of(directory),
                "tmp": tmp_path / ".last.tmp-a", "tmp_incomplete": tmp_path / ".last.tmp-b"}[kind]
        _copy(model_dir, path, epoch, complete=kind != "tmp_incomplete")
    assert (atomicdir.newest(directory) is None) == (winner is None)
    assert atomicdir.recover(directory) == (directory if winner is not None else None)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["last"] if winner is not None else [])
    if winner is not None:
        assert json.loads((directory / "config.json").read_text())["epoch"] == winner
        pw.load_model(directory)
