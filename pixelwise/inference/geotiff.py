"""GeoTIFF scenes predicted window by window: `pixelwise predict MODEL_DIR scene.tif --out OUT`.

A scene is a .tif / .tiff input whose header (rasterio; no pixel read) georeferences it: a CRS or an affine
transform. Its pixels are never all in memory: the Predictor's tile grid (`pixelwise.inference.sliding`) is
laid over the raster, each tile is a rasterio window read when the stitcher asks for it (`RasterWindows`, in
place of an in-memory image, through the same fetchers and normalisation as `Predictor.iter_rows`), and each
finished row band of blended logits is decoded by the task and written into outputs opened once
(`pixelwise.data.raster.GeoTiffRows`):

    OUT/NAME.tif          the label map: one band, uint8 (int32 past 255 classes), the source's CRS and
                          transform, tiled 256 x 256, deflate; nodata 255 (int32: -1), the value of every pixel
                          where the source is nodata (every band read equal to its nodata value)
    OUT/NAME_probs.tif    with probabilities: one uint8 band per class, named by it, round(255 p) of the task's
                          class probabilities (softmax); 0 in every band where the source is nodata
    OUT/NAME.geojson      with polygons: class polygons in the raster's CRS, one per region (see `write_polygons`);
                          OUT/NAME.gpkg with polygons="gpkg"

The label map equals what `Predictor.predict` gives the whole image in memory with the same tile and overlap
(same tiles, same pixels, same arithmetic), but for the source's nodata pixels, which are nodata. Without a
tile size scenes run as AUTO_TILE-px tiles (a scene smaller than one tile is one tile: the one-pass answer).
Memory is bounded by one row of tiles: the blending accumulator (classes x tile x width float32), one band of
logits, the tile batch and GDAL's block cache (GDAL_CACHE_MB); benchmarks/geotiff_memory.py measures a
30000 x 30000 scene. What cannot apply stops with one line: a model that resizes its input or the dense CRF
asked for (both need the whole image; a CRF the model merely stores is left out), a task that writes no
GeoTIFF label map. Outputs are written under temporary names and renamed in: a killed run leaves no output
under its own name (at most a hidden .NAME.tif.tmpPID), and a scene whose outputs all exist is skipped unless
`overwrite`. This module is `Predictor.iter_rows` with windows for the image: the bands come from the
Predictor's own `tile_bands` (its tile grid, tile batch and tile forward), so nothing differs but the reads.
"""
from __future__ import annotations

import json
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pixelwise.constants import IGNORE_INDEX
from pixelwise.data.raster import (TIFF_SUFFIXES, GeoTiffRows, header_meta, image_bands, nodata_pixels, open_raster,
                                   read_window)
from pixelwise.errors import DataError, PixelwiseError
from pixelwise.hardware import release_freed_memory
from pixelwise.inference.predictor import AUTO_TILE
from pixelwise.inference.tta import spell_tta

POLYGON_ROWS = 1024  # rows vectorised at a time (a multiple of the 256-row blocks of the mask)


@dataclass
class SceneResult:
    source: Path
    written: list[Path] = field(default_factory=list)
    skipped: bool = False
    size: tuple[int, int] = (0, 0)  # (height, width)
    seconds: float = 0.0


def is_scene(path: str | Path) -> bool:
    """Whether `path` is a GeoTIFF scene: a .tif/.tiff file rasterio opens whose header has a CRS or a
    transform. Anything else (and a file that does not open: the usual path names its problem) is not."""
    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES or not path.is_file():
        return False
    try:
        with open_raster(path, max_pixels=None) as ds:
            return header_meta(ds)["transform"] is not None
    except DataError:
        return False


def polygon_format(polygons: bool | str | None) -> str | None:
    """The polygon output asked for: None (none), True or "geojson", "gpkg"."""
    if not polygons:
        return None
    fmt = "geojson" if polygons is True else polygons
    if fmt not in POLYGON_FORMATS:
        raise PixelwiseError(f"polygons: unknown format {fmt!r} (one of {', '.join(POLYGON_FORMATS)})")
    return fmt


def scene_outputs(path: str | Path, out_dir: str | Path, probabilities: bool = False,
                  polygons: bool | str | None = None) -> list[Path]:
    """The files a scene is predicted into: OUT/NAME.tif, and OUT/NAME_probs.tif, OUT/NAME.geojson (or .gpkg)."""
    stem, out, fmt = Path(path).stem, Path(out_dir), polygon_format(polygons)
    return ([out / f"{stem}.tif"] + ([out / f"{stem}_probs.tif"] if probabilities else [])
            + ([out / f"{stem}{POLYGON_FORMATS[fmt]}"] if fmt else []))


