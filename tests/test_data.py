"""Input adapters: every kind of input ends as a read-only uint8 (N, H, W, 3) ImageSet."""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tsimcne_widgets.data import files as _imagefiles
from tsimcne_widgets.data.load import (
    IMAGE_EXTENSIONS, UNLABELLED, ImageSet, MissingFilesError, load_images,
)


def assert_image_set(s: ImageSet, n: int, size: tuple[int, int]) -> None:
    assert isinstance(s, ImageSet)
    assert s.images.shape == (n, *size, 3)
    assert s.images.dtype == np.uint8
    assert s.images.flags.c_contiguous
    assert not s.images.flags.writeable
    assert len(s) == n


def load_quietly(*args, **kwargs) -> ImageSet:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return load_images(*args, **kwargs)


# ----------------------------------------------------------------------------- arrays

def test_uint8_nhwc_is_copied_and_frozen(rng):
    x = rng.integers(0, 256, (5, 12, 10, 3), dtype=np.uint8)
    s = load_images(x)
    assert_image_set(s, 5, (12, 10))
    np.testing.assert_array_equal(s.images, x)
    x[0] = 0  # the caller's array stays theirs: neither frozen nor shared
    assert s.images[0].any()
    with pytest.raises(ValueError):
        s.images[0, 0, 0, 0] = 1


def test_float_unit_range_nchw(rng):
    base = rng.integers(0, 256, (4, 3, 9, 11), dtype=np.uint8)
    s = load_images(base.astype(np.float32) / 255)
    assert_image_set(s, 4, (9, 11))
    np.testing.assert_array_equal(s.images, base.transpose(0, 2, 3, 1))


def test_float_255_range_and_grayscale_nhw(rng):
    base = rng.integers(0, 256, (3, 10, 10), dtype=np.uint8)
    base[0, 0, 0] = 255
    s = load_images(base.astype(np.float64))
    assert_image_set(s, 3, (10, 10))
    for c in range(3):
        np.testing.assert_array_equal(s.images[..., c], base)


def test_rgba_composited_on_white():
    x = np.zeros((1, 8, 8, 4), np.uint8)
    x[..., 0] = 200  # red-ish, transparency varies by row
    x[0, :4, :, 3] = 0
    x[0, 4:, :, 3] = 255
    s = load_images(x)
    assert (s.images[0, :4] == 255).all()
    assert (s.images[0, 4:] == [200, 0, 0]).all()


def test_bool_and_uint16_arrays():
    mask = np.zeros((2, 8, 8), bool)
    mask[:, :4] = True
    assert set(np.unique(load_images(mask).images)) == {0, 255}
    deep = np.full((2, 8, 8), 65535, np.uint16)
    deep[:, 0] = 0
    out = load_images(deep).images
    assert out[:, 1:].min() == 255 and out[:, 0].max() == 0


