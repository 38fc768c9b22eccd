"""A label-free check, before training, that the augmentations leave an image recognisable.

t-SimCNE learns by matching two augmented views of the same image against the views of
all other images.  When the augmentations leave too little of an image (a 20 % crop of
an 8-px digit is a 3x3-pixel blob), the two views of one image share nothing the
network could match, and the map comes out as noise: the paper's 32-px settings on
scikit-learn's 8-px digits gave a 2-D kNN accuracy of 0.38 instead of 0.99.

**What is measured.**  :func:`check_augmentation` draws two views of up to ``n`` images
with the run's own augmentations and describes every view by a fixed, untrained
feature: the view averaged down to at most 8x8 pixels, standardised per view
(brightness and contrast jitter say nothing about identity) and summed with its mirror
image (a flip keeps an image recognisable to a network; whether a mirrored image is
still *the same kind* of thing is :mod:`~tsimcne_widgets.engine.augment_policy`'s flip
rule, which no view-matching test can see).  The score is **view retrieval**: the
fraction of the ``2n`` views whose nearest other view is their sibling.  Chance is
``1 / (2n - 1)``; un-augmented views score 1 (identical siblings), so the identity
augmentation is no useful ceiling and the verdict uses a fixed threshold instead.

**Calibration** (n = 512, seeds 0-9 for the digits, 0-2 for the rest;
``benchmarks/results/augment-check.md``, ``python benchmarks/augment_check.py``)::

    data, settings                          retrieval     known map quality
    digits 8 px, paper's (crops 0.2, flips)   0.044-0.083   kNN 0.38 (bad)
    digits 8 px, tuned (crops 0.56, no flip)  0.155-0.195   kNN 0.99 (good)
    shapes 8/16/32 px, crops 0.5 (tuned)      0.21-0.25     good
    shapes 8/16/32 px, paper's (crops 0.2)    0.08-0.11     not measured
    CIFAR-10 32 px, paper's                   0.17          the paper's setting
    CIFAR-10 32 px, crops 0.05-0.1            0.009-0.014   (destroyed)
    any of them, crops 0.01-0.02              <= 0.016      (destroyed)

:data:`RETRIEVAL_LIMIT` = 0.11 sits at the geometric middle between the worst seed of
the known-bad setting (0.083) and the lowest known-good score (0.155): a factor of
about 1.35 to either side, a modest margin (a score near 0.1 at n = 512 varies by
about 0.01-0.02 between seeds).  The paper's 20 % crops on shapes, which keep 3-4
source pixels a side at 8 px, score at the threshold and may be flagged (the
data-derived crops for shapes are 0.5-0.63).  Destroyed views score 10x below it.
With fewer than 512 images every score is higher (fewer views to confuse), so the
check is more lenient there; below :data:`MIN_IMAGES` it is skipped.  Three data sets
calibrate it, no more.

Views are drawn at at most :data:`CHECK_SIDE` pixels (crops are cut from the native
images as in training; only the output is smaller), since the feature is 8x8: that
keeps the check near 0.2 s for 512 images.  It runs on one thread: its operations are
small and a second thread only adds synchronisation (on a busy 2-core machine, 3 s
with two threads against 0.6 s with one).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .augment import Augmenter
from .augment_policy import augmentation_for, image_array

__all__ = ["AugmentationCheck", "AugmentationWarning", "CHECK_SIDE", "MIN_IMAGES",
           "RETRIEVAL_LIMIT", "check_augmentation", "warn_if_destructive"]

#: View retrieval below which the augmentations count as destroying the images.
RETRIEVAL_LIMIT = 0.11
#: Fewest images for the check (retrieval among few views says little).
MIN_IMAGES = 128
#: Largest side the check draws its views at.
CHECK_SIDE = 16
_FEATURE_SIDE = 8
# Larger crop floors tried, in order, for the suggestion when the derived settings fail too.
_CROP_FLOORS = (0.5, 0.8)


class AugmentationWarning(UserWarning):
    """The augmentations leave too little of each image to learn from."""


@dataclass(frozen=True)
class AugmentationCheck:
    """The result of :func:`check_augmentation`.

    Attributes
    ----------
    score : float
        View retrieval: the fraction of views whose nearest other view is their sibling.
    chance : float
        The score of views that share nothing, ``1 / (2n - 1)``.
    threshold : float
        :data:`RETRIEVAL_LIMIT`, the score below which the check fails.
    n : int
        Images the views were drawn from.
    passed : bool
        ``score >= threshold``.
    message : str
        What was found and, when the check failed, which settings to try.
    suggestion : dict or None
        Augmenter settings that pass the check, when it failed (None if none found).
    seconds : float
        Time the check took.
    """

    score: float
    chance: float
    threshold: float
    n: int
    passed: bool
    message: str
    suggestion: dict | None
    seconds: float

    @property
    def verdict(self) -> str:
        """``"ok"`` or ``"destructive"``."""
        return "ok" if self.passed else "destructive"


def _settings_of(augmenter: Augmenter) -> dict:
    return {"crop_scale": augmenter.crop_scale, "crop_ratio": augmenter.crop_ratio,
            "flip_p": augmenter.flip_p, "jitter": augmenter.jitter,
            "jitter_p": augmenter.jitter_p, "grayscale_p": augmenter.grayscale_p}


def _features(views: torch.Tensor) -> torch.Tensor:
    if max(views.shape[-2:]) > _FEATURE_SIDE:
        views = F.adaptive_avg_pool2d(views, _FEATURE_SIDE)
    views = views + views.flip(-1)  # mirror-invariant: see the module docstring
    x = views.flatten(1)
    x = x - x.mean(1, keepdim=True)
    return x / (x.norm(dim=1, keepdim=True) + 1e-6)


def _retrieval(x: torch.Tensor, settings: dict, out_size, seed: int) -> float:
    augmenter = Augmenter(out_size, **settings)
    generator = torch.Generator().manual_seed(seed)
    features = torch.cat([_features(augmenter(x, generator)) for _ in range(2)])
    n = x.shape[0]
    similarity = features @ features.T
    similarity.fill_diagonal_(-float("inf"))
    sibling = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return float((similarity.argmax(1) == sibling).float().mean())


def _crop_pixels(settings: dict, height: int, width: int) -> str:
    low = float(settings.get("crop_scale", (0.2, 1.0))[0])
    side = max(1, int(min(height, width) * low ** 0.5))  # whole source pixels
    return f"crops of {low:.0%} of the area at {height}x{width} px keep about {side}x{side} pixels"


def _suggest(x, array, settings, out_size, seed) -> dict | None:
    derived = augmentation_for(array)
    candidates = [derived] if derived != settings else []
    low = float(settings.get("crop_scale", (0.2, 1.0))[0])
    candidates += [{**derived, "crop_scale": (floor, 1.0)} for floor in _CROP_FLOORS if floor > low]
    for candidate in candidates:
        full = {**settings, **candidate}
        if _retrieval(x, full, out_size, seed) >= RETRIEVAL_LIMIT:
            return candidate
    return None


def check_augmentation(images, augmentation=None, *, n: int = 512,
                       seed: int = 0) -> AugmentationCheck:
    """Check, without labels, that two augmented views of an image still look alike.

    What is measured and where the threshold comes from: see this module's docstring.

    Parameters
    ----------
    images : ImageSet or numpy.ndarray
        uint8 images ``(N, H, W, 3)``, at least 2.
    augmentation : dict or Augmenter, optional
        The run's augmentations: Augmenter keyword arguments (views at the native
        size) or an :class:`~tsimcne_widgets.engine.augment.Augmenter` (its settings and
        output size).  Default: the paper's.
    n : int
        Images to draw views from (a seeded random subset when there are more).
    seed : int
        Seed of the subset and of the views; the same seed gives the same result.

    Returns
    -------
    AugmentationCheck

    Examples
    --------
    >>> from tsimcne_widgets.data.datasets import load_digits
    >>> check_augmentation(load_digits(), {}).verdict  # the paper's 32-px crops at 8 px
    'destructive'
    """
    started = time.perf_counter()
    array = image_array(images)
    if isinstance(augmentation, Augmenter):
        settings, out_size = _settings_of(augmentation), augmentation.out_size
    else:
        settings, out_size = dict(augmentation or {}), array.shape[1:3]
    if len(array) < 2:
        raise ValueError(f"the check needs at least 2 images, got {len(array)}")
    picked = np.sort(np.random.default_rng(seed).permutation(len(array))[:max(2, int(n))])
    x = torch.from_numpy(array[picked]).permute(0, 3, 1, 2).contiguous()
    scale = min(1.0, CHECK_SIDE / max(out_size))
    small = tuple(max(1, round(side * scale)) for side in out_size)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            score = _retrieval(x, settings, small, seed)
            passed = score >= RETRIEVAL_LIMIT
            suggestion = None if passed else _suggest(x, array, settings, small, seed)
    finally:
        torch.set_num_threads(threads)
    n_used, chance = len(picked), 1.0 / (2 * len(picked) - 1)
    found = (f"{score:.1%} of {2 * n_used} augmented views have their sibling view as "
             f"nearest neighbour (chance {chance:.1%}, threshold {RETRIEVAL_LIMIT:.0%})")
    if passed:
        message = f"augmentations keep the images recognisable: {found}"
    else:
        message = (f"the augmentations leave too little of each image to learn from: {found}; "
                   f"{_crop_pixels(settings, *array.shape[1:3])}. ")
        message += (f"Pass augmentation={suggestion!r}" if suggestion is not None else
                    "No larger crop helped: check that the images differ from each other "
                    "and pass gentler augmentation settings")
        message += " (augmentation_check=False silences this check)."
    return AugmentationCheck(score, chance, RETRIEVAL_LIMIT, n_used, passed, message,
                             suggestion, time.perf_counter() - started)


def warn_if_destructive(images, augmenter: Augmenter, *, seed: int = 0,
                        stacklevel: int = 2) -> AugmentationCheck | None:
    """Run :func:`check_augmentation` at the start of a fit; warn when it fails.

    Parameters
    ----------
    images : ImageSet or numpy.ndarray
        The training images.
    augmenter : Augmenter
        The run's augmentations.
    seed : int
        Seed of the check.
    stacklevel : int
        Of the :class:`AugmentationWarning`.

    Returns
    -------
    AugmentationCheck or None
        None when there are fewer than :data:`MIN_IMAGES` images (skipped).
    """
    if len(image_array(images)) < MIN_IMAGES:
        return None
    result = check_augmentation(images, augmenter, seed=seed)
    if not result.passed:
        warnings.warn(result.message, AugmentationWarning, stacklevel=stacklevel + 1)
    return result
