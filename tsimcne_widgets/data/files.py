"""Image files → uint8 RGB arrays: discovery, safe decoding on a thread pool, resizing.

The file-handling half of :mod:`tsimcne_widgets.data.load` (kept separate so each
module stays readable). numpy and PIL only.
"""
from __future__ import annotations

import math
import os
import threading
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
#: Files with more pixels are refused (decompression-bomb guard).
DEFAULT_MAX_PIXELS = 50_000_000
#: Longer side of the default common size when images differ in size.
DEFAULT_MAX_SIDE = 64
#: Smallest side the network can work with (crops of tinier images are noise).
MIN_SIDE = 8
# Loading a folder of same-size photos at full resolution would exhaust memory
# long before training could use the pixels; refuse past this and name the fix.
MAX_DEFAULT_BYTES = 4 * 2**30

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_ORIENTATION_FORMATS = ("JPEG", "MPO", "TIFF", "WEBP")
_TRANSPOSE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90,
}
_pixel_limit_lock = threading.Lock()


def common_size(sizes: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The most common (h, w); when sizes differ, capped to a longer side of DEFAULT_MAX_SIDE."""
    counts = Counter(sizes)
    h, w = counts.most_common(1)[0][0]  # ties: the size met first in the (sorted) input
    if len(counts) > 1 and max(h, w) > DEFAULT_MAX_SIDE:
        scale = DEFAULT_MAX_SIDE / max(h, w)
        h, w = max(1, round(h * scale)), max(1, round(w * scale))
    return h, w


def fit(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale ``im`` to cover ``size`` (h, w) and crop the centre: no stretching."""
    th, tw = size
    w, h = im.size
    if (h, w) == (th, tw):
        return im
    scale = max(tw / w, th / h)
    cw, ch = tw / scale, th / scale
    box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
    return im.resize((tw, th), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)


def resize_all(images: list[np.ndarray], size: tuple[int, int] | None) -> np.ndarray:
    """Stack (H, W, 3) uint8 images of any sizes, resized to ``size`` or the common size."""
    target = size or common_size([im.shape[:2] for im in images])
    out = np.empty((len(images), *target, 3), np.uint8)

    def work(i: int) -> None:
        im = images[i]
        out[i] = im if im.shape[:2] == target else np.asarray(fit(Image.fromarray(im), target))

    threaded(work, range(len(images)))
    return out


# ----------------------------------------------------------------------------- PIL decoding

def to_rgb_image(im: Image.Image) -> Image.Image:
    """Any PIL mode → RGB. 16/32-bit gray is scaled from its range; alpha composited on white."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode.startswith("I") or mode == "F":
        a = np.asarray(im).astype(np.float64)
        hi = float(a.max()) if a.size else 0.0
        if mode.startswith("I;16"):
            a = a / 257.0
        elif mode == "F" and hi <= 1.0:
            a = a * 255.0
        elif mode == "I" and hi > 255:
            a = a / (257.0 if hi <= 65535 else hi / 255.0)
        gray = np.rint(np.clip(np.nan_to_num(a), 0, 255)).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        if im.mode == "RGB":
            return im
    if im.mode in _ALPHA_MODES:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def orientation(im: Image.Image) -> int:
    if im.format not in _ORIENTATION_FORMATS:
        return 1  # other formats rarely carry EXIF, and reading it may force a full decode
    try:
        return int(im.getexif().get(0x0112, 1))
    except Exception:
        return 1


def too_many_pixels(w: int, h: int, max_pixels: int | None) -> str | None:
    if max_pixels is not None and w * h > max_pixels:
        return (f"too many pixels: {w}x{h} = {w * h:,} > max_pixels={max_pixels:,}, a possible "
                "decompression bomb; raise max_pixels if you trust the file")
    return None


def failure(exc: BaseException) -> str:
    if isinstance(exc, Image.DecompressionBombError):
        return f"too many pixels: {exc}"
    return f"{type(exc).__name__}: {exc}"


def probe(path: str, max_pixels: int | None) -> tuple[int, int] | str:
    """(h, w) as displayed (after EXIF rotation), or why the file is refused; reads only the header."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            if orientation(im) in (5, 6, 7, 8):
                w, h = h, w
    except Exception as exc:
        return failure(exc)
    return too_many_pixels(w, h, max_pixels) or (h, w)


def decode(path: str, size: tuple[int, int], max_pixels: int | None) -> np.ndarray | str:
    try:
        with Image.open(path) as im:
            refused = too_many_pixels(*im.size, max_pixels)
            if refused:
                return refused
            turn = orientation(im)
            if im.format == "JPEG":
                # let libjpeg decode at 1/2, 1/4 or 1/8 scale: far less work for big photos
                th, tw = size if turn < 5 else size[::-1]
                scale = max(tw / im.size[0], th / im.size[1])
                if scale < 0.5:
                    im.draft(im.mode, (math.ceil(im.size[0] * scale), math.ceil(im.size[1] * scale)))
            rgb = to_rgb_image(im)
            if turn in _TRANSPOSE_FOR_ORIENTATION:
                rgb = rgb.transpose(_TRANSPOSE_FOR_ORIENTATION[turn])
            return np.asarray(fit(rgb, size))
    except Exception as exc:
        return failure(exc)


@contextmanager
def pil_limits(max_pixels: int | None):
    """Silence PIL's own bomb warning (we report refusals ourselves) and, only when the caller
    allows more pixels than PIL does, lift PIL's limit until the loading is done."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        # PIL's per-file complaints (corrupt EXIF, odd palettes) would bury the one summary warning
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        limit = Image.MAX_IMAGE_PIXELS
        if limit is None or (max_pixels is not None and max_pixels <= limit):
            yield
            return
        with _pixel_limit_lock:
            Image.MAX_IMAGE_PIXELS = None
            try:
                yield
            finally:
                Image.MAX_IMAGE_PIXELS = limit


def threaded(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """``[fn(x) for x in items]`` on a thread pool (PIL releases the GIL while decoding)."""
    items = list(items)
    workers = min(16, 2 * (os.cpu_count() or 1), max(1, len(items) // 16))
    if workers <= 1:
        return [fn(x) for x in items]
    step = max(1, len(items) // (workers * 8))
    chunks = [items[i:i + step] for i in range(0, len(items), step)]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tsimcne-load") as pool:
        return [r for part in pool.map(lambda c: [fn(x) for x in c], chunks) for r in part]


def load_files(paths: list[str], size: tuple[int, int] | None, max_pixels: int | None
                ) -> tuple[np.ndarray, np.ndarray, tuple[tuple[str, str], ...]]:
    """Decode files → (images, indices of the files kept, skipped (path, reason))."""
    reasons: dict[int, str] = {}
    with pil_limits(max_pixels):
        candidates = list(range(len(paths)))
        if size is None:
            probed = threaded(lambda i: probe(paths[i], max_pixels), candidates)
            reasons.update((i, r) for i, r in zip(candidates, probed) if isinstance(r, str))
            sizes = [r for r in probed if not isinstance(r, str)]
            if sizes:
                size = common_size(sizes)
                n_bytes = len(sizes) * size[0] * size[1] * 3
                if len(set(sizes)) == 1 and n_bytes > MAX_DEFAULT_BYTES:
                    raise ValueError(f"{len(sizes)} images of {size[0]}x{size[1]} would take "
                                     f"{n_bytes / 2**30:.1f} GiB; pass image_size=64 (or another "
                                     "size) to downscale while loading")
            candidates = [i for i in candidates if i not in reasons]
        images = np.empty((len(candidates), *(size or (0, 0)), 3), np.uint8)

        def work(slot: int) -> str | None:
            decoded = decode(paths[candidates[slot]], size, max_pixels)
            if isinstance(decoded, str):
                return decoded
            images[slot] = decoded
            return None

        if candidates and size is not None:
            for slot, reason in enumerate(threaded(work, range(len(candidates)))):
                if reason is not None:
                    reasons[candidates[slot]] = reason
    keep_slots = [s for s, i in enumerate(candidates) if i not in reasons]
    if len(keep_slots) != len(candidates):
        images = images[keep_slots]
    kept = np.array([candidates[s] for s in keep_slots], dtype=np.intp)
    skipped = tuple((paths[i], reasons[i]) for i in sorted(reasons))
    return images, kept, skipped


def skipped_message(skipped: Sequence[tuple[str, str]], n_loaded: int) -> str:
    paths = [p for p, _ in skipped]
    root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    shown = ", ".join(f"{os.path.relpath(p, root) if root else p} ({r.split(':')[0]})"
                      for p, r in skipped[:5])
    more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
    return (f"skipped {len(skipped)} of {len(skipped) + n_loaded} image files that could not be read: "
            f"{shown}{more}; the reasons are in ImageSet.skipped")


def discover(root: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # .ipynb_checkpoints, .git, ...
        found.extend(os.path.join(dirpath, f) for f in filenames
                     if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS)
    return sorted(found, key=lambda p: Path(p).relative_to(root).parts)