def test_torch_tensors_nchw_float_and_bfloat16():
    torch = pytest.importorskip("torch")
    t = torch.rand(3, 3, 10, 12)
    s = load_images(t)
    assert_image_set(s, 3, (10, 12))
    expected = np.rint(t.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    np.testing.assert_array_equal(s.images, expected)
    s16 = load_images(t.to(torch.bfloat16), labels=torch.tensor([0, 1, 1]))
    assert np.abs(s16.images.astype(int) - expected).max() <= 2
    assert list(s16.labels) == ["0", "1", "1"]


def test_nan_and_inf_are_refused_with_count_and_fix():
    x = np.zeros((2, 8, 8, 3), np.float32)
    x[0, 0, 0, :2] = np.nan
    x[1, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"3 NaN or infinite.*nan_to_num"):
        load_images(x)


@pytest.mark.parametrize(("x", "pattern"), [
    (np.full((2, 8, 8, 3), -0.5, np.float32), "normalisation"),
    (np.full((2, 8, 8, 3), 300.0), "scale them"),
    (np.zeros((5, 64)), r"reshape\(-1, 8, 8\)"),
    (np.zeros((16, 16, 3)), r"x\[None\]"),
    (np.zeros((2, 3, 9, 4)), "image_size=32"),
    (np.zeros((2, 9, 9, 9)), "channel axis"),
    (np.zeros((2, 8, 8, 5)), "channel axis"),
    (np.zeros((2, 4, 4, 3), np.uint8), "image_size=32"),
    (np.zeros((1, 1, 8, 8, 3)), "4-D"),
])
def test_bad_arrays_say_what_to_do(x, pattern):
    with pytest.raises(ValueError, match=pattern):
        load_images(x)


def test_tiny_arrays_can_be_upscaled():
    s = load_images(np.zeros((2, 4, 4, 3), np.uint8), image_size=32)
    assert_image_set(s, 2, (32, 32))


@st.composite
def encoded_batches(draw):
    n = draw(st.integers(1, 3))
    h, w = draw(st.integers(8, 12)), draw(st.integers(8, 12))
    channels = draw(st.sampled_from([None, 1, 3, 4]))
    encoding = draw(st.sampled_from(["uint8", "float32_unit", "float64_unit", "float32_255", "uint16"]))
    layout = draw(st.sampled_from(["nhwc", "nchw"]))
    seed = draw(st.integers(0, 2**16))
    base = np.random.default_rng(seed).integers(0, 256, (n, h, w, channels or 1), dtype=np.uint8)
    if encoding in ("float32_255", "uint16"):
        base.flat[0] = 255  # float [0, 255] input is told from [0, 1] by its maximum
    return base, channels, encoding, layout


@given(encoded_batches())
@settings(max_examples=60, deadline=None)
def test_array_adapter_property(batch):
    base, channels, encoding, layout = batch
    if encoding == "uint8":
        x = base.copy()
    elif encoding.endswith("_unit"):
        x = base.astype(encoding.split("_")[0]) / 255
    elif encoding == "float32_255":
        x = base.astype(np.float32)
    else:
        x = base.astype(np.uint16) * 257
    if channels is None:
        x = x[..., 0]
    elif layout == "nchw":
        x = np.moveaxis(x, -1, 1)
    out = load_images(x).images

    rgb = base.astype(np.float64)
    if (channels or 1) == 1:
        expected = np.repeat(rgb, 3, axis=-1)
    elif channels == 4:
        alpha = rgb[..., 3:] / 255
        expected = rgb[..., :3] * alpha + 255 * (1 - alpha)
    else:
        expected = rgb
    assert out.shape == (*base.shape[:3], 3) and out.dtype == np.uint8
    assert out.flags.c_contiguous and not out.flags.writeable
    assert np.abs(out.astype(np.float64) - np.rint(expected)).max() <= (1 if channels == 4 else 0)


# ----------------------------------------------------------------------------- ImageSet

def make_set(n: int = 6) -> ImageSet:
    images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 8, 8, 3), np.uint8)
    return ImageSet(images=images, labels=["b", "a", "c", "a", "b", "a"][:n],
                    paths=[f"/x/{i}.png" for i in range(n)],
                    metadata=pd.DataFrame({"score": np.arange(n) * 10}, index=np.arange(n) + 100))


def test_image_set_labels_codes_and_metadata_index():
    s = make_set()
    assert s.label_names == ("a", "b", "c")
    np.testing.assert_array_equal(s.label_codes, [1, 0, 2, 0, 1, 0])
    assert s.labels.dtype == object and not s.labels.flags.writeable
    assert list(s.metadata.index) == list(range(6))
    assert "6" in repr(s) and "3 classes" in repr(s)
    unlabelled = ImageSet(images=s.images)
    assert unlabelled.label_names == () and unlabelled.label_codes is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.labels = None


@pytest.mark.parametrize("indices", [[4, 1], np.array([-2, 1]), slice(4, 0, -3),
                                     np.array([0, 1, 0, 0, 1, 0], bool)])
def test_subset_keeps_rows_aligned(indices):
    s = make_set()
    sub = s.subset(indices)
    picked = [int(v) for v in sub.images[:, 0, 0, 0]]
    assert sorted(picked) == [1, 4]
    assert list(sub.labels) == [s.labels[i] for i in picked]
    assert sub.paths == tuple(f"/x/{i}.png" for i in picked)
    assert list(sub.metadata["score"]) == [10 * i for i in picked]
    assert not sub.images.flags.writeable


