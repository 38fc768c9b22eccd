"""The on-disk image store: ingest once, reuse, resume, and train without loading into RAM."""
from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tsimcne_widgets.data.load import MissingFilesError, load_images
from tsimcne_widgets.data.store import is_disk_backed, open_store, store_folder


@pytest.fixture
def folder(tmp_path: Path, image_writer) -> Path:
    root = tmp_path / "images"
    for i in range(30):
        image_writer(root / ("cat" if i % 3 else "dog") / f"{i:03d}.jpg", size=(20, 24), seed=i)
    (root / "dog" / "broken.jpg").write_bytes(b"not an image at all")
    return root


def _open(source, cache, **kwargs):
    kwargs.setdefault("image_size", 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return open_store(source, cache_dir=cache, progress=False, **kwargs)


def test_store_matches_load_images_and_stays_on_disk(folder, tmp_path):
    calls = []
    with pytest.warns(UserWarning, match="skipped 1 of 31"):
        stored = open_store(folder, image_size=16, cache_dir=tmp_path / "cache", chunk_size=7,
                            progress=False, callback=lambda done, total: calls.append((done, total)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        loaded = load_images(folder, image_size=16)
    np.testing.assert_array_equal(stored.images, loaded.images)
    assert stored.paths == loaded.paths
    assert list(stored.labels) == list(loaded.labels)
    assert [p for p, _ in stored.skipped] == [str(folder / "dog" / "broken.jpg")]
    # The ImageSet holds the memory map itself: no copy into anonymous memory.
    assert is_disk_backed(stored.images) and not stored.images.flags.writeable
    assert calls[-1] == (31, 31) and len(calls) == 5  # ceil(31 / 7) chunks

    images_file = store_folder(stored) / "images.npy"
    before = images_file.stat().st_mtime_ns
    again = _open(folder, tmp_path / "cache", callback=lambda *a: pytest.fail("decoded again"))
    assert store_folder(again) == store_folder(stored)
    assert images_file.stat().st_mtime_ns == before
    np.testing.assert_array_equal(again.images, loaded.images)


def test_a_changed_file_gives_a_new_store(folder, tmp_path):
    first = _open(folder, tmp_path / "cache")
    target = folder / "cat" / "001.jpg"
    stamp = target.stat().st_mtime_ns + 10**9
    os.utime(target, ns=(stamp, stamp))
    second = _open(folder, tmp_path / "cache")
    assert store_folder(second) != store_folder(first)


def test_interrupted_ingest_resumes_with_the_missing_chunks(folder, tmp_path):
    seen = []

    def interrupt(done, total):
        seen.append(done)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _open(folder, tmp_path / "cache", chunk_size=4, workers=1, callback=interrupt)
    resumed = []
    stored = _open(folder, tmp_path / "cache", chunk_size=4, workers=1,
                   callback=lambda done, total: resumed.append(done))
    # Only the 8 chunks not done before the interrupt were decoded (31 rows in 8 chunks of 4).
    assert resumed[0] > 4 and len(resumed) == 8 - 2
    assert resumed[-1] == 31
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        np.testing.assert_array_equal(stored.images, load_images(folder, image_size=16).images)
    assert len(stored.skipped) == 1


def test_process_pool_and_csv_with_metadata(folder, tmp_path):
    paths = sorted(str(p.relative_to(tmp_path)) for p in folder.rglob("*.jpg"))[:12]
    table = pd.DataFrame({"path": paths, "label": ["a", "b"] * 6, "score": np.arange(12.0)})
    table.to_csv(tmp_path / "list.csv", index=False)
    stored = _open(tmp_path / "list.csv", tmp_path / "cache", executor="process", workers=2,
                   chunk_size=5)
    threads = _open([str(tmp_path / p) for p in paths], tmp_path / "cache2")
    np.testing.assert_array_equal(stored.images, threads.images)
    assert list(stored.labels) == ["a", "b"] * 6
    assert list(stored.metadata["score"]) == list(np.arange(12.0))


def test_bad_input_says_what_to_do(folder, tmp_path):
    with pytest.raises(MissingFilesError, match="1 of 2 image files do not exist"):
        _open([str(folder / "cat" / "001.jpg"), str(tmp_path / "gone.jpg")], tmp_path / "c")
    with pytest.raises(ValueError, match="is a file"):
        _open(folder / "cat" / "001.jpg", tmp_path / "c")
    with pytest.raises(TypeError, match="load_images"):
        _open(np.zeros((4, 16, 16, 3), np.uint8), tmp_path / "c")
    with pytest.raises(ValueError, match="one label per file"):
        _open(folder, tmp_path / "c", labels=["x"])
    with pytest.raises(ValueError, match="pixel minimum"):
        _open(folder, tmp_path / "c", image_size=4)


def test_training_from_the_store_equals_training_in_memory(folder, tmp_path):
    torch = pytest.importorskip("torch")
    from tsimcne_widgets.engine.batches import DiskImages
    from tsimcne_widgets.engine.estimator import TSimCNE

    stored = _open(folder, tmp_path / "cache")
    in_memory = load_images(np.array(stored.images), labels=stored.labels)
    batch = DiskImages(stored.images)[torch.tensor([5, 0, 17, 5])]
    expected = torch.from_numpy(np.array(stored.images[[5, 0, 17, 5]])).permute(0, 3, 1, 2)
    assert torch.equal(batch, expected)

    maps = []
    for images in (stored, in_memory):
        estimator = TSimCNE(total_epochs=[1, 1, 1], batch_size=10, backbone="resnet10",
                            backbone_width=8, hidden_dim=32, device="cpu", random_state=0,
                            verbose=False, num_threads=1)
        maps.append(estimator.fit_transform(images))
        assert isinstance(estimator.trainer_.images, DiskImages) == (images is stored)
    np.testing.assert_array_equal(maps[0], maps[1])


def _card_images(html: str) -> list[np.ndarray]:
    """The pixels of every data:image/png URI in ``html``."""
    import base64
    import io
    import re

    from PIL import Image

    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))
            for b64 in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)]


