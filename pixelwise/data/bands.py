"""Input bands: which bands of an image the model sees, the indices derived from them, and their scale.

A `BandSpec` is the one definition of how a raw image, (H, W, B) of any dtype (uint8 RGB photos, uint16
reflectance rasters, float arrays), becomes the model's input channels before normalisation:

    raw (H, W, B) --select--> (H, W, S) / scale --+ derived indices --> (H, W, S + I) float32

- `names`: the names of the raw bands, in file order (a GeoTIFF's band descriptions, the recipe's
  `data.band_names`, or "red", "green", "blue" for a 3-band photo; "band1".."bandN" when nothing says).
- `select`: which raw bands, in which order (by index; the recipe may name them: `data.bands: [B4, B3, B2, B8]`).
- `indices`: normalised-difference indices computed on the fly from the raw bands (`INDICES`), e.g. NDVI =
  (NIR - Red) / (NIR + Red). They are ratios, so they do not depend on `scale`.
- `scale`: raw values are divided by it (255 for uint8; the recipe's `data.max_value`, e.g. 10000 for
  Sentinel-2 reflectance; else the dtype's maximum).
- `rgb`: the raw bands shown as red, green, blue in overlays, reports and the served page.

The spec travels in the saved model's preprocessing (`to_dict` / `from_dict`), so prediction computes the
same bands and indices as training did. A model without one (every RGB model) reads 3-band uint8 images
the way pixelwise always has: `BandSpec.rgb_default()`.

Band roles: an index asks for roles ("red", "nir", ...); a band named after a role is that role, and the
Sentinel-2 names (B2 blue, B3 green, B4 red, B8 nir, B5-B7 red edge, B11/B12 SWIR) and Landsat 8/9 names
(SR_B2 .. SR_B7) are known aliases.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from pixelwise.errors import DataError

MAX_BANDS = 64

# role -> the band names that play it (case-insensitive), besides the role's own name
ROLE_ALIASES: dict[str, tuple[str, ...]] = {
    "blue": ("b2", "b02", "sr_b2", "b"), "green": ("b3", "b03", "sr_b3", "g"), "red": ("b4", "b04", "sr_b4", "r"),
    "nir": ("b8", "b08", "sr_b5", "near-infrared", "nearinfrared"), "rededge1": ("b5", "b05"),
    "rededge2": ("b6", "b06"), "rededge3": ("b7", "b07"), "nir2": ("b8a",), "swir1": ("b11", "sr_b6"),
    "swir2": ("b12", "sr_b7"),
}


def _normalized_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(a - b) / (a + b), 0 where a + b is 0: in [-1, 1] for non-negative bands."""
    total = a + b
    return torch.where(total != 0, (a - b) / torch.where(total != 0, total, torch.ones_like(total)),
                       torch.zeros_like(total))


