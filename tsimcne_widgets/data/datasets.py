"""Ready-made image sets that need no network, plus finders for local copies of public ones.

* :func:`load_digits` – scikit-learn's bundled 8x8 digits.
* :func:`make_shapes` – procedural shapes on which pixel similarity misleads: position,
  size, lightness and background dominate the pixels, the label is the shape.
* :func:`load_torchvision` – CIFAR-10/100, MNIST, Fashion-MNIST through torchvision
  (downloads only when asked).
* :func:`cifar10_folder` – the team's CIFAR-10 JPEG archive, extracted once into a cache.
"""
from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from tsimcne_widgets.io.atomic import atomic_folder

from .imageset import ImageSet
from .load import load_images

__all__ = ["DIGITS_AUGMENTATION", "SHAPE_NAMES", "SHAPES_AUGMENTATION", "cifar10_folder",
           "load_digits", "load_torchvision", "make_shapes"]

SHAPE_NAMES = ("circle", "square", "triangle", "star", "cross", "ring")
#: Augmentations that :func:`make_shapes` sets carry (see ``ImageSet.augmentation``).  A shape covers
#: about a fifth of its image, so the paper's crops of down to 20 % of the image often
#: miss it, and the network then matches views by their background (the runs:
#: benchmarks/README.md, "Short-run recipe").
SHAPES_AUGMENTATION = {"crop_scale": (0.5, 1.0)}
#: Augmentations that :func:`load_digits` carries.  Mirror images of digits are other
#: symbols, so flips teach the network a symmetry the classes do not have, and a fifth
#: of an 8x8 image (3-4 pixels a side) is too little to recognise anything (the runs:
#: benchmarks/README.md, "Short-run recipe").
DIGITS_AUGMENTATION = {"crop_scale": (0.56, 1.0), "flip_p": 0.0}

_TORCHVISION_CLASSES = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "mnist": "MNIST",
                        "fashionmnist": "FashionMNIST"}
_EXTRACTED_MARKER = ".extracted"


def load_digits() -> ImageSet:
    """scikit-learn's handwritten digits: 1797 images of 8x8 pixels, bundled, no network.

    Returns
    -------
    ImageSet
        uint8 RGB (white digit on black; the 0..16 ink levels scaled to 0..255),
        labels ``"0"`` .. ``"9"``, and :data:`DIGITS_AUGMENTATION`.
    """
    from sklearn.datasets import load_digits as sklearn_digits  # sklearn is slow to import

    digits = sklearn_digits()
    gray = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    return ImageSet(images=np.repeat(gray[..., None], 3, axis=-1), labels=digits.target.astype(str),
                    augmentation=DIGITS_AUGMENTATION)


