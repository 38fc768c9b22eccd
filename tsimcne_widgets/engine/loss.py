"""The t-SimCNE loss: InfoNCE with a Cauchy (Student-t, one degree of freedom) kernel.

A batch of B images gives 2B views.  For view i the positive is the other view of the
same image and the negatives are the remaining 2B - 2 views.  With
q(i, j) = 1 / (1 + ||z_i - z_j||^2),
loss_i = -log(q(i, pos) / sum_{k != i} q(i, k)), averaged over the 2B views.

The maths runs in log space (log q = -log1p(d^2)) and in float32 (float64 stays
float64) even under autocast: low-precision distances would quantise the 2-D map.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["cauchy_infonce", "pairwise_squared_distances"]

# Below this output dimension the exact broadcast difference is cheap ((2B)^2 * dim
# elements); above it the Gram-matrix form keeps memory at (2B)^2.
_DIRECT_DISTANCE_MAX_DIM = 16


def pairwise_squared_distances(z: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between all rows of ``z``.

    For small dimensions (the 2-D map) the differences are formed directly, which is
    exact up to rounding of each term.  For wide outputs the Gram form
    ||a||^2 + ||b||^2 - 2 a.b is used on mean-centred rows (centring removes the
    cancellation caused by a common offset) and clamped at zero.

    Parameters
    ----------
    z : torch.Tensor
        ``(N, D)`` points.

    Returns
    -------
    torch.Tensor
        ``(N, N)`` squared distances, zero on the diagonal.
    """
    if z.ndim != 2:
        raise ValueError(f"expected an (N, D) tensor, got shape {tuple(z.shape)}")
    if z.shape[1] <= _DIRECT_DISTANCE_MAX_DIM:
        diff = z.unsqueeze(1) - z.unsqueeze(0)
        return diff.square().sum(-1)
    centred = z - z.mean(dim=0, keepdim=True).detach()
    sq_norms = centred.square().sum(-1)
    gram = centred @ centred.T
    dist = (sq_norms.unsqueeze(1) + sq_norms.unsqueeze(0) - 2.0 * gram).clamp_min(0.0)
    # The diagonal is zero by definition; rounding would otherwise leave small values.
    eye = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    return dist.masked_fill(eye, 0.0)


def _autocast_off(device_type: str):
    try:
        return torch.autocast(device_type=device_type, enabled=False)
    except RuntimeError:  # a device type autocast does not know: nothing to disable
        return contextlib.nullcontext()


def cauchy_infonce(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """Cauchy-kernel InfoNCE loss of two batches of views.

    Parameters
    ----------
    z_a, z_b : torch.Tensor
        ``(B, D)`` outputs for the first and second view of the same B images
        (row i of ``z_a`` and row i of ``z_b`` are a positive pair).  Any floating
        dtype; half precision is promoted to float32.

    Returns
    -------
    torch.Tensor
        Scalar mean loss over the 2B views, float32 (float64 for float64 input).

    Raises
    ------
    ValueError
        When the shapes differ or are not ``(B, D)``.
    """
    if z_a.ndim != 2 or z_a.shape != z_b.shape:
        raise ValueError(
            "z_a and z_b must both be (B, D) with the same shape, got "
            f"{tuple(z_a.shape)} and {tuple(z_b.shape)}"
        )
    if z_a.shape[0] < 1:
        raise ValueError("cauchy_infonce needs at least one image per batch")
    dtype = torch.promote_types(torch.promote_types(z_a.dtype, z_b.dtype), torch.float32)
    with _autocast_off(z_a.device.type):
        z = torch.cat([z_a.to(dtype), z_b.to(dtype)], dim=0)
        n_views = z.shape[0]
        batch = n_views // 2
        log_q = -torch.log1p(pairwise_squared_distances(z))
        # Row i's positive sits B columns away (wrapping round).
        positive_index = (torch.arange(n_views, device=z.device) + batch) % n_views
        log_q_positive = log_q.gather(1, positive_index.unsqueeze(1)).squeeze(1)
        self_mask = torch.eye(n_views, dtype=torch.bool, device=z.device)
        log_normaliser = torch.logsumexp(log_q.masked_fill(self_mask, float("-inf")), dim=1)
        return (log_normaliser - log_q_positive).mean()
