"""Putting BokehJS into the notebook page, inline, so the canvas works offline.

``jupyter_bokeh``'s front-end view calls ``window.Bokeh.require`` as soon as it
is created; it never loads BokehJS itself.  Bokeh's own ``output_notebook``
loads it from a CDN by default, which fails on machines without internet
("Cannot read properties of undefined (reading 'require')").  This module
publishes the same loader Bokeh uses, but with :data:`bokeh.resources.INLINE`
resources, as a display output placed just before the widget.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["bokehjs_loader_bundle", "loader_script", "publish_bokehjs"]


def bokehjs_loader_bundle(models: Sequence | None = None) -> dict[str, str]:
    """Mime bundle that loads BokehJS inline (classic notebook and JupyterLab).

    Parameters
    ----------
    models : sequence of bokeh models, optional
        Only the BokehJS extensions these models need are included (about
        1.7 MB for the map canvas, 4 MB with every extension).
    """
    from bokeh.embed.bundle import bundle_for_objs_and_resources
    from bokeh.io.notebook import JS_MIME_TYPE, LOAD_MIME_TYPE
    from bokeh.resources import INLINE

    bundle = bundle_for_objs_and_resources(list(models) if models else None, INLINE)
    return {
        # The classic notebook runs this script and registers Bokeh's mime renderers;
        # JupyterLab's jupyter_bokeh extension renders LOAD_MIME_TYPE as a <script>.
        JS_MIME_TYPE: loader_script(bundle, register_mime=True),
        LOAD_MIME_TYPE: loader_script(bundle, register_mime=False),
    }


def loader_script(bundle, register_mime: bool) -> str:
    """The script ``output_notebook`` runs to load ``bundle``, without asking a CDN.

    The one use of Bokeh's private ``bokeh.io.notebook._loading_js`` (Bokeh has no
    public call that renders its notebook loader for a given bundle);
    ``tests/test_notebook_loader.py`` pins what this relies on in the installed Bokeh.

    Parameters
    ----------
    bundle : bokeh.embed.bundle.Bundle
        BokehJS code and styles, e.g. from ``bundle_for_objs_and_resources(.., INLINE)``.
    register_mime : bool
        Also register Bokeh's mime renderers (the classic notebook needs this).
    """
    from bokeh.io.notebook import _loading_js

    return _loading_js(bundle, None, 5000, register_mime=register_mime)


def publish_bokehjs(models: Sequence | None = None) -> None:
    """Publish the inline BokehJS loader as a display output of the current cell.

    Every display of a widget carries its own loader, so the saved notebook
    still works after the page is reloaded, whichever cells were re-run.
    """
    from IPython.display import publish_display_data

    publish_display_data(bokehjs_loader_bundle(models))