def _excess_green(r: torch.Tensor, g: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Excess green on chromatic coordinates, 2g - r - b with r = R / (R + G + B) ...: in [-1, 2]."""
    total = r + g + b
    safe = torch.where(total != 0, total, torch.ones_like(total))
    return torch.where(total != 0, (2 * g - r - b) / safe, torch.zeros_like(total))


@dataclass(frozen=True)
class Index:
    """A derived band: `fn` of the raw bands playing `roles` (each (..., H, W) float), and its paper."""

    roles: tuple[str, ...]
    fn: Callable[..., torch.Tensor]
    about: str


INDICES: dict[str, Index] = {
    "ndvi": Index(("nir", "red"), _normalized_difference,
                  "(NIR - Red) / (NIR + Red): vegetation (Rouse et al. 1974, NASA SP-351)"),
    "ndwi": Index(("green", "nir"), _normalized_difference,
                  "(Green - NIR) / (Green + NIR): open water (McFeeters 1996, doi:10.1080/01431169608948714)"),
    "ndbi": Index(("swir1", "nir"), _normalized_difference,
                  "(SWIR1 - NIR) / (SWIR1 + NIR): built-up land (Zha et al. 2003, doi:10.1080/01431160304987)"),
    "ndre": Index(("nir", "rededge1"), _normalized_difference,
                  "(NIR - RedEdge) / (NIR + RedEdge): canopy chlorophyll (Barnes et al. 2000)"),
    "exg": Index(("red", "green", "blue"), _excess_green,
                 "2g - r - b on chromatic coordinates: greenness from RGB alone (Woebbecke et al. 1995)"),
}


def dtype_scale(dtype) -> float:
    """The default divisor of raw values of `dtype`: its maximum for integers, 1 for floats."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        return float(np.iinfo(dtype).max)
    return 1.0


def default_names(count: int) -> list[str]:
    """Band names when nothing names them: red, green, blue for 3 bands, else band1..bandN (not b1..bN,
    which would read as Sentinel-2 names)."""
    return ["red", "green", "blue"] if count == 3 else [f"band{i + 1}" for i in range(count)]


def role_of(name: str) -> str | None:
    """The role a band name plays ("nir" for "B8", "red" for "red"), or None."""
    key = name.strip().lower()
    for role, aliases in ROLE_ALIASES.items():
        if key == role or key in aliases:
            return role
    return None


@dataclass
class BandSpec:
    """See the module docstring. `select` and `rgb` index the raw bands; `names` has one name per raw band."""

    names: list[str]
    select: list[int]
    indices: list[str] = field(default_factory=list)
    scale: float = 255.0
    rgb: list[int] = field(default_factory=lambda: [0, 1, 2])

    @classmethod
    def rgb_default(cls) -> BandSpec:
        """What every RGB model reads: 3 uint8 bands, red, green, blue, no index."""
        return cls(names=["red", "green", "blue"], select=[0, 1, 2])

    @property
    def raw_bands(self) -> int:
        return len(self.names)

    @property
    def channels(self) -> int:
        """The model's input channels: selected bands, then indices."""
        return len(self.select) + len(self.indices)

    @property
    def channel_names(self) -> list[str]:
        return [self.names[i] for i in self.select] + list(self.indices)

    @property
    def is_rgb(self) -> bool:
        """True for the plain RGB reading (3 uint8 bands in order, no index): the fast uint8 path applies."""
        return self.raw_bands == 3 and self.select == [0, 1, 2] and not self.indices and self.scale == 255.0

    # --- building one

    @classmethod
    def build(cls, names: Sequence[str] | None, raw_bands: int, dtype, bands: Sequence[int | str] | None = None,
              indices: Sequence[str] = (), max_value: float | None = None, rgb_bands: Sequence[int | str] | None = None,
              where: str = "data") -> BandSpec:
        """A spec for images of `raw_bands` bands of `dtype`: `bands` picked by index or name (None: all),
        `indices` by name, `max_value` the divisor (None: 255 for uint8, the dtype's max otherwise), `rgb_bands`
        the display composite (None: the red/green/blue roles, else the first three bands). Errors name `where`."""
        if not 1 <= raw_bands <= MAX_BANDS:
            raise DataError(f"{where}: {raw_bands} bands; pixelwise reads 1..{MAX_BANDS}")
        names = list(names) if names else default_names(raw_bands)
        if len(names) != raw_bands:
            raise DataError(f"{where}: band_names lists {len(names)} names for images of {raw_bands} bands")
        if len({n.lower() for n in names}) != len(names):
            raise DataError(f"{where}: band_names repeat a name: {names}")
        select = [_band_index(b, names, f"{where}.bands") for b in bands] if bands else list(range(raw_bands))
        if len(set(select)) != len(select):
            raise DataError(f"{where}.bands: a band is picked twice: {list(bands)}")
        unknown = [i for i in indices if i not in INDICES]
        if unknown:
            raise DataError(f"{where}.indices: unknown index {unknown[0]!r}; known: {', '.join(INDICES)}")
        for name in indices:
            for role in INDICES[name].roles:
                if _role_band(role, names) is None:
                    raise DataError(f"{where}.indices: {name} needs a {role} band; the bands are {names} (name them "
                                    f"with data.band_names, e.g. {role} or a Sentinel-2 name)")
        scale = float(max_value) if max_value is not None else dtype_scale(dtype)
        if not scale > 0:
            raise DataError(f"{where}.max_value: must be positive, got {max_value}")
        if rgb_bands:
            rgb = [_band_index(b, names, f"{where}.rgb_bands") for b in rgb_bands]
            if len(rgb) != 3:
                raise DataError(f"{where}.rgb_bands: name 3 bands (red, green, blue), got {list(rgb_bands)}")
        else:
            roles = [_role_band(r, names) for r in ("red", "green", "blue")]
            rgb = roles if None not in roles else [min(i, raw_bands - 1) for i in (0, 1, 2)]
        return cls(names=names, select=select, indices=list(indices), scale=scale, rgb=rgb)

    # --- applying it

    def check_image(self, image: np.ndarray, where: str) -> np.ndarray:
        """`image` as (H, W, B) with B = the raw bands this spec reads, else a DataError naming `where`."""
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3 or image.shape[2] != self.raw_bands:
            bands = image.shape[2] if image.ndim == 3 else f"shape {image.shape}"
            raise DataError(f"{where}: {bands} bands; the model reads images of {self.raw_bands} "
                            f"({', '.join(self.names)})")
        return image

    def apply_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """raw (N, B, H, W) (any real dtype) -> float32 (N, C, H, W): the selected bands / scale, then the
        indices. The same function runs in training, in the Predictor and inside an exported ONNX graph."""
        x = x.float()
        parts = [x[:, self.select] / self.scale]
        for name in self.indices:
            index = INDICES[name]
            bands = [x[:, _role_band(role, self.names)] for role in index.roles]
            parts.append(index.fn(*bands).unsqueeze(1))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def apply(self, image: np.ndarray) -> np.ndarray:
        """raw (H, W, B) -> float32 (H, W, C), as `apply_tensor`."""
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0)
        return self.apply_tensor(x)[0].permute(1, 2, 0).numpy()

    def composite(self, image: np.ndarray) -> np.ndarray:
        """raw (H, W, B) -> uint8 (H, W, 3) for display: the `rgb` bands, an 8-bit image as it is, anything
        else stretched per band between its 2nd and 98th percentiles (the usual remote-sensing display)."""
        if image.ndim == 2:
            image = image[..., None]
        picked = image[..., [min(i, image.shape[2] - 1) for i in self.rgb]]
        if picked.dtype == np.uint8:
            return np.ascontiguousarray(picked)
        out = np.empty(picked.shape, np.uint8)
        for c in range(3):
            band = picked[..., c].astype(np.float32)
            finite = band[np.isfinite(band)]
            lo, hi = (np.percentile(finite[:: max(1, finite.size // 200_000)], (2, 98)) if finite.size
                      else (0.0, 1.0))
            out[..., c] = np.clip((band - lo) / max(hi - lo, 1e-12) * 255, 0, 255).astype(np.uint8)
        return out

    # --- the saved form

    def to_dict(self) -> dict:
        return {"names": list(self.names), "select": list(self.select), "indices": list(self.indices),
                "scale": self.scale, "rgb": list(self.rgb)}

    @classmethod
    def from_dict(cls, data: dict | None, where: str = "preprocessing.bands") -> BandSpec:
        """The spec a model's preprocessing records; the RGB default when it records none."""
        if not data:
            return cls.rgb_default()
        try:
            names = [str(n) for n in data["names"]]
            spec = cls(names=names, select=[int(i) for i in data["select"]],
                       indices=[str(i) for i in data.get("indices", [])], scale=float(data.get("scale", 255.0)),
                       rgb=[int(i) for i in data.get("rgb", [0, 1, 2])])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{where}: not a band record ({type(exc).__name__}: {exc})") from None
        bad = [i for i in (*spec.select, *spec.rgb) if not 0 <= i < len(names)]
        if not 1 <= len(names) <= MAX_BANDS or bad or not spec.select or len(spec.rgb) != 3 or not spec.scale > 0:
            raise DataError(f"{where}: inconsistent band record {data}")
        for name in spec.indices:
            if name not in INDICES or any(_role_band(r, names) is None for r in INDICES[name].roles):
                raise DataError(f"{where}: index {name!r} cannot be computed from bands {names}")
        return spec


def _band_index(band: int | str, names: list[str], where: str) -> int:
    """A band given by index (0-based) or name -> its index."""
    if isinstance(band, bool):
        raise DataError(f"{where}: {band!r} is not a band")
    if isinstance(band, int):
        if not 0 <= band < len(names):
            raise DataError(f"{where}: band {band} does not exist (the images have {len(names)}: 0..{len(names) - 1})")
        return band
    lowered = [n.lower() for n in names]
    key = str(band).strip().lower()
    if key in lowered:
        return lowered.index(key)
    found = _role_band(key, names)
    if found is not None:
        return found
    raise DataError(f"{where}: no band named {band!r}; the bands are {names}")


def _role_band(role: str, names: Sequence[str]) -> int | None:
    """The index of the band playing `role` (by its name or an alias), or None."""
    for i, name in enumerate(names):
        if name.strip().lower() == role or role_of(name) == role:
            return i
    return None


class BandSettings(Protocol):
    """The recipe keys a BandSpec is built from (the `data` section, pixelwise.config.DataConfig)."""

    band_names: list[str] | None
    bands: list[int | str] | None
    indices: list[str]
    max_value: float | None
    rgb_bands: list[int | str] | None


def asks_for_bands(settings: BandSettings) -> bool:
    """Whether the recipe says anything about bands (else 3-band uint8 images read as RGB, as always)."""
    return bool(settings.band_names or settings.bands or settings.indices or settings.max_value
                or settings.rgb_bands)


def spec_for(settings: BandSettings, image: np.ndarray | None = None, names: Sequence[str] | None = None,
             where: str = "data") -> BandSpec:
    """The BandSpec of a recipe's data section for images like `image` (raw (H, W, B); None: the recipe's
    band_names say how many bands), with `names` the file's own band names when the recipe gives none."""
    if image is not None and image.ndim == 2:
        image = image[..., None]
    plain = image is None or (image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8)
    if plain and not asks_for_bands(settings):
        return BandSpec.rgb_default()
    names = settings.band_names or (list(names) if names else None)
    if image is not None:
        raw_bands, dtype = image.shape[2], image.dtype
    elif names:
        raw_bands, dtype = len(names), np.uint8
    else:
        raw_bands, dtype = 3, np.uint8
    return BandSpec.build(names, raw_bands, dtype, settings.bands, settings.indices, settings.max_value,
                          settings.rgb_bands, where=where)


def channel_stats(images, spec: BandSpec, pixels_per_image: int = 65536, seed: int = 0) -> tuple[list, list]:
    """Per-channel (mean, std) of the model inputs `spec` makes of `images` (an iterable of raw (H, W, B)
    arrays), from up to `pixels_per_image` pixels drawn from each; float64 sums, population std."""
    rng = np.random.default_rng(seed)
    total = None
    count = 0
    for image in images:
        image = spec.check_image(np.asarray(image), "statistics")
        flat = image.reshape(-1, image.shape[2])
        if len(flat) > pixels_per_image:
            flat = flat[rng.choice(len(flat), pixels_per_image, replace=False)]
        x = spec.apply_tensor(torch.from_numpy(np.ascontiguousarray(flat.T[:, :, None]))[None])[0, :, :, 0]
        x = x.double()
        sums = torch.stack([x.sum(1), (x * x).sum(1)])
        total = sums if total is None else total + sums
        count += x.shape[1]
    if not count:
        raise DataError("statistics: no images")
    mean = total[0] / count
    std = (total[1] / count - mean * mean).clamp_min(0).sqrt()
    return [round(float(v), 6) for v in mean], [round(max(float(v), 1e-6), 6) for v in std]
