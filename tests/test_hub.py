"""Hub conventions, offline: save_pretrained / from_pretrained / push_to_hub and the model card README.md.

The Hub itself is never reached: huggingface_hub's snapshot_download and HfApi are replaced by fakes that
record their arguments; the card's front matter is read back with huggingface_hub's own ModelCard parser,
and the files a push would send are chosen with its own pattern filter.
"""
import json
import re
import sys

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from huggingface_hub.utils import filter_repo_objects
from test_formats import make_folder

import pixelwise as pw
from pixelwise import hub, modelcard
from pixelwise.config import (Config, DataConfig, InferConfig, ModelConfig, TrainConfig, config_from_dict,
                              load_config)
from pixelwise.engine.trainer import train
from pixelwise.errors import ConfigError, ModelError
from pixelwise.modeldir import CARD_NAME, read_model_config, store_inference
from pixelwise.models import list_models

CLASSES = ["sky", "road", "car"]
PALETTE = [[128, 128, 128], [128, 64, 128], [64, 0, 128]]


def tiny_model():
    torch.manual_seed(0)
    return pw.create_model("unet", len(CLASSES), base_channels=4, depth=2)


@pytest.fixture
def saved(tmp_path):
    directory = tmp_path / "model"
    hub.save_pretrained(tiny_model(), directory, classes=CLASSES, palette=PALETTE, license="mit")
    return directory


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real two-epoch run on a folder dataset at an absolute path, with TTA tuned into best/."""
    root = tmp_path_factory.mktemp("hubrun")
    folder = make_folder(root / "seaside_set", stems=("a", "b", "c", "d"), classes=("water", "sand"))
    cfg = Config(data=DataConfig(format="folder", root=str(folder), train_split="all[:3]", val_split="all[3:]",
                                 crop_size=8, scale_range=(1.0, 1.0), num_workers=0),
                 model=ModelConfig(name="unet", kwargs={"base_channels": 4, "depth": 2}, license="cc-by-4.0"),
                 train=TrainConfig(epochs=2, batch_size=2, tracking_uri=f"sqlite:///{root}/mlruns.db"),
                 infer=InferConfig(tta=["none", "flip"]))
    result = train(cfg, root / "run", progress=False)
    return root, result


def test_save_pretrained_from_pretrained_round_trip_gives_identical_outputs(saved):
    model = tiny_model().eval()
    loaded = hub.from_pretrained(saved)
    x = torch.rand(1, 3, 24, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert sorted(p.name for p in saved.iterdir()) == [".complete", "README.md", "config.json", "model.safetensors"]
    assert pw.from_pretrained is hub.from_pretrained and pw.save_pretrained is hub.save_pretrained
    assert pw.push_to_hub is hub.push_to_hub


def test_card_front_matter_reads_back_with_the_hubs_parser(saved):
    card = ModelCard.load(saved / CARD_NAME)
    assert card.data.library_name == "pixelwise" and card.data.license == "mit"
    assert card.data.pipeline_tag == "image-segmentation"
    assert {"image-segmentation", "semantic-segmentation", "pixelwise", "unet"} <= set(card.data.tags)
    text = card.text
    for name, colour in zip(CLASSES, ["#808080", "#804080", "#400080"]):
        assert re.search(rf"\| \d \| {name} \| `{colour}`", text), name
    assert "https://arxiv.org/abs/1505.04597" in text and "U-Net" in text
    assert 'pw.from_pretrained("MODEL")' in text and "pixelwise predict MODEL_DIR image.png --out out/" in text
    assert (saved / CARD_NAME).read_text() == modelcard.model_card(read_model_config(saved))


def test_licence_defaults_to_unknown_and_bad_ids_are_refused(tmp_path):
    hub.save_pretrained(tiny_model(), tmp_path / "m", classes=CLASSES)
    card = ModelCard.load(tmp_path / "m" / CARD_NAME)
    assert card.data.license == "unknown" and "set `model.license` in the recipe" in card.text
    with pytest.raises(ModelError, match="key 'license'"):
        hub.save_pretrained(tiny_model(), tmp_path / "bad", classes=CLASSES, license="MIT licence")
    with pytest.raises(ConfigError, match="model.license"):
        load_config(None, ["model.license=Apache 2"])
    assert load_config(None, ["model.license=apache-2.0"]).model.license == "apache-2.0"


def test_card_of_a_trained_model_holds_recipe_scores_and_no_absolute_path(trained):
    root, result = trained
    best = root / "run" / "best"
    config = read_model_config(best)
    text = (best / CARD_NAME).read_text()
    assert str(root) not in text and "/tmp" not in text
    assert "`folder:.../seaside_set`" in text and "sqlite://.../mlruns.db" in text
    card = ModelCard.load(best / CARD_NAME)
    assert card.data.license == "cc-by-4.0"
    recipe = yaml.safe_load(text.split("```yaml\n", 1)[1].split("```", 1)[0])
    assert recipe == modelcard.public(config["recipe"])
    assert recipe["train"]["epochs"] == 2 and recipe["model"]["license"] == "cc-by-4.0"
    assert recipe["data"]["root"] == ".../seaside_set"
    assert json.loads(json.dumps(config_from_dict(recipe).to_dict())) == recipe  # `pixelwise train` reads it back
    miou = config["metrics"]["miou"]
    assert f"| mIoU | {miou:.4f} |" in text
    per_class = config["metrics"]["per_class_iou"]
    for i, name in enumerate(["water", "sand"]):
        shown = "n/a" if per_class[i] is None else f"{per_class[i]:.4f}"
        assert re.search(rf"\| {i} \| {name} \| `#[0-9a-f]{{6}}` \(\d+, \d+, \d+\) \| {re.escape(shown)} \|", text)
    result_card = card.data.eval_results[0]
    assert result_card.metric_type == "mean_iou" and result_card.metric_value == round(miou, 4)
    assert result_card.dataset_type == "folder" and result_card.dataset_split == "all[3:]"
    trained_record = config["trained"]
    assert trained_record["steps"] == config["epoch"] and trained_record["seconds"] > 0  # 3 images: 1 full batch
    assert read_model_config(root / "run" / "last")["trained"]["steps"] == 2
    assert f"Saved at epoch {config['epoch']} (of train.epochs = 2)" in text
    assert f"- {trained_record['steps']} optimizer step" in text
    assert "TTA `" in text and "Chosen on 1 image of `folder:.../seaside_set" in text
    for name in ("best", "last"):  # every saved directory's card is its config's
        directory = root / "run" / name
        assert (directory / CARD_NAME).read_text() == modelcard.model_card(read_model_config(directory))


def test_store_inference_refreshes_the_card(saved):
    store_inference(saved, {"tta": "flip,0.75,1,1.25", "crf": "none"})
    text = (saved / CARD_NAME).read_text()
    assert "TTA `flip,0.75,1,1.25`, CRF `none`" in text
    assert text == modelcard.model_card(read_model_config(saved))


def test_save_pretrained_keeps_a_loaded_models_record_and_copies_a_directory(trained, tmp_path):
    root, _ = trained
    best = root / "run" / "best"
    again = hub.save_pretrained(hub.from_pretrained(best), tmp_path / "again")
    assert read_model_config(again) == read_model_config(best)
    copied = hub.save_pretrained(root / "run" / "last", tmp_path / "copy", license="mit")
    assert sorted(p.name for p in copied.iterdir()) == [".complete", "README.md", "config.json", "model.safetensors"]
    assert ModelCard.load(copied / CARD_NAME).data.license == "mit"
    assert (copied / "model.safetensors").read_bytes() == (root / "run" / "last" / "model.safetensors").read_bytes()
    with pytest.raises(ModelError, match="give classes"):
        hub.save_pretrained(tiny_model(), tmp_path / "x")


def test_from_pretrained_downloads_a_repo_id_through_huggingface_hub(saved, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_snapshot_download(**kwargs):
        calls.append(kwargs)
        return str(saved)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    model = pw.from_pretrained("someone/camvid-unet", revision="v1", cache_dir="cache")
    assert model.pixelwise_config["classes"] == CLASSES
    (call,) = calls
    assert call["repo_id"] == "someone/camvid-unet" and call["revision"] == "v1" and call["cache_dir"] == "cache"
    assert set(call["allow_patterns"]) == {"config.json", "model.safetensors", "README.md", "model.int8.onnx"}
    predictor = pw.Predictor.from_pretrained("someone/camvid-unet", device="cpu", precision="fp32")
    assert predictor.predict(torch.randint(0, 255, (16, 16, 3), dtype=torch.uint8).numpy()).semantic.shape == (16, 16)


def test_from_pretrained_failures_are_one_line(monkeypatch, tmp_path):
    import huggingface_hub

    def offline(**kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nCheck your connection.")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ModelError) as err:
        pw.from_pretrained("someone/camvid-unet")
    assert str(err.value) == ("someone/camvid-unet: download from the Hugging Face Hub failed (OSError: We couldn't "
                              "connect to 'https://huggingface.co' to load the files.)")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda **kwargs: str(tmp_path))
    with pytest.raises(ModelError, match="someone/empty@main: the Hub repo holds no config.json"):
        pw.from_pretrained("someone/empty", revision="main")
    with pytest.raises(ModelError, match="no such model directory, and not a Hugging Face Hub repo id"):
        pw.from_pretrained(tmp_path / "missing" / "model")
    with pytest.raises(ModelError, match="a local directory has no revision"):
        pw.from_pretrained(tmp_path, revision="v1")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not installed
    with pytest.raises(ModelError, match=re.escape("needs huggingface_hub: pip install 'pixelwise[hub]'")):
        pw.from_pretrained("someone/camvid-unet")


class FakeApi:
    """HfApi's two calls push_to_hub makes, recorded."""

    calls: list = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, **kwargs):
        FakeApi.calls.append(("create_repo", repo_id, kwargs, self.token))

    def upload_folder(self, **kwargs):
        FakeApi.calls.append(("upload_folder", kwargs))
        return "https://huggingface.co/someone/camvid-unet/commit/abc"


