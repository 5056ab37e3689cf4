"""Dense CRF: the torch lattice implementation against exact O(N^2) mean field and against pydensecrf."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pixelwise.errors import ConfigError
from pixelwise.postprocess.crf import (
    CRFConfig,
    PermutohedralLattice,
    _positions,
    crf_refine_logits,
    dense_crf,
    dense_crf_exact,
)




def _scene(h: int, w: int, classes: int = 3, seed: int = 0, colour_noise: float = 8.0, signal: float = 0.8):
    """A disc, a rectangle and background in distinct colours; noisy probabilities that lean to the truth."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    label = np.zeros((h, w), np.int64)
    label[(xx - 0.35 * w) ** 2 + (yy - 0.5 * h) ** 2 < (0.3 * min(h, w)) ** 2] = 1
    if classes > 2:
        label[(xx > 0.65 * w) & (yy > 0.25 * h)] = 2
    colours = np.array([[40, 60, 200], [220, 180, 40], [30, 170, 60], [200, 40, 160]])[:classes]
    image = np.clip(colours[label] + rng.normal(0, colour_noise, (h, w, 3)), 0, 255).astype(np.uint8)
    logits = rng.normal(0, 1.0, (classes, h, w))
    logits[label, yy, xx] += signal
    probs = torch.softmax(torch.tensor(logits, dtype=torch.float32), 0)
    return image, probs, label


def _agree(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.argmax(-3) == b.argmax(-3)).float().mean())


def _pydensecrf(image: np.ndarray, probs: torch.Tensor, cfg: CRFConfig) -> torch.Tensor:
    dcrf = pytest.importorskip("pydensecrf.densecrf")
    c, h, w = probs.shape
    d = dcrf.DenseCRF2D(w, h, c)
    unary = -np.log(np.clip(probs.numpy(), cfg.prob_floor, 1.0)).reshape(c, -1)
    d.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    d.addPairwiseGaussian(sxy=cfg.gaussian_sxy, compat=cfg.gaussian_compat)
    d.addPairwiseBilateral(sxy=cfg.bilateral_sxy, srgb=cfg.bilateral_srgb, rgbim=np.ascontiguousarray(image),
                           compat=cfg.bilateral_compat)
    return torch.from_numpy(np.array(d.inference(cfg.iterations), dtype=np.float32).reshape(c, h, w))


@pytest.mark.parametrize("extra_dims,sigma,tol", [(0, 1.0, 0.03), (0, 3.0, 0.02), (3, 2.0, 0.05), (3, 3.0, 0.03)])
def test_lattice_approximates_normalized_gaussian(extra_dims, sigma, tol):
    torch.manual_seed(0)
    pos = _positions(20, 24, torch.device("cpu")) / sigma
    feats = torch.cat([pos, torch.rand(pos.shape[0], extra_dims) * 2], 1)
    kernel = torch.exp(-0.5 * torch.cdist(feats, feats) ** 2)
    values = torch.rand(pos.shape[0], 4)
    lattice = PermutohedralLattice(feats)
    approx = lattice(values) / lattice(torch.ones(pos.shape[0], 1))
    exact = kernel @ values / kernel.sum(1, keepdim=True)
    assert float((approx - exact).abs().mean() / exact.abs().mean()) < tol


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_exact_mean_field_on_small_images(seed):
    image, probs, _ = _scene(24, 32, 3, seed)
    fast, exact = dense_crf(probs, image), dense_crf_exact(probs, image)
    assert _agree(fast, exact) >= 0.99
    assert float((fast - exact).abs().mean()) < 0.01


@pytest.mark.parametrize("seed", [0, 1])
def test_marginals_match_exact_before_they_saturate(seed):
    # Weak pairwise terms and few rounds keep the marginals far from 0/1, where differences would show.
    cfg = CRFConfig(iterations=2, gaussian_compat=1, bilateral_compat=2)
    image, probs, _ = _scene(24, 32, 3, seed)
    fast, exact = dense_crf(probs, image, cfg), dense_crf_exact(probs, image, cfg)
    assert float(exact.max(0).values.mean()) < 0.8  # not saturated
    assert _agree(exact, probs) < 0.8  # and yet the CRF changed a quarter of the labels
    assert _agree(fast, exact) >= 0.99
    assert float((fast - exact).abs().mean()) < 0.006
    assert float((fast - exact).abs().max()) < 0.06


@pytest.mark.parametrize("cfg", [CRFConfig.deeplab_v1(), CRFConfig(normalization="row", bilateral_compat=5)])
def test_matches_exact_with_other_settings(cfg):
    image, probs, _ = _scene(24, 32, 4, seed=3)
    fast, exact = dense_crf(probs, image, cfg), dense_crf_exact(probs, image, cfg)
    assert _agree(fast, exact) >= 0.98
    assert float((fast - exact).abs().mean()) < 0.02


