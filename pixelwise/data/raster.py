"""Reading and writing multi-band rasters: GeoTIFFs, plain multi-band TIFFs and .npy arrays.

`read_raster(path)` returns an (H, W, B) array in the file's own dtype (uint8, uint16, int16 or float32;
int32 and float64 become float32), any B from 1 to 64, with the georeferencing as a plain JSON-able dict:

    {"crs": WKT string or None, "transform": [a, b, c, d, e, f] (affine, rasterio order) or None,
     "band_names": [str] or None, "nodata": number or None, "dtype": str}

- `.tif/.tiff`: with rasterio when it is installed (crs, transform, band descriptions and nodata read);
  else with tifffile (no crs or transform: they need GDAL/PROJ to be read faithfully; band names and nodata
  from GDAL's own tags). A multi-page TIFF whose pages are single bands of one shape and dtype gives its
  pages as bands; any other multi-page TIFF gives its first page, with a warning naming the file. An 8-bit
  RGB TIFF is (H, W, 3) uint8, as PIL reads it; an alpha band beside R, G, B is dropped (as PIL's RGB).
  Palette TIFFs give their indices (one band), not colours.
- `.npy`: (H, W) -> (H, W, 1), (H, W, B); pickles and object arrays are refused.
The size the header declares is checked against the pixel limit of `pixelwise.data.io` before any pixel is
read, and every problem is a one-line DataError naming the file.

`write_geotiff(path, array, meta)` writes a tiled, deflate-compressed GeoTIFF atomically (needs rasterio).
`read_image_file` / `read_label_file` are what dataset formats call: rasters through this module, every other
image through `pixelwise.data.io` (as are TIFFs when neither rasterio nor tifffile is installed).
Window by window (rasterio; a scene larger than memory, `pixelwise.inference.geotiff`, and the `geotiff:`
format's band selection): `open_raster` (GDAL's block cache bounded), `header_meta`, `read_window`,
`nodata_pixels` (the one nodata rule: every band equal to the nodata value) and `GeoTiffRows`, a GeoTIFF written
row band by row band.
"""
from __future__ import annotations

import logging
import os
import re
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from pixelwise.data.bands import MAX_BANDS
from pixelwise.data.io import MAX_PIXELS, RASTER_SUFFIXES, ImageTooLarge, _reason, decode_image, read_image, read_mask
from pixelwise.errors import DataError

TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_DTYPES = ("uint8", "uint16", "int16", "float32")  # kept as they are
TO_FLOAT32 = ("int32", "float64")  # converted to float32
GEO_HINT = "pip install 'pixelwise[geo]'"
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_DESCRIPTION = re.compile(r'<Item name="DESCRIPTION" sample="(\d+)"[^>]*>([^<]*)</Item>')


def is_raster_path(path: str | Path) -> bool:
    """True for a path `read_raster` reads (by suffix, case-insensitive)."""
    return Path(path).suffix.lower() in RASTER_SUFFIXES


def raster_meta(dtype: str, crs: str | None = None, transform=None, band_names=None, nodata=None) -> dict:
    """The `Sample.meta["raster"]` dict (see the module docstring), with plain Python values."""
    if nodata is not None:
        nodata = float(nodata)
        nodata = int(nodata) if nodata.is_integer() and np.dtype(dtype).kind in "iu" else nodata
    return {"crs": crs or None, "transform": [float(v) for v in transform] if transform is not None else None,
            "band_names": [str(n) for n in band_names] if band_names else None, "nodata": nodata,
            "dtype": str(dtype)}


# ---- reading -----------------------------------------------------------------------------------------------

def read_raster(path: str | Path, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, dict]:
    """A raster file -> (array (H, W, B) in an image dtype, meta dict); DataError naming the file."""
    array, meta = _read_raw(Path(path), max_pixels)
    array = _image_dtype(array, path)
    return array, {**meta, "dtype": str(array.dtype)}