def test_push_to_hub_uploads_only_the_model_files(trained, monkeypatch):
    import huggingface_hub

    root, _ = trained
    last = root / "run" / "last"  # a checkpoint: training state beside the model files
    FakeApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    url = pw.push_to_hub(last, "someone/camvid-unet", private=True, token="t0k")
    assert url.endswith("/commit/abc")
    (_, repo, create, token), (_, upload) = FakeApi.calls
    assert repo == "someone/camvid-unet" and create["exist_ok"] and create["private"] and token == "t0k"
    assert upload["folder_path"] == str(last) and upload["repo_id"] == "someone/camvid-unet"
    local = sorted(p.name for p in last.iterdir())
    assert "train_state.pt" in local and ".complete" in local
    sent = sorted(filter_repo_objects(local, allow_patterns=upload["allow_patterns"]))
    assert sent == ["README.md", "config.json", "model.safetensors"]
    assert set(upload["delete_patterns"]) == set(hub.MODEL_FILES)  # a stale int8 graph is not left behind


def test_push_to_hub_failures_are_one_line(saved, monkeypatch):
    import huggingface_hub

    class Refused(FakeApi):
        def create_repo(self, repo_id, **kwargs):
            raise PermissionError("401 Client Error: Unauthorized for url\nInvalid credentials")

    monkeypatch.setattr(huggingface_hub, "HfApi", Refused)
    with pytest.raises(ModelError) as err:
        pw.push_to_hub(saved, "someone/camvid-unet")
    assert str(err.value) == "push_to_hub someone/camvid-unet: PermissionError: 401 Client Error: Unauthorized for url"
    with pytest.raises(ModelError, match="not a Hub repo id"):
        pw.push_to_hub(saved, "not a repo")


