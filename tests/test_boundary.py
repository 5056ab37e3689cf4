import numpy as np

from pixelwise.metrics.boundary import BoundaryAccumulator, boundary_band


def test_band_around_a_vertical_edge():
    t = np.zeros((6, 8), np.int64)
    t[:, 4:] = 1
    band = boundary_band(t, 1)
    assert band[:, 3:5].all() and band.sum() == 12
    band2 = boundary_band(t, 2)
    assert band2[:, 2:6].all() and band2.sum() == 24
    t[0, :] = 255  # void rows are never in the band
    assert not boundary_band(t, 2)[0].any()


def test_boundary_accuracy_counts_only_band_pixels():
    t = np.zeros((6, 8), np.int64)
    t[:, 4:] = 1
    pred = t.copy()
    pred[:, 4] = 0  # one column wrong, right at the edge
    pred[0, 0] = 1  # far from the edge: not counted
    acc = BoundaryAccumulator(2, widths=(1,))
    acc.update(pred, t)
    res = acc.compute()[1]
    assert res["pixels"] == 12 and abs(res["pixel_acc"] - 0.5) < 1e-9