def decode_raster(data: bytes, where: str = "the upload", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Uploaded bytes -> an image array: a TIFF or .npy (told by its first bytes) as raw (H, W, B) bands,
    anything else as uint8 (H, W, 3) RGB (`pixelwise.data.io.decode_image`). Errors name `where`. The
    raster readers take files (GDAL does), so the bytes pass through a temporary file that is removed."""
    import tempfile

    head = bytes(data[:8])
    suffix = (".tif" if head[:4] in TIFF_MAGIC
              else ".npy" if head[:6] == b"\x93NUMPY" else None)
    if suffix is None:
        return decode_image(data, where, max_pixels)
    with tempfile.TemporaryDirectory(prefix="pixelwise-upload-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            return read_raster(path, max_pixels)[0]
        except DataError as exc:
            raise type(exc)(str(exc).replace(str(path), where)) from None


def read_raster_labels(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A single-band raster of class ids (.tif or .npy) -> int64 (H, W); integer values only."""
    array, _ = _read_raw(Path(path), max_pixels)
    if array.shape[2] != 1:
        raise DataError(f"{path}: a mask must have one band, this raster has {array.shape[2]}")
    labels = array[..., 0]
    if labels.dtype.kind == "f":
        if not np.isfinite(labels).all() or not (labels == np.round(labels)).all():
            raise DataError(f"{path}: mask of dtype {labels.dtype} holds values that are not whole numbers")
    elif labels.dtype.kind not in "iub":
        raise DataError(f"{path}: mask of dtype {labels.dtype}; expected integer class ids")
    return labels.astype(np.int64)


def read_image_file(path: str | Path, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, dict | None]:
    """Any image a dataset may hold -> (image, raster meta or None). Rasters (see `is_raster_path`) keep
    their bands and dtype, (H, W, B); other images (and TIFFs when no TIFF library is installed, and 8-bit
    grey or RGBA TIFFs) are uint8 (H, W, 3) RGB from `pixelwise.data.io.read_image`, with meta None."""
    if is_raster_path(path) and not (_is_tiff(path) and _tiff_backend() is None):
        array, meta = read_raster(path, max_pixels)
        if not (_is_tiff(path) and array.dtype == np.uint8 and array.shape[2] in (1, 2, 4)):
            return array, meta
        # an 8-bit grey or RGBA TIFF is a photo as it always was: RGB, through PIL (orientation applied)
    return read_image(path, max_pixels), None


def read_label_file(path: str | Path) -> np.ndarray:
    """Any mask file -> raw class ids int64 (H, W): single-band rasters through `read_raster_labels`, index
    PNGs (and TIFFs when no TIFF library is installed) through `pixelwise.data.io.read_mask`."""
    if is_raster_path(path) and not (_is_tiff(path) and _tiff_backend() is None):
        return read_raster_labels(path)
    return read_mask(path)


def _is_tiff(path: str | Path) -> bool:
    return Path(path).suffix.lower() in TIFF_SUFFIXES


def _rasterio():
    """The rasterio module, or None where it is not installed (imported on use: an optional dependency)."""
    try:
        import rasterio
        import rasterio.errors  # noqa: F401
    except ImportError:
        return None
    return rasterio


def _tifffile():
    try:
        import tifffile
    except ImportError:
        return None
    return tifffile


def _tiff_backend() -> str | None:
    """'rasterio', 'tifffile' or None: what reads TIFFs here."""
    return "rasterio" if _rasterio() is not None else "tifffile" if _tifffile() is not None else None


def _read_raw(path: Path, max_pixels: int) -> tuple[np.ndarray, dict]:
    """(array (H, W, B) in the file's dtype, native byte order; meta) of a .tif/.tiff/.npy file."""
    suffix = path.suffix.lower()
    if suffix not in RASTER_SUFFIXES:
        raise DataError(f"{path}: not a raster file (expected one of {', '.join(RASTER_SUFFIXES)})")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes)")
    if suffix == ".npy":
        array, meta = _read_npy(path, max_pixels), {}
    else:
        rasterio, tifffile = _rasterio(), _tifffile()
        if rasterio is not None:
            array, meta = _read_tiff_rasterio(rasterio, path, max_pixels)
        elif tifffile is not None:
            array, meta = _read_tiff_tifffile(tifffile, path, max_pixels)
        else:
            raise DataError(f"{path}: reading multi-band TIFF needs rasterio or tifffile: {GEO_HINT}")
    if array.dtype == bool:  # a bilevel TIFF (tifffile) or a boolean array: 0/1, as GDAL reads it
        array = array.astype(np.uint8)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return np.ascontiguousarray(array), raster_meta(str(array.dtype), **meta)


