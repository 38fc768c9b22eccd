"""Hover thumbnails: crisp PNGs encoded on demand and kept in a bounded LRU cache."""

from __future__ import annotations

import base64
import html
import io
import threading
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

__all__ = ["ThumbnailCache", "CacheInfo", "html_escape", "hover_card_html"]


class CacheInfo(NamedTuple):
    """Counters of a :class:`ThumbnailCache`, like ``functools.lru_cache``'s."""

    hits: int
    misses: int
    maxsize: int
    currsize: int


def html_escape(value: Any) -> str:
    """``str(value)`` made safe to put in HTML text or a quoted attribute."""
    return html.escape(str(value), quote=True)


class ThumbnailCache:
    """PNG thumbnails of a collection of images, encoded only when asked for.

    Parameters
    ----------
    images : numpy.ndarray of uint8, shape (N, H, W, 3), or an ImageSet
        The images (an object with ``images`` and ``paths`` attributes, such
        as :class:`tsimcne_widgets.data.load.ImageSet`, is unpacked).
    paths : sequence of str or None
        Source file of each image (None entries allowed).  When a file is
        larger than the stored array image, the thumbnail is decoded from the
        file instead, for detail the array lost in resizing.  When the file
        is gone (an image store whose originals were moved or deleted), the
        array image stands in, and :attr:`note` says so (warned once).
    max_items : int
        Most encoded thumbnails kept; the least recently used go first.

    Attributes
    ----------
    note : str or None
        Set when an original file was found missing: what the thumbnails show instead.

    Notes
    -----
    Tiny images (8×8 digits, 32×32 CIFAR) are enlarged by an integer factor
    with nearest-neighbour sampling, so each source pixel becomes a sharp
    block instead of a blur.  Methods are thread-safe.
    """

    def __init__(
        self, images, paths: Sequence[str | None] | None = None, max_items: int = 2048
    ) -> None:
        if hasattr(images, "images") and not isinstance(images, np.ndarray):
            if paths is None:
                paths = getattr(images, "paths", None)
            images = images.images
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(
                "images must be a uint8 array of shape (N, H, W, 3), got "
                f"{images.dtype} {images.shape}; convert with tsimcne_widgets.data.load.load_images"
            )
        if paths is not None:
            paths = tuple(None if p is None else str(p) for p in paths)
            if len(paths) != len(images):
                raise ValueError(f"got {len(paths)} paths for {len(images)} images")
        if int(max_items) < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self.images = images
        self.paths = paths
        self.max_items = int(max_items)
        self._cache: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0
        self.note: str | None = None

    def __len__(self) -> int:
        return len(self.images)

    def cache_info(self) -> CacheInfo:
        """Hits, misses (= encodes), capacity and current size."""
        with self._lock:
            return CacheInfo(self._hits, self._misses, self.max_items, len(self._cache))

    def clear(self) -> None:
        """Drop every cached thumbnail (counters are kept)."""
        with self._lock:
            self._cache.clear()

    def _index(self, i) -> int:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"image index must be an int, got {type(i).__name__}")
        i = int(i)
        if not -len(self.images) <= i < len(self.images):
            raise IndexError(f"image index {i} out of range for {len(self.images)} images")
        return i % len(self.images)

    def png_bytes(self, i: int, size: int = 160) -> bytes:
        """PNG of image ``i`` fitting in a ``size``×``size`` box.

        Images smaller than the box are enlarged by the largest integer
        factor that fits (nearest neighbour); larger ones are shrunk with a
        Lanczos filter.
        """
        i = self._index(i)
        size = int(size)
        if size < 1:
            raise ValueError(f"size must be >= 1 pixel, got {size}")
        key = (i, size)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                self._hits += 1
                return cached
            self._misses += 1
        # Encode outside the lock so that slow file decodes don't serialise hovers.
        encoded = _encode_png(self._thumbnail(i, size))
        with self._lock:
            self._cache[key] = encoded
            self._cache.move_to_end(key)
            while len(self._cache) > self.max_items:
                self._cache.popitem(last=False)
        return encoded

    def data_uri(self, i: int, size: int = 160) -> str:
        """``data:image/png;base64,...`` URI of :meth:`png_bytes`."""
        return "data:image/png;base64," + base64.b64encode(self.png_bytes(i, size)).decode("ascii")

    def hover_card_html(
        self,
        i: int,
        label: Any = None,
        metadata: Mapping[str, Any] | None = None,
        size: int = 160,
    ) -> str:
        """HTML card with the thumbnail, the label, the index and metadata lines.

        Every piece of text is escaped, so file names or labels containing
        markup are shown literally rather than run.
        """
        return hover_card_html(self.data_uri(i, size), self._index(i), label, metadata, size)

    def _thumbnail(self, i: int, size: int) -> Image.Image:
        array = self.images[i]
        height, width = array.shape[:2]
        path = self.paths[i] if self.paths is not None else None
        if path is not None:
            try:
                from_file = _thumbnail_from_file(path, size, min_side=max(height, width))
            except FileNotFoundError:
                from_file = None
                self._original_missing(path, height, width)
            if from_file is not None:
                return from_file
        image = Image.fromarray(np.ascontiguousarray(array))
        return _fit(image, size)

    def _original_missing(self, path: str, height: int, width: int) -> None:
        with self._lock:
            if self.note is not None:
                return
            self.note = (f"original files are gone (first: {path}); thumbnails show the stored "
                         f"{height}x{width} px images")
        warnings.warn(self.note, UserWarning, stacklevel=4)


