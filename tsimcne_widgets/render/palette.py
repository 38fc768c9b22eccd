"""Colours and order of categories: one palette and one natural sort for every map.

The live canvas, the static PNG and the HTML export colour and order classes the same
way because they all use these functions.  Standard library only.
"""

from __future__ import annotations

import colorsys
import re
from collections.abc import Collection

__all__ = ["default_palette", "continuous_palette", "natural_key", "SINGLE_COLOR",
           "MISSING_COLOR"]

#: Colour of every point when a map has no categories.
SINGLE_COLOR = "#1f77b4"
#: Colour of points without a value when a map is coloured by a number.
MISSING_COLOR = "#a0a0a0"

# Tableau 10 and 20 (the matplotlib defaults): distinct, and all readable on white.
_TAB10 = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
]  # fmt: skip
_TAB20 = [
    "#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728",
    "#ff9896", "#9467bd", "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2",
    "#7f7f7f", "#c7c7c7", "#bcbd22", "#dbdb8d", "#17becf", "#9edae5",
]  # fmt: skip

# Viridis (perceptually uniform, readable by the colour-blind, dark blue to yellow) at
# 17 evenly spaced stops: interpolated, they differ from matplotlib's 256-colour table
# by at most 6 of 255 levels in a channel (too little to see) and need no dependency.
_VIRIDIS_STOPS = [
    "#440154", "#47186a", "#472c7b", "#424085", "#3a528b", "#32628d", "#2c728e", "#26818e",
    "#20908c", "#1e9e88", "#27ad80", "#3dbb74", "#5bc862", "#81d34c", "#aadb32", "#d4e11a",
    "#fde724",
]  # fmt: skip


def continuous_palette(n: int = 256) -> list[str]:
    """``n`` hex colours of the viridis colormap, from the lowest value to the highest.

    The raster of a map coloured by a number and its colour bar use this one table.

    Parameters
    ----------
    n : int
        Number of colours (at least 2).

    Returns
    -------
    list of str
        ``#rrggbb`` strings, dark blue first, yellow last.
    """
    if n < 2:
        raise ValueError(f"a colormap needs at least 2 colours, got n={n}")
    stops = [tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in _VIRIDIS_STOPS]
    colors = []
    for k in range(n):
        position = k / (n - 1) * (len(stops) - 1)
        low = min(int(position), len(stops) - 2)
        t = position - low
        rgb = [round(a + (b - a) * t) for a, b in zip(stops[low], stops[low + 1])]
        colors.append("#{:02x}{:02x}{:02x}".format(*rgb))
    return colors


def default_palette(n: int) -> list[str]:
    """``n`` distinguishable hex colours.

    Tableau 10 up to 10 categories, Tableau 20 up to 20, and beyond that hues
    spaced by the golden angle with alternating lightness, so neighbouring
    category codes never get similar colours.

    Parameters
    ----------
    n : int
        Number of colours.

    Returns
    -------
    list of str
        ``#rrggbb`` strings.

    Raises
    ------
    ValueError
        For a negative ``n``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n <= 10:
        return _TAB10[:n]
    if n <= 20:
        return _TAB20[:n]
    colors = []
    for k in range(n):
        hue = (k * 0.618033988749895) % 1.0
        lightness = (0.45, 0.62, 0.32)[k % 3]
        saturation = (0.80, 0.55)[(k // 3) % 2]
        r, g, b = colorsys.hls_to_rgb(hue, lightness, saturation)
        colors.append(f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}")
    return colors


def natural_key(text: str, last: Collection[str] = ()) -> tuple:
    """Sort key that orders numbers by value inside text: "2" < "10", "img2" < "img10".

    Parameters
    ----------
    text : str
        A category name.
    last : collection of str
        Names that sort after every other one (e.g. a "missing" or "other" group).

    Returns
    -------
    tuple
        Compare keys with ``<``; use as ``sorted(names, key=natural_key)``.
    """
    parts = [(0, int(part), "") if part.isdigit() else (1, 0, part.lower())
             for part in re.split(r"(\d+)", text) if part]
    return (text in last, parts)