def _check_shape(path: Path, h: int, w: int, bands: int, max_pixels: int) -> None:
    """The declared size, before any pixel is read: zero size, the pixel limit, the band limit."""
    if h <= 0 or w <= 0 or bands <= 0:
        raise DataError(f"{path}: zero-size raster ({w}x{h} pixels, {bands} band(s))")
    if h * w > max_pixels:
        raise ImageTooLarge(f"{path}: image too large: {w}x{h} = {w * h} pixels, over the limit of {max_pixels}")
    if bands > MAX_BANDS:
        raise DataError(f"{path}: {bands} bands, over the limit of {MAX_BANDS}")


def _image_dtype(array: np.ndarray, path) -> np.ndarray:
    """uint8/uint16/int16/float32 kept, int32/float64 -> float32, anything else a DataError."""
    name = array.dtype.name
    if name in IMAGE_DTYPES:
        return array
    if name in TO_FLOAT32:
        return array.astype(np.float32)
    raise DataError(f"{path}: dtype {array.dtype} not supported for images (expected "
                    f"{', '.join(IMAGE_DTYPES + TO_FLOAT32)})")


def _read_npy(path: Path, max_pixels: int) -> np.ndarray:
    """A plain .npy array (H, W) or (H, W, B) -> (H, W, B); its header is checked before the data is read."""
    shape, dtype = _npy_header(path)
    if dtype.hasobject:
        raise DataError(f"{path}: an object array (refused: loading one unpickles, which can run code)")
    if dtype.fields is not None or dtype.subdtype is not None:
        raise DataError(f"{path}: not a plain numeric .npy array (dtype {dtype})")
    if len(shape) not in (2, 3):
        raise DataError(f"{path}: array of shape {shape}; expected (H, W) or (H, W, B)")
    h, w = shape[:2]
    bands = shape[2] if len(shape) == 3 else 1
    if bands > MAX_BANDS and len(shape) == 3 and shape[0] <= MAX_BANDS:
        raise DataError(f"{path}: array of shape {shape} has {bands} bands, over the limit of "
                        f"{MAX_BANDS}; bands go last: save it as (H, W, B)")
    _check_shape(path, h, w, bands, max_pixels)
    try:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
        array = np.array(mapped)
        del mapped
    except MemoryError:
        raise ImageTooLarge(f"{path}: not enough memory to read this {w}x{h} array of {bands} bands") from None
    except Exception as exc:  # noqa: BLE001 - a file cut short after its header
        raise DataError(f"{path}: truncated or corrupt .npy file ({_reason(exc)})") from None
    return array if array.ndim == 3 else array[..., None]


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from a .npy header; DataError for anything else (a pickle, an .npz, other bytes)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if head[:2] == b"PK":
            raise DataError(f"{path}: an .npz archive, not a single .npy array")
        if head[:6] != b"\x93NUMPY":
            what = "a pickle (refused: pickles can run code)" if head[:1] == b"\x80" else f"it starts {head!r}"
            raise DataError(f"{path}: not a .npy array ({what})")
        f.seek(0)
        try:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):  # 3.0 only adds utf-8 field names: structured arrays
                raise ValueError(f"format version {version[0]}.{version[1]} of structured arrays")
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = reader(f)
        except Exception as exc:  # noqa: BLE001 - ValueError, SyntaxError, EOFError on a damaged header
            raise DataError(f"{path}: truncated or corrupt .npy header ({_reason(exc)})") from None
    return tuple(shape), np.dtype(dtype)


