"""How close a reconstructed image is to a real one: PSNR and SSIM.

Images come in the data's normalized scale ((pixel / 255 - 0.5) / 0.5, in
[-1, 1]), as `(784,)` or `(28, 28)`, and are scored as [0, 1] pixels, the
scale the attack literature reports PSNR in (Geiping et al. 2020; Zhu et al.
2019). SSIM is written here in torch (Wang et al. 2004) instead of taken from
scikit-image or torchmetrics, neither of which the project depends on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch.nn import functional as F

IMAGE_SIDE = 28


@dataclass(frozen=True)
class Match:
    """The best candidate/truth pair: their row indices and scores ([0, 1] pixels).
    `psnr_db` is `math.inf` for identical images."""

    candidate: int
    truth: int
    psnr_db: float
    ssim: float


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """Normalized-scale images -> float64 [0, 1] pixels `(n, 784)`, clamped."""
    flat = images.detach().reshape(-1, IMAGE_SIDE * IMAGE_SIDE).double()
    return (flat * 0.5 + 0.5).clamp_(0, 1)


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio of two images in dB, peak 1 ([0, 1] pixels):
    `10 log10(1 / MSE)`; `math.inf` when they are identical."""
    mse = float((to_pixels(a) - to_pixels(b)).pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


@lru_cache(maxsize=4)
def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g /= g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 7, sigma: float = 1.5) -> float:
    """Structural similarity (Wang, Bovik, Sheikh & Simoncelli 2004) of two images.

    Their standard form: local means, variances and covariance under a Gaussian
    window (sigma 1.5; 7x7 rather than their 11x11, since an 11x11 window leaves
    only 18x18 of a 28x28 image's positions), `K1 = 0.01, K2 = 0.03`, dynamic
    range 1, the map averaged over the positions where the window fits ("valid",
    as their reference code). 1 for identical images.
    """
    x = to_pixels(a).reshape(1, 1, IMAGE_SIDE, IMAGE_SIDE)
    y = to_pixels(b).reshape(1, 1, IMAGE_SIDE, IMAGE_SIDE)
    kernel = _gaussian_window(window, sigma)
    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = F.conv2d(x, kernel), F.conv2d(y, kernel)
    var_x = F.conv2d(x * x, kernel) - mu_x**2
    var_y = F.conv2d(y * y, kernel) - mu_y**2
    cov = F.conv2d(x * y, kernel) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    denominator = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return float((numerator / denominator).mean())


def nearest(candidates: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each candidate, the position of the truth image nearest it and their PSNR
    (dB, `inf` for identical images).

    All pairs' squared distances in one float32 matrix product in the data's own
    scale (`|c|^2 + |t|^2 - 2 c.t`), so that the truth is never copied; that form
    loses precision for near-identical pairs, so each candidate's nearest image is
    rescored exactly in [0, 1] pixels.
    """
    if len(candidates) == 0 or len(truth) == 0:
        raise ValueError("matching needs at least one candidate and one truth image")
    c = candidates.detach().reshape(len(candidates), -1).float().clamp(-1, 1)
    t = truth.detach().reshape(len(truth), -1).float()
    distances = (c * c).sum(1)[:, None] + (t * t).sum(1)[None, :] - 2 * c @ t.T
    closest = distances.argmin(dim=1)
    mse = (to_pixels(c) - to_pixels(t[closest])).pow(2).mean(dim=1)
    return closest, 10 * torch.log10(1 / mse)  # 1 / 0 = inf: identical


def best_match(candidates: torch.Tensor, truth: torch.Tensor) -> Match:
    """The (candidate, truth) pair with the highest PSNR, and its SSIM (computed for
    the winning pair only)."""
    closest, scores = nearest(candidates, truth)
    best = int(scores.argmax())
    j = int(closest[best])
    return Match(best, j, float(scores[best]), ssim(candidates[best], truth[j]))


RECOVERED_DB = 30.0  # a reconstruction this close is the image itself, to the eye


def recovered(candidates: torch.Tensor, truth: torch.Tensor) -> int:
    """How many distinct truth images some candidate rebuilds to `RECOVERED_DB` or more."""
    closest, scores = nearest(candidates, truth)
    return len(set(closest[scores >= RECOVERED_DB].tolist()))


PROXY_POOL = 4  # a proxy image: the mean of each 4x4 block, 49 values
SHORTLIST = 8  # per candidate, the nearest images by proxy that are scored exactly


def proxies(images: torch.Tensor) -> torch.Tensor:
    """Each image as its 7x7 block means `(n, 49)`, in the data's scale: sixteen times
    fewer values, so that finding each candidate's near images among a client's
    ~20,000 costs a few milliseconds instead of a tenth of a second."""
    side = IMAGE_SIDE
    squares = images.detach().reshape(-1, 1, side, side).float()
    return F.avg_pool2d(squares, PROXY_POOL).reshape(len(squares), -1)


def shortlist(candidates: torch.Tensor, truth_proxies: torch.Tensor) -> torch.Tensor:
    """Positions in the truth of the `SHORTLIST` images nearest each candidate by proxy
    (distinct, ascending): where `best_match` then looks exactly. The best pair by
    PSNR is almost always among them (an image close pixel by pixel is close block by
    block); a near-miss only among faint, blurred reconstructions."""
    c = proxies(candidates.clamp(-1, 1))
    t = truth_proxies
    distances = (c * c).sum(1)[:, None] + (t * t).sum(1)[None, :] - 2 * c @ t.T
    nearest = distances.topk(min(SHORTLIST, len(t)), dim=1, largest=False).indices
    return torch.unique(nearest.flatten())
