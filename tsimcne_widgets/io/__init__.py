"""Writing files safely: atomic files and folders (:mod:`.atomic`) and tables (:mod:`.tables`).

The lowest layer: stdlib, numpy and pandas only, and nothing from the rest of the package,
so every other layer (data, engine, curation, render, widget) writes through the same code.
Import from the submodules; this ``__init__`` stays empty so that importing
:mod:`.atomic` does not load pandas.
"""
