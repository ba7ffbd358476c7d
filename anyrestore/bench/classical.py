"""Classical restorers that are told the degradation: the bar a blind all-in-one model must clear.

Each restorer takes and returns an (h, w, 3) float64 array in [0, 1]:

* ``noise_<sigma>``: CBM3D (Dabov et al., ICIP 2007) with the true sigma, from the ``bm3d``
  package;
* ``haze``: the dark channel prior (He, Sun and Tang, CVPR 2009) with its transmission refined
  by a guided filter (He, Sun and Tang, ECCV 2010);
* ``rain``, ``snow``: a 5x5 median filter per channel;
* ``low_light``: an exposure gain and an inverse tone curve, then non-local means (Buades et al.,
  CVPR 2005) with the noise level estimated from the brightened image;
* ``blur``: an unsharp mask;
* composites: these steps in the reverse of the order the degradations were applied
  (``PHYSICAL_ORDER``: haze, rain, snow, blur, low light, noise), so the last damage done is the
  first undone. ``jpeg`` has no restorer here and is left as it is.

numpy, scipy and scikit-image only (plus ``bm3d``): the ``anyrestore[bench]`` extra. They are
imported when a restorer runs, so the default install does not need them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable

import numpy as np

from anyrestore.data.degradations import parse_kind
from anyrestore.errors import UsageError

#: The modules the classical baseline imports, and the distribution that provides each.
REQUIRED = {"bm3d": "bm3d", "scipy": "scipy", "skimage": "scikit-image"}

MEDIAN_SIZE = 5
# Dark channel prior: He et al. use a 15 px window, omega 0.95, t0 0.1 on ~600 px images.
DCP_PATCH = 15
DCP_OMEGA = 0.95
DCP_T0 = 0.1
GUIDE_RADIUS = 30
GUIDE_EPS = 1e-3
# Low light: the synthetic degradation is y = s * x**gamma with gamma in [1.3, 2.0].
LOW_LIGHT_GAMMA = 1.6
LOW_LIGHT_WHITE = 99.5  # percentile of luminance taken as the scene's white
UNSHARP_SIGMA = 2.0
UNSHARP_AMOUNT = 0.5


def check_dependencies(kinds: Iterable[str] | None = None) -> None:
    """Raise a one-line UsageError naming what to install when the bench extra is missing;
    with ``kinds`` (those the run scores), bm3d only where one of them has noise."""
    needed = dict(REQUIRED)
    if kinds is not None and not any(
        name.startswith("noise_") for kind in kinds for name in parse_kind(kind)
    ):
        needed.pop("bm3d")
    missing = []
    for module, dist in needed.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(dist)
    if missing:
        raise UsageError(
            f"the classical baseline needs {', '.join(missing)}: pip install {' '.join(missing)} "
            "(the bench extra)"
        )


def _luminance(image: np.ndarray) -> np.ndarray:
    return image @ np.array([0.299, 0.587, 0.114])


def denoise_bm3d(image: np.ndarray, sigma: float) -> np.ndarray:
    """CBM3D with the noise's true standard deviation ``sigma`` (on the 0-255 scale)."""
    import bm3d

    return np.asarray(bm3d.bm3d_rgb(image, sigma / 255.0), dtype=np.float64)