def test_push_to_hub_writes_the_card_of_a_directory_saved_before_cards(saved, monkeypatch):
    import huggingface_hub

    (saved / CARD_NAME).unlink()
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    pw.push_to_hub(saved, "someone/camvid-unet")
    assert (saved / CARD_NAME).read_text() == modelcard.model_card(read_model_config(saved))


@pytest.mark.parametrize("text, public", [
    ("camvid:/data/sets/camvid [val]", "camvid:.../camvid [val]"),
    ("/home/me/weights/lite0.safetensors", ".../lite0.safetensors"),
    ("~/data/isbi", ".../isbi"),
    ("C:\\Users\\me\\camvid", ".../camvid"),
    ("sqlite:////srv/mlruns/db.sqlite", "sqlite://.../db.sqlite"),
    ("file:///srv/store", "file://.../store"),
    ("../shared/data/camvid", "../shared/data/camvid"),
    ("runs/camvid/best", "runs/camvid/best"),
    ("https://mlflow.example.org/api", "https://mlflow.example.org/api"),
    ("flip,0.75,1,1.25", "flip,0.75,1,1.25"),
])
def test_absolute_paths_are_cut_to_their_last_component(text, public):
    assert modelcard.public_text(text) == public


def test_every_architecture_cites_a_paper_with_an_arxiv_id():
    for name in list_models():
        title, arxiv = modelcard.paper(name)
        assert title and re.fullmatch(r"\d{4}\.\d{4,5}", arxiv or ""), name



def test_push_command_uploads_and_a_refusal_is_one_line(saved, monkeypatch, capsys):
    import huggingface_hub

    from conftest import run_cli

    FakeApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    code, out, err = run_cli(["push", str(saved), "someone/camvid-unet", "--private"], capsys)
    assert code == 0 and "pushed" in out and out.strip().endswith("/commit/abc"), err
    (_, _, create, _), (_, upload) = FakeApi.calls
    assert create["private"] and upload["folder_path"] == str(saved)
    code, out, err = run_cli(["push", str(saved), "not a repo"], capsys)
    assert code != 0 and "not a Hub repo id" in err and "Traceback" not in err