def _not_tiff(path: Path, exc: BaseException) -> DataError:
    """The error for a TIFF that cannot be opened: corrupt when it starts like one, else not a TIFF."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:4] in TIFF_MAGIC:
        reason = _reason(exc).replace(f"{path}: ", "").replace(f"{path.name}: ", "")  # GDAL names the file too
        return DataError(f"{path}: truncated or corrupt TIFF: its header cannot be read ({reason})")
    return DataError(f"{path}: not a TIFF (it starts {head!r})")


def _multi_page(path: Path, pages: int) -> None:
    warnings.warn(f"{path}: {pages} pages (a multi-page TIFF whose pages are not single bands of one shape); "
                  "only the first is read", stacklevel=4)


@contextmanager
def _opened(rasterio, path: Path):
    """An open rasterio dataset, GDAL's not-georeferenced warning quiet (a photo TIFF has no georeferencing);
    a file GDAL cannot open is one DataError naming it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        try:
            ds = rasterio.open(path)
        except Exception as exc:  # noqa: BLE001 - GDAL's errors on any bad file
            raise _not_tiff(path, exc) from None
        with ds:
            yield ds


def _read_tiff_rasterio(rasterio, path: Path, max_pixels: int) -> tuple[np.ndarray, dict]:
    with _opened(rasterio, path) as ds:
        _check_shape(path, ds.height, ds.width, ds.count, max_pixels)
        try:
            pages = _gdal_pages(rasterio, ds, max_pixels)
            bands = pages if pages is not None else ds.read()
        except DataError:
            raise
        except MemoryError:
            raise ImageTooLarge(f"{path}: not enough memory to read this {ds.width}x{ds.height} raster of "
                                f"{ds.count} bands") from None
        except Exception as exc:  # noqa: BLE001 - a damaged tile or strip
            raise DataError(f"{path}: truncated or corrupt TIFF ({ds.width}x{ds.height}): "
                            f"{_root_reason(exc)}") from None
        keep = _without_alpha([str(c.name) for c in ds.colorinterp])
        array = np.moveaxis(bands if pages is not None else bands[keep], 0, -1)
        georeferenced = ds.crs is not None or not ds.transform.is_identity
        names = list(ds.descriptions) if pages is None else []
        meta = {"crs": ds.crs.to_wkt() if ds.crs is not None else None,
                "transform": list(ds.transform)[:6] if georeferenced else None,
                "band_names": [names[i] for i in keep] if names and all(names) else None,
                "nodata": ds.nodata}
    return array, meta


def _root_reason(exc: BaseException) -> str:
    """The first cause's message: rasterio wraps GDAL's own ("Read failed. See previous exception...")."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return _reason(exc)


def _without_alpha(interp: list[str]) -> list[int]:
    """Band indices to keep: an alpha band beside red, green and blue is dropped, as PIL's RGB does."""
    if "alpha" in interp and {"red", "green", "blue"} <= set(interp):
        return [i for i, c in enumerate(interp) if c != "alpha"]
    return list(range(len(interp)))


def _gdal_pages(rasterio, ds, max_pixels: int) -> np.ndarray | None:
    """(B, H, W): the pages of a multi-page TIFF as bands when each is one band of the first page's shape
    and dtype; None for a single page (and for other multi-page files, with a warning)."""
    pages = [s for s in ds.subdatasets if s.startswith("GTIFF_DIR:")]
    if len(pages) < 2:
        return None
    path = Path(ds.name)
    for page in pages:
        with rasterio.open(page) as sub:
            if (ds.count, sub.count, sub.width, sub.height, sub.dtypes[0]) != (1, 1, ds.width, ds.height,
                                                                               ds.dtypes[0]):
                _multi_page(path, len(pages))
                return None
    _check_shape(path, ds.height, ds.width, len(pages), max_pixels)
    out = np.empty((len(pages), ds.height, ds.width), ds.dtypes[0])
    for i, page in enumerate(pages):
        with rasterio.open(page) as sub:
            out[i] = sub.read(1)
    return out