def test_subset_and_constructor_reject_bad_input():
    s = make_set()
    with pytest.raises(IndexError):
        s.subset([6])
    with pytest.raises(ValueError, match="length 6"):
        s.subset(np.ones(5, bool))
    with pytest.raises(TypeError, match="load_images"):
        ImageSet(images=np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="labels has 2 entries but there are 6 images"):
        ImageSet(images=s.images, labels=["a", "b"])


def test_image_set_passes_through_with_overrides():
    s = make_set()
    assert load_images(s) is s
    relabelled = load_images(s, labels=range(6))
    assert list(relabelled.labels) == [str(i) for i in range(6)]
    assert relabelled.paths == s.paths
    resized = load_images(s, image_size=(16, 12))
    assert_image_set(resized, 6, (16, 12))
    assert (resized.images[3] == 3).all()


@pytest.mark.parametrize(("labels", "expected"), [
    ([1, 2, 3], ["1", "2", "3"]),
    (np.array([1.0, 2.0, np.nan]), ["1", "2", UNLABELLED]),
    (pd.Series(["x", None, "z"]), ["x", UNLABELLED, "z"]),
])
def test_labels_become_strings(labels, expected):
    s = load_images(np.zeros((3, 8, 8, 3), np.uint8), labels=labels)
    assert list(s.labels) == expected


def test_wrong_label_length_names_both_lengths():
    with pytest.raises(ValueError, match="labels has 2 entries but there are 3 images"):
        load_images(np.zeros((3, 8, 8, 3), np.uint8), labels=["a", "b"])
    with pytest.raises(TypeError, match="column"):
        load_images(np.zeros((3, 8, 8, 3), np.uint8), labels="label")


@pytest.mark.parametrize("data", [42, {"a": 1}, object()])
def test_unsupported_input_lists_accepted_kinds(data):
    with pytest.raises(TypeError, match="folder path.*DataFrame"):
        load_images(data)


# ----------------------------------------------------------------------------- datasets

class ToyDataset:
    """The torchvision protocol, no torch needed: PIL images and int labels."""

    classes = ["red", "green"]

    def __init__(self, sizes):
        self.sizes = sizes

    def __len__(self):
        return len(self.sizes)

    def __getitem__(self, i):
        color = (255, 0, 0) if i % 2 == 0 else (0, 255, 0)
        return Image.new("RGB", self.sizes[i][::-1], color), i % 2


def test_torchvision_style_dataset_with_classes_and_mixed_sizes():
    s = load_images(ToyDataset([(20, 20), (20, 20), (40, 30)]))
    assert_image_set(s, 3, (20, 20))
    assert list(s.labels) == ["red", "green", "red"]
    assert (s.images[2] == [255, 0, 0]).all()


def test_dataset_of_tensors_and_dict_items():
    torch = pytest.importorskip("torch")

    class TensorDataset:
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return {"image": torch.full((3, 9, 9), 0.5), "label": torch.tensor(i)}

    s = load_images(TensorDataset())
    assert_image_set(s, 2, (9, 9))
    assert (s.images == 128).all()
    assert list(s.labels) == ["0", "1"]


def test_real_imagefolder_gives_paths(image_folder):
    datasets = pytest.importorskip("torchvision.datasets")
    s = load_images(datasets.ImageFolder(str(image_folder)))
    assert list(s.labels) == ["cat"] * 3 + ["dog"] * 3
    assert s.paths[0].endswith("cat/00.png")
    np.testing.assert_array_equal(s.images, load_images(image_folder).images)


# ----------------------------------------------------------------------------- folders

def test_nested_folder_labels_paths_and_order(image_folder, image_writer):
    image_writer(image_folder / "dog" / ".hidden.png")
    (image_folder / "notes.txt").write_text("not an image, not an image extension")
    s = load_images(image_folder)
    assert_image_set(s, 6, (16, 16))
    assert list(s.labels) == ["cat"] * 3 + ["dog"] * 3
    assert [Path(p).name for p in s.paths] == ["00.png", "01.jpg", "02.png"] * 2
    assert s.skipped == ()
    png = np.asarray(Image.open(image_folder / "cat" / "00.png").convert("RGB"))
    np.testing.assert_array_equal(s.images[0], png)
    np.testing.assert_array_equal(load_images(image_folder).images, s.images)


