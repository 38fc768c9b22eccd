"""The label-free augmentation check at the start of a fit (engine/augment_check.py)."""

import warnings

import numpy as np
import pytest

from tsimcne_widgets import TSimCNE
from tsimcne_widgets.data.datasets import DIGITS_AUGMENTATION, load_digits, make_shapes
from tsimcne_widgets.engine.augment import Augmenter
from tsimcne_widgets.engine.augment_check import (
    RETRIEVAL_LIMIT,
    AugmentationWarning,
    check_augmentation,
)
from tsimcne_widgets.engine.augment_policy import augmentation_for

TINY = dict(total_epochs=(1,), batch_size=64, backbone="resnet10", backbone_width=8,
            hidden_dim=32, projection_dim=8, device="cpu", random_state=0, num_threads=1)


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def test_the_papers_crops_on_8px_digits_are_flagged_with_settings_that_pass(digits):
    bad = check_augmentation(digits, {})  # the paper's 32-px settings: kNN 0.38
    assert not bad.passed and bad.verdict == "destructive"
    assert bad.chance < bad.score < RETRIEVAL_LIMIT
    assert "3x3 pixels" in bad.message and "augmentation=" in bad.message
    assert bad.suggestion is not None
    assert check_augmentation(digits, bad.suggestion).passed


def test_the_tuned_and_derived_digits_settings_pass(digits):
    for settings in (DIGITS_AUGMENTATION, augmentation_for(digits)):
        good = check_augmentation(digits, settings)
        assert good.passed and good.suggestion is None
        assert good.score > 1.3 * RETRIEVAL_LIMIT  # with margin, not by luck of the seed


def test_crops_that_keep_a_pixel_are_flagged_on_shapes_and_half_crops_are_not():
    shapes = make_shapes(600, image_size=16)
    assert check_augmentation(shapes, {"crop_scale": (0.01, 0.02)}).score < RETRIEVAL_LIMIT / 4
    assert check_augmentation(shapes, shapes.augmentation).passed


def test_the_same_seed_gives_the_same_verdict_and_another_seed_other_views(digits):
    first, again = (check_augmentation(digits, {}, n=256, seed=3) for _ in range(2))
    assert (first.score, first.message, first.suggestion) == (again.score, again.message,
                                                               again.suggestion)
    assert check_augmentation(digits, {}, n=256, seed=4).score != first.score


def test_an_augmenter_is_checked_at_its_own_output_size(digits):
    result = check_augmentation(digits, Augmenter(8, **DIGITS_AUGMENTATION), n=200)
    assert result.passed and result.n == 200


def test_a_fit_with_destructive_settings_warns_and_still_trains(digits):
    images = digits.subset(np.arange(256))
    estimator = TSimCNE(augmentation={}, **TINY)
    with pytest.warns(AugmentationWarning, match="too little of each image"):
        estimator.fit(images)
    assert not estimator.augmentation_check_.passed
    assert estimator.embedding_.shape == (256, 8) and np.isfinite(estimator.embedding_).all()


def test_the_check_can_be_switched_off_and_tuned_settings_do_not_warn(digits):
    images = digits.subset(np.arange(256))
    with warnings.catch_warnings():
        warnings.simplefilter("error", AugmentationWarning)
        off = TSimCNE(augmentation={}, augmentation_check=False, **TINY).fit(images)
        tuned = TSimCNE(**TINY).fit(images)  # the digits' own settings
    assert off.augmentation_check_ is None
    assert tuned.augmentation_check_.passed


def test_bad_input_says_what_to_pass():
    with pytest.raises(TypeError, match="load_images"):
        check_augmentation(np.zeros((4, 8, 8), np.float32))


def test_the_widget_shows_a_failed_check_once_as_a_warning(digits):
    # The training thread's warnings.warn reaches only stderr; the widget's message
    # area is where a notebook user looks.
    from tsimcne_widgets import Explorer

    explorer = Explorer(digits.subset(np.arange(256)), augmentation={},
                        **{k: v for k, v in TINY.items() if k != "total_epochs"},
                        total_epochs=(1, 1, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AugmentationWarning)
        explorer.start()
        assert explorer.wait(300)
    explorer.refresh()
    explorer.training.announce(explorer.model.report)  # a second announce adds nothing
    warned = [text for kind, text in explorer.messages if kind == "warning"]
    assert len(warned) == 1 and "3x3" in warned[0], explorer.messages
