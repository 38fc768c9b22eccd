"""Augmentation settings derived from the images themselves, for data that carries none.

The paper's augmentations (crops of 20-100 % of the area, horizontal flips, colour
jitter, random grayscale) were tuned on 32-px colour photographs.  On other data they
can destroy what the map should show: at 8 px a 20 % crop is a 3x3-pixel patch, a
mirrored digit is another symbol, and a crop of a fifth of an image whose object
covers a fifth often holds only background, which the network then learns to match
instead of the object.  :func:`augmentation_for` therefore measures four label-free
traits of the images (:func:`measure_traits`) and adapts the paper's settings:

* **Resolution.**  A crop keeps at least :data:`MIN_CROP_SIDE` source pixels per
  side: ``crop_scale[0] = max(0.2, (6 / side) ** 2)``, ``side`` the smaller native
  side.  8 px gives 0.5625 (the hand-tuned digits setting is 0.56), 12 px 0.25, and
  16 px and more the paper's 0.2.  Crops are cut from the native images even when
  the planner trains at a lower resolution, so the native side is what counts.
* **Channels.**  Images whose three channels are equal are grayscale: saturation
  and hue jitter and the random grayscale conversion are exact no-ops on them, so
  they are switched off (less work per step, the same views).
* **Mirror symmetry of the data set.**  Flips teach the network that an image and
  its mirror are the same thing.  That is right when a mirrored image looks like
  other images of the set (photographs, rotated shapes) and wrong when it does not
  (digits, letters).  Test: on images standardised per image and shrunk to at most
  16 px, the median distance from a mirrored image to its nearest other image,
  divided by the same for the unmirrored image.  Digits 1.88, shapes 1.00, CIFAR-10
  1.00 (1797, 2000 and 3000 images); above :data:`MIRROR_RATIO_LIMIT` (1.15) flips
  are off.
* **Content area.**  After removing each image's linear lightness ramp (a plane
  fitted per channel), the smallest square window that holds
  :data:`CONTENT_ENERGY` (70 %) of the remaining detail, as a fraction of the image
  area; the median over images.  Shapes 0.25-0.28, CIFAR-10 0.52, digits 0.77.  Below
  :data:`SMALL_CONTENT_AREA` (0.36) the image is mostly background around a small
  object, and crops start at :data:`SPARSE_CROP_LOW` (half the image), so that a crop
  usually holds most of the object.  A constant, not a multiple of the area: the
  area is a whole number of pixels squared (shapes at 32 px measure 16² or 17² of
  32², 0.25 or 0.28, from one sample to the next), and a floor that moved with it
  changed the maps by more than the two values could justify (0.5 vs 0.5645 on
  shapes, ``benchmarks/results/plain-arrays.md``).

Sets with fewer than :data:`MIN_IMAGES_FOR_STATISTICS` images keep the paper's flips
and crop floor (the nearest-neighbour statistics need a population); the resolution
and channel rules apply at any size.  The thresholds sit between the three data sets
measured (digits, shapes, CIFAR-10), not fitted to more; ``benchmarks/plain_arrays.py``
compares the resulting maps with the hand-tuned settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "CONTENT_ENERGY",
    "DataTraits",
    "MIN_CROP_SIDE",
    "MIN_IMAGES_FOR_STATISTICS",
    "MIRROR_RATIO_LIMIT",
    "PAPER_CROP_LOW",
    "SMALL_CONTENT_AREA",
    "SPARSE_CROP_LOW",
    "augmentation_for",
    "image_array",
    "measure_traits",
]

#: The paper's smallest crop, as a fraction of the image area.
PAPER_CROP_LOW = 0.2
#: Fewest source pixels per side a crop keeps.
MIN_CROP_SIDE = 6
#: Mirror ratio above which flips are off (digits 1.88; shapes, CIFAR-10 1.00).
MIRROR_RATIO_LIMIT = 1.15
#: Share of an image's detail the content window must hold.
CONTENT_ENERGY = 0.7
#: Content area below which crops grow with it (shapes 0.25; CIFAR-10 0.52).
SMALL_CONTENT_AREA = 0.36
#: Crop floor for images whose content is smaller than SMALL_CONTENT_AREA.
SPARSE_CROP_LOW = 0.5
#: Fewest images for the mirror and content statistics.
MIN_IMAGES_FOR_STATISTICS = 50
# Mean absolute channel difference (of 255) up to which images count as grayscale:
# JPEG chroma noise on gray images stays well below it, the faint tints of the shapes
# set (39) far above.
_GRAY_TOLERANCE = 1.0
_SAMPLE = 1000
_MIRROR_SIDE = 16
_CONTENT_SIDE = 32


@dataclass(frozen=True)
class DataTraits:
    """Label-free traits of an image set (see :func:`measure_traits`).

    Attributes
    ----------
    height, width : int
        Native image size in pixels.
    grayscale : bool
        All three channels equal (within JPEG noise).
    mirror_ratio : float or None
        Median nearest-other-image distance of mirrored images over that of the
        images; about 1 when mirrored images look like the set.  None: too few images.
    content_area : float or None
        Median fraction of the image area holding most of its detail.  None: too few
        images.
    """

    height: int
    width: int
    grayscale: bool
    mirror_ratio: float | None
    content_area: float | None


def image_array(images) -> np.ndarray:
    """The ``(N, H, W, 3)`` uint8 array of an ImageSet or of such an array; TypeError else."""
    array = getattr(images, "images", images)  # an ImageSet or its array
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.ndim != 4 \
            or array.shape[-1] != 3:
        raise TypeError(
            "expected an ImageSet or a uint8 array (N, H, W, 3), got "
            f"{type(array).__name__} {getattr(array, 'shape', '')}; "
            "convert other inputs with tsimcne_widgets.data.load.load_images"
        )
    return array


def _shrink(gray: torch.Tensor, side: int) -> torch.Tensor:
    # Box-average to at most `side` pixels per side: the statistics need the shape
    # of the content, not its finest pixels, and the cost stays flat for large images.
    height, width = gray.shape[-2:]
    if max(height, width) <= side:
        return gray
    scale = side / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.adaptive_avg_pool2d(gray, size)


def _mirror_ratio(gray: torch.Tensor, query: np.ndarray) -> float:
    x = _shrink(gray, _MIRROR_SIDE).flatten(1)
    n = x.shape[0]
    # Per-image standardisation: brightness and contrast say nothing about symmetry.
    x = (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True) + 1e-6)
    q = torch.from_numpy(query)
    side = _shrink(gray, _MIRROR_SIDE).shape[-1]
    originals = x[q]
    mirrored = originals.view(len(q), -1, side).flip(-1).reshape(len(q), -1)
    squared = (x * x).sum(1)

    def nearest_other(points):
        distances = (points * points).sum(1, keepdim=True) + squared - 2 * points @ x.T
        distances[torch.arange(len(q)), q] = float("inf")  # not the image itself
        return distances.min(1).values.clamp_min(0).sqrt()

    own = nearest_other(originals).median().item()
    flipped = nearest_other(mirrored).median().item()
    if n < 2 or own <= 0:
        return 1.0 if flipped <= 0 else float("inf")
    return flipped / own


def _content_area(images: torch.Tensor) -> float:
    x = _shrink(images, _CONTENT_SIDE)
    n, channels, height, width = x.shape
    rows, cols = torch.meshgrid(torch.arange(height, dtype=torch.float32),
                                torch.arange(width, dtype=torch.float32), indexing="ij")
    design = torch.stack([torch.ones(height * width), rows.flatten(), cols.flatten()], 1)
    basis = torch.linalg.qr(design).Q  # orthonormal: constant, vertical and horizontal ramps
    flat = x.reshape(n, channels, height * width)
    residual = flat - (flat @ basis) @ basis.T  # what a lightness ramp does not explain
    energy = (residual * residual).sum(1).view(n, height, width)
    total = energy.sum((1, 2), keepdim=True)
    energy = torch.where(total > 0, energy / total.clamp_min(1e-12),
                         torch.full_like(energy, 1.0 / (height * width)))
    integral = F.pad(energy.cumsum(1).cumsum(2), (1, 0, 1, 0))
    best = torch.ones(n)
    for side in range(min(height, width), 0, -1):
        held = (integral[:, side:, side:] - integral[:, :-side, side:]
                - integral[:, side:, :-side] + integral[:, :-side, :-side])
        fits = held.flatten(1).amax(1) >= CONTENT_ENERGY
        best = torch.where(fits, torch.tensor(side * side / (height * width)), best)
    return float(best.median())


def measure_traits(images, sample: int = _SAMPLE, seed: int = 0) -> DataTraits:
    """Measure the label-free traits :func:`augmentation_for` decides by.

    Parameters
    ----------
    images : ImageSet or numpy.ndarray
        uint8 images ``(N, H, W, 3)``.
    sample : int
        Images the statistics are computed on (a seeded random subset); the mirror
        test compares them with up to ``4 * sample`` images.
    seed : int
        Seed of the subsets.

    Returns
    -------
    DataTraits
    """
    array = image_array(images)
    n, height, width = array.shape[:3]
    # The first `sample` images of one seeded permutation are the queries; the first
    # `4 * sample` the population they are compared with.
    order = np.random.default_rng(seed).permutation(n)
    population = np.sort(order[: 4 * sample])
    picked = np.sort(order[:sample])
    sub = array[picked].astype(np.int16)
    grayscale = bool(
        n == 0 or (np.abs(sub[..., 0] - sub[..., 1]).mean()
                   + np.abs(sub[..., 1] - sub[..., 2]).mean()) / 2 <= _GRAY_TOLERANCE
    )
    if n < MIN_IMAGES_FOR_STATISTICS:
        return DataTraits(height, width, grayscale, None, None)
    pool = torch.from_numpy(array[population]).permute(0, 3, 1, 2).float().div_(255.0)
    query = np.searchsorted(population, picked)
    with torch.no_grad():
        mirror = _mirror_ratio(pool.mean(1, keepdim=True), query)
        content = _content_area(pool[torch.from_numpy(query)])
    return DataTraits(height, width, grayscale, mirror, content)


def augmentation_for(images, traits: DataTraits | None = None) -> dict:
    """Augmenter settings for images that carry none, derived without labels.

    The rules and the measurements behind them are in this module's docstring.

    Parameters
    ----------
    images : ImageSet or numpy.ndarray
        uint8 images ``(N, H, W, 3)``.
    traits : DataTraits, optional
        Already measured traits (default: :func:`measure_traits` of ``images``).

    Returns
    -------
    dict
        Keyword arguments of :class:`~tsimcne_widgets.engine.augment.Augmenter`
        (``crop_scale``, ``flip_p``, ``jitter``, ``grayscale_p``), suitable for
        ``TSimCNE(augmentation=...)`` or ``ImageSet.augmentation``.

    Examples
    --------
    >>> import numpy as np
    >>> gray8 = np.zeros((10, 8, 8, 3), np.uint8)
    >>> augmentation_for(gray8)["crop_scale"]
    (0.5625, 1.0)
    """
    if traits is None:
        traits = measure_traits(images)
    side = min(traits.height, traits.width)
    crop_low = max(PAPER_CROP_LOW, (MIN_CROP_SIDE / side) ** 2)
    if traits.content_area is not None and traits.content_area < SMALL_CONTENT_AREA:
        crop_low = max(crop_low, SPARSE_CROP_LOW)
    settings = {"crop_scale": (round(min(crop_low, 1.0), 4), 1.0)}
    mirrored_unlike = traits.mirror_ratio is not None and traits.mirror_ratio > MIRROR_RATIO_LIMIT
    settings["flip_p"] = 0.0 if mirrored_unlike else 0.5
    if traits.grayscale:
        settings["jitter"] = (0.4, 0.4, 0.0, 0.0)
        settings["grayscale_p"] = 0.0
    return settings
