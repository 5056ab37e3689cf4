"""`pixelwise convert transformers:DIR --out MODEL_DIR`: a transformers checkpoint becomes a model directory that
the Predictor reads with the checkpoint's own preprocessing and answers as transformers does; bad sources are
one clear line."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pixelwise.cli import main
from pixelwise.inference.predictor import Predictor
from pixelwise.modeldir import read_model_config

transformers = pytest.importorskip("transformers")
from transformers import SegformerConfig, SegformerForSemanticSegmentation  # noqa: E402


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A small random SegFormer-B0 (5 labels) saved as transformers saves it, with a preprocessor config."""
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    config = SegformerConfig(num_labels=5, id2label={i: f"c{i}" for i in range(5)},
                             label2id={f"c{i}": i for i in range(5)})
    hf = SegformerForSemanticSegmentation(config).eval()
    with torch.no_grad():
        hf.decode_head.classifier.weight.normal_(0.0, 0.3)
    hf.save_pretrained(root, safe_serialization=True)
    (root / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.3], "do_normalize": True}))
    return root, hf


def test_cli_convert_then_predict_matches_transformers(hf_dir, tmp_path, capsys):
    root, hf = hf_dir
    out = tmp_path / "model"
    main(["convert", f"transformers:{root}", "--out", str(out)])
    assert "segformer" in capsys.readouterr().out
    config = read_model_config(out)
    assert config["classes"] == [f"c{i}" for i in range(5)] and config["task"] == "semantic"
    assert config["preprocessing"]["mean"] == [0.5, 0.4, 0.3] and config["source"]["library"] == "transformers"
    predictor = Predictor.from_dir(out, precision="fp32")
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    ours = predictor.image_outputs(image)["out"]
    x = (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1)) \
        / torch.tensor([0.2, 0.25, 0.3]).view(3, 1, 1)
    with torch.no_grad():
        theirs = F.interpolate(hf(pixel_values=x[None]).logits, size=(96, 128), mode="bilinear",
                               align_corners=False)[0]
    assert (ours - theirs).abs().max().item() < 1e-3
    assert (ours.argmax(0) == theirs.argmax(0)).float().mean().item() == 1.0


@pytest.mark.parametrize("args,expected", [
    (["convert", "hub:x", "--out", "o"], "SOURCE must be LIBRARY:DIR"),
    (["convert", "transformers:", "--out", "o"], "SOURCE must be LIBRARY:DIR"),
    (["convert", "transformers:x", "--out", "o", "--things", "0-3"], "--things applies only with --task panoptic"),
    (["convert", "transformers:x", "--out", "o", "--task", "panoptic", "--things", "a-b"], "not a class id"),
])
def test_cli_usage_errors(args, expected, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert expected in capsys.readouterr().err


def test_bad_sources_are_one_line(hf_dir, tmp_path, capsys):
    root, _ = hf_dir

    def error(path, *extra) -> str:
        with pytest.raises(SystemExit) as exc:
            main(["convert", f"transformers:{path}", "--out", str(tmp_path / "o"), *extra])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        return err

    assert "not a directory" in error(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "config.json: missing" in error(empty)
    (empty / "config.json").write_text("{not json")
    assert "not readable JSON" in error(empty)
    (empty / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    (empty / "pytorch_model.bin").write_bytes(b"x")
    assert "only pickled weights" in error(empty)
    (empty / "model.safetensors").write_bytes(b"garbage")
    assert "unreadable safetensors" in error(empty)
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    (odd / "model.safetensors").write_bytes((root / "model.safetensors").read_bytes())
    assert "'architectures' is 'BertModel'" in error(odd)
    assert "needs its thing classes" in error(root, "--task", "panoptic")
    assert "answers the semantic task" in error(root, "--task", "panoptic", "--things", "1")
    assert not (tmp_path / "o").exists()  # nothing half-written
