"""The bundled data sets under their first import path, ``tsimcne_widgets.datasets``.

They live in :mod:`tsimcne_widgets.data.datasets`; this module keeps
``from tsimcne_widgets.datasets import make_shapes`` (the 0.1 README's spelling) working.
"""

from __future__ import annotations

from tsimcne_widgets.data.datasets import *  # noqa: F401,F403
from tsimcne_widgets.data.datasets import __all__  # noqa: F401
