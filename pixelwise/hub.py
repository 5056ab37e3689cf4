"""Hugging Face conventions on pixelwise model directories: save_pretrained, from_pretrained, push_to_hub.

    pw.save_pretrained(model, "my_model", classes=[...], license="mit")   # config.json, weights, README.md
    model = pw.from_pretrained("my_model")            # a local model (or run) directory ...
    model = pw.from_pretrained("user/camvid-unet")    # ... or a Hub repo id (pip install 'pixelwise[hub]')
    pw.push_to_hub("runs/camvid/best", "user/camvid-unet")

A Hub repo holds a model directory's own files (`MODEL_FILES`: config.json, model.safetensors, the model
card README.md and the int8 graph where there is one); training state, markers and anything else stay local.
A name that is an existing path is always read locally; anything else must be a repo id (`user/name`).
Network and Hub failures are one-line ModelErrors naming the repo.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from pixelwise import atomicdir
from pixelwise.errors import ModelError
from pixelwise.modelcard import model_card
from pixelwise.modeldir import (CARD_NAME, CONFIG_NAME, INT8_NAME, WEIGHTS_NAME, check_model_config, load_model,
                                read_model_config, resolve_model_dir, save_model, write_card)

MODEL_FILES = (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME, INT8_NAME)
INSTALL = "pip install 'pixelwise[hub]'"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # user/name (the Hub's form; one slash)
_SAVED = ("format", "version", "arch", "classes", "palette", "preprocessing")  # save_model's own keys


def save_pretrained(model: torch.nn.Module | str | Path, directory: str | Path, classes: list[str] | None = None,
                    palette=None, preprocessing: dict | None = None, extra: dict | None = None,
                    license: str | None = None) -> Path:
    """`save_model` under the Hugging Face name: `directory/` = config.json + model.safetensors + README.md.

    model: a model from `create_model` (give `classes`), one from `load_model` / `from_pretrained` (its
    saved config is kept: classes, palette, preprocessing, training record, unless given here), or a model
    directory path, whose model files are copied (not its training state). license: a Hub licence id for
    config.json "license" and the card."""
    if isinstance(model, (str, Path)):
        return _copy_model_dir(resolve_model_dir(model), Path(directory), license)
    saved = getattr(model, "pixelwise_config", None) or {}
    if classes is None and not saved:
        raise ModelError("save_pretrained: give classes=[...]; the model carries no saved config to take them from")
    if classes is not None and list(classes) != saved.get("classes", list(classes)):
        saved = {}  # another label set: the saved record (scores per class, palette) no longer describes it
    record = {k: v for k, v in saved.items() if k not in _SAVED}
    record.update(extra or {})
    if license is not None:
        record["license"] = license
    return save_model(model, directory, classes if classes is not None else saved["classes"],
                      palette if palette is not None else saved.get("palette"),
                      preprocessing if preprocessing is not None else saved.get("preprocessing"), record)


def _copy_model_dir(source: Path, directory: Path, license: str | None) -> Path:
    """The model files of `source` into `directory` (atomically), the card rewritten from the config."""
    config = read_model_config(source)
    if license is not None:
        config["license"] = license
        check_model_config(config, directory / CONFIG_NAME)
    if source.resolve() == directory.resolve():
        raise ModelError(f"save_pretrained: {source} is the directory it would be copied into")

    def write(folder: Path) -> None:
        for name in (WEIGHTS_NAME, INT8_NAME):
            if (source / name).is_file():
                shutil.copyfile(source / name, folder / name)
        (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2))
        (folder / CARD_NAME).write_text(model_card(config), encoding="utf-8")

    return atomicdir.replace(directory, write)


def is_repo_id(name: str) -> bool:
    """True for a Hub repo id "user/name" (one slash, the Hub's characters)."""
    return bool(_REPO_ID.match(name))


def snapshot(name_or_path: str | Path, revision: str | None = None, cache_dir: str | Path | None = None,
             token: str | None = None, local_files_only: bool = False) -> Path:
    """The local model directory for `name_or_path`: an existing path as it is (a run directory: its
    best/), else the Hub repo's model files downloaded through huggingface_hub (cached; `revision` a
    branch, tag or commit)."""
    path = Path(name_or_path)
    if path.exists():
        if revision is not None:
            raise ModelError(f"{path}: a local directory has no revision (revision= is for Hub repo ids)")
        return resolve_model_dir(path)
    name = str(name_or_path)
    if not is_repo_id(name):
        raise ModelError(f"{name}: no such model directory, and not a Hugging Face Hub repo id (user/name)")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ModelError(f"{name}: loading from the Hugging Face Hub needs huggingface_hub: {INSTALL}") from None
    at = f"{name}@{revision}" if revision else name
    try:
        folder = snapshot_download(repo_id=name, revision=revision, cache_dir=cache_dir, token=token,
                                   local_files_only=local_files_only, allow_patterns=list(MODEL_FILES))
    except Exception as exc:  # noqa: BLE001 - network, auth and not-found errors come in many types
        raise ModelError(f"{at}: download from the Hugging Face Hub failed ({_cause(exc)})") from None
    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file():
        raise ModelError(f"{at}: the Hub repo holds no {CONFIG_NAME}; it is not a pixelwise model")
    return folder


def from_pretrained(name_or_path: str | Path, revision: str | None = None, cache_dir: str | Path | None = None,
                    device: str | torch.device = "cpu", token: str | None = None,
                    local_files_only: bool = False) -> torch.nn.Module:
    """The model of a local model (or run) directory or of a Hub repo id, in eval mode on `device`, with
    its config.json as `model.pixelwise_config` (`load_model` on `snapshot(...)`)."""
    return load_model(snapshot(name_or_path, revision, cache_dir, token, local_files_only), device)


def push_to_hub(directory: str | Path, repo_id: str, private: bool = False, token: str | None = None,
                commit_message: str | None = None, revision: str | None = None) -> str:
    """Upload a model directory's model files (`MODEL_FILES`) to the Hub repo `repo_id` (created if it does
    not exist) in one commit; repo files of those names the directory lacks (an older int8 graph) are
    deleted. Returns the commit URL."""
    directory = resolve_model_dir(directory)
    config = read_model_config(directory)  # never push a directory that would not load
    if not is_repo_id(repo_id):
        raise ModelError(f"push_to_hub: {repo_id!r} is not a Hub repo id (user/name)")
    if not (directory / CARD_NAME).is_file():  # saved before model cards existed
        write_card(directory)
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise ModelError(f"push_to_hub: needs huggingface_hub: {INSTALL}") from None
    message = commit_message or f"pixelwise {config['arch']['name']} ({len(config['classes'])} classes)"
    try:
        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(repo_id=repo_id, folder_path=str(directory), repo_type="model",
                                 allow_patterns=list(MODEL_FILES), delete_patterns=list(MODEL_FILES),
                                 commit_message=message, revision=revision)
    except Exception as exc:  # noqa: BLE001 - network, auth and permission errors come in many types
        raise ModelError(f"push_to_hub {repo_id}: {_cause(exc)}") from None
    return str(getattr(info, "commit_url", info))


def _cause(exc: Exception) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
