"""Images in: every input kind becomes an :class:`ImageSet` (numpy + PIL + pandas; no torch, no UI)."""

from __future__ import annotations

from tsimcne_widgets._lazy import lazy_exports

__all__ = ["ImageSet", "load_images", "load_digits", "make_shapes", "cifar10_folder"]

_HOME = {
    "ImageSet": "load",
    "load_images": "load",
    "load_digits": "datasets",
    "make_shapes": "datasets",
    "cifar10_folder": "datasets",
}


__getattr__, __dir__ = lazy_exports(globals(), _HOME)
