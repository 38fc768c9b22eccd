"""SimCLR augmentations for t-SimCNE, batched on the batch's device.

Every image gets its own random crop, flip and colour jitter, but nothing loops over
images in Python: :meth:`Augmenter.sample` draws the parameters of a whole batch as
tensors (:class:`AugmentParams`), and :meth:`Augmenter.apply` resamples the batch in
one ``grid_sample`` call (crop + resize + flip) and runs the colour operations with
per-image factors.  The colour maths follows torchvision's functional ops (blend,
grayscale-mean contrast, HSV hue shift, ITU-R 601 grayscale).
"""

from __future__ import annotations

import functools

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

__all__ = ["AugmentParams", "Augmenter", "rgb_to_grayscale", "rgb_to_hsv", "hsv_to_rgb"]

# torchvision's rgb_to_grayscale weights (ITU-R 601-2 luma).
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)
_CROP_TRIES = 10


@dataclass
class AugmentParams:
    """Random parameters of one view of a batch (one row per image).

    Attributes
    ----------
    crop_center : torch.Tensor
        ``(N, 2)`` crop centre ``(x, y)`` as fractions of the image width/height.
    crop_size : torch.Tensor
        ``(N, 2)`` crop ``(width, height)`` as fractions of the image width/height.
    flip : torch.Tensor
        ``(N,)`` bool, mirror horizontally.
    jitter : torch.Tensor
        ``(N,)`` bool, apply colour jitter.
    jitter_factors : torch.Tensor
        ``(N, 4)`` brightness, contrast, saturation factors (1 = unchanged) and hue
        shift (0 = unchanged, in turns of the colour wheel).
    jitter_order : torch.Tensor
        ``(N, 4)`` int64 permutation of ``0..3`` (brightness, contrast, saturation,
        hue): the order the jitter ops run in.
    grayscale : torch.Tensor
        ``(N,)`` bool, convert to grayscale after jitter.
    """

    crop_center: torch.Tensor
    crop_size: torch.Tensor
    flip: torch.Tensor
    jitter: torch.Tensor
    jitter_factors: torch.Tensor
    jitter_order: torch.Tensor
    grayscale: torch.Tensor

    def __len__(self) -> int:
        return int(self.flip.shape[0])

    def to(self, device: torch.device | str) -> "AugmentParams":
        """Copy of the parameters on ``device``."""
        return AugmentParams(
            **{f.name: getattr(self, f.name).to(device) for f in fields(self)}
        )

    @classmethod
    def identity(cls, n: int, device: torch.device | str | None = None) -> "AugmentParams":
        """Parameters that leave ``n`` images unchanged (full crop, nothing else)."""
        return cls(
            crop_center=torch.full((n, 2), 0.5, device=device),
            crop_size=torch.ones(n, 2, device=device),
            flip=torch.zeros(n, dtype=torch.bool, device=device),
            jitter=torch.zeros(n, dtype=torch.bool, device=device),
            jitter_factors=torch.tensor([1.0, 1.0, 1.0, 0.0], device=device).repeat(n, 1),
            jitter_order=torch.arange(4, device=device).repeat(n, 1),
            grayscale=torch.zeros(n, dtype=torch.bool, device=device),
        )