def check_scenes(paths: list[Path], out_dir: str | Path, probabilities: bool, polygons: bool) -> None:
    """No two inputs share a stem, no output lands on an input; a DataError naming the file otherwise. Polygons
    asked for without shapely (or a GeoPackage without fiona) stop here, before any prediction."""
    fmt = polygon_format(polygons)
    for needed in (["shapely"] if fmt else []) + (["fiona"] if fmt == "gpkg" else []):
        try:
            __import__(needed)
        except ImportError:
            raise PixelwiseError(f"--polygons {fmt} needs {needed}: pip install 'pixelwise[geo]'") from None
    stems: dict[str, Path] = {}
    inputs = {p.resolve() for p in paths}
    for p in paths:
        if p.stem in stems:
            raise DataError(f"{p}: same file stem as {stems[p.stem]}; their outputs would overwrite each other")
        stems[p.stem] = p
        for target in scene_outputs(p, out_dir, probabilities, polygons):
            if target.resolve() in inputs:
                raise DataError(f"{target}: this output would overwrite an input scene; choose another --out")


class RasterWindows:
    """An open raster seen as an (H, W, B) image of `bands` that reads only what is sliced: scene[y0:y1, x0:x1]
    -> (y1 - y0, x1 - x0, B) (clipped to the raster), one rasterio window. `grey`: one band given three times
    (an RGB model reads a grey scene as grey RGB)."""

    def __init__(self, ds, bands: list[int], grey: bool = False):
        self.ds, self.bands, self.grey = ds, bands, grey
        self.shape = (ds.height, ds.width, 3 if grey else len(bands))

    def __getitem__(self, key) -> np.ndarray:
        rows, cols = key
        y0, y1, _ = rows.indices(self.ds.height)
        x0, x1, _ = cols.indices(self.ds.width)
        window = read_window(self.ds, self.bands, y0, x0, y1 - y0, x1 - x0)
        return np.repeat(window, 3, axis=2) if self.grey else window


def model_bands(ds, path: Path, rgb: bool) -> tuple[list[int], bool]:
    """(band numbers, grey) a model reads of a scene: all bands less an alpha band beside R, G, B for a
    multi-band model (as `read_raster`); for an RGB model the first three bands that are not alpha, or one grey
    band (a palette band, whose colours a model never saw, is refused)."""
    if not rgb:
        return image_bands(ds), False
    bands = [i + 1 for i, c in enumerate(ds.colorinterp) if c.name != "alpha"]
    if len(bands) == 1 and ds.colorinterp[bands[0] - 1].name == "palette":
        raise DataError(f"{path}: a palette raster; an RGB model reads colours: expand it first "
                        "(gdal_translate -expand rgb)")
    if len(bands) == 2 or not bands:
        raise DataError(f"{path}: {len(bands)} bands; an RGB model reads 3 (red, green, blue) or 1 (grey)")
    return (bands, True) if len(bands) == 1 else (bands[:3], False)


def scene_predictor(predictor, source: Path):
    """The Predictor a scene runs: the one given, less a CRF it only stores; what needs the whole image (a
    resize, a CRF asked for) or a task without GeoTIFF label maps stops with one line naming `source`."""
    task = predictor.task
    if "tif" not in task.formats or not task.pointwise:
        raise PixelwiseError(f"{source}: the {task.name} task writes no GeoTIFF label map, so a scene is not "
                             "predicted window by window for it; give --format (one of "
                             f"{', '.join(task.formats)}) to predict it whole")
    if predictor.resize:
        raise PixelwiseError(f"{source}: this model resizes its input (preprocessing resize {predictor.resize}), "
                             "which needs the whole image; a GeoTIFF scene is predicted window by window. "
                             "--format tif predicts a scene that fits in memory whole (its CRS and transform kept)")
    if predictor.crf is not None:
        if "crf" not in predictor.stored:
            raise PixelwiseError(f"{source}: the dense CRF needs the whole image; a GeoTIFF scene is predicted "
                                 "window by window (drop --crf)")
        predictor = predictor.with_options(tta=spell_tta(*predictor.tta), crf=None)
    return predictor


def _mask_type(num_classes: int) -> tuple[np.dtype, int]:
    """(dtype, nodata) of the label map: uint8 and 255 up to 255 classes, else int32 and -1."""
    return (np.dtype(np.uint8), IGNORE_INDEX) if num_classes <= IGNORE_INDEX else (np.dtype(np.int32), -1)