def make_shapes(n_samples: int = 2000, image_size: int = 32,
                random_state: int | np.random.Generator | None = 0) -> ImageSet:
    """Procedural shapes whose pixels are dominated by everything but the class.

    Six balanced classes (:data:`SHAPE_NAMES`), each drawn at a random position, size
    and rotation, light on dark or dark on light, in faint random tints, over a
    background with a lightness ramp, faint stripes and grain.  Neighbours in pixel
    space share position, size and lightness, so pixel t-SNE groups by those (15-NN
    accuracy about 0.27 on its map), while a person, or a contrastive network whose
    augmentations blur position, size and lightness, sees the shapes.  Colours are
    kept faint on purpose: a saturated colour that survives every augmentation lets
    a contrastive network tell images apart without looking at the shape.  The set
    carries :data:`SHAPES_AUGMENTATION` (larger crops), which ``TSimCNE`` uses.

    Parameters
    ----------
    n_samples : int
        Number of images; class counts differ by at most one.
    image_size : int
        Side length in pixels (at least 8; 32 matches CIFAR).
    random_state : int, numpy Generator or None
        Seed for a reproducible set; ``None`` draws a fresh one.

    Returns
    -------
    ImageSet
        uint8 images (n_samples, image_size, image_size, 3), shape-name labels and
        :data:`SHAPES_AUGMENTATION`, metadata columns ``centre_x``, ``centre_y`` (shape centre in the image, px), ``radius`` (px),
        ``rotation`` (degrees), ``foreground`` and ``background`` (``#rrggbb``).
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 8:
        raise ValueError(f"image_size must be an int of at least 8, got {image_size!r}")
    rng = np.random.default_rng(random_state)
    n, side = int(n_samples), int(image_size)
    classes = rng.permutation(np.arange(n) % len(SHAPE_NAMES))

    radius = (rng.uniform(0.24, 0.38, n) * side).astype(np.float32)
    margin = 0.85 * radius  # lets corners touch the border now and then, as in real photos
    cx = rng.uniform(margin, side - margin).astype(np.float32)
    cy = rng.uniform(margin, side - margin).astype(np.float32)
    rotation = rng.uniform(0.0, 2.0 * np.pi, n).astype(np.float32)
    foreground, background = _contrasting_colours(rng, n)

    grid = np.arange(side, dtype=np.float32) + 0.5
    dx = (grid[None, None, :] - cx[:, None, None]) / radius[:, None, None]
    dy = (grid[None, :, None] - cy[:, None, None]) / radius[:, None, None]
    cos, sin = np.cos(rotation)[:, None, None], np.sin(rotation)[:, None, None]
    u = dx * cos + dy * sin
    v = dy * cos - dx * sin

    distance = np.empty((n, side, side), np.float32)  # signed, in units of the radius
    for k, name in enumerate(SHAPE_NAMES):
        members = classes == k
        distance[members] = _SIGNED_DISTANCE[name](u[members], v[members])
    # one pixel of soft edge: coverage from the signed distance in pixels
    coverage = np.clip(0.5 - distance * radius[:, None, None], 0.0, 1.0)[..., None]

    pixels = _backgrounds(rng, background, side) * (1.0 - coverage) + foreground[:, None, None, :] * coverage
    # grain, shared by the channels: uniform draws are several times cheaper than normal ones
    pixels += np.float32(0.07) * (rng.random((n, side, side, 1), dtype=np.float32) - np.float32(0.5))
    images = np.rint(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)

    metadata = pd.DataFrame({
        "centre_x": cx, "centre_y": cy, "radius": radius, "rotation": np.degrees(rotation),
        "foreground": _hex(foreground), "background": _hex(background),
    })
    return ImageSet(images=images, labels=np.asarray(SHAPE_NAMES, dtype=object)[classes],
                    metadata=metadata, augmentation=SHAPES_AUGMENTATION)


def _contrasting_colours(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Foreground/background RGB in [0, 1]: light on dark or dark on light, muted tints.

    The lightness is drawn from narrow bands and the tints are faint, within what
    colour jitter (brightness and contrast x0.6-1.4, hue +-0.1) and grayscale blur.  A
    colour or lightness that survives every augmentation identifies an image, and a
    contrastive network then learns colour instead of shape; here what survives is
    the shape (and whether it is lighter or darker than its background).
    """
    dark = rng.uniform(0.08, 0.35, n)
    light = rng.uniform(0.65, 0.92, n)
    light_on_dark = rng.random(n) < 0.5
    foreground_lightness = np.where(light_on_dark, light, dark)
    background_lightness = np.where(light_on_dark, dark, light)
    hue = rng.uniform(0.0, 1.0, n)
    tint = np.stack([np.cos(2.0 * np.pi * (hue - shift)) for shift in (0.0, 1.0 / 3.0, 2.0 / 3.0)], axis=1)

    def colour(lightness: np.ndarray) -> np.ndarray:
        saturation = rng.uniform(0.0, 0.15, n)[:, None]
        return np.clip(lightness[:, None] + saturation * tint, 0.0, 1.0).astype(np.float32)

    return colour(foreground_lightness), colour(background_lightness)