@contextmanager
def _quiet(name: str):
    """Silence a library's logger for a while: what it logs about a damaged file becomes one DataError."""
    logger = logging.getLogger(name)
    before, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = before


def _read_tiff_tifffile(tifffile, path: Path, max_pixels: int) -> tuple[np.ndarray, dict]:
    with _quiet("tifffile"):
        return _read_tifffile_pages(tifffile, path, max_pixels)


def _read_tifffile_pages(tifffile, path: Path, max_pixels: int) -> tuple[np.ndarray, dict]:
    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:  # noqa: BLE001 - TiffFileError, struct.error... on bad bytes
        raise _not_tiff(path, exc) from None
    with tif:
        try:
            pages = [p for p in tif.pages if not (p.is_reduced or p.is_mask)]  # not overviews nor GDAL masks
            if not pages:
                raise DataError(f"{path}: truncated or corrupt TIFF: no page can be read")
            first = pages[0]
            layout = _page_layout(path, first)
            h, w, bands = layout[1:]
            stack = len(pages) > 1 and first.ndim == 2 and all(
                p.shape == first.shape and p.dtype == first.dtype for p in pages)
            if len(pages) > 1 and not stack:
                _multi_page(path, len(pages))
            _check_shape(path, h, w, len(pages) if stack else bands, max_pixels)
            if stack:
                array = np.stack([p.asarray() for p in pages], axis=-1)
            else:
                array = first.asarray()
                array = array[..., None] if layout[0] == "YX" else np.moveaxis(array, 0, -1) \
                    if layout[0] == "SYX" else array
                array = array[..., _tiff_without_alpha(first, array.shape[2])]
            meta = {"band_names": _gdal_band_names(first, array.shape[2]), "nodata": _gdal_nodata(first)}
        except DataError:
            raise
        except MemoryError:
            raise ImageTooLarge(f"{path}: not enough memory to read this raster") from None
        except Exception as exc:  # noqa: BLE001 - damaged pages, missing codecs
            raise DataError(f"{path}: truncated or corrupt TIFF: {_reason(exc)}") from None
    return array, meta


def _tiff_without_alpha(page, bands: int) -> list[int]:
    """Samples to keep of an RGB page: its alpha extra samples (TIFF ExtraSamples 1, 2) are dropped."""
    extra = list(getattr(page, "extrasamples", ()) or ())
    if int(getattr(page, "photometric", -1)) != 2 or not extra or bands != 3 + len(extra):
        return list(range(bands))
    return [0, 1, 2] + [3 + i for i, kind in enumerate(extra) if int(kind) not in (1, 2)]


def _page_layout(path: Path, page) -> tuple[str, int, int, int]:
    """('YX' | 'YXS' | 'SYX', H, W, B) of a TIFF page from its header."""
    shape = tuple(page.shape)
    if len(shape) == 2:
        return "YX", shape[0], shape[1], 1
    if len(shape) == 3:
        axes = getattr(page, "axes", "")
        if axes == "SYX" or (axes != "YXS" and shape[0] <= MAX_BANDS and shape[0] < min(shape[1:])):
            return "SYX", shape[1], shape[2], shape[0]
        return "YXS", shape[0], shape[1], shape[2]
    raise DataError(f"{path}: TIFF page of shape {shape}; expected (H, W), (H, W, B) or (B, H, W)")


def _gdal_band_names(page, bands: int) -> list[str] | None:
    """Band descriptions from the GDAL_METADATA tag (what GDAL writes), when every band has one."""
    tag = page.tags.get("GDAL_METADATA") or page.tags.get(42112)
    found = dict(_DESCRIPTION.findall(str(tag.value))) if tag is not None else {}
    names = [found.get(str(i), "") for i in range(bands)]
    return names if all(names) else None


def _gdal_nodata(page) -> float | None:
    tag = page.tags.get("GDAL_NODATA") or page.tags.get(42113)
    try:
        return float(str(tag.value).strip("\x00 ")) if tag is not None else None
    except ValueError:
        return None