def predict_scene(predictor, path: str | Path, out_dir: str | Path, probabilities: bool = False,
                  polygons: bool | str | None = None, overwrite: bool = False, progress: bool = True) -> SceneResult:
    """Predict one GeoTIFF scene window by window into `out_dir` (the module docstring's files)."""
    path = Path(path)
    targets = scene_outputs(path, out_dir, probabilities, polygons)
    result = SceneResult(path)
    if not overwrite and all(t.is_file() for t in targets):
        result.skipped, result.written = True, targets
        return result
    predictor = scene_predictor(predictor, path)
    start = time.perf_counter()
    with open_raster(path, max_pixels=None) as ds:
        bands, grey = model_bands(ds, path, predictor.spec.is_rgb)
        scene = RasterWindows(ds, bands, grey)
        predictor.check_image(scene[0:1, 0:1], str(path))  # band count and dtype, before any tile runs
        meta, nodata = header_meta(ds, bands), ds.nodata
        result.size = (ds.height, ds.width)
        _write_maps(predictor, scene, meta, nodata, targets, probabilities, progress)
    if polygons:
        write_polygons(targets[0], targets[-1], predictor.classes, fmt=polygon_format(polygons))
    result.written, result.seconds = targets, time.perf_counter() - start
    return result


@torch.inference_mode()
def _write_maps(predictor, scene: RasterWindows, meta: dict, nodata, targets: list[Path], probabilities: bool,
                progress: bool) -> None:
    """Run the tiles row by row and write each finished band of labels (and probabilities)."""
    h, w = scene.shape[:2]
    classes = predictor.classes
    dtype, void = _mask_type(len(classes))
    georef = {"crs": meta["crs"], "transform": meta["transform"]}
    with GeoTiffRows(targets[0], 1, h, w, dtype, georef, nodata=void, band_names=["class"]) as mask, \
            (GeoTiffRows(targets[1], len(classes), h, w, np.uint8, georef, band_names=list(classes),
                         photometric="MINISBLACK") if probabilities else nullcontext()) as probs, \
            tqdm(total=h, desc=Path(targets[0]).stem, unit="rows", disable=not progress) as bar:
        for y0, y1, band in predictor.tile_bands(scene, predictor.tile or AUTO_TILE):
            pred = predictor.task.decode(band, probs=probabilities)
            labels = pred.semantic.astype(dtype)
            missing = nodata_pixels(scene[y0:y1, 0:w], nodata) if nodata is not None else None
            if missing is not None:
                labels[missing] = void
            mask.write(labels)
            if probabilities:
                scaled = np.rint(pred.probs * 255).astype(np.uint8)
                if missing is not None:
                    scaled[:, missing] = 0
                probs.write(scaled)
            bar.update(y1 - y0)
            # the band and its decoding are freed now; glibc keeps such blocks in its arenas unless told, and
            # across a 30000-px wide scene they added about 150 MB to the peak resident set
            del band, pred, labels
            release_freed_memory()


POLYGON_FORMATS = {"geojson": ".geojson", "gpkg": ".gpkg"}


def write_polygons(mask_path: Path, out_path: Path, classes: list[str], rows: int = POLYGON_ROWS,
                   fmt: str = "geojson") -> Path:
    """The label map GeoTIFF -> class polygons in its CRS, one feature per 4-connected region of a class
    (properties: class id and name; holes kept; nodata pixels give none): GeoJSON (a FeatureCollection with
    a "crs" member, the 2008 spelling GDAL reads: EPSG:n where the CRS has a code, else its WKT) or a
    GeoPackage layer "polygons" (fiona). Memory stays bounded: `strip_polygons` vectorises `rows` rows at a
    time and dissolves the regions that cross a strip edge. Rasterised back, the polygons are the label map.
    Written to a temporary name and renamed in."""
    if fmt not in POLYGON_FORMATS:
        raise PixelwiseError(f"polygons: unknown format {fmt!r} (one of {', '.join(POLYGON_FORMATS)})")
    tmp = out_path.with_name(f".{out_path.name}.tmp{os.getpid()}")
    try:
        with open_raster(mask_path, max_pixels=None) as ds:
            features = strip_polygons(ds, rows)
            if fmt == "geojson":
                _write_geojson(tmp, ds.crs, features, classes)
            else:
                _write_gpkg(tmp, ds.crs, features, classes)
        tmp.replace(out_path)
    except OSError as exc:
        raise DataError(f"{out_path}: cannot write the polygons ({exc})") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return out_path


