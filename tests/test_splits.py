"""Sliced splits ('all[:18]') and reader options from the config, for sets that ship no split."""
import pytest

import pixelwise as pw
from pixelwise.config import load_config
from pixelwise.data.formats import split_slice
from pixelwise.engine.trainer import dataset_options


def test_split_slice_parsing():
    assert split_slice("train") == ("train", None)
    assert split_slice("all[:18]") == ("all", slice(None, 18))
    assert split_slice("all[18:]") == ("all", slice(18, None))
    assert split_slice("val[-3:]") == ("val", slice(-3, None))


def test_sliced_synthetic_splits_are_disjoint_and_cover():
    full = pw.open_dataset("synthetic:5", "val")
    head = pw.open_dataset("synthetic:5", "val[:10]")
    tail = pw.open_dataset("synthetic:5", "val[10:]")
    assert len(head) == 10 and len(head) + len(tail) == len(full)
    assert list(head.records) + list(tail.records) == list(full.records)


def test_reader_options_come_from_the_config(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {format: folder, root: /x, classes: [a, b], options: {remap: {255: 1}}}\n")
    cfg = load_config(recipe)
    assert dataset_options(cfg) == {"remap": {255: 1}, "classes": ["a", "b"]}


def test_isbi_split_through_options():
    from conftest import shared_dataset

    root = shared_dataset("isbi2012_membrane")
    opts = {"classes": ["membrane", "cell"], "remap": {255: 1}}
    train = pw.open_dataset(f"folder:{root}", "all[:18]", **opts)
    val = pw.open_dataset(f"folder:{root}", "all[18:]", **opts)
    assert (len(train), len(val)) == (18, 6)
    assert set(val[0].semantic.ravel().tolist()) <= {0, 1}
    with pytest.raises(Exception, match="no split|val"):
        pw.open_dataset(f"folder:{root}", "val", **opts)
