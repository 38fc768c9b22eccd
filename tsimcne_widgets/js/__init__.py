"""The package's browser code: JavaScript files run by BokehJS ``CustomJS`` callbacks.

The ``.js`` files sit beside this module and ship as package data.  Each is the body
of a ``CustomJS`` callback: the ``args`` it names are in scope, ``cb_obj`` is the
object that fired.  Files whose name starts with ``lib_`` define functions only and
are prepended to the callbacks that use them, so one copy of the code serves the
live widget and the static HTML export.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

__all__ = ["load_js"]


@lru_cache(maxsize=None)
def _read(name: str) -> str:
    resource = resources.files(__name__).joinpath(name)
    if not resource.is_file():
        known = sorted(p.name for p in resources.files(__name__).iterdir()
                       if p.name.endswith(".js"))
        raise FileNotFoundError(f"no script {name!r} in tsimcne_widgets/js; there are {known}")
    return resource.read_text(encoding="utf-8")


def load_js(*names: str) -> str:
    """The text of the named ``.js`` files, joined in order (libraries first).

    Parameters
    ----------
    *names : str
        File names inside ``tsimcne_widgets/js``, e.g. ``"lib_selected.js", "copy.js"``.

    Returns
    -------
    str
        Code for ``bokeh.models.CustomJS(code=...)``.
    """
    return "\n".join(_read(name) for name in names)