def median(image: np.ndarray, size: int = MEDIAN_SIZE) -> np.ndarray:
    """A ``size`` x ``size`` median per channel: removes thin bright streaks and small flakes."""
    from scipy.ndimage import median_filter

    return median_filter(image, size=(size, size, 1), mode="reflect")


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter with a grey guide: a local linear model of ``src`` in ``guide``."""
    from scipy.ndimage import uniform_filter

    def box(a: np.ndarray) -> np.ndarray:
        return uniform_filter(a, size=2 * radius + 1, mode="reflect")

    mean_i, mean_p = box(guide), box(src)
    var_i = box(guide * guide) - mean_i * mean_i
    cov_ip = box(guide * src) - mean_i * mean_p
    a = cov_ip / (var_i + eps)  # Eq. (5) of the ECCV 2010 paper
    b = mean_p - a * mean_i  # Eq. (6)
    return box(a) * guide + box(b)  # Eq. (8): average of the windows' models


def dark_channel(image: np.ndarray, patch: int) -> np.ndarray:
    """Minimum over the colour channels and a ``patch`` x ``patch`` window."""
    from scipy.ndimage import minimum_filter

    return minimum_filter(image.min(axis=2), size=patch, mode="nearest")


def dehaze(image: np.ndarray) -> np.ndarray:
    """Dark channel prior: airlight from the haziest pixels, transmission, scene radiance."""
    h, w, _ = image.shape
    scale = max(h, w) / 600  # the paper's window and guide radius are for ~600 px images
    patch = max(3, round(DCP_PATCH * scale) | 1)
    radius = max(4, round(GUIDE_RADIUS * scale))
    dark = dark_channel(image, patch)
    # Airlight: the mean colour of the 0.1 % pixels with the brightest dark channel.
    top = max(1, dark.size // 1000)
    idx = np.argpartition(dark.ravel(), -top)[-top:]
    airlight = np.clip(image.reshape(-1, 3)[idx].mean(axis=0), 0.05, 1.0)
    t = 1 - DCP_OMEGA * dark_channel(image / airlight, patch)  # Eq. (12) of the CVPR paper
    t = guided_filter(_luminance(image), t, radius, GUIDE_EPS)
    t = np.clip(t, DCP_T0, 1.0)[..., None]
    return np.clip((image - airlight) / t + airlight, 0, 1)  # Eq. (22): J = (I - A) / t + A


def nl_means(image: np.ndarray) -> np.ndarray:
    """Non-local means with the noise level estimated from the image itself."""
    from skimage.restoration import denoise_nl_means, estimate_sigma

    sigma = float(np.mean(estimate_sigma(image, channel_axis=-1)))
    if sigma <= 0:
        return image
    return denoise_nl_means(
        image,
        h=0.8 * sigma,
        sigma=sigma,
        patch_size=5,
        patch_distance=6,
        fast_mode=True,
        channel_axis=-1,
    )


def brighten(image: np.ndarray) -> np.ndarray:
    """Exposure gain to put the scene's white at 1, then undo a typical darkening tone curve."""
    white = float(np.percentile(_luminance(image), LOW_LIGHT_WHITE))
    exposed = np.clip(image / max(white, 1e-3), 0, 1)
    return exposed ** (1 / LOW_LIGHT_GAMMA)


def enhance_low_light(image: np.ndarray) -> np.ndarray:
    """Brighten, then remove the noise that brightening made visible."""
    return np.clip(nl_means(brighten(image)), 0, 1)


def unsharp(image: np.ndarray) -> np.ndarray:
    """Unsharp mask: add back ``amount`` times the detail a Gaussian blur removes."""
    from scipy.ndimage import gaussian_filter

    soft = gaussian_filter(image, sigma=(UNSHARP_SIGMA, UNSHARP_SIGMA, 0), mode="reflect")
    return np.clip(image + UNSHARP_AMOUNT * (image - soft), 0, 1)


def _restorer(name: str) -> Callable[[np.ndarray], np.ndarray] | None:
    if name.startswith("noise_"):
        sigma = float(name.removeprefix("noise_"))
        return lambda image: denoise_bm3d(image, sigma)
    return {
        "haze": dehaze,
        "rain": median,
        "snow": median,
        "low_light": enhance_low_light,
        "blur": unsharp,
    }.get(name)


def restore(image: np.ndarray, kind: str) -> np.ndarray:
    """Restore ``image`` ((h, w, 3) in [0, 1]) degraded by ``kind``, e.g. "noise_25" or "L+H+R"."""
    out = np.asarray(image, dtype=np.float64)
    for name in reversed(parse_kind(kind)):  # the last degradation applied is undone first
        step = _restorer(name)
        if step is not None:
            out = step(out)
    return np.clip(out, 0, 1)