def rgb_to_grayscale(images: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of ``(N, 3, H, W)`` float images, shape ``(N, 1, H, W)``."""
    r, g, b = images.unbind(dim=-3)
    return (_GRAY_WEIGHTS[0] * r + _GRAY_WEIGHTS[1] * g + _GRAY_WEIGHTS[2] * b).unsqueeze(-3)


def rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    """RGB to HSV (all channels in [0, 1]) for ``(..., 3, H, W)`` float images."""
    r, g, b = images.unbind(dim=-3)
    maxc = images.amax(dim=-3)
    minc = images.amin(dim=-3)
    is_gray = maxc == minc
    chroma = maxc - minc
    ones = torch.ones_like(maxc)
    saturation = chroma / torch.where(is_gray, ones, maxc)
    chroma_divisor = torch.where(is_gray, ones, chroma)
    rc = (maxc - r) / chroma_divisor
    gc = (maxc - g) / chroma_divisor
    bc = (maxc - b) / chroma_divisor
    # Same tie-breaking as torchvision: red wins, then green, then blue.
    hue_r = (maxc == r) * (bc - gc)
    hue_g = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hue_b = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    hue = torch.fmod((hue_r + hue_g + hue_b) / 6.0 + 1.0, 1.0)
    return torch.stack((hue, saturation, maxc), dim=-3)


@functools.lru_cache(maxsize=8)
def _sector_table(device: torch.device) -> torch.Tensor:
    # Built once per device: a fresh host-to-device copy every step would stall the GPU.
    return torch.tensor(
        [[0, 3, 2], [1, 0, 2], [2, 0, 3], [2, 1, 0], [3, 2, 0], [0, 2, 1]],
        device=device,
    )


def hsv_to_rgb(images: torch.Tensor) -> torch.Tensor:
    """HSV to RGB for ``(..., 3, H, W)`` float images with channels in [0, 1]."""
    h, s, v = images.unbind(dim=-3)
    sector = torch.floor(h * 6.0)
    frac = h * 6.0 - sector
    sector = sector.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * frac)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - frac))).clamp(0.0, 1.0)
    # For each of the six hue sectors, which of (v, q, p, t) goes to R, G and B.
    candidates = torch.stack((v, q, p, t), dim=-3)  # (..., 4, H, W)
    index = _sector_table(images.device)[sector].movedim(-1, -3)  # (..., 3, H, W)
    return candidates.gather(-3, index)


def _blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # torchvision's _blend for float images: ratio * img1 + (1 - ratio) * img2, clamped.
    factor = factor.view(-1, 1, 1, 1)
    return (factor * images + (1.0 - factor) * other).clamp_(0.0, 1.0)


def _adjust_brightness(images, factor):
    return _blend(images, torch.zeros_like(images[:, :1]), factor)


def _adjust_contrast(images, factor):
    mean = rgb_to_grayscale(images).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(images, mean, factor)


def _adjust_saturation(images, factor):
    return _blend(images, rgb_to_grayscale(images), factor)


def _adjust_hue(images, shift):
    hsv = rgb_to_hsv(images)
    hue = torch.remainder(hsv[:, 0] + shift.view(-1, 1, 1), 1.0)
    return hsv_to_rgb(torch.stack((hue, hsv[:, 1], hsv[:, 2]), dim=1))


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        value = (value, value)
    try:
        height, width = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or an (height, width) pair, got {value!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return height, width


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"expected a torch.Tensor of images, got {type(images).__name__}; "
            "use torch.from_numpy(array).permute(0, 3, 1, 2) for NHWC numpy arrays"
        )
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"expected (N, 3, H, W) RGB images, got shape {tuple(images.shape)}; "
            "permute NHWC to NCHW and repeat grayscale to 3 channels"
        )
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise TypeError(f"images must be uint8 (0-255) or float in [0, 1], got {images.dtype}")


def _to_unit_float(images: torch.Tensor) -> torch.Tensor:
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255.0)
    return images.to(torch.float32)


def _finish(images: torch.Tensor, out_dtype: torch.dtype, channels_last: bool) -> torch.Tensor:
    images = images.to(out_dtype)
    if channels_last:
        return images.contiguous(memory_format=torch.channels_last)
    return images.contiguous()


class Augmenter:
    """Random SimCLR views of image batches, computed on the batch's device.

    Parameters
    ----------
    out_size : int or (int, int)
        Output height and width.
    crop_scale : (float, float)
        Range of the crop area as a fraction of the image area.
    crop_ratio : (float, float)
        Range of the crop aspect ratio (width / height, in pixels), sampled
        log-uniformly.
    flip_p : float
        Probability of a horizontal flip.
    jitter : (float, float, float, float)
        Brightness, contrast and saturation strength ``s`` (factor uniform in
        ``[max(0, 1 - s), 1 + s]``) and hue strength ``h`` (shift uniform in
        ``[-h, h]``, at most 0.5).
    jitter_p : float
        Probability that colour jitter is applied (its four ops in random order).
    grayscale_p : float
        Probability of grayscale conversion.

    Examples
    --------
    >>> augmenter = Augmenter(32)
    >>> gen = torch.Generator().manual_seed(0)
    >>> views = augmenter(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), gen)
    >>> views.shape
    torch.Size([4, 3, 32, 32])
    """

    def __init__(
        self,
        out_size: int | tuple[int, int],
        crop_scale: tuple[float, float] = (0.2, 1.0),
        crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip_p: float = 0.5,
        jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
        jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
    ):
        self.out_size = _pair(out_size, "out_size")
        scale_low, scale_high = (float(v) for v in crop_scale)
        if not 0 < scale_low <= scale_high <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale!r}")
        ratio_low, ratio_high = (float(v) for v in crop_ratio)
        if not 0 < ratio_low <= ratio_high:
            raise ValueError(f"crop_ratio must satisfy 0 < low <= high, got {crop_ratio!r}")
        for name, p in (("flip_p", flip_p), ("jitter_p", jitter_p), ("grayscale_p", grayscale_p)):
            if not 0 <= float(p) <= 1:
                raise ValueError(f"{name} is a probability in [0, 1], got {p!r}")
        jitter = tuple(float(j) for j in jitter)
        if len(jitter) != 4 or any(j < 0 for j in jitter) or jitter[3] > 0.5:
            raise ValueError(
                "jitter must be four non-negative numbers (brightness, contrast, "
                f"saturation, hue) with hue <= 0.5, got {jitter!r}"
            )
        self.crop_scale = (scale_low, scale_high)
        self.crop_ratio = (ratio_low, ratio_high)
        self.flip_p = float(flip_p)
        self.jitter = jitter
        self.jitter_p = float(jitter_p)
        self.grayscale_p = float(grayscale_p)

    def __repr__(self) -> str:
        return (
            f"Augmenter(out_size={self.out_size}, crop_scale={self.crop_scale}, "
            f"crop_ratio={self.crop_ratio}, flip_p={self.flip_p}, jitter={self.jitter}, "
            f"jitter_p={self.jitter_p}, grayscale_p={self.grayscale_p})"
        )

    # ------------------------------------------------------------------ sampling
    def sample(
        self,
        n: int,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
        image_shape: tuple[int, int] | None = None,
    ) -> AugmentParams:
        """Draw augmentation parameters for ``n`` images.

        Random numbers come from ``generator`` on its own device (so a CPU generator
        gives the same views on any device); the result is moved to ``device``.

        Parameters
        ----------
        n : int
            Number of images.
        device : torch.device or str, optional
            Device of the returned tensors (default: the generator's, else CPU).
        generator : torch.Generator, optional
            Source of randomness; default the global generator.
        image_shape : (int, int), optional
            Input ``(height, width)``; only its aspect ratio matters (to turn the
            pixel aspect-ratio range into fractions).  Default ``out_size``.
        """
        if int(n) < 0:
            raise ValueError(f"n must be non-negative, got {n!r}")
        n = int(n)
        sample_device = generator.device if generator is not None else torch.device(
            device if device is not None else "cpu"
        )
        height, width = _pair(image_shape, "image_shape") if image_shape else self.out_size
        aspect = width / height

        def uniform(*shape, low=0.0, high=1.0):
            u = torch.rand(*shape, generator=generator, device=sample_device)
            return low + (high - low) * u

        crop_center, crop_size = self._sample_crops(n, aspect, uniform)
        flip = uniform(n) < self.flip_p
        jitter_on = uniform(n) < self.jitter_p
        b, c, s, h = self.jitter
        factors = torch.stack(
            [
                uniform(n, low=max(0.0, 1.0 - b), high=1.0 + b),
                uniform(n, low=max(0.0, 1.0 - c), high=1.0 + c),
                uniform(n, low=max(0.0, 1.0 - s), high=1.0 + s),
                uniform(n, low=-h, high=h),
            ],
            dim=1,
        )
        # argsort of i.i.d. uniforms is a uniformly random permutation per row.
        order = torch.argsort(uniform(n, 4), dim=1)
        grayscale = uniform(n) < self.grayscale_p
        params = AugmentParams(crop_center, crop_size, flip, jitter_on, factors, order, grayscale)
        return params.to(device) if device is not None else params

    def _sample_crops(self, n, aspect, uniform):
        # torchvision's RandomResizedCrop.get_params, vectorised over images and tries,
        # in continuous coordinates (grid_sample needs no pixel-aligned boxes).
        log_low, log_high = math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])
        area = uniform(n, _CROP_TRIES, low=self.crop_scale[0], high=self.crop_scale[1])
        ratio = torch.exp(uniform(n, _CROP_TRIES, low=log_low, high=log_high))
        # Pixel width/height of a crop covering `area` of the image with aspect `ratio`,
        # expressed as fractions of the image width and height.
        crop_w = torch.sqrt(area * ratio / aspect)
        crop_h = torch.sqrt(area * aspect / ratio)
        valid = (crop_w <= 1.0) & (crop_h <= 1.0)
        first_valid = torch.argmax(valid.to(torch.int8), dim=1, keepdim=True)
        any_valid = valid.any(dim=1)
        crop_w = crop_w.gather(1, first_valid).squeeze(1)
        crop_h = crop_h.gather(1, first_valid).squeeze(1)
        # Fallback of torchvision: the largest central crop with the ratio clamped.
        clamped = min(max(aspect, self.crop_ratio[0]), self.crop_ratio[1])
        fallback_w, fallback_h = (clamped / aspect, 1.0) if clamped <= aspect else (1.0, aspect / clamped)
        crop_w = torch.where(any_valid, crop_w, torch.full_like(crop_w, fallback_w))
        crop_h = torch.where(any_valid, crop_h, torch.full_like(crop_h, fallback_h))
        # Uniform placement inside the image (centre crop for the fallback).
        centre_x = crop_w / 2 + (1.0 - crop_w) * uniform(n)
        centre_y = crop_h / 2 + (1.0 - crop_h) * uniform(n)
        centre_x = torch.where(any_valid, centre_x, torch.full_like(centre_x, 0.5))
        centre_y = torch.where(any_valid, centre_y, torch.full_like(centre_y, 0.5))
        return torch.stack([centre_x, centre_y], 1), torch.stack([crop_w, crop_h], 1)

    # ------------------------------------------------------------------ applying
    def apply(
        self,
        images: torch.Tensor,
        params: AugmentParams,
        out_dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
    ) -> torch.Tensor:
        """Augment ``images`` with given parameters.

        Parameters
        ----------
        images : torch.Tensor
            ``(N, 3, H, W)`` uint8 (0-255) or float in [0, 1], any memory format.
        params : AugmentParams
            One row per image (moved to the images' device if needed).
        out_dtype : torch.dtype
            Dtype of the result (the maths runs in float32).
        channels_last : bool
            Return a ``torch.channels_last`` tensor.

        Returns
        -------
        torch.Tensor
            ``(N, 3, *out_size)`` views with values in [0, 1].
        """
        _check_images(images)
        n = images.shape[0]
        if len(params) != n:
            raise ValueError(f"params are for {len(params)} images but the batch has {n}")
        device = images.device
        if n == 0:
            return _finish(images.new_zeros((0, 3, *self.out_size), dtype=torch.float32),
                           out_dtype, channels_last)
        params = params.to(device)
        x = _to_unit_float(images)

        # Crop + resize + flip as one affine resampling: output coordinate u in [-1, 1]
        # reads input coordinate (2c - 1) + size * u, mirrored for flipped images.
        sign = torch.where(params.flip, -1.0, 1.0).to(torch.float32)
        theta = torch.zeros(n, 2, 3, device=device, dtype=torch.float32)
        theta[:, 0, 0] = params.crop_size[:, 0] * sign
        theta[:, 1, 1] = params.crop_size[:, 1]
        theta[:, :, 2] = params.crop_center * 2.0 - 1.0
        grid = F.affine_grid(theta, [n, 3, *self.out_size], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        x = x.contiguous()

        x = self._jitter(x, params)
        gray = rgb_to_grayscale(x).expand_as(x)
        x = torch.where(params.grayscale.view(-1, 1, 1, 1), gray, x)
        return _finish(x.clamp_(0.0, 1.0), out_dtype, channels_last)

    def _jitter(self, x: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        # One pass per position in the random order; at each position every image runs
        # exactly one op.  Blends with factor 1 are exact no-ops, so the three blend ops
        # run on the whole batch with neutral factors for the images not selected;
        # hue (an HSV round trip, not exactly invertible) runs only where selected.
        active = params.jitter
        factors = params.jitter_factors
        ones = torch.ones_like(factors[:, 0])
        for position in range(4):
            op = params.jitter_order[:, position]

            def factor_for(op_id):
                return torch.where(active & (op == op_id), factors[:, op_id], ones)

            x = _adjust_brightness(x, factor_for(BRIGHTNESS))
            x = _adjust_contrast(x, factor_for(CONTRAST))
            x = _adjust_saturation(x, factor_for(SATURATION))
            if self.jitter[3] > 0:
                x = self._hue_where(x, active & (op == HUE), factors[:, HUE])
        return x

    @staticmethod
    def _hue_where(x: torch.Tensor, mask: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu":
            # On the CPU the HSV round trip dominates the cost: run it on the selected
            # quarter of the batch only (boolean indexing syncs, harmless here).
            index = mask.nonzero().squeeze(1)
            if index.numel():
                x = x.index_copy(0, index, _adjust_hue(x[index], shift[index]))
            return x
        # On accelerators compute for all and select: no host sync, and spare compute.
        return torch.where(mask.view(-1, 1, 1, 1), _adjust_hue(x, shift), x)

    def __call__(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
        *,
        out_dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
    ) -> torch.Tensor:
        """One random view of each image: :meth:`sample` then :meth:`apply`."""
        _check_images(images)
        params = self.sample(
            images.shape[0], images.device, generator, image_shape=tuple(images.shape[-2:])
        )
        return self.apply(images, params, out_dtype=out_dtype, channels_last=channels_last)

    def to_float(
        self,
        images: torch.Tensor,
        out_dtype: torch.dtype = torch.float32,
        channels_last: bool = False,
    ) -> torch.Tensor:
        """The un-augmented view: images as floats in [0, 1], resized to ``out_size``.

        Resizing (only when the size differs) is bilinear with antialiasing.
        """
        _check_images(images)
        x = _to_unit_float(images)
        if tuple(x.shape[-2:]) != self.out_size:
            x = F.interpolate(
                x, size=self.out_size, mode="bilinear", align_corners=False, antialias=True
            ).clamp_(0.0, 1.0)
        return _finish(x, out_dtype, channels_last)