def _fit(image: Image.Image, size: int) -> Image.Image:
    longest = max(image.size)
    if longest <= size:
        factor = size // longest
        if factor > 1:
            return image.resize(
                (image.width * factor, image.height * factor), Image.Resampling.NEAREST
            )
        return image
    image = image.copy()
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    return image


def _thumbnail_from_file(path: str, size: int, min_side: int) -> Image.Image | None:
    """Thumbnail decoded from ``path`` when the file beats the array, else None.

    Raises FileNotFoundError when the file is gone; other unreadable files give None.
    """
    try:
        with Image.open(path) as source:
            if max(source.size) <= min_side:
                return None
            # draft() lets JPEG decode at a reduced scale: big photos stay cheap.
            source.draft("RGB", (size, size))
            image = source.convert("RGB")
    except FileNotFoundError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return _fit(image, size)


def _encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    # compress_level 1: hover latency matters more than a few hundred bytes.
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def hover_card_html(
    image_uri: str,
    index: int,
    label: Any = None,
    metadata: Mapping[str, Any] | None = None,
    size: int = 160,
) -> str:
    """HTML for a hover card: image, escaped label, index and metadata lines.

    Parameters
    ----------
    image_uri : str
        ``data:`` URI of the thumbnail (see :meth:`ThumbnailCache.data_uri`).
    index : int
        Row of the image in the collection.
    label : object or None
        Shown in bold when not None.
    metadata : mapping or None
        ``key: value`` lines under the label.
    size : int
        Displayed thumbnail size in CSS pixels.
    """
    if not str(image_uri).startswith("data:image/"):
        raise ValueError("image_uri must be a data:image/... URI from ThumbnailCache.data_uri")
    size = int(size)
    lines = [
        f'<div class="tsimcne-hover" style="font:12px sans-serif;max-width:{size + 16}px">',
        f'<img src="{html_escape(image_uri)}" width="{size}" height="{size}" '
        'style="image-rendering:pixelated;object-fit:contain;display:block" alt="">',
    ]
    if label is not None:
        lines.append(f"<div><b>{html_escape(label)}</b></div>")
    lines.append(f'<div style="color:#666">#{int(index)}</div>')
    for key, value in (metadata or {}).items():
        lines.append(f"<div>{html_escape(key)}: {html_escape(value)}</div>")
    lines.append("</div>")
    return "".join(lines)
