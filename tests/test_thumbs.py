"""Thumbnails: crisp enlargement, lazy LRU cache, file sources, HTML escaping."""
from __future__ import annotations

import base64
import io
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from tsimcne_widgets.render.thumbs import ThumbnailCache, html_escape


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


@pytest.fixture
def tiny_images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)


def test_tiny_images_are_enlarged_into_crisp_blocks(tiny_images):
    cache = ThumbnailCache(tiny_images)
    thumb = decode(cache.png_bytes(3, size=160))
    assert thumb.shape == (160, 160, 3)
    # Every 20x20 block is one source pixel, exactly.
    blocks = thumb.reshape(8, 20, 8, 20, 3)
    assert (blocks == tiny_images[3][:, None, :, None, :]).all()
    # 32x32 in a 160 box: factor 5; 64x64 in 160: factor 2 (128 px, no blur).
    rgb32 = np.random.default_rng(1).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    assert decode(ThumbnailCache(rgb32).png_bytes(0, 160)).shape == (160, 160, 3)
    rgb64 = np.random.default_rng(2).integers(0, 256, (1, 64, 40, 3), dtype=np.uint8)
    thumb64 = decode(ThumbnailCache(rgb64).png_bytes(0, 160))
    assert thumb64.shape == (128, 80, 3)
    assert (thumb64[::2, ::2] == rgb64[0]).all()


def test_large_array_images_shrink_to_fit():
    big = np.random.default_rng(3).integers(0, 256, (1, 300, 200, 3), dtype=np.uint8)
    assert decode(ThumbnailCache(big).png_bytes(0, 100)).shape == (100, 67, 3)


def test_cache_hits_do_not_re_encode_and_lru_evicts(tiny_images):
    cache = ThumbnailCache(tiny_images, max_items=3)
    assert cache.cache_info().currsize == 0  # nothing encoded up front
    first = cache.png_bytes(0)
    assert cache.png_bytes(0) is first
    assert cache.cache_info()[:2] == (1, 1)
    cache.png_bytes(1)
    cache.png_bytes(2)
    cache.png_bytes(0)  # 0 becomes the most recent: 1 is the oldest now
    cache.png_bytes(4)  # evicts 1
    info = cache.cache_info()
    assert info.currsize == 3 and info.misses == 4
    cache.png_bytes(0)
    assert cache.cache_info().misses == 4
    cache.png_bytes(1)
    assert cache.cache_info().misses == 5
    assert cache.png_bytes(1, size=40) != cache.png_bytes(1, size=160)  # size is part of the key


def test_data_uri_round_trip(tiny_images):
    cache = ThumbnailCache(tiny_images)
    uri = cache.data_uri(-1, size=16)
    assert uri.startswith("data:image/png;base64,")
    assert (decode(base64.b64decode(uri.split(",", 1)[1]))[::2, ::2] == tiny_images[-1]).all()


def test_larger_source_file_is_used_and_broken_file_falls_back(tmp_path, tiny_images):
    detailed = np.zeros((64, 64, 3), np.uint8)
    detailed[:, ::2] = 255  # one-pixel stripes that an 8x8 copy cannot hold
    good = tmp_path / "big.png"
    Image.fromarray(detailed).save(good)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    paths = [str(good), str(broken), str(tmp_path / "missing.png"), None, None, None]
    cache = ThumbnailCache(tiny_images, paths)
    from_file = decode(cache.png_bytes(0, size=64))
    assert from_file.shape == (64, 64, 3) and np.array_equal(from_file, detailed)
    fallback = decode(cache.png_bytes(1, size=64))  # unreadable: the array, no note
    assert (fallback[::8, ::8] == tiny_images[1]).all() and cache.note is None
    with pytest.warns(UserWarning, match="original files are gone .*missing.png.*8x8 px"):
        fallback = decode(cache.png_bytes(2, size=64))
    assert (fallback[::8, ::8] == tiny_images[2]).all() and "missing.png" in cache.note
    fallback = decode(cache.png_bytes(3, size=64))
    assert (fallback[::8, ::8] == tiny_images[3]).all()


def test_smaller_source_file_keeps_the_array(tmp_path, tiny_images):
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(small)
    cache = ThumbnailCache(tiny_images, [str(small)] + [None] * 5)
    assert (decode(cache.png_bytes(0, 16))[::2, ::2] == tiny_images[0]).all()


def test_accepts_an_image_set_like_object(tiny_images):
    image_set = SimpleNamespace(images=tiny_images, paths=None)
    assert len(ThumbnailCache(image_set)) == 6


def test_hover_card_escapes_every_text(tiny_images):
    cache = ThumbnailCache(tiny_images)
    payload = '"><img src=x onerror=alert(1)>'
    html = cache.hover_card_html(2, label="<script>alert(1)</script>",
                                 metadata={payload: payload, "path": "a&b.png"}, size=96)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "onerror=alert(1)>" not in html and "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    assert "a&amp;b.png" in html and "#2" in html
    assert html.count("<img ") == 1 and 'width="96"' in html
    assert cache.data_uri(2, 96) in html
    assert html_escape("'\"<>&") == "&#x27;&quot;&lt;&gt;&amp;"


def test_bad_input_is_explained(tiny_images):
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        ThumbnailCache(tiny_images.astype(np.float32))
    with pytest.raises(ValueError, match="paths"):
        ThumbnailCache(tiny_images, ["a.png"])
    cache = ThumbnailCache(tiny_images)
    with pytest.raises(IndexError):
        cache.png_bytes(6)
    with pytest.raises(TypeError):
        cache.png_bytes(1.5)


def test_concurrent_requests_agree(tiny_images):
    cache = ThumbnailCache(tiny_images, max_items=4)
    expected = {i: ThumbnailCache(tiny_images).png_bytes(i, 32) for i in range(6)}
    errors = []

    def worker(seed):
        rng = np.random.default_rng(seed)
        for i in rng.integers(0, 6, 100):
            if cache.png_bytes(int(i), 32) != expected[int(i)]:
                errors.append(i)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and cache.cache_info().currsize <= 4
