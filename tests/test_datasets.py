"""Embedded datasets and the finders for local copies of public ones."""
from __future__ import annotations

import io
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tsimcne_widgets.data import datasets
from tsimcne_widgets.data.load import ImageSet, load_images
from tsimcne_widgets.data.datasets import (
    SHAPE_NAMES, cifar10_folder, load_digits, load_torchvision, make_shapes,
)


def test_load_digits_matches_sklearn():
    from sklearn.datasets import load_digits as sklearn_digits

    s = load_digits()
    assert isinstance(s, ImageSet)
    assert s.images.shape == (1797, 8, 8, 3) and s.images.dtype == np.uint8
    assert not s.images.flags.writeable
    assert s.label_names == tuple(str(d) for d in range(10))
    reference = sklearn_digits()
    np.testing.assert_array_equal(s.labels, reference.target.astype(str))
    np.testing.assert_array_equal(s.images[..., 1], np.rint(reference.images * 255 / 16))
    assert s.images.max() == 255


def test_make_shapes_is_balanced_and_labelled():
    s = make_shapes(n_samples=601, image_size=24, random_state=3)
    assert s.images.shape == (601, 24, 24, 3) and s.images.dtype == np.uint8
    assert not s.images.flags.writeable
    assert set(s.label_names) == set(SHAPE_NAMES)
    counts = np.bincount(s.label_codes)
    assert counts.max() - counts.min() <= 1
    assert list(s.metadata.columns) == ["centre_x", "centre_y", "radius", "rotation", "foreground", "background"]
    assert len(s.metadata) == 601


def test_make_shapes_is_deterministic():
    a, b = make_shapes(300, random_state=7), make_shapes(300, random_state=7)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    c = make_shapes(300, random_state=8)
    assert not np.array_equal(a.images, c.images)
    generator_set = make_shapes(300, random_state=np.random.default_rng(7))
    np.testing.assert_array_equal(generator_set.images, a.images)


def test_make_shapes_draws_the_named_shape():
    s = make_shapes(600, image_size=32, random_state=1)
    meta = s.metadata
    centre = s.images[np.arange(len(s)), meta["centre_y"].astype(int), meta["centre_x"].astype(int)].astype(int)
    foreground = np.array([[int(h[i:i + 2], 16) for i in (1, 3, 5)] for h in meta["foreground"]])
    near_foreground = np.abs(centre - foreground).max(axis=1) < 30
    labels = np.asarray(s.labels)
    for filled in ("circle", "square", "cross", "star", "triangle"):
        assert near_foreground[labels == filled].mean() > 0.95, filled
    assert near_foreground[labels == "ring"].mean() < 0.1  # a ring's centre is the background
    # and the shapes cover similar areas, so colour amounts do not give the class away
    coverage = {name: [] for name in SHAPE_NAMES}
    for img, fg, label, radius in zip(s.images, foreground, labels, meta["radius"]):
        share = (np.abs(img.astype(int) - fg).max(axis=-1) < 30).sum() / radius**2
        coverage[label].append(share)
    medians = [np.median(v) for v in coverage.values()]
    assert max(medians) / min(medians) < 1.8


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"n_samples": 0}, "n_samples"), ({"image_size": 4}, "image_size"), ({"n_samples": 2.5}, "n_samples"),
])
def test_make_shapes_validates(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        make_shapes(**kwargs)


# ----------------------------------------------------------------------------- torchvision

def test_load_torchvision_refuses_to_download_by_default(tmp_path):
    pytest.importorskip("torchvision")
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_torchvision("cifar10", tmp_path)
    with pytest.raises(ValueError, match="fashion-mnist"):
        load_torchvision("imagenet", tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing fetched, nothing written


def _write_idx(path: Path, magic: int, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("Fashion_MNIST", "FashionMNIST")])
def test_load_torchvision_reads_local_mnist_files(tmp_path, name, folder):
    pytest.importorskip("torchvision")
    raw = tmp_path / folder / "raw"
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28))
    for split in ("train", "t10k"):
        _write_idx(raw / f"{split}-images-idx3-ubyte", 0x803, images)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", 0x801, np.array([0, 1, 2, 1, 9]))
    s = load_torchvision(name, tmp_path, train=False)
    assert s.images.shape == (5, 28, 28, 3)
    np.testing.assert_array_equal(s.images[..., 0], images)
    assert s.labels[0].startswith("0") or s.labels[0] == "T-shirt/top"
    assert s.labels[1] == s.labels[3] != s.labels[2]


# ----------------------------------------------------------------------------- CIFAR-10 folder

