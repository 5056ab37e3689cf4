import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix, f1_score, jaccard_score

from pixelwise.metrics.semantic import ConfusionMatrix


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    n = 5
    target = rng.integers(0, n, size=(4, 17, 23))
    target[rng.random(target.shape) < 0.1] = 255
    pred = np.where(rng.random(target.shape) < 0.6, np.clip(target, 0, n - 1), rng.integers(0, n, target.shape))
    cm = ConfusionMatrix(n)
    for t, p in zip(target, pred):  # streaming: one image at a time
        cm.update(torch.from_numpy(p), torch.from_numpy(t))
    s = cm.compute()
    keep = target != 255
    y, yhat = target[keep], pred[keep]
    ref = confusion_matrix(y, yhat, labels=list(range(n)))
    np.testing.assert_array_equal(np.array(s["confusion"]), ref)
    np.testing.assert_allclose(s["per_class_iou"], jaccard_score(y, yhat, average=None, labels=list(range(n))))
    assert s["miou"] == pytest.approx(jaccard_score(y, yhat, average="macro"))
    assert s["pixel_acc"] == pytest.approx((y == yhat).mean())
    assert s["mean_acc"] == pytest.approx(np.mean(np.diag(ref) / ref.sum(1)))
    np.testing.assert_allclose(s["per_class_dice"], f1_score(y, yhat, average=None, labels=list(range(n))))
    freq = ref.sum(1) / ref.sum()
    assert s["fw_iou"] == pytest.approx(float((freq * np.array(s["per_class_iou"])).sum()))


def test_absent_class_is_left_out_of_the_mean():
    cm = ConfusionMatrix(3)
    t = torch.tensor([[0, 0, 1, 1]])
    cm.update(t.clone(), t)
    s = cm.compute()
    assert s["per_class_iou"] == [1.0, 1.0, None]
    assert s["miou"] == 1.0


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        ConfusionMatrix(2).update(torch.zeros(2, 3), torch.zeros(3, 2))
