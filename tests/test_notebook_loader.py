"""The inline BokehJS loader: what ``widget/notebook.py`` relies on in Bokeh's private
``bokeh.io.notebook._loading_js``, pinned against the installed Bokeh."""
from __future__ import annotations

import inspect
import re

from bokeh.embed.bundle import bundle_for_objs_and_resources
from bokeh.io.notebook import JS_MIME_TYPE, LOAD_MIME_TYPE, _loading_js
from bokeh.plotting import figure
from bokeh.resources import INLINE

from tsimcne_widgets.widget.notebook import bokehjs_loader_bundle, loader_script


def test_private_loader_keeps_the_signature_we_call():
    parameters = list(inspect.signature(_loading_js).parameters)
    # loader_script calls _loading_js(bundle, element_id, load_timeout, register_mime=...)
    assert parameters[:4] == ["bundle", "element_id", "load_timeout", "register_mime"]


def test_loader_inlines_bokehjs_and_loads_nothing_from_a_network():
    plot = figure()
    bundle = bundle_for_objs_and_resources([plot], INLINE)
    script = loader_script(bundle, register_mime=False)
    # BokehJS itself is in the script, not fetched: no <script src> or js_urls to a CDN.
    assert "cdn.bokeh.org" not in script
    assert re.search(r"const js_urls = \[\s*\]", script), "the loader would fetch script URLs"
    assert re.search(r"const css_urls = \[\s*\]", script), "the loader would fetch stylesheets"
    assert len(script) > 500_000 and "Bokeh.set_log_level" in script


def test_register_mime_adds_the_classic_notebook_renderers_only_when_asked():
    bundle = bundle_for_objs_and_resources([figure()], INLINE)
    assert "register_renderer" in loader_script(bundle, register_mime=True)
    assert "register_renderer" not in loader_script(bundle, register_mime=False)


def test_bundle_gives_both_frontends_their_mime_type():
    bundle = bokehjs_loader_bundle([figure()])
    assert set(bundle) == {JS_MIME_TYPE, LOAD_MIME_TYPE}
    assert "register_renderer" in bundle[JS_MIME_TYPE]