def _backgrounds(rng: np.random.Generator, base: np.ndarray, side: int) -> np.ndarray:
    """(n, side, side, 3) float32: a linear gradient away from ``base`` plus faint stripes."""
    n = len(base)
    coords = (np.arange(side, dtype=np.float32) + 0.5) / side - 0.5
    yy, xx = np.meshgrid(coords, coords, indexing="ij")

    def along(angle: np.ndarray) -> np.ndarray:  # (n, side, side) position along a direction
        return xx[None] * np.cos(angle) + yy[None] * np.sin(angle)

    def uniform(low: float, high: float) -> np.ndarray:
        return rng.uniform(low, high, n).astype(np.float32)[:, None, None]

    # a lightness ramp: it shifts pixels a lot, and crops see different parts of it
    other_end = np.clip(base + rng.normal(0.0, 0.2, (n, 1)), 0.0, 1.0).astype(np.float32)
    ramp = (along(uniform(0.0, 2.0 * np.pi)) + np.float32(0.5))[..., None]
    gradient = base[:, None, None, :] + (other_end - base)[:, None, None, :] * ramp
    phase = np.float32(2.0 * np.pi) * uniform(1.5, 4.0) * along(uniform(0.0, np.pi)) + uniform(0.0, 2.0 * np.pi)
    stripes = uniform(0.0, 0.08) * np.sin(phase)
    return gradient + stripes[..., None]


def _star(u: np.ndarray, v: np.ndarray, points: int = 5, outer: float = 1.22,
          inner: float = 0.55) -> np.ndarray:
    # Fold every pixel into the half-sector between a tip (angle 0) and the next notch
    # (angle pi/points); there the boundary is one straight edge, so the distance to it
    # is one dot product.
    half = np.pi / points
    angle = np.mod(np.arctan2(v, u), 2.0 * half)
    angle = np.minimum(angle, 2.0 * half - angle)
    rho = np.hypot(u, v)
    tip = np.array([outer, 0.0])
    notch = np.array([inner * np.cos(half), inner * np.sin(half)])
    edge = notch - tip
    normal = np.array([-edge[1], edge[0]]) / np.linalg.norm(edge)
    if normal @ -tip > 0:  # point it away from the centre
        normal = -normal
    return (rho * np.cos(angle) - tip[0]) * normal[0] + (rho * np.sin(angle) - tip[1]) * normal[1]


def _triangle(u: np.ndarray, v: np.ndarray, circumradius: float = 1.25) -> np.ndarray:
    apothem = circumradius / 2.0
    sides = [u * np.cos(a) + v * np.sin(a) for a in np.pi / 2 + np.arange(3) * 2 * np.pi / 3]
    return np.maximum.reduce(sides) - apothem


def _cross(u: np.ndarray, v: np.ndarray, arm: float = 1.0, half_width: float = 0.33) -> np.ndarray:
    au, av = np.abs(u), np.abs(v)
    return np.minimum(np.maximum(au - arm, av - half_width), np.maximum(au - half_width, av - arm))


# Areas are kept within about 20 % of each other, so the amount of
# foreground colour says little about the class.
_SIGNED_DISTANCE = {
    "circle": lambda u, v: np.hypot(u, v) - 0.82,
    "square": lambda u, v: np.maximum(np.abs(u), np.abs(v)) - 0.72,
    "triangle": _triangle,
    "star": _star,
    "cross": _cross,
    "ring": lambda u, v: np.abs(np.hypot(u, v) - 0.72) - 0.23,
}


def _hex(colours: np.ndarray) -> list[str]:
    values = np.rint(np.clip(colours, 0.0, 1.0) * 255).astype(int)
    return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in values]


