"""2-D toy distributions of the CFM / FFJORD literature, as pure torch (and scikit-learn) samplers.

Every sampler is ``sample(n, generator) -> (x, y)``: ``x`` ``(n, 2)`` float32 samples, ``y`` ``(n,)`` int64 component
labels (the mixture component, moon, ring, arm, cell, ...; zeros for a distribution without components). Samples
are i.i.d.: components are drawn independently per sample (never in blocks), so two batches paired index by index
are independent. A sampler is deterministic given its ``torch.Generator``; the scikit-learn ones draw their numpy
seed from that generator.

Scales follow the literature so that results are comparable with published numbers:
``8gaussians`` and ``moons`` as in torchcfm (Tong et al., 2023), ``circles``, ``checkerboard``, ``swissroll``,
``spirals`` (FFJORD's "2spirals"), ``pinwheel`` and ``rings`` as in FFJORD (Grathwohl et al., 2019).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from sklearn import datasets as skd
from torch import Tensor

Sampler = Callable[[int, torch.Generator], tuple[Tensor, Tensor]]


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from a tuple of non-negative ints (numpy's SeedSequence hash: distinct tuples of the same
    length give unrelated seeds). Used for the (seed, stream, epoch, rank, step) seeds of the DataModules."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0]) & (2**63 - 1)


def make_generator(*keys: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed` of ``keys``."""
    return torch.Generator().manual_seed(derive_seed(*keys))


def _numpy_seed(generator: torch.Generator) -> int:
    """A numpy/scikit-learn seed drawn from the torch generator (so the torch generator alone fixes the output)."""
    return int(torch.randint(0, 2**32 - 1, (1,), generator=generator))


def _zeros(n: int) -> Tensor:
    return torch.zeros(n, dtype=torch.int64)


def _out(x, y) -> tuple[Tensor, Tensor]:
    return torch.as_tensor(np.asarray(x), dtype=torch.float32), torch.as_tensor(np.asarray(y), dtype=torch.int64)