def test_flat_and_mixed_folders(tmp_path, image_writer):
    for i in range(3):
        image_writer(tmp_path / "flat" / f"{i}.png", seed=i)
    assert load_images(tmp_path / "flat").labels is None
    image_writer(tmp_path / "flat" / "sub" / "x.png")
    assert list(load_images(str(tmp_path / "flat")).labels) == [UNLABELLED] * 3 + ["sub"]


def test_pil_modes_and_formats(tmp_path, image_writer):
    red = (255, 0, 0)
    image_writer(tmp_path / "a_gray.png", mode="L", color=(90, 90, 90))
    image_writer(tmp_path / "b_palette.gif", mode="P", color=red)
    image_writer(tmp_path / "c_cmyk.jpg", mode="CMYK", color=red)
    image_writer(tmp_path / "d_bitmap.bmp", color=red)
    image_writer(tmp_path / "e_tiff.tif", color=red)
    image_writer(tmp_path / "f_bilevel.png", mode="1", color=(255, 255, 255))
    Image.fromarray(np.zeros((16, 16, 4), np.uint8)).save(tmp_path / "g_rgba.png")  # transparent
    Image.fromarray(np.full((16, 16), 65535, np.uint16)).save(tmp_path / "h_16bit.png")
    Image.fromarray(np.full((16, 16), 32896, np.int32)).save(tmp_path / "i_32bit.tif")
    Image.new("LA", (16, 16), (0, 0)).save(tmp_path / "j_la.png")
    palette = Image.new("P", (16, 16), 0)
    palette.putpalette([0, 0, 255] * 256)
    palette.save(tmp_path / "k_palette_transparent.png", transparency=0)
    if "WEBP" in Image.SAVE:
        image_writer(tmp_path / "l_lossless.webp", color=red)
    assert Image.open(tmp_path / "h_16bit.png").mode == "I;16"

    s = load_images(tmp_path)
    assert s.skipped == ()
    by_name = {Path(p).name: img for p, img in zip(s.paths, s.images)}
    assert (by_name["a_gray.png"] == 90).all()
    for name in ("b_palette.gif", "d_bitmap.bmp", "e_tiff.tif") + (("l_lossless.webp",) if "WEBP" in Image.SAVE else ()):
        assert (by_name[name] == red).all(), name
    assert np.abs(by_name["c_cmyk.jpg"].astype(int) - red).max() < 40
    for name in ("f_bilevel.png", "g_rgba.png", "h_16bit.png", "j_la.png", "k_palette_transparent.png"):
        assert (by_name[name] == 255).all(), name  # white, or transparent on white
    assert (by_name["i_32bit.tif"] == 128).all()  # 16-bit values in a 32-bit image scaled as 16-bit