def _tar_gz(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path


def _jpeg_bytes(color: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_cifar10_folder_extracts_once_into_the_cache(tmp_path, monkeypatch):
    members = {f"cifar10-jpeg/{split}/{label}/{i:04d}.jpg": _jpeg_bytes(color)
               for split in ("train", "test") for label, color in (("cat", (200, 0, 0)), ("dog", (0, 0, 200)))
               for i in range(2)}
    archive = _tar_gz(tmp_path / "cifar10-jpeg.tar.gz", members)
    monkeypatch.setenv("TSIMCNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TSIMCNE_CIFAR10", str(archive))
    folder = cifar10_folder()
    assert folder == tmp_path / "cache" / "cifar10-jpeg" / "cifar10-jpeg"
    s = load_images(folder / "test")
    assert list(s.labels) == ["cat", "cat", "dog", "dog"] and s.image_size == (32, 32)
    (folder / "test" / "cat" / "0000.jpg").unlink()
    assert cifar10_folder() == folder  # reused, not extracted again
    assert not (folder / "test" / "cat" / "0000.jpg").exists()
    assert cifar10_folder(folder.parent) == folder  # an extracted folder is accepted too
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["cifar10-jpeg"]  # no staging left


def test_cifar10_folder_absent_gives_none(tmp_path, monkeypatch):
    monkeypatch.setenv("TSIMCNE_CIFAR10", str(tmp_path / "missing.tar.gz"))
    assert cifar10_folder() is None
    assert cifar10_folder(tmp_path / "elsewhere.tar.gz") is None


def test_default_archive_location_is_next_to_the_repository():
    # Computed from this test's place, not the module's, so that moving the module
    # cannot move the expectation with it.
    repo = Path(__file__).resolve().parents[1]
    assert datasets._default_cifar10_archive() == repo.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


@pytest.mark.parametrize(("members", "links"), [
    ({"cifar10-jpeg/train/a.jpg": b"x", "../escaped.txt": b"evil"}, None),
    ({"/tmp/absolute-escape.txt": b"evil"}, None),
    ({"cifar10-jpeg/train/a.jpg": b"x"}, {"cifar10-jpeg/test": "/etc"}),
])
def test_cifar10_folder_rejects_unsafe_archives(tmp_path, monkeypatch, members, links):
    archive = _tar_gz(tmp_path / "cifar10-jpeg.tar.gz", members, links)
    monkeypatch.setenv("TSIMCNE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="refusing to extract"):
        cifar10_folder(archive)
    assert not (tmp_path / "escaped.txt").exists()
    assert not Path("/tmp/absolute-escape.txt").exists()
    assert list((tmp_path / "cache").iterdir()) == []  # staging removed, no target created


REAL_ARCHIVE = datasets._default_cifar10_archive()


@pytest.mark.skipif(not REAL_ARCHIVE.is_file(), reason=f"{REAL_ARCHIVE} is absent")
def test_real_cifar10_jpegs_load_as_a_labelled_folder(tmp_path):
    wanted = {"airplane": 4, "automobile": 4}
    taken = {label: 0 for label in wanted}
    with tarfile.open(REAL_ARCHIVE, "r:gz") as tar:
        for member in tar:  # the test split comes first, class by class
            parts = Path(member.name).parts
            if member.isfile() and len(parts) == 4 and parts[1] == "test" and parts[2] in wanted:
                if taken[parts[2]] < wanted[parts[2]]:
                    tar.extract(member, tmp_path, filter="data")
                    taken[parts[2]] += 1
            if taken == wanted:
                break
    s = load_images(tmp_path / "cifar10-jpeg" / "test")
    assert s.images.shape == (8, 32, 32, 3)
    assert list(s.labels) == ["airplane"] * 4 + ["automobile"] * 4
    assert s.skipped == () and s.images.std() > 10


def test_make_shapes_separates_by_lightness_not_by_colour():
    # Saturated colours survive every augmentation and let a contrastive network tell
    # images apart without the shape; the set keeps tints faint and puts the contrast
    # between shape and background into lightness, either way round.
    meta = make_shapes(600, random_state=2).metadata

    def rgb(column):
        return np.array([[int(h[i:i + 2], 16) for i in (1, 3, 5)] for h in meta[column]]) / 255

    foreground, background = rgb("foreground"), rgb("background")
    assert np.abs(foreground.mean(1) - background.mean(1)).min() > 0.25
    light_on_dark = (foreground.mean(1) > background.mean(1)).mean()
    assert 0.4 < light_on_dark < 0.6
    for colour in (foreground, background):
        assert (colour.max(1) - colour.min(1)).max() < 0.3  # faint tints only
