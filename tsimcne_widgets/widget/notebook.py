"""Putting BokehJS into the notebook page, inline, so the canvas works offline.

``jupyter_bokeh``'s front-end view calls ``window.Bokeh.require`` as soon as it
is created; it never loads BokehJS itself.  Bokeh's own ``output_notebook``
loads it from a CDN by default, which fails on machines without internet
("Cannot read properties of undefined (reading 'require')").  This module
publishes the same loader Bokeh uses, but with :data:`bokeh.resources.INLINE`
resources, as a display output placed just before the widget.

Where no widget manager runs (nbconvert HTML, GitHub, nbviewer), a widget's output
would be blank: :func:`static_fallback` puts a PNG of the map (:func:`map_png`) and a
one-line hint (:data:`STATIC_HINT`) into the widget's mime bundle, beside the widget
view that live frontends pick.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["STATIC_HINT", "bokehjs_loader_bundle", "loader_script", "map_png", "publish_bokehjs",
           "static_fallback"]


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


# -- a static picture beside the live widget, for pages without a widget manager ----------------

#: The line shown under the static picture where the live widget cannot run.
STATIC_HINT = (
    "Static picture of the map. For the live explorer (training, hover, lasso), run this "
    "notebook in JupyterLab, Jupyter Notebook 7, Voilà, VS Code or Colab with ipywidgets "
    "and jupyter_bokeh installed."
)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def map_png(xy, labels=None, *, n_images: int | None = None, width: int = 640,
            height: int = 520) -> bytes:
    """PNG picture of a map as it stands, or of the empty map before training.

    Parameters
    ----------
    xy : array_like, shape (N, 2), or None
        The current map; None (or no finite row) before any training.
    labels : array_like, shape (N,), optional
        Colours the points by class and adds a legend, as the widget does.
    n_images : int, optional
        Number of images, for the empty map when neither ``xy`` nor ``labels`` says it.
    width, height : int
        Picture size in pixels (at least 200×150).

    Returns
    -------
    bytes
        The PNG file's bytes.
    """
    import io

    import numpy as np

    from tsimcne_widgets.render.picture import render_map_image

    if xy is None:
        n = len(labels) if labels is not None else int(n_images or 0)
        xy = np.full((n, 2), np.nan)
    xy = np.asarray(xy, dtype=np.float64)
    title = None
    if xy.ndim == 2 and not np.isfinite(xy).all(axis=1).any():
        title = f"No map yet: {len(xy):,} images; press Start to train one"
    picture = render_map_image(xy, labels, title=title, width=width, height=height)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def static_fallback(bundle, png: bytes, text: str = STATIC_HINT):
    """Add a static picture and a one-line hint to a widget's mime bundle.

    Frontends with a widget manager (JupyterLab, Notebook 7, Voilà, VS Code, Colab) rank
    ``application/vnd.jupyter.widget-view+json`` first and show the live widget; pages
    without one (nbconvert HTML, GitHub, nbviewer, a notebook saved without widget
    state) fall back to ``text/html`` (the picture with the hint under it), then
    ``image/png``, then ``text/plain`` (the hint), so the output is never blank.

    Parameters
    ----------
    bundle : dict or (dict, dict)
        A mime bundle such as ``widget._repr_mimebundle_()`` returns, or a
        ``(data, metadata)`` pair; it is not changed.
    png : bytes
        The picture, e.g. from :func:`map_png`.
    text : str
        One line telling the reader how to get the live view.

    Returns
    -------
    dict or (dict, dict)
        A new bundle (same form as ``bundle``) with ``text/html``, ``image/png`` and
        ``text/plain`` beside the widget view.

    Raises
    ------
    ValueError
        If ``png`` is not a PNG file.
    """
    import base64
    import html

    if isinstance(bundle, tuple):
        data, metadata = bundle
        return static_fallback(data, png, text), dict(metadata or {})
    if not isinstance(png, (bytes, bytearray)) or bytes(png[:8]) != _PNG_SIGNATURE:
        raise ValueError("png must be the bytes of a PNG file (e.g. from map_png); "
                         f"got {type(png).__name__} starting {png[:8]!r}")
    encoded = base64.b64encode(bytes(png)).decode("ascii")
    data = dict(bundle or {})
    data["image/png"] = encoded
    data["text/plain"] = text
    data["text/html"] = (
        '<div class="tsw-static-map">'
        f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(text, quote=True)}" '
        'style="max-width:100%">'
        f"<div>{html.escape(text)}</div></div>"
    )
    return data
