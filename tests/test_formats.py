"""Dataset readers: tiny layouts written into tmp_path for every format, the real CamVid and Dubai copies,
and the bad inputs each reader must report as one DataError naming the file."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import shared_dataset
from pixelwise.data.formats import FORMATS, VIRTUAL, open_dataset, parse_spec
from pixelwise.data.formats import ade20k, camvid, cityscapes, colormask
from pixelwise.errors import DataError


def write(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode=mode).save(path)
    return path


def rgb(h=8, w=8, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3))


def make_folder(root, stems=("a", "b", "c"), classes=("bg", "fg"), sub=""):
    for i, stem in enumerate(stems):
        write(root / sub / "images" / f"{stem}.png", rgb(seed=i))
        mask = np.zeros((8, 8))
        mask[:4] = 1
        mask[0, 0] = 255
        write(root / sub / "masks" / f"{stem}.png", mask)
    if classes:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def test_registry_and_spec():
    assert {"folder", "camvid", "voc", "cityscapes", "ade20k", "colormask", "synthetic"} <= set(FORMATS)
    assert "synthetic" in VIRTUAL
    assert parse_spec("camvid:/x/y") == ("camvid", parse_spec("/x/y")[1])
    assert parse_spec("/x/y")[0] == "folder"
    with pytest.raises(DataError, match="unknown dataset format 'nope'"):
        parse_spec("nope:/x")


def test_folder_reads_pairs(tmp_path):
    ds = open_dataset(f"folder:{make_folder(tmp_path)}", "all")
    assert len(ds) == 3 and ds.classes == ["bg", "fg"] and len(ds.palette) == 2
    s = ds[0]
    assert s.image.shape == (8, 8, 3) and s.image.dtype == np.uint8
    assert s.semantic.dtype == np.int64 and set(np.unique(s.semantic)) == {0, 1, 255}
    assert s.meta["name"] == "a" and s.meta["path"].endswith("images/a.png")


def test_folder_split_rules(tmp_path):
    make_folder(tmp_path)
    assert len(open_dataset(str(tmp_path), "train")) == 3  # no split information: train = everything
    with pytest.raises(DataError, match="no split 'val'"):
        open_dataset(str(tmp_path), "val")
    (tmp_path / "val.txt").write_text("b\nc.png\n")
    assert [s.meta["name"] for s in open_dataset(str(tmp_path), "val")] == ["b", "c"]
    (tmp_path / "test.txt").write_text("zzz\n")
    with pytest.raises(DataError, match="zzz"):
        open_dataset(str(tmp_path), "test")


def test_folder_per_split_and_grouped_layouts(tmp_path):
    make_folder(tmp_path / "s", sub="train")
    make_folder(tmp_path / "s", stems=("v",), sub="val")
    assert len(open_dataset(f"folder:{tmp_path / 's'}", "train")) == 3
    assert len(open_dataset(f"folder:{tmp_path / 's'}", "val")) == 1
    assert len(open_dataset(f"folder:{tmp_path / 's'}", "all")) == 4
    with pytest.raises(DataError, match="no split 'test'"):
        open_dataset(f"folder:{tmp_path / 's'}", "test")
    g = tmp_path / "g"
    make_folder(g, sub="Tile 1")
    make_folder(g, sub="Tile 2", stems=("a",))
    ds = open_dataset(f"folder:{g}", "all")
    assert len(ds) == 4 and ds[3].meta["group"] == "Tile 2"
    (g / "val.txt").write_text("Tile 2/a\n")
    assert len(open_dataset(f"folder:{g}", "val")) == 1


def test_folder_needs_classes_and_takes_options(tmp_path):
    make_folder(tmp_path, classes=None)
    with pytest.raises(DataError, match="classes.txt"):
        open_dataset(str(tmp_path), "all")
    ds = open_dataset(str(tmp_path), "all", classes=["x", "y"], remap={255: 1})
    assert ds.classes == ["x", "y"] and set(np.unique(ds[0].semantic)) == {0, 1}
    with pytest.raises(DataError, match="unknown option"):
        open_dataset(str(tmp_path), "all", clases=["x"])


# ---- bad input: every problem is one DataError naming the file -------------------------------------------

def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="not found"):
        open_dataset(f"camvid:{tmp_path / 'nowhere'}", "train")


def test_image_without_mask(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "masks" / "b.png").unlink()
    with pytest.raises(DataError, match=r"b\.png: image has no mask"):
        open_dataset(str(tmp_path), "all")


def test_empty_dataset(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "classes.txt").write_text("a\nb\n")
    with pytest.raises(DataError, match="empty dataset"):
        open_dataset(str(tmp_path), "all")


def test_mask_size_mismatch(tmp_path):
    make_folder(tmp_path)
    write(tmp_path / "masks" / "b.png", np.zeros((6, 8)))
    ds = open_dataset(str(tmp_path), "all")
    with pytest.raises(DataError, match=r"masks/b\.png: mask is 8x6 but its image .*images/b\.png is 8x8"):
        ds[1]


def test_out_of_range_labels(tmp_path):
    make_folder(tmp_path)
    write(tmp_path / "masks" / "c.png", np.full((8, 8), 7))
    ds = open_dataset(str(tmp_path), "all")
    with pytest.raises(DataError, match=r"masks/c\.png: label values out of range: 7 "):
        ds[2]


def test_truncated_file(tmp_path):
    make_folder(tmp_path)
    path = tmp_path / "images" / "a.png"
    write(path, rgb(64, 64))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=r"images/a\.png: truncated or corrupt image"):
        open_dataset(str(tmp_path), "all")[0]


# ---- the named formats, on tiny fakes of their layouts ------------------------------------------------------

def test_camvid_layout_maps_void(tmp_path):
    write(tmp_path / "train" / "x.png", rgb())
    write(tmp_path / "trainannot" / "x.png", np.arange(64).reshape(8, 8) % 12)
    ds = open_dataset(f"camvid:{tmp_path}", "train")
    assert ds.classes == camvid.CLASSES and ds.palette[3] == (128, 64, 128)
    assert set(np.unique(ds[0].semantic)) == set(range(11)) | {255}
    with pytest.raises(DataError, match="no split 'val'"):
        open_dataset(f"camvid:{tmp_path}", "val")


def test_camvid_real(camvid_root):
    train, val = open_dataset(f"camvid:{camvid_root}", "train"), open_dataset(f"camvid:{camvid_root}", "val")
    assert (len(train), len(val)) == (367, 101)
    s = train[0]
    assert s.image.shape == (360, 480, 3) and s.semantic.shape == (360, 480)
    assert s.meta["name"] == "0001TP_006690"
    values = set(np.unique(s.semantic).tolist())
    assert values <= set(range(11)) | {255} and 255 in values and 11 not in values


def test_voc_layout(tmp_path):
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    write(voc / "JPEGImages" / "2007_1.jpg", rgb())
    mask = np.zeros((8, 8))
    mask[2:5, 2:5], mask[2, 2:5] = 15, 255
    write(voc / "SegmentationClass" / "2007_1.png", mask, mode="L")
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_1\n")
    for root in (tmp_path, tmp_path / "VOCdevkit", voc):
        ds = open_dataset(f"voc:{root}", "train")
        assert len(ds) == 1 and len(ds.classes) == 21 and ds.classes[15] == "person"
    assert set(np.unique(ds[0].semantic)) == {0, 15, 255}
    with pytest.raises(DataError, match="no split 'val'"):
        open_dataset(f"voc:{voc}", "val")


def test_cityscapes_layout_maps_train_ids(tmp_path):
    write(tmp_path / "leftImg8bit" / "val" / "ulm" / "ulm_000000_000019_leftImg8bit.png", rgb())
    ids = np.zeros((8, 8))
    ids[0], ids[1], ids[2], ids[3] = 7, 26, 33, 4
    write(tmp_path / "gtFine" / "val" / "ulm" / "ulm_000000_000019_gtFine_labelIds.png", ids)
    ds = open_dataset(f"cityscapes:{tmp_path}", "val")
    assert len(ds.classes) == len(cityscapes.PALETTE) == 19 and ds[0].meta["city"] == "ulm"
    sem = ds[0].semantic
    assert sem[0, 0] == 0 and sem[1, 0] == 13 and sem[2, 0] == 18 and sem[3, 0] == 255 and sem[5, 0] == 255
    (tmp_path / "leftImg8bit" / "val" / "ulm" / "ulm_1_2_leftImg8bit.png").write_bytes(b"")
    with pytest.raises(DataError, match="ulm_1_2_leftImg8bit.png: image has no mask"):
        open_dataset(f"cityscapes:{tmp_path}", "val")


def test_ade20k_layout_shifts_labels(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    write(root / "images" / "validation" / "ADE_val_1.jpg", rgb(4, 4))
    write(root / "annotations" / "validation" / "ADE_val_1.png", np.array([[0, 1, 150, 3]] * 4))
    ds = open_dataset(f"ade20k:{tmp_path}", "val")
    assert len(ade20k.CLASSES) == len(ade20k.PALETTE) == 150 and len(set(ade20k.CLASSES)) == 150
    assert ds.classes[:3] == ["wall", "building", "sky"] and ds.classes[-1] == "flag"
    assert ds[0].semantic[0].tolist() == [255, 0, 149, 2]
    write(root / "annotations" / "validation" / "ADE_val_1.png", np.array([[151, 1, 1, 1]] * 4))
    with pytest.raises(DataError, match="out of range: 151"):
        ds[0]
    with pytest.raises(DataError, match="no split 'train'"):
        open_dataset(f"ade20k:{root}", "train")


def test_colormask_tables(tmp_path):
    write(tmp_path / "images" / "a.jpg", rgb())
    mask = np.zeros((8, 8, 3))
    mask[:4] = (255, 0, 0)
    mask[7, 7] = (9, 9, 9)
    write(tmp_path / "masks" / "a.png", mask)
    (tmp_path / "classes.json").write_text(json.dumps({"background": [0, 0, 0], "red": "#ff0000"}))
    with pytest.raises(DataError, match=r"masks/a\.png: colours not in the class table: #090909"):
        open_dataset(f"colormask:{tmp_path}", "all")[0]
    ds = open_dataset(f"colormask:{tmp_path}", "all", void_color=[9, 9, 9])
    assert ds.classes == ["background", "red"] and ds.palette == [(0, 0, 0), (255, 0, 0)]
    sem = ds[0].semantic
    assert sem[0, 0] == 1 and sem[5, 0] == 0 and sem[7, 7] == 255
    (tmp_path / "classes.json").unlink()
    (tmp_path / "classes.csv").write_text("name,r,g,b\nbg,0,0,0\nred,255,0,0\nvoid,9,9,9\n")
    assert open_dataset(f"colormask:{tmp_path}", "all")[0].semantic[7, 7] == 255
    ds = open_dataset(f"colormask:{tmp_path}", "all", colors={"r": "#ff0000", "k": "0,0,0", "ignore": "#090909"})
    assert ds.classes == ["r", "k"] and ds[0].semantic[0, 0] == 0


def test_colormask_dubai_real():
    root = shared_dataset("dubai_aerial_landcover")
    ds = open_dataset(f"colormask:{root}", "all")
    assert len(ds) == 58 and ds.classes == ["Building", "Land", "Road", "Vegetation", "Water"]
    assert ds.palette == [colormask.parse_color(c) for c in ("#3C1098", "#8429F6", "#6EC1E4", "#FEDD3A", "#E2A929")]
    s = ds[0]
    assert s.meta["group"] == "Tile 1" and s.image.shape == (644, 797, 3) and s.semantic.shape == (644, 797)
    assert set(np.unique(s.semantic).tolist()) <= {0, 1, 2, 3, 4, 255}


def test_datasets_pickle_for_dataloader_workers(tmp_path):
    import pickle

    ds = pickle.loads(pickle.dumps(open_dataset(str(make_folder(tmp_path)), "all")))
    assert ds[0].semantic.shape == (8, 8)


def test_cityscapes_instance_ids(tmp_path):
    write(tmp_path / "leftImg8bit" / "val" / "ulm" / "ulm_0_1_leftImg8bit.png", rgb())
    labels = np.full((8, 8), 7)  # road
    labels[:4, :4] = 26  # car
    labels[4:, 4:] = 24  # person
    write(tmp_path / "gtFine" / "val" / "ulm" / "ulm_0_1_gtFine_labelIds.png", labels)
    ids = labels.astype(np.int32).copy()  # stuff keeps its label id (< 1000)
    ids[:4, :2], ids[:4, 2:4] = 26000, 26001  # two cars side by side
    ids[4:, 4:] = 24000  # one person
    path = tmp_path / "gtFine" / "val" / "ulm" / "ulm_0_1_gtFine_instanceIds.png"
    Image.fromarray(ids.astype(np.uint16)).save(path)  # 16-bit PNG, as Cityscapes ships them
    ds = open_dataset(f"cityscapes:{tmp_path}", "val", instances=True)
    inst = ds[0].instances
    assert ds.things == list(range(11, 19))
    assert sorted(inst.class_ids.tolist()) == [11, 13, 13]  # person = train id 11, car = 13
    assert inst.masks.sum() == 32 and all(m.sum() in (8, 16) for m in inst.masks)
    assert open_dataset(f"cityscapes:{tmp_path}", "val")[0].instances is None
