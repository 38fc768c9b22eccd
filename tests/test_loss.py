"""Tests for the Cauchy-kernel InfoNCE loss against an independent float64 reference."""

import math

import numpy as np
import pytest
import torch

from tsimcne_widgets.engine.loss import cauchy_infonce, pairwise_squared_distances


def reference_loss(z_a: np.ndarray, z_b: np.ndarray) -> float:
    """Direct transcription of the paper's formula with plain loops in float64."""
    z = np.concatenate([z_a, z_b]).astype(np.float64)
    n = len(z)
    batch = n // 2
    total = 0.0
    for i in range(n):
        positive = (i + batch) % n
        q = [1.0 / (1.0 + float(np.sum((z[i] - z[k]) ** 2))) for k in range(n)]
        denominator = sum(q[k] for k in range(n) if k != i)
        total += -math.log(q[positive] / denominator)
    return total / n


@pytest.mark.parametrize("batch", [1, 2, 5, 16])
@pytest.mark.parametrize("dim", [2, 128])
def test_matches_float64_reference(batch, dim):
    rng = np.random.default_rng(batch * 1000 + dim)
    scale = 3.0 if dim == 2 else 0.3
    z_a = rng.normal(size=(batch, dim)) * scale
    z_b = z_a + rng.normal(size=(batch, dim)) * 0.5 * scale
    expected = reference_loss(z_a, z_b)
    got = cauchy_infonce(torch.tensor(z_a, dtype=torch.float32), torch.tensor(z_b, dtype=torch.float32))
    assert got.dtype == torch.float32
    assert got.ndim == 0
    assert got.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_single_image_has_zero_loss():
    # With one image the positive is the only other view, so the ratio is exactly 1.
    loss = cauchy_infonce(torch.randn(1, 2), torch.randn(1, 2))
    assert loss.item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("dim", [2, 128])
def test_precision_with_large_common_offset(dim):
    # A common offset must not swamp the distances (the naive Gram form loses them).
    rng = np.random.default_rng(dim)
    z_a = rng.normal(size=(12, dim)) + 1000.0
    z_b = z_a + rng.normal(size=(12, dim)) * 0.3
    expected = reference_loss(z_a, z_b)
    got = cauchy_infonce(torch.tensor(z_a, dtype=torch.float32), torch.tensor(z_b, dtype=torch.float32))
    assert got.item() == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("dim", [2, 128])
def test_pairwise_distances_match_direct_formula(dim):
    rng = np.random.default_rng(7)
    z = rng.normal(size=(20, dim)) * 5 + 50
    expected = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    got = pairwise_squared_distances(torch.tensor(z, dtype=torch.float32)).numpy()
    assert (got >= 0).all()
    assert np.all(np.diag(got) == 0)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("batch, dim, fast_mode", [(4, 2, False), (2, 20, False), (4, 128, True)])
def test_gradient_matches_finite_differences(batch, dim, fast_mode):
    # Both distance paths (direct for small dims, centred Gram for wide ones); the
    # 128-D case checks random directional derivatives to stay fast.
    generator = torch.Generator().manual_seed(dim)
    z_a = torch.randn(batch, dim, dtype=torch.float64, generator=generator).requires_grad_()
    z_b = torch.randn(batch, dim, dtype=torch.float64, generator=generator).requires_grad_()
    assert cauchy_infonce(z_a, z_b).dtype == torch.float64
    assert torch.autograd.gradcheck(
        cauchy_infonce, (z_a, z_b), eps=1e-6, atol=1e-6, fast_mode=fast_mode
    )


def test_low_precision_inputs_give_float32_loss():
    generator = torch.Generator().manual_seed(0)
    z_a = torch.randn(8, 2, generator=generator).to(torch.bfloat16)
    z_b = torch.randn(8, 2, generator=generator).to(torch.bfloat16)
    loss = cauchy_infonce(z_a, z_b)
    assert loss.dtype == torch.float32
    expected = reference_loss(z_a.float().numpy(), z_b.float().numpy())
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_autocast_does_not_lower_the_precision():
    # The 128-D path uses a matmul, which autocast would otherwise run in bfloat16.
    generator = torch.Generator().manual_seed(1)
    z_a = torch.randn(16, 128, generator=generator)
    z_b = z_a + 0.3 * torch.randn(16, 128, generator=generator)
    expected = reference_loss(z_a.numpy(), z_b.numpy())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = cauchy_infonce(z_a, z_b)
    assert under_autocast.dtype == torch.float32
    assert under_autocast.item() == pytest.approx(expected, rel=1e-5)


def test_symmetry_and_translation_invariance():
    generator = torch.Generator().manual_seed(3)
    z_a = torch.randn(6, 2, generator=generator)
    z_b = torch.randn(6, 2, generator=generator)
    loss = cauchy_infonce(z_a, z_b)
    assert cauchy_infonce(z_b, z_a).item() == pytest.approx(loss.item(), rel=1e-6)
    shift = torch.tensor([3.0, -2.0])
    assert cauchy_infonce(z_a + shift, z_b + shift).item() == pytest.approx(loss.item(), rel=1e-5)


def test_pulling_positives_together_lowers_the_loss():
    generator = torch.Generator().manual_seed(5)
    z_a = torch.randn(10, 2, generator=generator) * 5
    far = cauchy_infonce(z_a, torch.randn(10, 2, generator=generator) * 5)
    near = cauchy_infonce(z_a, z_a + 0.01)
    assert near < far


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="same shape"):
        cauchy_infonce(torch.randn(4, 2), torch.randn(5, 2))
    with pytest.raises(ValueError, match="same shape"):
        cauchy_infonce(torch.randn(4), torch.randn(4))