def test_bad_files_skipped_with_one_warning(image_folder):
    (image_folder / "cat" / "text.png").write_text("this is not a PNG")
    (image_folder / "cat" / "zero.jpg").write_bytes(b"")
    jpeg = (image_folder / "dog" / "01.jpg").read_bytes()
    (image_folder / "dog" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    with pytest.warns(UserWarning) as record:
        s = load_images(image_folder)
    user_warnings = [w for w in record if issubclass(w.category, UserWarning)]
    assert len(user_warnings) == 1
    message = str(user_warnings[0].message)
    assert "skipped 3 of 9" in message
    for name in ("text.png", "zero.jpg", "truncated.jpg"):
        assert name in message
    assert len(s) == 6 and list(s.labels) == ["cat"] * 3 + ["dog"] * 3
    assert {Path(p).name for p, _ in s.skipped} == {"text.png", "zero.jpg", "truncated.jpg"}
    assert all(reason for _, reason in s.skipped)


def test_decompression_bomb_refused_by_pixel_limit(tmp_path, image_writer):
    image_writer(tmp_path / "small.png", (16, 16))
    image_writer(tmp_path / "bomb.png", (100, 100))
    for image_size in (None, 16):
        with pytest.warns(UserWarning, match="bomb.png"):
            s = load_images(tmp_path, max_pixels=5000, image_size=image_size)
        assert len(s) == 1
        assert "too many pixels" in s.skipped[0][1]


def test_pil_limit_lifted_only_while_loading(tmp_path, image_writer, monkeypatch):
    image_writer(tmp_path / "big.png", (64, 64))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL itself would refuse 4096 pixels
    s = load_images(tmp_path, max_pixels=10_000)
    assert len(s) == 1 and s.skipped == ()
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_mixed_sizes_use_most_common_size_capped(tmp_path, image_writer):
    image_writer(tmp_path / "a.png", (20, 30))
    image_writer(tmp_path / "b.png", (20, 30))
    image_writer(tmp_path / "c.png", (50, 10))
    assert load_images(tmp_path).image_size == (20, 30)
    image_writer(tmp_path / "d.png", (100, 200))
    image_writer(tmp_path / "e.png", (100, 200))
    image_writer(tmp_path / "f.png", (100, 200))
    assert load_images(tmp_path).image_size == (32, 64)
    assert load_images(tmp_path, image_size=24).image_size == (24, 24)


def test_same_size_kept_unless_asked(tmp_path, image_writer):
    for i in range(2):
        image_writer(tmp_path / f"{i}.png", (80, 100))
    assert load_images(tmp_path).image_size == (80, 100)
    assert load_images(tmp_path, image_size=(10, 20)).image_size == (10, 20)


def test_resize_crops_the_centre_instead_of_stretching(tmp_path):
    stripes = np.zeros((20, 40, 3), np.uint8)
    stripes[:, :10] = (0, 255, 0)
    stripes[:, 10:30] = (255, 0, 0)
    stripes[:, 30:] = (0, 0, 255)
    Image.fromarray(stripes).save(tmp_path / "wide.png")
    s = load_images(tmp_path, image_size=10)
    red, green, blue = (s.images[0, ..., c].astype(int) for c in range(3))
    assert red.min() > 200 and green.max() < 60 and blue.max() < 60  # bicubic edges may blend a little
    assert (s.images[0, :, 2:8] == [255, 0, 0]).all()


def test_big_jpeg_downscaled_through_draft(tmp_path, image_writer):
    image_writer(tmp_path / "photo.jpg", (600, 800), color=(30, 120, 200))
    s = load_images(tmp_path, image_size=32)
    assert np.abs(s.images.astype(int) - (30, 120, 200)).max() <= 6


def test_exif_orientation_is_applied(tmp_path):
    image = np.zeros((16, 24, 3), np.uint8)
    image[:, :12] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways; viewers turn it 90 degrees clockwise
    Image.fromarray(image).save(tmp_path / "turned.jpg", exif=exif, quality=95)
    s = load_images(tmp_path)
    assert s.image_size == (24, 16)
    assert s.images[0, :10].mean() > 200 and s.images[0, 14:].mean() < 50  # left became top


def test_folder_errors(tmp_path, image_writer):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no images found.*\.png"):
        load_images(tmp_path / "empty")
    (tmp_path / "empty" / "readme.txt").write_text("hi")
    with pytest.raises(ValueError, match="supported extensions"):
        load_images(tmp_path / "empty")
    with pytest.raises(MissingFilesError, match="does not exist"):
        load_images(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError):
        load_images(tmp_path / "nowhere")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"")
    with pytest.raises(ValueError, match="none of the 1 image files.*a.png"):
        load_images(tmp_path / "broken")
    image_writer(tmp_path / "tiny" / "a.png", (5, 5))
    with pytest.raises(ValueError, match="image_size=32"):
        load_images(tmp_path / "tiny")
    assert load_images(tmp_path / "tiny", image_size=32).image_size == (32, 32)
    with pytest.raises(ValueError, match="minimum"):
        load_images(tmp_path / "tiny", image_size=4)


