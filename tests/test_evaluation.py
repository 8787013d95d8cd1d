"""The platform's PSNR/SSIM equal scikit-image's on the same frames (the seed's definition)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from avatars.evaluation import frame_scores, gray, psnr, ssim


def frames(seed: int, shape=(96, 128, 3), noise=25):
    rng = np.random.default_rng(seed)
    reference = rng.integers(0, 256, shape, dtype=np.uint8)
    test = np.clip(reference.astype(int) + rng.integers(-noise, noise + 1, shape), 0, 255).astype(np.uint8)
    return reference, test


@pytest.mark.parametrize("seed", range(5))
def test_psnr_and_ssim_equal_scikit_image_within_1e_6(seed):
    reference, test = frames(seed, shape=(64 + 7 * seed, 80 + 5 * seed, 3), noise=5 + 10 * seed)
    ours_psnr, ours_ssim = frame_scores(reference, test)
    assert ours_psnr == pytest.approx(peak_signal_noise_ratio(reference, test, data_range=255), abs=1e-6)
    expected = structural_similarity(gray(reference), gray(test), data_range=255)
    assert ours_ssim == pytest.approx(expected, abs=1e-6)


def test_a_smooth_image_and_its_shifted_copy_also_agree():
    y, x = np.mgrid[0:120, 0:160]
    reference = ((np.sin(x / 9) + np.cos(y / 13)) * 60 + 128).astype(np.uint8)
    shifted = np.roll(reference, 3, axis=1)
    assert ssim(reference, shifted) == pytest.approx(
        structural_similarity(reference, shifted, data_range=255), abs=1e-6
    )


def test_gray_is_opencvs_conversion():
    cv2 = pytest.importorskip("cv2")
    reference, _ = frames(7)
    assert np.array_equal(gray(reference), cv2.cvtColor(reference, cv2.COLOR_RGB2GRAY))


def test_identical_frames_and_bad_input():
    reference, _ = frames(3)
    assert math.isinf(psnr(reference, reference))
    assert ssim(gray(reference), gray(reference)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="sizes differ"):
        frame_scores(reference, reference[:-1])
    with pytest.raises(ValueError, match="at least 7"):
        ssim(np.zeros((5, 5), np.uint8), np.zeros((5, 5), np.uint8))
