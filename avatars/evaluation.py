"""Quality figures: PSNR and SSIM of rendered frames against the dataset's ground truth.

The definition is the seed's (its evaluate.py): PSNR on full colour frames with data range 255, SSIM on
grayscale frames (OpenCV's BGR→gray) with scikit-image's defaults — 7×7 uniform window, K1 0.01, K2 0.03,
sample covariance, the mean over the windows that fit inside the frame. The values equal
scikit-image's to within 1e-6 (tests/test_evaluation.py), but the five local means come from summed-area
tables in one pass each instead of five separate filters, which is what makes evaluation fast.
"""

from __future__ import annotations

import math

import numpy as np

WINDOW = 7
K1, K2 = 0.01, 0.03
DATA_RANGE = 255.0


def gray(rgb: np.ndarray) -> np.ndarray:
    """OpenCV's COLOR_RGB2GRAY for 8-bit frames: BT.601 weights in 15-bit fixed point, rounded."""
    r, g, b = (rgb[..., channel].astype(np.uint32) for channel in range(3))
    return ((r * 9798 + g * 19235 + b * 3735 + (1 << 14)) >> 15).astype(np.uint8)


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """skimage.metrics.peak_signal_noise_ratio(reference, test, data_range=255); inf for equal frames."""
    difference = reference.astype(np.float64) - test.astype(np.float64)
    mse = float(np.mean(difference * difference))
    return math.inf if mse == 0 else 10 * math.log10(DATA_RANGE * DATA_RANGE / mse)


def _window_means(image: np.ndarray) -> np.ndarray:
    """Mean of every WINDOW×WINDOW window lying wholly inside ``image`` (float64 summed-area table)."""
    table = np.zeros((image.shape[0] + 1, image.shape[1] + 1), dtype=np.float64)
    np.cumsum(np.cumsum(image, axis=0), axis=1, out=table[1:, 1:])
    w = WINDOW
    sums = table[w:, w:] - table[:-w, w:] - table[w:, :-w] + table[:-w, :-w]
    return sums / (w * w)


def ssim(reference_gray: np.ndarray, test_gray: np.ndarray) -> float:
    """skimage.metrics.structural_similarity(reference, test, data_range=255) for 2-D 8-bit frames."""
    if reference_gray.shape != test_gray.shape or reference_gray.ndim != 2:
        raise ValueError(
            f"SSIM needs two grayscale frames of one size, not {reference_gray.shape} and {test_gray.shape}."
        )
    if min(reference_gray.shape) < WINDOW:
        raise ValueError(f"Frames must be at least {WINDOW}×{WINDOW} pixels for SSIM.")
    x = reference_gray.astype(np.float64)
    y = test_gray.astype(np.float64)
    ux, uy = _window_means(x), _window_means(y)
    uxx, uyy, uxy = _window_means(x * x), _window_means(y * y), _window_means(x * y)
    covariance = WINDOW * WINDOW / (WINDOW * WINDOW - 1)  # scikit-image's use_sample_covariance=True
    vx = covariance * (uxx - ux * ux)
    vy = covariance * (uyy - uy * uy)
    vxy = covariance * (uxy - ux * uy)
    c1, c2 = (K1 * DATA_RANGE) ** 2, (K2 * DATA_RANGE) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return float(s.mean(dtype=np.float64))


def frame_scores(reference_rgb: np.ndarray, test_rgb: np.ndarray) -> tuple[float, float]:
    """(PSNR, SSIM) of one rendered frame against its ground truth, both RGB uint8 of one size."""
    if reference_rgb.shape != test_rgb.shape:
        raise ValueError(f"Frame sizes differ: {reference_rgb.shape} against {test_rgb.shape}.")
    return psnr(reference_rgb, test_rgb), ssim(gray(reference_rgb), gray(test_rgb))