def gaussian(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Standard normal N(0, I) in 2-D (the usual CFM source). Labels: zeros."""
    return torch.randn(n, 2, generator=generator), _zeros(n)


EIGHT_GAUSSIANS_RADIUS = 5.0
EIGHT_GAUSSIANS_STD = 0.1**0.25  # torchcfm: covariance sqrt(0.1) * I, so std 0.1**0.25 ~ 0.562 per coordinate


def eight_gaussians(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Mixture of 8 equal-weight Gaussians centred on a circle of radius 5 at angles ``k * pi / 4`` (k = label),
    each with covariance ``sqrt(0.1) * I`` (std ``0.1**0.25 ~ 0.562``): torchcfm's ``sample_8gaussians`` scale."""
    labels = torch.randint(0, 8, (n,), generator=generator)
    angles = labels.to(torch.float32) * (math.pi / 4)
    centres = EIGHT_GAUSSIANS_RADIUS * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    return centres + EIGHT_GAUSSIANS_STD * torch.randn(n, 2, generator=generator), labels


def moons(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """scikit-learn ``make_moons(noise=0.2)`` mapped by ``x * 3 - 1`` (torchcfm ``sample_moons``). Before noise the
    upper moon spans x in [-4, 2], the lower moon x in [-1, 5]; y in [-2.5, 2]; noise std 0.6. Labels: the moon."""
    x, y = skd.make_moons(n, noise=0.2, random_state=_numpy_seed(generator))
    return _out(x * 3 - 1, y)


def circles(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """FFJORD ``circles``: scikit-learn ``make_circles(factor=0.5, noise=0.08)`` times 3: concentric circles of
    radius 3 (label 0) and 1.5 (label 1), Gaussian noise std 0.24 per coordinate."""
    x, y = skd.make_circles(n, factor=0.5, noise=0.08, random_state=_numpy_seed(generator))
    return _out(x * 3, y)


def checkerboard(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """FFJORD ``checkerboard``: uniform on the 8 squares of side 2 of [-4, 4]^2 where
    ``floor(x/2) + floor(y/2)`` is even. Labels: the square, ``2 * column + row // 2`` in 0..7."""
    x1 = torch.rand(n, generator=generator) * 4 - 2
    x2 = torch.rand(n, generator=generator) - torch.randint(0, 2, (n,), generator=generator).to(torch.float32) * 2
    x2 = x2 + torch.floor(x1) % 2
    x = torch.stack([x1, x2], dim=1) * 2
    cells = torch.floor(x / 2).to(torch.int64) + 2  # column, row in 0..3
    return x, 2 * cells[:, 0] + cells[:, 1] // 2


def swissroll(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """FFJORD ``swissroll``: scikit-learn ``make_swiss_roll(noise=1.0)``, coordinates (x, z) divided by 5: the
    spiral ``(t cos t, t sin t) / 5`` with ``t ~ U[1.5 pi, 4.5 pi]`` (radius 0.94..2.83), noise std 0.2. Labels: 0."""
    x, _ = skd.make_swiss_roll(n, noise=1.0, random_state=_numpy_seed(generator))
    return _out(x[:, [0, 2]] / 5.0, np.zeros(n))


def scurve(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """scikit-learn ``make_s_curve(noise=0.1)``, coordinates (x, z) times 2: ``2 (sin t, sign(t)(cos t - 1))`` with
    ``t ~ U[-1.5 pi, 1.5 pi]``, so x in [-2, 2], y in [-4, 4] (the [-4, 4] scale of the other toys), noise std 0.2.
    Mean 0, per-coordinate variance ``4 * (1/2 + 0.01)`` for x. Labels: 0."""
    x, _ = skd.make_s_curve(n, noise=0.1, random_state=_numpy_seed(generator))
    return _out(x[:, [0, 2]] * 2.0, np.zeros(n))


def spirals(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """FFJORD ``2spirals``: two interleaved arms ``±(-s cos s + u1/2, s sin s + u2/2) / 3`` with
    ``s = 3 pi sqrt(U)`` and ``u1, u2 ~ U[0, 1]``, plus N(0, 0.1^2) noise: radius up to ~pi. Labels: the arm."""
    labels = torch.randint(0, 2, (n,), generator=generator)
    s = torch.sqrt(torch.rand(n, generator=generator)) * 3 * math.pi
    u = torch.rand(n, 2, generator=generator) * 0.5
    arm = torch.stack([-torch.cos(s) * s, torch.sin(s) * s], dim=1) + u
    sign = 1.0 - 2.0 * labels.to(torch.float32)
    x = arm * sign[:, None] / 3 + 0.1 * torch.randn(n, 2, generator=generator)
    return x, labels


def pinwheel(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """FFJORD ``pinwheel``: 5 arms; radial coordinate ``1 + 0.3 N``, tangential ``0.1 N``, rotated by
    ``2 pi k / 5 + 0.25 exp(radial)`` and scaled by 2 (mean radius ~2). Labels: the arm k."""
    num_classes, radial_std, tangential_std, rate = 5, 0.3, 0.1, 0.25
    labels = torch.randint(0, num_classes, (n,), generator=generator)
    features = torch.randn(n, 2, generator=generator) * torch.tensor([radial_std, tangential_std])
    features[:, 0] += 1.0
    angles = labels.to(torch.float32) * (2 * math.pi / num_classes) + rate * torch.exp(features[:, 0])
    c, s = torch.cos(angles), torch.sin(angles)
    # FFJORD's einsum("ti,tij->tj", features, [[c, -s], [s, c]])
    x = torch.stack([features[:, 0] * c + features[:, 1] * s, -features[:, 0] * s + features[:, 1] * c], dim=1)
    return 2 * x, labels


RINGS_RADII = (3.0, 2.25, 1.5, 0.75)


def rings(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """FFJORD ``rings``: 4 concentric circles of radius 3, 2.25, 1.5, 0.75 (label 0..3), each with probability 1/4
    and a uniform angle (FFJORD spaces the angles evenly; here they are i.i.d.), plus N(0, 0.08^2) noise."""
    labels = torch.randint(0, len(RINGS_RADII), (n,), generator=generator)
    angles = torch.rand(n, generator=generator) * 2 * math.pi
    radii = torch.tensor(RINGS_RADII)[labels]
    x = radii[:, None] * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    return x + 0.08 * torch.randn(n, 2, generator=generator), labels


TOY_DISTRIBUTIONS: dict[str, Sampler] = {
    "gaussian": gaussian,
    "8gaussians": eight_gaussians,
    "moons": moons,
    "circles": circles,
    "checkerboard": checkerboard,
    "swissroll": swissroll,
    "scurve": scurve,
    "spirals": spirals,
    "pinwheel": pinwheel,
    "rings": rings,
}


def sample_toy(name: str, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Draw ``n`` samples ``(x (n, 2) float32, y (n,) int64)`` of the toy distribution ``name``.

    ``generator=None`` uses torch's global generator.
    """
    if name not in TOY_DISTRIBUTIONS:
        raise ValueError(f"unknown toy distribution {name!r}; choose one of {sorted(TOY_DISTRIBUTIONS)}")
    if n < 1:
        raise ValueError(f"the number of samples must be >= 1, got {n}")
    generator = torch.default_generator if generator is None else generator
    x, y = TOY_DISTRIBUTIONS[name](int(n), generator)
    return x.to(torch.float32).contiguous(), y.to(torch.int64)
