"""class_argmax is torch's argmax, ties included (first index), on every dim."""
import torch

from pixelwise.fastops import class_argmax


def test_class_argmax_is_argmax_with_ties_resolved_the_same_way():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 4, (7, 13, 17), generator=g).float()  # many ties
    for dim in (0, 1, 2):
        assert torch.equal(class_argmax(x, dim), x.argmax(dim))
    y = torch.randn(11, 30, 40, generator=g)
    assert torch.equal(class_argmax(y), y.argmax(0)) and class_argmax(y).dtype == torch.int64
