"""Tests for the batched augmentations: sampling statistics, geometry and colour maths."""

import math

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.v2.functional as TF
from PIL import Image

from tsimcne_widgets.engine.augment import (
    AugmentParams,
    Augmenter,
    hsv_to_rgb,
    rgb_to_hsv,
)

N_SAMPLES = 20000


def random_images(n=6, size=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)


@pytest.fixture(scope="module")
def many_params():
    return Augmenter(32).sample(N_SAMPLES, generator=torch.Generator().manual_seed(1))


def assert_rate(flags, p):
    sigma = math.sqrt(p * (1 - p) / flags.numel())
    assert abs(flags.float().mean().item() - p) < 4 * sigma


def test_crops_have_valid_area_ratio_and_position(many_params):
    w, h = many_params.crop_size.unbind(1)
    cx, cy = many_params.crop_center.unbind(1)
    area = w * h
    assert area.min() >= 0.2 - 1e-6 and area.max() <= 1 + 1e-6
    ratio = w / h  # square images: fractions are pixel proportions
    assert ratio.min() >= 3 / 4 - 1e-5 and ratio.max() <= 4 / 3 + 1e-5
    assert (cx - w / 2).min() >= -1e-6 and (cx + w / 2).max() <= 1 + 1e-6
    assert (cy - h / 2).min() >= -1e-6 and (cy + h / 2).max() <= 1 + 1e-6


def test_crop_area_distribution_matches_torchvision(many_params):
    # torchvision's sampler on a large image (pixel rounding negligible) as reference.
    torch.manual_seed(0)
    image = torch.zeros(1, 1000, 1000)
    boxes = [T.RandomResizedCrop.get_params(image, [0.2, 1.0], [3 / 4, 4 / 3]) for _ in range(4000)]
    reference = torch.tensor([h * w / 1e6 for _, _, h, w in boxes])
    ours = many_params.crop_size.prod(dim=1)
    levels = torch.linspace(0.05, 0.95, 10)
    torch.testing.assert_close(ours.quantile(levels), reference.quantile(levels), rtol=0, atol=0.03)


def test_aspect_ratio_of_non_square_images():
    params = Augmenter(16).sample(2000, generator=torch.Generator().manual_seed(2), image_shape=(20, 40))
    w, h = params.crop_size.unbind(1)
    pixel_ratio = (w * 40) / (h * 20)
    assert pixel_ratio.min() >= 3 / 4 - 1e-5 and pixel_ratio.max() <= 4 / 3 + 1e-5
    assert w.max() <= 1 and h.max() <= 1


def test_fallback_is_a_central_crop():
    # Ratios of 3-4 never fit a square at 99 % area: every try fails.
    augmenter = Augmenter(8, crop_scale=(0.99, 1.0), crop_ratio=(3.0, 4.0))
    params = augmenter.sample(50, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(params.crop_center, torch.full((50, 2), 0.5))
    torch.testing.assert_close(params.crop_size, torch.tensor([[1.0, 1 / 3]]).expand(50, 2))


def test_flip_jitter_and_grayscale_rates(many_params):
    assert_rate(many_params.flip, 0.5)
    assert_rate(many_params.jitter, 0.8)
    assert_rate(many_params.grayscale, 0.2)


def test_jitter_factor_ranges(many_params):
    factors = many_params.jitter_factors
    for column in range(3):
        assert factors[:, column].min() >= 0.6 and factors[:, column].max() <= 1.4
        assert factors[:, column].mean().item() == pytest.approx(1.0, abs=0.01)
    assert factors[:, 3].min() >= -0.1 and factors[:, 3].max() <= 0.1
    assert factors[:, 3].mean().item() == pytest.approx(0.0, abs=0.005)


def test_jitter_orders_are_permutations_covering_all_24(many_params):
    order = many_params.jitter_order
    assert torch.equal(order.sort(dim=1).values, torch.arange(4).expand_as(order))
    counts = torch.unique(order, dim=0, return_counts=True)[1]
    assert len(counts) == 24
    assert_rate(order[:, 0] == 2, 0.25)


def test_identity_params_return_the_image():
    images = random_images()
    out = Augmenter(8).apply(images, AugmentParams.identity(len(images)))
    torch.testing.assert_close(out, images.float() / 255, rtol=0, atol=1e-6)


def test_flip_only_mirrors():
    images = random_images()
    params = AugmentParams.identity(len(images))
    params.flip[::2] = True
    out = Augmenter(8).apply(images, params)
    expected = images.float() / 255
    expected[::2] = expected[::2].flip(-1)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_pixel_aligned_crop_equals_slicing():
    images = random_images(n=2, size=8)
    params = AugmentParams.identity(2)
    # A 4-wide, 2-high box with its top-left pixel at (x=1, y=3), read at its own size.
    params.crop_center[:] = torch.tensor([(1 + 2) / 8, (3 + 1) / 8])
    params.crop_size[:] = torch.tensor([4 / 8, 2 / 8])
    out = Augmenter((2, 4)).apply(images, params)
    torch.testing.assert_close(out, images[:, :, 3:5, 1:5].float() / 255, rtol=0, atol=1e-6)


def reference_view(image, params, index):
    """Colour part of one view with torchvision's functional ops, one image at a time."""
    x = image.float() / 255
    if params.jitter[index]:
        b, c, s, h = params.jitter_factors[index].tolist()
        ops = [
            lambda t: TF.adjust_brightness(t, b),
            lambda t: TF.adjust_contrast(t, c),
            lambda t: TF.adjust_saturation(t, s),
            lambda t: TF.adjust_hue(t, h),
        ]
        for op in params.jitter_order[index].tolist():
            x = ops[op](x)
    if params.grayscale[index]:
        x = TF.rgb_to_grayscale(x, num_output_channels=3)
    return x


def test_colour_ops_match_torchvision():
    images = random_images(n=64, size=6, seed=3)
    augmenter = Augmenter(6, jitter=(0.8, 0.8, 0.8, 0.5), jitter_p=0.9, grayscale_p=0.3)
    params = augmenter.sample(64, generator=torch.Generator().manual_seed(4))
    full = AugmentParams.identity(64)
    params.crop_center, params.crop_size, params.flip = full.crop_center, full.crop_size, full.flip
    out = augmenter.apply(images, params)
    expected = torch.stack([reference_view(images[i], params, i) for i in range(64)])
    torch.testing.assert_close(out, expected, rtol=0, atol=2e-5)


def test_hsv_round_trip():
    colours = torch.rand(10, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    colours[0] = 0.5  # gray: hue undefined, must still round-trip
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(colours)), colours, rtol=0, atol=1e-6)


