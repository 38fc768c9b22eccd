"""Augmentation settings derived from the data, without labels (engine/augment_policy.py)."""

import numpy as np
import pytest
import torch

from tsimcne_widgets import TSimCNE
from tsimcne_widgets.data.datasets import (
    DIGITS_AUGMENTATION,
    SHAPES_AUGMENTATION,
    load_digits,
    make_shapes,
)
from tsimcne_widgets.engine.augment import Augmenter
from tsimcne_widgets.engine.augment_policy import (
    MIRROR_RATIO_LIMIT,
    SMALL_CONTENT_AREA,
    DataTraits,
    augmentation_for,
    measure_traits,
)


def traits(side, grayscale=False, mirror=None, content=None):
    return DataTraits(side, side, grayscale, mirror, content)


@pytest.mark.parametrize("side, low", [(8, 0.5625), (12, 0.25), (16, 0.2), (28, 0.2),
                                       (32, 0.2), (64, 0.2)])
def test_crops_keep_six_pixels_a_side_and_never_go_below_the_papers(side, low):
    settings = augmentation_for(None, traits(side))
    assert settings["crop_scale"] == (low, 1.0)
    assert min(side, side) * np.sqrt(low) >= 6 - 1e-9


def test_small_content_grows_the_crops_and_large_content_does_not():
    assert augmentation_for(None, traits(32, content=0.25))["crop_scale"] == (0.5, 1.0)
    # One pixel more of content side (17² of 32² instead of 16²) keeps the same floor.
    assert augmentation_for(None, traits(32, content=17 ** 2 / 32 ** 2))["crop_scale"] == (0.5, 1.0)
    assert augmentation_for(None, traits(16, content=0.33))["crop_scale"] == (0.5, 1.0)
    assert augmentation_for(None, traits(32, content=0.1))["crop_scale"] == (0.5, 1.0)
    assert augmentation_for(None, traits(32, content=0.52))["crop_scale"] == (0.2, 1.0)
    # Resolution and content: the stricter rule wins.
    assert augmentation_for(None, traits(8, content=0.2))["crop_scale"] == (0.5625, 1.0)


def test_flips_follow_the_mirror_ratio():
    assert augmentation_for(None, traits(32, mirror=1.0))["flip_p"] == 0.5
    assert augmentation_for(None, traits(32, mirror=MIRROR_RATIO_LIMIT + 0.1))["flip_p"] == 0.0
    assert augmentation_for(None, traits(32))["flip_p"] == 0.5  # too few images: the paper's


def test_digits_as_a_bare_array_get_what_the_tuned_digits_have():
    digits = load_digits()
    measured = measure_traits(digits.images)
    assert measured.grayscale
    assert measured.mirror_ratio > 1.5  # mirrored digits are other symbols
    settings = augmentation_for(digits.images, measured)
    assert settings["flip_p"] == DIGITS_AUGMENTATION["flip_p"] == 0.0
    assert settings["crop_scale"][0] == pytest.approx(DIGITS_AUGMENTATION["crop_scale"][0], abs=0.01)
    # Grayscale: the colour operations that cannot change a gray image are off.
    assert settings["jitter"][2:] == (0.0, 0.0) and settings["grayscale_p"] == 0.0


def test_digits_with_their_mirror_images_added_allow_flips():
    images = load_digits().images
    both = np.concatenate([images, images[:, :, ::-1]])
    assert measure_traits(both).mirror_ratio < MIRROR_RATIO_LIMIT
    assert augmentation_for(both)["flip_p"] == 0.5


def test_shapes_get_large_crops_and_flips():
    shapes = make_shapes(600).images
    measured = measure_traits(shapes)
    assert not measured.grayscale  # faint tints are colour
    assert measured.content_area < SMALL_CONTENT_AREA
    settings = augmentation_for(shapes, measured)
    assert settings["crop_scale"] == SHAPES_AUGMENTATION["crop_scale"]
    assert settings["flip_p"] == 0.5
    assert "jitter" not in settings and "grayscale_p" not in settings


def test_content_area_tells_a_small_object_from_texture():
    rng = np.random.default_rng(0)
    n, side = 200, 24
    ramp = np.linspace(40, 120, side)[None, :, None] * np.ones((n, side, side, 3))
    objects = ramp.copy()
    for image, (y, x) in zip(objects, rng.integers(0, side - 6, (n, 2))):
        image[y:y + 6, x:x + 6] = 250
    texture = ramp + rng.normal(0, 40, ramp.shape)
    small = measure_traits(objects.clip(0, 255).astype(np.uint8)).content_area
    large = measure_traits(texture.clip(0, 255).astype(np.uint8)).content_area
    assert small < SMALL_CONTENT_AREA < large


def test_the_gray_settings_give_the_same_views_of_gray_images():
    gray = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0)).repeat(1, 3, 1, 1)
    settings = augmentation_for(gray.permute(0, 2, 3, 1).numpy())
    default = Augmenter(8, crop_scale=settings["crop_scale"], flip_p=settings["flip_p"])
    derived = Augmenter(8, **settings)
    views = [a(gray, torch.Generator().manual_seed(1)) for a in (default, derived)]
    torch.testing.assert_close(views[0], views[1], atol=2e-3, rtol=0)


def test_few_images_skip_the_statistics():
    few = np.zeros((10, 16, 16, 3), np.uint8)
    measured = measure_traits(few)
    assert measured.mirror_ratio is None and measured.content_area is None
    assert augmentation_for(few, measured) == {
        "crop_scale": (0.2, 1.0), "flip_p": 0.5, "jitter": (0.4, 0.4, 0.0, 0.0), "grayscale_p": 0.0}


def test_bad_input_says_what_to_pass():
    with pytest.raises(TypeError, match="load_images"):
        measure_traits(np.zeros((4, 8, 8), np.float32))


def test_the_estimator_derives_settings_for_a_bare_array_only():
    digits = load_digits().subset(slice(0, 64))
    tiny = dict(total_epochs=(1,), batch_size=32, backbone="resnet10", backbone_width=8,
                hidden_dim=32, projection_dim=8, device="cpu", random_state=0)
    bare = np.array(digits.images[..., :1])  # (64, 8, 8, 1), no settings attached
    augmenter = TSimCNE(**tiny).fit(bare).trainer_.augmenter
    assert augmenter.flip_p == 0.0 and augmenter.crop_scale == (0.5625, 1.0)
    assert augmenter.grayscale_p == 0.0
    mine = TSimCNE(augmentation={}, **tiny).fit(bare).trainer_.augmenter
    assert mine.crop_scale == (0.2, 1.0) and mine.flip_p == 0.5  # {}: the paper's, as asked


def test_shapes_as_a_bare_array_train_exactly_like_the_tuned_shapes():
    # What lets benchmarks/plain_arrays.py skip refitting when the derived settings
    # equal the tuned ones: the same pixels and settings give the same map, bit for bit.
    shapes = make_shapes(300, random_state=1)
    tiny = dict(total_epochs=(1, 1, 1), batch_size=64, backbone="resnet10", backbone_width=8,
                hidden_dim=32, projection_dim=8, device="cpu", random_state=0,
                augmentation_check=False)
    tuned = TSimCNE(**tiny).fit_transform(shapes)
    plain = TSimCNE(**tiny).fit_transform(np.array(shapes.images))
    np.testing.assert_array_equal(plain, tuned)