def _enlarged(image: np.ndarray, box: int) -> np.ndarray:
    factor = box // max(image.shape[:2])
    return np.repeat(np.repeat(image, factor, 0), factor, 1)


def test_hover_cards_and_gallery_come_from_the_store_when_the_originals_are_gone(
        folder, tmp_path):
    from tsimcne_widgets.widget.explorer import Explorer

    cache = tmp_path / "cache"
    stored = _open(folder, cache)  # real JPEGs of 20x24 px, stored at 16x16
    with_originals = Explorer(stored)
    # While the originals exist the card is decoded from the file: finer than the store.
    card = _card_images(with_originals.hover_card(3))[0]
    assert card.shape[:2] != (160, 160)

    shutil.move(folder, tmp_path / "moved-away")
    explorer = Explorer(stored)
    with pytest.warns(UserWarning, match="original files are gone .*16x16 px"):
        card = _card_images(explorer.hover_card(3))[0]
    np.testing.assert_array_equal(card, _enlarged(np.asarray(stored.images[3]), 160))
    assert "stored 16x16 px images" in explorer.thumbnails.note
    explorer.selection = [0, 5, 7]
    shown = _card_images(explorer.gallery.style.value)
    assert len(shown) == 3
    for index, image in zip(explorer.gallery.shown, shown):
        np.testing.assert_array_equal(image, _enlarged(np.asarray(stored.images[index]),
                                                       explorer.gallery.size))

    # A later session: the moved folder and the store folder itself open the store.
    for source in (folder, store_folder(stored)):
        with pytest.warns(UserWarning, match="original files checked are gone"):
            again = open_store(source, cache_dir=cache, progress=False)
        assert store_folder(again) == store_folder(stored) and again.paths == stored.paths
        assert list(again.labels) == list(stored.labels) and again.skipped == stored.skipped
        np.testing.assert_array_equal(again.images, stored.images)
    with pytest.raises(ValueError, match="holds 16x16 px images"):
        open_store(store_folder(stored), image_size=32, progress=False)
    # Nothing stored from a missing folder: the error is what it was.
    with pytest.raises(MissingFilesError, match="does not exist"):
        open_store(tmp_path / "never-there", cache_dir=cache, progress=False)
