"""Procedural multispectral scenes: `spectral:SEED`, the test bed for models that read more than RGB.

Each scene is a patchwork of random blobs (the argmax of five smooth random fields, one per class, all drawn
alike), so a region's shape says nothing about its class. Each class has a reflectance spectrum (uint16,
0..10000 as Sentinel-2 L2A); every scene jitters the spectra (illumination, per-class brightness, per-band
gain, vegetation vigour), then a per-class texture, a slight blur (mixed pixels at the borders) and per-pixel
noise are added. The point of the set: **vegetation and turf (artificial grass) are drawn from the same
distribution in the visible bands** (B1-B4; in each scene they even share their visible draw), **but
vegetation is bright in the red edge and near infrared (B6-B8A ~ 3000-5000) where turf stays dark
(~ 500-900)**. A model given only blue, green and red confuses the two at chance; one given NIR need not.
Water is dark in NIR and SWIR; soil and building differ in the visible and in SWIR.

Mean reflectance (x 10000) before the per-scene jitter; `bands=4` gives B2, B3, B4, B8 as blue, green, red, nir:

    band         B1   B2   B3   B4   B5   B6   B7   B8  B8A   B9  B10  B11  B12
    water       600  500  450  300  250  200  180  150  130   80   10   50   30
    vegetation  400  450  750  400 1200 2800 3600 3900 4100 4000   20 2000 1000
    turf        400  450  750  400  550  650  700  750  750  700   20 1300  900
    soil        900 1000 1300 1700 1900 2100 2300 2400 2500 2400   30 3200 2600
    building   1400 1500 1600 1700 1750 1800 1850 1900 1900 1700   40 2100 1900

Every scene is a pure function of (seed, size) like `synthetic.py`: splits train/val/test draw disjoint seeds
(96/24/24 scenes by default), the 4-band scene is the 13-band one's B2, B3, B4, B8. Each sample carries
meta["raster"] with the band names and a fake but valid georeferencing (WGS 84 / UTM 33N, 10 m pixels), so
GeoTIFF writing can be exercised.
"""
from __future__ import annotations

import zlib
from functools import partial

import cv2
import numpy as np

from pixelwise.data.dataset import SegmentationDataset
from pixelwise.data.sample import Sample
from pixelwise.data.synthetic import DEFAULT_COUNTS, SPLIT_OFFSETS

CLASSES = ["water", "vegetation", "turf", "soil", "building"]
PALETTE = [(30, 90, 200), (34, 139, 34), (160, 230, 60), (150, 105, 60), (200, 60, 60)]
WATER, VEGETATION, TURF, SOIL, BUILDING = range(5)
S2_BANDS = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]
RGBN_BANDS = ["blue", "green", "red", "nir"]
RGBN_INDEX = [1, 2, 3, 7]  # B2, B3, B4, B8 in S2_BANDS
BAND_SETS = {4: RGBN_BANDS, 13: S2_BANDS}
VISIBLE = [0, 1, 2, 3]  # B1-B4: where vegetation and turf are drawn alike
RED_EDGE_NIR = [4, 5, 6, 7, 8, 9]  # B5-B9: where vegetation's vigour shows
SIGNATURES = np.array([  # (classes, 13 bands), reflectance x 10000: the table of the module docstring
    [600, 500, 450, 300, 250, 200, 180, 150, 130, 80, 10, 50, 30],
    [400, 450, 750, 400, 1200, 2800, 3600, 3900, 4100, 4000, 20, 2000, 1000],
    [400, 450, 750, 400, 550, 650, 700, 750, 750, 700, 20, 1300, 900],
    [900, 1000, 1300, 1700, 1900, 2100, 2300, 2400, 2500, 2400, 30, 3200, 2600],
    [1400, 1500, 1600, 1700, 1750, 1800, 1850, 1900, 1900, 1700, 40, 2100, 1900],
], np.float32)
MAX_REFLECTANCE = 10000
PIXEL_METRES = 10.0
UTM33N_WKT = (  # EPSG:32633 as GDAL writes it (rasterio's CRS.from_epsg(32633).to_wkt())
    'PROJCS["WGS 84 / UTM zone 33N",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563,'
    'AUTHORITY["EPSG","7030"]],AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0,AUTHORITY["EPSG","8901"]],'
    'UNIT["degree",0.0174532925199433,AUTHORITY["EPSG","9122"]],AUTHORITY["EPSG","4326"]],'
    'PROJECTION["Transverse_Mercator"],PARAMETER["latitude_of_origin",0],PARAMETER["central_meridian",15],'
    'PARAMETER["scale_factor",0.9996],PARAMETER["false_easting",500000],PARAMETER["false_northing",0],'
    'UNIT["metre",1,AUTHORITY["EPSG","9001"]],AXIS["Easting",EAST],AXIS["Northing",NORTH],'
    'AUTHORITY["EPSG","32633"]]')


