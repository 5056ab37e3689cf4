"""COCO instance and panoptic annotations: readers (`coco-instance`, `coco-panoptic`) and result writers.

    coco-panoptic:PANOPTIC_JSON   the panopticapi convention: PNGs in the folder beside the JSON with the
                                  same stem (panoptic_val2017.json -> panoptic_val2017/), segment id =
                                  R + 256 G + 256^2 B, 0 = void; categories (with isthing) from the JSON
    coco-instance:INSTANCES_JSON  polygons, RLE or uncompressed RLE, decoded through pycocotools

ROOT may also be a COCO folder: ROOT/annotations/{panoptic,instances}_{split}2017.json. Images come from
the `images=DIR` option (`--images DIR` on the command line), else the usual layout: ROOT/{split}2017/
beside annotations/, or an `images/` folder beside the JSON.

Classes: coco-panoptic uses the JSON's categories in order (class i = categories[i]); coco-instance adds
"background" as class 0 and its categories as 1..C, all things. Crowd regions (iscrowd = 1) are void (255)
in the semantic map and no instance; `sample.meta["panoptic"]` keeps the exact truth (segment-id map and
segments with class indices and iscrowd) for panoptic scoring.
"""
from __future__ import annotations

import json
import warnings
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from pixelwise import rle
from pixelwise.data.dataset import SegmentationDataset
from pixelwise.data.io import read_image
from pixelwise.constants import IGNORE_INDEX
from pixelwise.data.sample import Instances, Sample
from pixelwise.errors import DataError


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> int64 (H, W) segment ids R + 256 G + 256^2 B."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """int (H, W) segment ids -> uint8 (H, W, 3), the inverse of rgb2id."""
    ids = np.asarray(ids, np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], -1).astype(np.uint8)


def read_panoptic_png(path: Path) -> np.ndarray:
    if not Path(path).is_file():
        raise DataError(f"{path}: panoptic PNG not found")
    return rgb2id(np.asarray(Image.open(path).convert("RGB")))


def load_json(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or "annotations" not in data:
        raise DataError(f"{path}: not a COCO annotation file (no 'annotations')")
    return data


def _json_path(root: Path, split: str, kind: str) -> Path:
    if root.suffix == ".json":
        return root
    for name in (f"{kind}_{split}2017.json", f"{kind}_{split}.json"):
        if (root / "annotations" / name).is_file():
            return root / "annotations" / name
    raise DataError(f"{root}: no annotations/{kind}_{split}2017.json (give the JSON file as ROOT)")


def _images_dir(json_path: Path, images, kind: str) -> Path:
    if images:
        if not Path(images).is_dir():
            raise DataError(f"{images}: images folder not found")
        return Path(images)
    split_name = json_path.stem.removeprefix(f"{kind}_")
    for cand in (json_path.parent.parent / split_name, json_path.parent / split_name, json_path.parent / "images"):
        if cand.is_dir():
            return cand
    raise DataError(f"{json_path}: images folder not found (looked for {split_name}/ and images/); "
                    "pass --images DIR (option images=DIR)")


def categories(data: dict) -> tuple[list[int], list[str], list[bool], list[tuple[int, int, int]]]:
    """(category ids, names, isthing flags, colours) in the JSON's order."""
    cats = data.get("categories") or []
    if not cats:
        raise DataError("COCO annotation file has no categories")
    colors = [tuple(c.get("color", (0, 0, 0))) for c in cats]
    return ([int(c["id"]) for c in cats], [str(c["name"]) for c in cats], [bool(c.get("isthing", 1)) for c in cats],
            colors)


def _load_panoptic(image_dir: Path, png_dir: Path, cat_index: dict, things: set, record: dict) -> Sample:
    image_path = image_dir / record["image_file"]
    image = read_image(image_path)
    raw = read_panoptic_png(png_dir / record["file_name"])
    if raw.shape != image.shape[:2]:
        raise DataError(f"{png_dir / record['file_name']}: panoptic PNG is {raw.shape[::-1]} but its image is "
                        f"{image.shape[1::-1]} (WxH)")
    semantic = np.full(raw.shape, IGNORE_INDEX, np.int64)
    ids = np.zeros(raw.shape, np.int32)
    segments, masks, class_ids = [], [], []
    for seg in record["segments_info"]:
        if seg["category_id"] not in cat_index:
            raise DataError(f"{png_dir / record['file_name']}: segment {seg['id']} has unknown category "
                            f"{seg['category_id']}")
        cls, mask = cat_index[seg["category_id"]], raw == seg["id"]
        crowd = int(seg.get("iscrowd", 0))
        ids[mask] = len(segments) + 1
        segments.append({"id": len(segments) + 1, "category_id": cls, "iscrowd": crowd, "isthing": cls in things})
        if not crowd:
            semantic[mask] = cls
            if cls in things:
                masks.append(mask)
                class_ids.append(cls)
    inst = Instances(np.stack(masks) if masks else np.zeros((0, *raw.shape), bool), np.array(class_ids, np.int64))
    meta = {"path": str(image_path), "name": image_path.stem, "image_id": record["image_id"],
            "panoptic": (ids, segments)}
    return Sample(image=image, semantic=semantic, instances=inst, meta=meta)