def strip_polygons(ds, rows: int = POLYGON_ROWS):
    """Yield (GeoJSON-like geometry, class id) for each 4-connected region of the open label map `ds`, read
    `rows` rows at a time (rasterio.features.shapes per strip). A region crossing a strip edge comes out of
    shapes() as pieces, one per strip; the pieces touching the edge are held until the next strip, and those
    that share a stretch of that edge with a piece of their class there (not a lone corner: 4-connectivity)
    are dissolved into one polygon (shapely unary_union). Held pieces are bounded by the scene's width."""
    from affine import Affine  # rasterio's dependency
    from rasterio.features import shapes
    from rasterio.windows import Window
    from shapely.geometry import mapping, shape

    held: list[tuple[object, int]] = []  # pieces touching the bottom edge of the strip read last
    for y0 in range(0, ds.height, rows):
        h = min(rows, ds.height - y0)
        labels = ds.read(1, window=Window(0, y0, ds.width, h))
        valid = labels != ds.nodata if ds.nodata is not None else None
        at = ds.transform @ Affine.translation(0, y0)  # the strip's own transform
        pieces = [(shape(g), int(v)) for g, v in shapes(labels, mask=valid, connectivity=4, transform=at)]
        top, bottom = _edge(at, 0, ds.width), _edge(at, h, ds.width)
        merged = _dissolve(held, pieces, top)
        last = y0 + h >= ds.height
        held = []
        for geometry, cls in merged:
            if not last and geometry.intersection(bottom).length > 0:
                held.append((geometry, cls))
            else:
                yield mapping(geometry), cls
    for geometry, cls in held:
        yield mapping(geometry), cls


def _edge(transform, row: int, width: int):
    """The line along pixel row boundary `row` of a strip, in map coordinates."""
    from shapely.geometry import LineString

    return LineString([transform @ (0, row), transform @ (width, row)])


def _dissolve(held: list, pieces: list, edge) -> list:
    """`held` (pieces of the strip above touching `edge`) and this strip's `pieces`, with every group of
    same-class pieces joined across `edge` by a shared stretch of it dissolved into one polygon."""
    from shapely import STRtree
    from shapely.ops import unary_union

    if not held:
        return pieces
    items = held + pieces
    parent = list(range(len(items)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    touching = [i for i, (g, _) in enumerate(pieces, len(held)) if g.intersection(edge).length > 0]
    tree = STRtree([items[i][0] for i in touching])  # candidates by bounding box: no held x touching loop
    for a, (ga, ca) in enumerate(held):
        for j in tree.query(ga):
            gb, cb = items[touching[j]]
            if ca == cb and ga.intersection(gb).length > 0:  # a shared stretch of the edge, not a corner
                parent[root(a)] = root(touching[j])
    groups: dict[int, list[int]] = {}
    for i in range(len(items)):
        groups.setdefault(root(i), []).append(i)
    return [(items[m[0]][0] if len(m) == 1 else unary_union([items[i][0] for i in m]), items[m[0]][1])
            for m in groups.values()]


def _write_gpkg(path: Path, crs, features, classes: list[str]) -> None:
    """A GeoPackage with one layer "polygons" (fiona, GDAL's GPKG driver); polygons and multipolygons alike
    are written as MultiPolygon, the layer's one geometry type."""
    try:
        import fiona
    except ImportError:
        raise PixelwiseError(f"{path.name[1:].rsplit('.tmp', 1)[0]}: GeoPackage output needs fiona: "
                             "pip install 'pixelwise[geo]'") from None
    schema = {"geometry": "MultiPolygon", "properties": {"class": "int", "name": "str"}}
    with fiona.open(path, "w", driver="GPKG", layer="polygons", schema=schema,
                    crs_wkt=crs.to_wkt() if crs is not None else None) as layer:
        for geometry, cls in features:
            if geometry["type"] == "Polygon":
                geometry = {"type": "MultiPolygon", "coordinates": [geometry["coordinates"]]}
            layer.write({"geometry": geometry, "properties": {"class": cls, "name": classes[cls]}})


def _write_geojson(path: Path, crs, features, classes: list[str]) -> None:
    code = crs.to_epsg() if crs is not None else None
    name = f"urn:ogc:def:crs:EPSG::{code}" if code else (crs.to_wkt() if crs is not None else None)
    with open(path, "w") as f:
        f.write('{"type": "FeatureCollection",')
        if name:
            f.write(f' "crs": {json.dumps({"type": "name", "properties": {"name": name}})},')
        f.write(' "features": [')
        first = True
        for geometry, cls in features:
            feature = {"type": "Feature", "properties": {"class": cls, "name": classes[cls]},
                       "geometry": geometry}
            f.write(("\n" if first else ",\n") + json.dumps(feature))
            first = False
        f.write("\n]}\n")