def _field(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth random field (H, W) float32, about [-1, 1]: bicubic upsampling of a coarse random grid."""
    grid = rng.uniform(-1, 1, size=(cells, cells)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _labels(rng: np.random.Generator, size: int) -> np.ndarray:
    """int64 (S, S): the argmax of one smooth field per class (plus a per-scene bias): random blobs."""
    fields = np.stack([_field(rng, size, size, int(rng.integers(3, 8))) + rng.normal(0, 0.2)
                       for _ in CLASSES])
    return fields.argmax(0).astype(np.int64)


def _scene_spectra(rng: np.random.Generator) -> np.ndarray:
    """(classes, 13) this scene's spectra: illumination, per-class brightness and per-band gain, vegetation
    vigour; turf takes vegetation's visible values, so the visible bands never tell them apart."""
    gain = rng.uniform(0.9, 1.1) * rng.normal(1, 0.07, (len(CLASSES), 1)) * rng.normal(1, 0.03, SIGNATURES.shape)
    spectra = SIGNATURES * gain.astype(np.float32)
    spectra[VEGETATION, RED_EDGE_NIR] *= rng.uniform(0.85, 1.2)
    spectra[TURF, VISIBLE] = spectra[VEGETATION, VISIBLE]
    return spectra


def make_spectral_scene(seed: int, size: int = 128, bands: int = 13) -> Sample:
    """One scene: image uint16 (S, S, bands) reflectance 0..10000, semantic int64 (S, S), meta["raster"]."""
    rng = np.random.default_rng(seed)
    semantic = _labels(rng, size)
    image = _scene_spectra(rng)[semantic]  # (S, S, 13)
    texture = np.stack([_field(rng, size, size, int(rng.integers(6, 20))) for _ in CLASSES])  # (C, S, S)
    strength = rng.uniform(0.03, 0.1, len(CLASSES)).astype(np.float32)
    rows, cols = np.indices(semantic.shape)
    image *= (1 + strength[semantic] * texture[semantic, rows, cols])[..., None]
    image = cv2.GaussianBlur(image, (0, 0), 0.7)
    image += rng.normal(0, 1, image.shape).astype(np.float32) * (0.03 * image + 30)
    image = np.rint(image.clip(0, MAX_REFLECTANCE)).astype(np.uint16)
    if bands == 4:
        image = np.ascontiguousarray(image[..., RGBN_INDEX])
    x0, y0 = 300_000 + size * PIXEL_METRES * int(rng.integers(0, 300)), 5_500_000 - size * PIXEL_METRES * int(
        rng.integers(0, 300))
    raster = {"crs": UTM33N_WKT, "transform": [PIXEL_METRES, 0.0, float(x0), 0.0, -PIXEL_METRES, float(y0)],
              "band_names": list(BAND_SETS[bands]), "nodata": None, "dtype": "uint16"}
    return Sample(image=image, semantic=semantic, meta={"name": f"spectral_{seed}", "path": "", "raster": raster})


def open_spectral(root="default", split: str = "train", count: int | None = None, size: int = 128,
                  bands: int = 13, **_ignored) -> SegmentationDataset:
    """The multispectral set as `spectral:SEED` (root is a seed or a name hashed to one).

    bands: 4 (blue, green, red, nir) or 13 (Sentinel-2 B1..B12). Splits train/val/test draw disjoint seeds;
    `count` scenes of `size` x `size` each.
    """
    from pixelwise.errors import DataError

    if split not in SPLIT_OFFSETS:
        raise DataError(f"spectral: unknown split '{split}' (known: {', '.join(SPLIT_OFFSETS)})")
    if str(bands) not in ("4", "13"):
        raise DataError(f"spectral: option bands must be 4 (blue, green, red, nir) or 13 (Sentinel-2), got {bands!r}")
    root = str(root)
    base = int(root) if root.isdigit() else zlib.crc32(root.encode()) % 100_000
    n = count if count is not None else DEFAULT_COUNTS[split]
    seeds = [base * 10_000_000 + SPLIT_OFFSETS[split] + i for i in range(n)]
    load = partial(make_spectral_scene, size=int(size), bands=int(bands))
    return SegmentationDataset(records=seeds, load=load, classes=list(CLASSES), palette=list(PALETTE),
                               name=f"spectral:{root} [{split}] {bands} bands")
