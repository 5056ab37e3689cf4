"""What a training run's model reads: the band spec of its images and the normalisation of each channel.

A recipe that says nothing about bands and images that are 8-bit RGB: the RGB reading pixelwise always had
(3 channels, the statistics the encoder's weights expect). Otherwise (`pixelwise.data.bands`) the first
training image fixes how many raw bands there are and their dtype, the file's band names fill in what the
recipe leaves out, and the resolved spec (names, selected bands, divisor, display bands) is written back
into the recipe (config.yaml) and into the saved model, so prediction reads the same channels.

Normalisation of multi-band inputs: per channel, the mean and std of the training split's model inputs
(`channel_stats`, up to STATS_IMAGES images); where the raw images are 8-bit RGB, their red, green and blue
channels keep the statistics of the model's weights (a pretrained encoder saw ImageNet-normalised RGB) and
only the derived channels get the data's. `pixelwise data check --stats` prints the same statistics
(`stats_lines`).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from pixelwise.config import Config
from pixelwise.constants import IMAGENET_MEAN, IMAGENET_STD
from pixelwise.data.bands import BandSpec, asks_for_bands, channel_stats, role_of, spec_for
from pixelwise.data.transforms import check_jitter
from pixelwise.engine.finetune import resolve_normalisation
from pixelwise.data.formats import open_dataset
from pixelwise.errors import ConfigError, DataError

STATS_IMAGES = 32


def resolve_bands(cfg: Config, train_ds) -> tuple[Config, BandSpec]:
    """(cfg with the band keys filled in, the spec) for the images of `train_ds`."""
    spec, image = _spec_of(cfg.data, train_ds)
    if spec.is_rgb and not asks_for_bands(cfg.data):
        channels = 3
    else:
        check_jitter(cfg.data, spec, image.dtype)
        data = dataclasses.replace(cfg.data, band_names=spec.names, bands=list(spec.select), max_value=spec.scale,
                                   rgb_bands=list(spec.rgb))
        cfg = dataclasses.replace(cfg, data=data)
        channels = spec.channels
    for key, asked in (("model.in_channels", cfg.model.in_channels), ("model.kwargs.in_chans",
                                                                      cfg.model.kwargs.get("in_chans"))):
        if asked is not None and asked != channels:
            raise ConfigError(f"config key '{key}': {asked}, but the data gives {channels} channels "
                              f"({', '.join(spec.channel_names)})")
    return cfg, spec


def _spec_of(settings, dataset) -> tuple[BandSpec, np.ndarray]:
    """(the BandSpec of the recipe's data keys for `dataset`'s images, its first raw image)."""
    sample = dataset[0]
    image = np.asarray(sample.image)
    return spec_for(settings, image, (sample.meta.get("raster") or {}).get("band_names"), where="data"), image


def input_kwargs(spec: BandSpec) -> dict:
    """The model builder's keyword for the spec's channels (none for 3: every builder's default)."""
    return {} if spec.channels == 3 else {"in_chans": spec.channels}


def resolve_channel_norm(cfg: Config, spec: BandSpec, train_ds, model, init) -> Config:
    """Fill data.mean/std the recipe leaves out (see the module docstring; RGB: `resolve_normalisation`), and
    check that each lists one value per input channel. model, init: the run's model and `load_init` report."""
    if spec.is_rgb:
        cfg = resolve_normalisation(cfg, model, init)
    elif cfg.data.mean is None or cfg.data.std is None:
        mean, std = _data_norm(spec, train_ds, _weights_norm(model, init))
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, mean=list(cfg.data.mean or mean),
                                                                std=list(cfg.data.std or std)))
    for key in ("mean", "std"):
        value = getattr(cfg.data, key)
        if len(value) != spec.channels:
            raise ConfigError(f"config key 'data.{key}': {len(value)} values for {spec.channels} input channels "
                              f"({', '.join(spec.channel_names)})")
    return cfg


def _weights_norm(model, init) -> tuple | None:
    """(mean, std) of RGB the starting weights expect: a fine-tuned RGB model's saved ones, else the encoder's."""
    saved = init.preprocessing if init is not None else {}
    if len(saved.get("mean") or ()) == 3 and not saved.get("bands"):
        return saved["mean"], saved["std"]
    return getattr(model, "norm", None)


def _data_norm(spec: BandSpec, train_ds, weights_norm) -> tuple[list, list]:
    """Per-channel (mean, std) from the training split; on 8-bit RGB, the RGB channels keep `weights_norm`."""
    mean, std = dataset_stats(train_ds, spec)
    if spec.raw_bands == 3 and spec.scale == 255.0:  # 8-bit RGB: what the weights expect for its channels
        w_mean, w_std = weights_norm or (IMAGENET_MEAN, IMAGENET_STD)
        order = {"red": 0, "green": 1, "blue": 2}
        for k, band in enumerate(spec.select):
            role = role_of(spec.names[band])
            if role in order:
                mean[k], std[k] = float(w_mean[order[role]]), float(w_std[order[role]])
    return mean, std


def dataset_stats(dataset, spec: BandSpec, limit: int = STATS_IMAGES) -> tuple[list, list]:
    """Per-channel (mean, std) of `spec`'s model inputs over up to `limit` images spread evenly over
    `dataset` (`pixelwise data check --stats` prints them; training computes them when the recipe has none)."""
    step = max(1, len(dataset) // limit)
    images = (dataset[i].image for i in range(0, len(dataset), step)[:limit])
    return channel_stats(images, spec)


def preprocessing(cfg: Config, spec: BandSpec) -> dict:
    """The saved model's preprocessing: mean, std, resize, and the band record of a multi-band model."""
    pre = {"mean": list(cfg.data.mean), "std": list(cfg.data.std), "resize": cfg.data.val_resize}
    if not spec.is_rgb:
        pre["bands"] = spec.to_dict()
    return pre


def stats_lines(data: str, split: str, settings) -> str:
    """What `pixelwise data check DATA --stats` prints: the resolved band keys and each channel's mean/std over
    `split` of the dataset FORMAT:ROOT `data`, as recipe lines. settings: a recipe's data section."""
    dataset = open_dataset(data, split, **dict(settings.options))
    if not len(dataset):
        raise DataError(f"{data}: split '{split}' has no images")
    spec, _ = _spec_of(settings, dataset)
    mean, std = dataset_stats(dataset, spec)
    lines = ["", f"# per-channel statistics of split {split} ({min(len(dataset), STATS_IMAGES)} of {len(dataset)} "
             f"images): {', '.join(spec.channel_names)}", "data:"]
    if not spec.is_rgb:
        lines += [f"  band_names: [{', '.join(spec.names)}]", f"  bands: {spec.select}",
                  f"  indices: [{', '.join(spec.indices)}]", f"  max_value: {spec.scale:g}"]
    lines += [f"  mean: [{', '.join(f'{v:.6g}' for v in mean)}]", f"  std: [{', '.join(f'{v:.6g}' for v in std)}]"]
    return "\n".join(lines)
