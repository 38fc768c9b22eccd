"""Renderer layer: numpy snapshots in, pixels, thumbnails, hit-tests and history out.

Everything here works on plain numpy arrays and never imports torch, so the
widget can draw maps while the trainer owns the accelerator.  Submodules are
imported lazily: ``lasso`` or ``replay`` alone do not pay for importing
datashader.
"""

from __future__ import annotations

from tsimcne_widgets._lazy import lazy_exports

__all__ = [
    "Rasterizer",
    "data_range",
    "to_png_bytes",
    "default_palette",
    "natural_key",
    "SpatialIndex",
    "points_in_polygon",
    "points_in_box",
    "ThumbnailCache",
    "hover_card_html",
    "ReplayBuffer",
    "save_map_png",
    "render_map_image",
]

_HOME = {
    "Rasterizer": "raster",
    "data_range": "raster",
    "to_png_bytes": "raster",
    "default_palette": "palette",
    "natural_key": "palette",
    "SpatialIndex": "spatial",
    "points_in_polygon": "lasso",
    "points_in_box": "lasso",
    "ThumbnailCache": "thumbs",
    "hover_card_html": "thumbs",
    "ReplayBuffer": "replay",
    "save_map_png": "picture",
    "render_map_image": "picture",
}


__getattr__, __dir__ = lazy_exports(globals(), _HOME)