def test_huge_same_size_images_need_image_size(tmp_path, image_writer, monkeypatch):
    image_writer(tmp_path / "a.png", (40, 40))
    monkeypatch.setattr(_imagefiles, "MAX_DEFAULT_BYTES", 1000)
    with pytest.raises(ValueError, match="image_size=64"):
        load_images(tmp_path)
    assert load_images(tmp_path, image_size=16).image_size == (16, 16)


# ----------------------------------------------------------------------------- lists, tables

def test_list_of_paths_with_labels_and_skips(image_folder):
    paths = sorted(image_folder.rglob("*.png"))
    (image_folder / "bad.png").write_text("nope")
    with pytest.warns(UserWarning, match="bad.png"):
        s = load_images([*paths, image_folder / "bad.png"], labels=["p", "q", "r", "s", "t"])
    assert len(s) == 4 and list(s.labels) == ["p", "q", "r", "s"]
    assert s.paths == tuple(str(p) for p in paths)


def test_list_errors(image_folder):
    with pytest.raises(MissingFilesError, match=r"2 of 3 listed paths"):
        load_images([image_folder / "cat" / "00.png", "/nope/a.png", "/nope/b.png"])
    with pytest.raises(ValueError, match="folders"):
        load_images([image_folder])
    with pytest.raises(TypeError, match="mixes"):
        load_images([str(image_folder / "cat" / "00.png"), np.zeros((8, 8, 3))])
    with pytest.raises(ValueError, match="empty"):
        load_images([])


def test_list_of_images_and_single_pil_image():
    items = [Image.new("L", (10, 10), 7), np.full((10, 10, 3), 9, np.uint8), np.full((3, 12, 12), 1.0)]
    s = load_images(items)
    assert_image_set(s, 3, (10, 10))
    assert [int(s.images[i, 0, 0, 0]) for i in range(3)] == [7, 9, 255]
    assert len(load_images(Image.new("RGB", (9, 9)))) == 1


def test_csv_relative_paths_labels_and_metadata(image_folder, tmp_path, monkeypatch):
    (image_folder / "cat" / "bad.png").write_text("nope")
    table = pd.DataFrame({
        "path": ["cat/00.png", "cat/bad.png", "dog/01.jpg", str(image_folder / "dog" / "02.png")],
        "label": ["kitty", "kitty", None, "doggo"],
        "kind": ["k1", "k2", "k3", "k4"],
        "score": [0.1, 0.2, 0.3, 0.4],
    })
    csv = image_folder / "index.csv"
    table.to_csv(csv, index=False)
    monkeypatch.chdir(tmp_path)  # relative paths resolve against the CSV, not the cwd
    with pytest.warns(UserWarning, match="bad.png"):
        s = load_images(str(csv))
    assert len(s) == 3
    assert list(s.labels) == ["kitty", UNLABELLED, "doggo"]
    assert list(s.metadata.columns) == ["kind", "score"]
    assert list(s.metadata["kind"]) == ["k1", "k3", "k4"]
    assert list(s.metadata.index) == [0, 1, 2]
    assert s.paths[1] == str(image_folder / "dog" / "01.jpg")

    by_column = load_quietly(csv, labels="kind")
    assert list(by_column.labels) == ["k1", "k3", "k4"]
    assert "label" in by_column.metadata.columns


def test_dataframe_errors(image_folder, monkeypatch):
    monkeypatch.chdir(image_folder)
    frame = pd.DataFrame({"path": ["cat/00.png", "cat/nope.png", "dog/nope.png"]})
    with pytest.raises(MissingFilesError, match=r"2 of 3 paths.*nope\.png"):
        load_images(frame)
    with pytest.raises(ValueError, match=r"'path' column.*\['file'\]"):
        load_images(pd.DataFrame({"file": ["cat/00.png"]}))
    with pytest.raises(ValueError, match="is not a column"):
        load_images(frame.iloc[:1], labels="species")
    s = load_images(frame.iloc[:1])
    assert s.labels is None and s.metadata is None and len(s.paths) == 1


def test_extensions_constant_lists_the_supported_formats():
    assert {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"} == set(IMAGE_EXTENSIONS)