# ---- writing -----------------------------------------------------------------------------------------------

WRITE_DTYPES = ("uint8", "uint16", "int16", "int32", "float32", "float64")


def write_geotiff(path: str | Path, array: np.ndarray, meta: dict | None = None, nodata=None) -> Path:
    """Write (H, W) or (H, W, B) as a tiled, deflate-compressed GeoTIFF with `meta`'s crs, transform and
    band_names (none: a plain TIFF without georeferencing); `nodata` (else meta's) marks missing pixels.
    Written to a temporary file beside `path` and renamed in: a kill never leaves half a file."""
    path = Path(path)
    rasterio = _rasterio()
    if rasterio is None:
        raise DataError(f"{path}: writing a GeoTIFF needs rasterio: {GEO_HINT}")
    bands = _bands_to_write(path, np.asarray(array))
    profile = _geotiff_profile(rasterio, path, *bands.shape, bands.dtype, meta or {}, nodata)
    names = (meta or {}).get("band_names")
    if names and len(names) != len(bands):
        raise DataError(f"{path}: {len(names)} band names for {len(bands)} bands")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(tmp, "w", **profile) as ds:
                ds.write(bands)
                for i, name in enumerate(names or []):
                    ds.set_band_description(i + 1, str(name))
        tmp.replace(path)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - GDAL's errors: disk full, permissions
        raise DataError(f"{path}: cannot write the GeoTIFF ({_reason(exc)})") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _bands_to_write(path: Path, array: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, B) -> (B, H, W), checked."""
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or 0 in array.shape:
        raise DataError(f"{path}: cannot write an array of shape {array.shape}; expected (H, W) or (H, W, B)")
    if array.shape[2] > MAX_BANDS:
        raise DataError(f"{path}: {array.shape[2]} bands, over the limit of {MAX_BANDS}")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.dtype.name not in WRITE_DTYPES:
        raise DataError(f"{path}: cannot write dtype {array.dtype} (expected {', '.join(WRITE_DTYPES)})")
    return np.ascontiguousarray(np.moveaxis(array, -1, 0))


def _geotiff_profile(rasterio, path: Path, count: int, h: int, w: int, dtype, meta: dict, nodata) -> dict:
    """rasterio's creation options: tiles of up to 256 x 256 (multiples of 16), deflate with a predictor."""
    from affine import Affine  # rasterio's own dependency

    dtype = np.dtype(dtype)
    block = min(256, max(16, -(-max(h, w) // 16) * 16))
    profile = {"driver": "GTiff", "width": w, "height": h, "count": count, "dtype": dtype.name,
               "tiled": True, "blockxsize": block, "blockysize": block, "compress": "deflate",
               "predictor": 3 if dtype.kind == "f" else 2, "BIGTIFF": "IF_SAFER",
               "photometric": "RGB" if count == 3 and dtype == np.uint8 else "MINISBLACK"}
    nodata = meta.get("nodata") if nodata is None else nodata
    if nodata is not None:
        profile["nodata"] = nodata
    try:
        if meta.get("crs"):
            profile["crs"] = rasterio.crs.CRS.from_user_input(meta["crs"])
        if meta.get("transform") is not None:
            profile["transform"] = Affine(*[float(v) for v in list(meta["transform"])[:6]])
    except Exception as exc:  # noqa: BLE001 - CRSError, TypeError on a malformed meta
        raise DataError(f"{path}: the raster meta's crs or transform is not valid ({_reason(exc)})") from None
    return profile


# ---- window by window: rasters larger than memory ------------------------------------------------------------

# GDAL's block cache while a raster is read or written by windows (its default: 5% of RAM, which counts in the
# resident set): a row of 1024-px tiles of a 30000-px wide 3-band uint8 scene is 113 MB of blocks
GDAL_CACHE_MB = 128


@contextmanager
def open_raster(path: str | Path, max_pixels: int | None = MAX_PIXELS):
    """An open rasterio dataset of a TIFF, to read windows of (`read_window`), inside a GDAL environment whose
    block cache is bounded to GDAL_CACHE_MB. A DataError naming the file when it cannot be opened, or when
    its declared size is past `max_pixels` (None: any size, for reading window by window)."""
    path = Path(path)
    rasterio = _rasterio()
    if rasterio is None:
        raise DataError(f"{path}: reading a raster window by window needs rasterio: {GEO_HINT}")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), _opened(rasterio, path) as ds:
        limit = ds.height * ds.width if max_pixels is None else max_pixels
        _check_shape(path, ds.height, ds.width, ds.count, limit)
        yield ds


def header_meta(ds, bands: list[int] | None = None) -> dict:
    """The meta dict (module docstring) of an open rasterio dataset, from its header alone; band names of
    `bands` (GDAL's 1-based numbers; default all), dtype as `read_window` gives it."""
    bands = bands or list(range(1, ds.count + 1))
    georeferenced = ds.crs is not None or not ds.transform.is_identity
    names = [ds.descriptions[b - 1] for b in bands]
    dtype = ds.dtypes[bands[0] - 1]
    return raster_meta("float32" if dtype in TO_FLOAT32 else dtype, crs=ds.crs.to_wkt() if ds.crs is not None else None,
                       transform=list(ds.transform)[:6] if georeferenced else None,
                       band_names=names if all(names) else None, nodata=ds.nodata)


def georeferencing(path: str | Path) -> dict | None:
    """The meta dict of a TIFF from its header alone (no pixel read) when it is georeferenced (a CRS or a
    transform), else None: not a TIFF, rasterio not installed, no georeferencing, or a header GDAL cannot
    read (reading the pixels then says what is wrong). For an RGB model's TIFF inputs, read as photos, so
    their GeoTIFF outputs keep the CRS and transform."""
    path = Path(path)
    rasterio = _rasterio()
    if rasterio is None or not _is_tiff(path):
        return None
    try:
        with _opened(rasterio, path) as ds:
            meta = header_meta(ds)
    except DataError:  # the pixel read reports a damaged file in one line
        return None
    return meta if meta["crs"] is not None or meta["transform"] is not None else None


def image_bands(ds) -> list[int]:
    """The band numbers (1-based) `read_raster` reads of an open dataset: all, less an alpha band beside R, G, B."""
    return [i + 1 for i in _without_alpha([str(c.name) for c in ds.colorinterp])]


def read_window(ds, bands: list[int], y: int, x: int, h: int, w: int) -> np.ndarray:
    """Rows [y, y + h) and columns [x, x + w) of an open dataset, clipped to it, of `bands` (1-based) ->
    (h', w', B) in an image dtype (as `read_raster` gives: int32 and float64 as float32); a damaged block is a
    DataError naming the file and the window."""
    from rasterio.windows import Window

    y1, x1 = min(y + h, ds.height), min(x + w, ds.width)
    try:
        data = ds.read(list(bands), window=Window(x, y, x1 - x, y1 - y))
    except MemoryError:
        raise ImageTooLarge(f"{ds.name}: not enough memory to read a {x1 - x}x{y1 - y} window") from None
    except Exception as exc:  # noqa: BLE001 - a damaged tile or strip
        raise DataError(f"{ds.name}: truncated or corrupt TIFF (the window of rows {y}..{y1 - 1}, columns "
                        f"{x}..{x1 - 1}): {_root_reason(exc)}") from None
    return _image_dtype(np.moveaxis(data, 0, -1), ds.name)


def nodata_pixels(image: np.ndarray, nodata) -> np.ndarray | None:
    """bool (H, W): the pixels of an (H, W, B) image whose every band holds `nodata` (NaN matches NaN): GDAL's
    rule for a dataset's nodata mask. None when there is no nodata value."""
    if nodata is None:
        return None
    if isinstance(nodata, float) and np.isnan(nodata):
        return np.isnan(image).all(axis=-1)
    return (image == nodata).all(axis=-1)


class GeoTiffRows:
    """A GeoTIFF of (count, height, width) written top to bottom, row band by row band (`write`), opened once:
    tiled, deflate-compressed, with `meta`'s crs and transform, `nodata` set and the bands named. Rows are held
    back until they fill whole rows of blocks, so every compressed block is written once (GDAL writes a block
    written again into new space: the file would grow). Written under a temporary name beside `path` and
    renamed in by `close`; `abort`, or an exception inside `with`, removes it. GDAL's block cache is bounded to
    GDAL_CACHE_MB while it is open."""

    def __init__(self, path: str | Path, count: int, height: int, width: int, dtype, meta: dict | None = None,
                 nodata=None, band_names: list[str] | None = None, photometric: str | None = None):
        self.path, self.count, self.height, self.width = Path(path), count, height, width
        rasterio = _rasterio()
        if rasterio is None:
            raise DataError(f"{self.path}: writing a GeoTIFF needs rasterio: {GEO_HINT}")
        if band_names and len(band_names) != count:
            raise DataError(f"{self.path}: {len(band_names)} band names for {count} bands")
        profile = _geotiff_profile(rasterio, self.path, count, height, width, dtype, meta or {}, nodata)
        if photometric:
            profile["photometric"] = photometric
        self.dtype, self.block = np.dtype(dtype), profile["blockysize"]
        self.held: list[np.ndarray] = []
        self.written = self.received = 0  # rows in the file / rows given to write
        self.tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        self.env, self.ds = rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), None
        self.env.__enter__()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                self.ds = rasterio.open(self.tmp, "w", **profile)
            for i, name in enumerate(band_names or []):
                self.ds.set_band_description(i + 1, str(name))
        except Exception as exc:  # noqa: BLE001 - GDAL's errors: disk full, permissions
            self.abort()
            raise DataError(f"{self.path}: cannot write the GeoTIFF ({_reason(exc)})") from None

    def __enter__(self) -> "GeoTiffRows":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    def write(self, rows: np.ndarray) -> None:
        """The next rows: (count, r, width), or (r, width) for one band."""
        rows = rows[None] if rows.ndim == 2 else rows
        if rows.shape[0] != self.count or rows.shape[2] != self.width or self.received + rows.shape[1] > self.height:
            raise ValueError(f"{self.path}: rows of shape {rows.shape} after {self.received} of {self.height} rows of "
                             f"{self.count} x {self.width}")
        self.held.append(rows.astype(self.dtype, copy=False))
        self.received += rows.shape[1]
        if self.received == self.height or self.received - self.written >= self.block:
            self._flush()

    def _flush(self) -> None:
        from rasterio.windows import Window

        held = np.concatenate(self.held, axis=1) if len(self.held) > 1 else self.held[0]
        n = held.shape[1] if self.received == self.height else held.shape[1] // self.block * self.block
        try:
            self.ds.write(held[:, :n], window=Window(0, self.written, self.width, n))
        except Exception as exc:  # noqa: BLE001 - GDAL's errors: disk full
            self.abort()
            raise DataError(f"{self.path}: cannot write the GeoTIFF ({_reason(exc)})") from None
        self.held = [np.ascontiguousarray(held[:, n:])] if n < held.shape[1] else []
        self.written += n

    def close(self) -> Path:
        """Finish the file and rename it in; every row must have been written."""
        if self.received != self.height:
            self.abort()
            raise DataError(f"{self.path}: only {self.received} of {self.height} rows were written")
        try:
            self.ds.close()
            self.tmp.replace(self.path)
        except Exception as exc:  # noqa: BLE001 - GDAL's errors: disk full
            raise DataError(f"{self.path}: cannot write the GeoTIFF ({_reason(exc)})") from None
        finally:
            self.abort()
        return self.path

    def abort(self) -> None:
        """Drop the temporary file (nothing at `path` changes)."""
        if self.ds is not None and not self.ds.closed:
            self.ds.close()
        if self.tmp.exists():
            self.tmp.unlink()
        if self.env is not None:
            self.env.__exit__(None, None, None)
            self.env = None