def open_coco_panoptic(root: Path, split: str, images: str | None = None) -> SegmentationDataset:
    """Read COCO-panoptic annotations (see the module docstring)."""
    json_path = _json_path(Path(root), split, "panoptic")
    data = load_json(json_path)
    png_dir = json_path.with_suffix("")
    if not png_dir.is_dir():
        raise DataError(f"{png_dir}: panoptic PNG folder not found (expected beside {json_path.name})")
    cat_ids, names, isthing, colors = categories(data)
    files = {im["id"]: im["file_name"] for im in data.get("images", [])}
    records = []
    for ann in data["annotations"]:
        stem = Path(ann["file_name"]).stem
        records.append({**ann, "image_file": files.get(ann["image_id"], stem + ".jpg")})
    if not records:
        raise DataError(f"{json_path}: no annotations")
    things = {i for i, t in enumerate(isthing) if t}
    load = partial(_load_panoptic, _images_dir(json_path, images, "panoptic"), png_dir,
                   {c: i for i, c in enumerate(cat_ids)}, things)
    return SegmentationDataset(records, load, names, colors, name=f"coco-panoptic:{json_path}",
                               things=sorted(things))


def _decode(seg, h: int, w: int) -> np.ndarray:
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):  # polygons
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    elif isinstance(seg.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(seg, h, w)
    else:
        rle = seg
    with warnings.catch_warnings():  # pycocotools' decode trips numpy 2's __array__(copy=) deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def _load_instances(image_dir: Path, cat_index: dict, record: dict) -> Sample:
    image_path = image_dir / record["file_name"]
    image = read_image(image_path)
    h, w = image.shape[:2]
    semantic = np.zeros((h, w), np.int64)
    masks, class_ids, crowd = [], [], np.zeros((h, w), bool)
    for ann in sorted(record["anns"], key=lambda a: -a.get("area", 0)):  # small objects drawn last, on top
        if ann["category_id"] not in cat_index:
            raise DataError(f"{image_path}: annotation {ann.get('id')} has unknown category {ann['category_id']}")
        mask = _decode(ann["segmentation"], h, w)
        if ann.get("iscrowd", 0):
            crowd |= mask
            continue
        semantic[mask] = cat_index[ann["category_id"]]
        masks.append(mask)
        class_ids.append(cat_index[ann["category_id"]])
    semantic[crowd] = IGNORE_INDEX
    inst = Instances(np.stack(masks) if masks else np.zeros((0, h, w), bool), np.array(class_ids, np.int64))
    return Sample(image=image, semantic=semantic, instances=inst,
                  meta={"path": str(image_path), "name": image_path.stem, "image_id": record["id"]})


def open_coco_instance(root: Path, split: str, images: str | None = None) -> SegmentationDataset:
    """Read COCO instance annotations (see the module docstring)."""
    json_path = _json_path(Path(root), split, "instances")
    data = load_json(json_path)
    cat_ids, names, _, _ = categories(data)
    anns: dict[int, list] = {}
    for ann in data["annotations"]:
        anns.setdefault(ann["image_id"], []).append(ann)
    records = [{**im, "anns": anns.get(im["id"], [])} for im in data.get("images", [])]
    if not records:
        raise DataError(f"{json_path}: no images")
    load = partial(_load_instances, _images_dir(json_path, images, "instances"),
                   {c: i + 1 for i, c in enumerate(cat_ids)})
    return SegmentationDataset(records, load, ["background", *names], name=f"coco-instance:{json_path}",
                               things=list(range(1, len(names) + 1)))


# ---- writers ----------------------------------------------------------------------------------------------

def instance_results(image_id, labels: np.ndarray, class_ids, scores, category_ids: list[int]) -> list[dict]:
    """COCO instance results of one image from a label map (H, W) (label k = instance k-1) with class
    indices mapped to COCO ids by `category_ids[class]`."""
    masks = rle.encode_each(labels, range(1, len(class_ids) + 1))
    return [{"image_id": image_id, "category_id": int(category_ids[int(c)]), "segmentation": masks[k + 1],
             "score": float(s)} for k, (c, s) in enumerate(zip(class_ids, scores))]


def write_coco_instances(path, results: list[dict]) -> Path:
    """Write COCO instance results (a JSON list of {image_id, category_id, segmentation, score})."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results))
    return path


def write_coco_panoptic(path, annotations: list[dict], categories_json: list[dict], images: list[dict] | None = None,
                        maps: dict[str, np.ndarray] | None = None) -> Path:
    """Write COCO-panoptic predictions: PATH (JSON) and the PNG folder beside it with the same stem.

    annotations: [{"image_id", "file_name" (PNG name), "segments_info": [{"id", "category_id" (COCO id),
    "iscrowd", "area", ...}]}]; maps: PNG name -> segment-id map (H, W), written as R + 256 G + 256^2 B.
    """
    path = Path(path)
    folder = path.with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    for name, ids in (maps or {}).items():
        Image.fromarray(id2rgb(ids)).save(folder / name)
    path.write_text(json.dumps({"images": images or [], "annotations": annotations, "categories": categories_json}))
    return path
