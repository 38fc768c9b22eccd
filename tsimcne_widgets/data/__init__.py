"""Images in: every input kind becomes an :class:`ImageSet` (numpy + PIL + pandas; no torch, no UI).

Modules: ``imageset`` (the :class:`ImageSet` container), ``files`` (discovery, safe
decoding, resizing), ``load`` (every input kind -> ImageSet), ``store`` (a collection
decoded once into a memory-mapped cache), ``datasets`` (bundled and local data sets).
"""

from __future__ import annotations

from tsimcne_widgets._lazy import lazy_exports

__all__ = ["ImageSet", "load_images", "load_digits", "make_shapes", "cifar10_folder",
           "load_torchvision"]

_HOME = {
    "ImageSet": "imageset",
    "load_images": "load",
    "load_digits": "datasets",
    "make_shapes": "datasets",
    "cifar10_folder": "datasets",
    "load_torchvision": "datasets",
}


__getattr__, __dir__ = lazy_exports(globals(), _HOME)
