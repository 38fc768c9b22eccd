"""``python -m tsimcne_widgets``: see :mod:`tsimcne_widgets.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