def test_outputs_in_unit_range_under_strong_jitter():
    augmenter = Augmenter(8, jitter=(0.9, 0.9, 0.9, 0.5), jitter_p=1.0)
    out = augmenter(random_images(n=32), torch.Generator().manual_seed(5))
    assert out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert out.std() > 0.05


def test_grayscale_views_have_equal_channels():
    augmenter = Augmenter(8, grayscale_p=1.0)
    out = augmenter(random_images(), torch.Generator().manual_seed(6))
    torch.testing.assert_close(out[:, 0], out[:, 1], rtol=0, atol=0)
    torch.testing.assert_close(out[:, 0], out[:, 2], rtol=0, atol=0)


def test_seeded_views_are_reproducible():
    augmenter = Augmenter(8)
    images = random_images()
    first = augmenter(images, torch.Generator().manual_seed(7))
    again = augmenter(images, torch.Generator().manual_seed(7))
    other = augmenter(images, torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_channels_last_input_and_output():
    images = random_images(n=4, size=12).contiguous(memory_format=torch.channels_last)
    augmenter = Augmenter(8)
    out = augmenter(images, torch.Generator().manual_seed(9), channels_last=True,
                    out_dtype=torch.bfloat16)
    assert out.shape == (4, 3, 8, 8)
    assert out.dtype == torch.bfloat16
    assert out.is_contiguous(memory_format=torch.channels_last)
    contiguous = augmenter(images.contiguous(), torch.Generator().manual_seed(9))
    torch.testing.assert_close(out.float(), contiguous, rtol=0, atol=1e-2)


def test_float_input_matches_uint8_input():
    images = random_images()
    augmenter = Augmenter(8)
    from_uint8 = augmenter(images, torch.Generator().manual_seed(10))
    from_float = augmenter(images.float() / 255, torch.Generator().manual_seed(10))
    torch.testing.assert_close(from_float, from_uint8, rtol=0, atol=1e-6)


def test_to_float_resizes_only_when_needed():
    images = random_images(size=8)
    same = Augmenter(8).to_float(images)
    torch.testing.assert_close(same, images.float() / 255, rtol=0, atol=0)
    smaller = Augmenter(4).to_float(images, channels_last=True)
    assert smaller.shape == (6, 3, 4, 4)
    assert smaller.is_contiguous(memory_format=torch.channels_last)
    # Antialiased bilinear matches PIL's bilinear reduction (up to PIL's fixed-point
    # arithmetic and uint8 rounding).
    pil = torch.stack([
        torch.from_numpy(
            np.array(Image.fromarray(image.permute(1, 2, 0).numpy()).resize((4, 4), Image.BILINEAR))
        ).permute(2, 0, 1)
        for image in images
    ]).float() / 255
    torch.testing.assert_close(smaller, pil, rtol=0, atol=1.5 / 255)


def test_bad_inputs_name_the_fix():
    augmenter = Augmenter(8)
    with pytest.raises(ValueError, match="permute"):
        augmenter(torch.zeros(2, 8, 8, 3, dtype=torch.uint8))
    with pytest.raises(TypeError, match="torch.Tensor"):
        augmenter([[0]])
    with pytest.raises(ValueError, match="params are for"):
        augmenter.apply(random_images(n=3), AugmentParams.identity(2))
    with pytest.raises(ValueError, match="crop_scale"):
        Augmenter(8, crop_scale=(0.5, 1.5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_views_match_cpu_views():
    images = random_images(n=16, size=16)
    augmenter = Augmenter(16)
    params = augmenter.sample(16, generator=torch.Generator().manual_seed(11))
    cpu = augmenter.apply(images, params)
    gpu = augmenter.apply(images.cuda(), params, channels_last=True)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-4)