@pytest.mark.parametrize("cfg", [CRFConfig(), CRFConfig.deeplab_v2(), CRFConfig(gaussian_sxy=2, bilateral_sxy=20)])
def test_matches_pydensecrf(cfg):
    image, probs, _ = _scene(48, 64, 3, seed=4, colour_noise=12.0)
    ours, ref = dense_crf(probs, image, cfg), _pydensecrf(image, probs, cfg)
    assert _agree(ours, ref) >= 0.999
    assert float((ours - ref).abs().max()) < 0.02


def test_improves_a_noisy_prediction_and_follows_the_boundary():
    image, probs, label = _scene(64, 64, 2, seed=5, colour_noise=10.0, signal=0.6)
    before = probs.argmax(0).numpy()
    after = dense_crf(probs, image, CRFConfig(iterations=10)).argmax(0).numpy()
    assert (before == label).mean() < 0.8  # the input is really noisy
    assert (after == label).mean() >= 0.99
    # Pixels next to the disc's edge, where smoothing without the image would blur the boundary.
    edge = np.zeros_like(label, dtype=bool)
    edge[:, 1:] |= label[:, 1:] != label[:, :-1]
    edge[1:, :] |= label[1:, :] != label[:-1, :]
    edge = edge | np.roll(edge, 1, 0) | np.roll(edge, 1, 1) | np.roll(edge, -1, 0) | np.roll(edge, -1, 1)
    assert (after == label)[edge].mean() >= 0.95


def test_shapes_batches_and_image_layouts_agree():
    scenes = [_scene(20, 28, 3, seed) for seed in (6, 7)]
    images = np.stack([s[0] for s in scenes])
    probs = torch.stack([s[1] for s in scenes])
    single = [dense_crf(p, img) for img, p, _ in scenes]
    assert single[0].shape == (3, 20, 28)
    assert torch.allclose(single[0].sum(0), torch.ones(20, 28), atol=1e-5)
    as_uint8 = torch.from_numpy(images).permute(0, 3, 1, 2)
    for image in (images, as_uint8, as_uint8.float()):
        batched = dense_crf(probs, image)
        assert batched.shape == probs.shape
        assert torch.allclose(batched, torch.stack(single), atol=1e-5)
    assert dense_crf(probs.double(), images).dtype == torch.float64
    with pytest.raises(ValueError):
        dense_crf(probs, images[:1])


def test_crf_refine_logits_returns_log_probabilities():
    image, probs, _ = _scene(20, 24, 3, seed=8)
    logits = torch.log(probs)[None] * 1.7 + 0.3
    images = torch.from_numpy(image).permute(2, 0, 1)[None]
    out = crf_refine_logits(logits, images)
    assert out.shape == logits.shape
    assert torch.allclose(out.exp().sum(1), torch.ones(1, 20, 24), atol=1e-5)
    reference = dense_crf(torch.softmax(logits, 1), images)
    assert torch.allclose(out.exp(), reference, atol=1e-4)


def test_no_iterations_or_no_weights_give_back_the_clipped_input():
    image, probs, _ = _scene(16, 16, 3, seed=9)
    expected = probs.clamp_min(1e-5) / probs.clamp_min(1e-5).sum(0)
    assert torch.allclose(dense_crf(probs, image, CRFConfig(iterations=0)), expected, atol=1e-6)
    off = CRFConfig(gaussian_compat=0, bilateral_compat=0)
    assert torch.allclose(dense_crf(probs, image, off), expected, atol=1e-6)


def test_grayscale_and_tiny_images():
    image, probs, _ = _scene(12, 10, 2, seed=10)
    gray = image.mean(2).astype(np.uint8)
    assert dense_crf(probs, gray).shape == probs.shape
    for h, w in [(1, 1), (1, 7)]:
        p = torch.softmax(torch.randn(3, h, w), 0)
        out = dense_crf(p, np.zeros((h, w, 3), np.uint8))
        assert out.shape == (3, h, w) and torch.isfinite(out).all()


def test_config_is_validated():
    for bad in (dict(iterations=-1), dict(bilateral_srgb=0), dict(gaussian_compat=-1), dict(normalization="x"),
                dict(prob_floor=0)):
        with pytest.raises(ConfigError):
            CRFConfig(**bad)
    with pytest.raises(ValueError):
        dense_crf_exact(torch.ones(2, 100, 100) / 2, np.zeros((100, 100, 3), np.uint8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    image, probs, _ = _scene(96, 128, 4, seed=11)
    cpu = dense_crf(probs, image)
    gpu = dense_crf(probs.cuda(), image)
    assert gpu.device.type == "cuda"
    assert _agree(gpu.cpu(), cpu) >= 0.999
    assert float((gpu.cpu() - cpu).abs().max()) < 1e-3