def load_torchvision(name: str, root: str | os.PathLike, train: bool = True,
                     download: bool = False) -> ImageSet:
    """CIFAR-10, CIFAR-100, MNIST or Fashion-MNIST through torchvision.

    Parameters
    ----------
    name : {"cifar10", "cifar100", "mnist", "fashion-mnist"}
        Case, ``-`` and ``_`` are ignored.
    root : path
        torchvision's data folder for this dataset.
    train : bool
        The training split, else the test split.
    download : bool
        Fetch the files when missing. Off by default: nothing touches the network
        unless asked.

    Returns
    -------
    ImageSet
        uint8 RGB images (grayscale repeated to three channels) with class-name labels.

    Raises
    ------
    FileNotFoundError
        When the files are not under ``root`` and ``download`` is False.
    """
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in _TORCHVISION_CLASSES:
        raise ValueError(f"unknown dataset {name!r}; choose one of cifar10, cifar100, mnist, fashion-mnist")
    try:
        import torchvision.datasets as tv_datasets
    except ImportError as exc:
        raise ImportError("load_torchvision needs torchvision: pip install torchvision") from exc
    dataset_class = getattr(tv_datasets, _TORCHVISION_CLASSES[key])
    try:
        dataset = dataset_class(root=os.fspath(root), train=train, download=download)
    except RuntimeError as exc:
        if download:
            raise
        raise FileNotFoundError(f"{name} ({'train' if train else 'test'} split) was not found under "
                                f"{root}; pass download=True to fetch it (needs the network)") from exc
    targets = np.asarray(dataset.targets.tolist() if hasattr(dataset.targets, "tolist")
                         else dataset.targets, dtype=np.intp)
    labels = np.asarray(dataset.classes, dtype=object)[targets]
    # the raw uint8 array, not ds[i]: no per-image PIL round trip for 60,000 images
    return load_images(dataset.data, labels)


def _repo_root() -> Path:
    # tsimcne_widgets/data/datasets.py -> the checkout holding tsimcne_widgets/
    return Path(__file__).resolve().parents[2]


def _default_cifar10_archive() -> Path:
    return _repo_root().parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def cifar10_folder(root: str | os.PathLike | None = None) -> Path | None:
    """The folder holding CIFAR-10 as ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``.

    Parameters
    ----------
    root : path, optional
        An extracted folder or a ``.tar.gz`` archive. Default: the environment
        variable ``TSIMCNE_CIFAR10``, else ``shared/data/cifar10-jpeg.tar.gz``
        next to the repository. An archive is extracted once into
        ``$TSIMCNE_CACHE`` (default ``~/.cache/tsimcne_widgets``) and reused.

    Returns
    -------
    pathlib.Path or None
        The folder with ``train/`` and ``test/``; ``None`` when the data is absent.

    Raises
    ------
    ValueError
        When the archive holds absolute paths, ``..``, links or devices (nothing
        is extracted outside the cache then).
    """
    source = Path(root if root is not None else
                  os.environ.get("TSIMCNE_CIFAR10") or _default_cifar10_archive()).expanduser()
    if source.is_dir():
        return _split_folder(source)
    if not source.is_file():
        return None
    cache = Path(os.environ.get("TSIMCNE_CACHE") or "~/.cache/tsimcne_widgets").expanduser()
    target = cache / _archive_stem(source)
    if not (target / _EXTRACTED_MARKER).is_file():
        _extract_safely(source, target)
    return _split_folder(target)


def _archive_stem(archive: Path) -> str:
    name = archive.name
    for suffix in (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return archive.stem


def _split_folder(folder: Path) -> Path | None:
    for candidate in (folder, *sorted(p for p in folder.iterdir() if p.is_dir())):
        if (candidate / "train").is_dir() and (candidate / "test").is_dir():
            return candidate
    return None


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    parts = PurePosixPath(member.name).parts
    if member.name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise ValueError(f"refusing to extract {archive}: member {member.name!r} would land outside "
                         "the target folder")
    if not (member.isfile() or member.isdir()):
        raise ValueError(f"refusing to extract {archive}: member {member.name!r} is a link or device, "
                         "not a plain file")


def _extract_safely(archive: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not (target / _EXTRACTED_MARKER).is_file():
        shutil.rmtree(target)  # leftovers of an older, interrupted extraction
    # Extracted beside the target and swapped in at the end, so that an interrupted run
    # or a concurrent process never sees a half-filled folder that looks complete.
    try:
        with atomic_folder(target, action="extract the CIFAR-10 archive into") as staging:
            with tarfile.open(archive, "r:*") as tar:
                for member in tar:
                    _check_member(member, archive)
                    tar.extract(member, staging, filter="data")
            (staging / _EXTRACTED_MARKER).touch()
    except FileExistsError:
        if not (target / _EXTRACTED_MARKER).is_file():
            raise  # not a concurrent extraction that finished first
