"""Text search over labels, file names and metadata: the matcher, then the Explorer's search."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tsimcne_widgets.curation.search import search_images, searchable_columns

LABELS = np.array(["Cat", "dog", None, "wildcat", "bird"], dtype=object)
PATHS = ["/data/cats/img_001.png", "/data/cats/IMG_002.PNG", "/data/cats/x3.jpg",
         "/data/cats/dog.jpg", "/data/cats/b5.gif"]
META = pd.DataFrame({"site": ["north", "South", "east", None, "north-east"],
                     "weight": [0.5, 1.25, np.nan, 12.0, 3.0]})


def find(query, **kwargs):
    fields = dict(labels=LABELS, paths=PATHS, metadata=META)
    fields.update(kwargs)
    return search_images(query, **fields).tolist()


def test_substring_is_case_insensitive_over_every_field():
    assert find("cat") == [0, 3]          # labels; the folder "cats" is not searched
    assert find("img_") == [0, 1]         # file names, any case
    assert find("EAST") == [2, 4]         # metadata text
    assert find("1.25") == [1]            # numbers as Python writes them
    assert find("dog") == [1, 3]          # a label and a file name
    assert find("nothing like it") == []


def test_missing_values_never_match():
    assert find("none") == [] and find("nan") == []


def test_text_is_literal_unless_regex():
    labels = np.array(["a.b", "axb", "(x)"], dtype=object)
    assert search_images("a.b", labels=labels).tolist() == [0]
    assert search_images("a.b", labels=labels, regex=True).tolist() == [0, 1]
    assert search_images("(x)", labels=labels).tolist() == [2]
    assert find(r"^(cat|bird)$", regex=True) == [0, 4]
    assert find(r"\.jpg$", regex=True) == [2, 3]
    assert find(r"^\d+\.0$", regex=True, columns=["weight"]) == [3, 4]


def test_columns_limit_the_search_and_unknown_ones_are_named():
    assert searchable_columns(LABELS, PATHS, META) == ["label", "path", "site", "weight"]
    assert find("dog", columns=["label"]) == [1]
    assert find("dog", columns="path") == [3]
    with pytest.raises(ValueError, match=r"cannot search \['colour'\].*'site'"):
        find("x", columns=["colour"])


def test_bad_queries_say_what_to_do():
    with pytest.raises(ValueError, match="not a valid regular expression.*regex switch off"):
        find("cat(", regex=True)
    assert find("cat(") == []  # without regex the same text is just text
    with pytest.raises(ValueError, match="search is empty"):
        find("  ")
    with pytest.raises(ValueError, match="one per image"):
        search_images("a", labels=["a", "b"], n=3)


# ---------------------------------------------------------------------------- Explorer
# The paths above are only names to search: thumbnails come from the stored pixels.
explorer_warnings = pytest.mark.filterwarnings("ignore:original files are gone")


@pytest.fixture
def explorer():
    from tsimcne_widgets.data.load import ImageSet
    from tsimcne_widgets.widget.explorer import Explorer

    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    image_set = ImageSet(images, labels=LABELS, paths=PATHS, metadata=META)
    xy = np.column_stack([np.arange(5.0), np.zeros(5)])
    return Explorer(image_set, device="cpu").set_embedding(xy)


@explorer_warnings
def test_search_selects_through_the_selection_path_with_mode_and_undo(explorer):
    assert explorer.search("cat").tolist() == [0, 3]
    assert explorer.selection.tolist() == [0, 3]
    assert explorer.controls.count.value == "<b>2</b> selected"
    assert explorer.messages[-1] == ("info", "search 'cat': 2 matched, 2 selected")
    explorer.controls.mode.value = "add"
    assert explorer.search("bird").tolist() == [4]
    assert explorer.selection.tolist() == [0, 3, 4]
    explorer.controls.mode.value = "subtract"
    explorer.search("wild")
    assert explorer.selection.tolist() == [0, 4]
    explorer.controls.undo.click()
    assert explorer.selection.tolist() == [0, 3, 4]
    assert explorer.search("south", mode="replace").tolist() == [1]
    assert explorer.selection.tolist() == [1]


@explorer_warnings
def test_search_box_enter_and_button_and_a_bad_regex(explorer):
    c = explorer.controls
    # The box sends its text when it is committed (Enter, or leaving it changed).
    c.search_text.value = "img_"
    assert explorer.selection.tolist() == [0, 1]
    c.clear.click()
    c.search_button.click()  # the button repeats the same query
    assert explorer.selection.tolist() == [0, 1]
    c.search_regex.value = True
    c.search_text.value = r"^(dog|bird)$"
    assert explorer.selection.tolist() == [1, 4]
    c.search_text.value = "dog("  # a bad regex: a message, nothing changes
    assert explorer.selection.tolist() == [1, 4]
    kind, text = explorer.messages[-1]
    assert kind == "error" and "not a valid regular expression" in text
    assert "not a valid regular expression" in c.message.value
    c.search_text.value = ""  # an emptied box searches nothing
    assert explorer.selection.tolist() == [1, 4] and explorer.messages[-1][0] == "error"
    c.search_text.value = "dog("
    c.search_regex.value = False  # the widget still works
    c.search_button.click()
    assert explorer.selection.tolist() == []
    assert explorer.messages[-1] == ("info", "search 'dog(': 0 matched, 0 selected")
