"""2-D toy distributions of the CFM / FFJORD literature, built exactly as the cited code builds them.

Every sampler is ``sample(n, generator) -> (x, y)``: ``x`` ``(n, 2)`` float32 samples, ``y`` ``(n,)`` int64 labels
(the component: moon, ring, arm, cell, ...; zeros for a distribution without components). A sampler is
deterministic given its ``torch.Generator`` (the scikit-learn ones draw their numpy seed from it).

The cited constructions are not all i.i.d.: torchcfm's moons, scikit-learn's circles and FFJORD's rings space their
points evenly along the curves, FFJORD's pinwheel and rings put the same number of points on every arm or ring, its
2spirals mirrors one arm onto the other. They are reproduced as published (a batch of n is one draw of the
construction at n); the rows are then put in random order, which changes no set of points but keeps components from
coming in blocks. Two draws of such a construction are closer to each other than an i.i.d. sample of its density is
to either (the points sit on the same grid): ``sample_toy(..., iid=True)`` gives the i.i.d. sample a perfect model
would produce, the reference of an honest W2 noise floor.

* ``8gaussians``, ``moons``: torchcfm ``utils.sample_8gaussians`` / ``sample_moons`` (Tong et al., 2023), the CFM
  literature's 8gaussians -> moons benchmark.
* ``circles``, ``checkerboard``, ``swissroll``, ``spirals`` (FFJORD's ``2spirals``), ``pinwheel``, ``rings``:
  FFJORD ``lib/toy_data.py`` (Grathwohl et al., 2019).
* ``noisy_moons`` (scikit-learn's ``make_moons(noise=0.2)`` at torchcfm's scale) and ``scurve`` are this
  project's own and follow no publication.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from lightning_fm.utils.seeding import numpy_seed

Sampler = Callable[[int, torch.Generator], tuple[Tensor, Tensor]]


def _sklearn_datasets():
    """scikit-learn's ``datasets``, imported where a toy needs it (not at start-up)."""
    from sklearn import datasets

    return datasets


def _zeros(n: int) -> Tensor:
    return torch.zeros(n, dtype=torch.int64)


def _out(x, y) -> tuple[Tensor, Tensor]:
    return torch.as_tensor(np.asarray(x), dtype=torch.float32), torch.as_tensor(np.asarray(y), dtype=torch.int64)


def _shuffled(x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    order = torch.randperm(x.shape[0], generator=generator)
    return x[order], y[order]


def gaussian(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Standard normal N(0, I) in 2-D (the usual CFM source). Labels: zeros."""
    return torch.randn(n, 2, generator=generator), _zeros(n)


#: torchcfm's ``eight_normal_sample`` centres, in its order (the label is the index), before the scale 5.
EIGHT_CENTRES = (
    (1.0, 0.0),
    (-1.0, 0.0),
    (0.0, 1.0),
    (0.0, -1.0),
    (0.5**0.5, 0.5**0.5),
    (0.5**0.5, -(0.5**0.5)),
    (-(0.5**0.5), 0.5**0.5),
    (-(0.5**0.5), -(0.5**0.5)),
)
EIGHT_GAUSSIANS_SCALE = 5.0
EIGHT_GAUSSIANS_STD = 0.1**0.25  # torchcfm: MultivariateNormal(0, sqrt(0.1) * I), so std 0.1**0.25 ~ 0.562


def eight_gaussians(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """torchcfm ``sample_8gaussians``: ``5 c_k + N(0, sqrt(0.1) I)`` with ``k`` uniform over the 8 unit vectors
    :data:`EIGHT_CENTRES` (i.i.d.; the label is k)."""
    labels = torch.randint(0, 8, (n,), generator=generator)
    centres = EIGHT_GAUSSIANS_SCALE * torch.tensor(EIGHT_CENTRES)[labels]
    return centres + EIGHT_GAUSSIANS_STD * torch.randn(n, 2, generator=generator), labels


MOONS_JITTER = 0.2


def moons(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """torchcfm ``sample_moons`` (= torchdyn ``generate_moons(n, noise=0.2) * 3 - 1``): ``n // 2`` points evenly
    spaced on the upper arc ``(cos a, sin a)``, ``a = linspace(0, pi)``, and the other ``n - n // 2`` on the lower
    arc ``(1 - cos a, 1 - sin a - 1/2)``; each point moved by ONE uniform jitter ``u ~ U[0, 0.2)`` added to both
    coordinates; then ``x * 3 - 1``. Labels: 0 upper, 1 lower moon."""
    n_out, n_in = n // 2, n - n // 2
    a_out, a_in = torch.linspace(0, math.pi, n_out), torch.linspace(0, math.pi, n_in)
    x = torch.cat(
        [
            torch.stack([torch.cos(a_out), torch.sin(a_out)], 1),
            torch.stack([1 - torch.cos(a_in), 1 - torch.sin(a_in) - 0.5], 1),
        ]
    )
    x = x + MOONS_JITTER * torch.rand(n, 1, generator=generator)
    y = torch.cat([torch.zeros(n_out, dtype=torch.int64), torch.ones(n_in, dtype=torch.int64)])
    return _shuffled(x * 3 - 1, y, generator)


def noisy_moons(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """scikit-learn ``make_moons(noise=0.2)`` mapped by ``x * 3 - 1`` (torchcfm's scale, not its construction):
    Gaussian noise of std 0.6 per coordinate after scaling, a much wider target than :func:`moons`."""
    x, y = _sklearn_datasets().make_moons(n, noise=0.2, random_state=numpy_seed(generator))
    return _out(x * 3 - 1, y)


def circles(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """FFJORD ``circles``: scikit-learn ``make_circles(factor=0.5, noise=0.08)`` times 3: concentric circles of
    radius 3 (label 0) and 1.5 (label 1), evenly spaced, Gaussian noise std 0.24 per coordinate."""
    x, y = _sklearn_datasets().make_circles(n, factor=0.5, noise=0.08, random_state=numpy_seed(generator))
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
    x, _ = _sklearn_datasets().make_swiss_roll(n, noise=1.0, random_state=numpy_seed(generator))
    return _out(x[:, [0, 2]] / 5.0, np.zeros(n))


def scurve(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """scikit-learn ``make_s_curve(noise=0.1)``, coordinates (x, z) times 2: ``2 (sin t, sign(t)(cos t - 1))`` with
    ``t ~ U[-1.5 pi, 1.5 pi]``, so x in [-2, 2], y in [-4, 4], noise std 0.2. Labels: 0."""
    x, _ = _sklearn_datasets().make_s_curve(n, noise=0.1, random_state=numpy_seed(generator))
    return _out(x[:, [0, 2]] * 2.0, np.zeros(n))


def spirals(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """FFJORD ``2spirals``: one arm ``a = (-s cos s + u1/2, s sin s + u2/2)`` with ``s = 3 pi sqrt(U)`` and
    ``u1, u2 ~ U[0, 1)`` for ``ceil(n / 2)`` points, the other arm its mirror image ``-a`` (the same points), both
    divided by 3, plus N(0, 0.1^2) noise on every point. Labels: the arm (0: ``a``, 1: ``-a``)."""
    m = n - n // 2
    s = torch.sqrt(torch.rand(m, 1, generator=generator)) * 3 * math.pi
    arm = torch.cat(
        [
            -torch.cos(s) * s + torch.rand(m, 1, generator=generator) * 0.5,
            torch.sin(s) * s + torch.rand(m, 1, generator=generator) * 0.5,
        ],
        1,
    )
    x = torch.cat([arm, -arm])[:n] / 3
    x = x + 0.1 * torch.randn(n, 2, generator=generator)
    y = torch.cat([torch.zeros(m, dtype=torch.int64), torch.ones(m, dtype=torch.int64)])[:n]
    return _shuffled(x, y, generator)


def pinwheel(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """FFJORD ``pinwheel``: 5 arms with the same number of points (``arange(n) % 5``; FFJORD drops the remainder
    of ``n / 5``); radial coordinate ``1 + 0.3 N``, tangential ``0.1 N``, rotated by ``2 pi k / 5 + 0.25
    exp(radial)`` and scaled by 2 (mean radius ~2). Labels: the arm k."""
    num_classes, radial_std, tangential_std, rate = 5, 0.3, 0.1, 0.25
    labels = torch.sort(torch.arange(n) % num_classes).values
    features = torch.randn(n, 2, generator=generator) * torch.tensor([radial_std, tangential_std])
    features[:, 0] += 1.0
    angles = labels.to(torch.float32) * (2 * math.pi / num_classes) + rate * torch.exp(features[:, 0])
    c, s = torch.cos(angles), torch.sin(angles)
    # FFJORD's einsum("ti,tij->tj", features, [[c, -s], [s, c]])
    x = torch.stack([features[:, 0] * c + features[:, 1] * s, -features[:, 0] * s + features[:, 1] * c], dim=1)
    return _shuffled(2 * x, labels, generator)


RINGS_RADII = (3.0, 2.25, 1.5, 0.75)


def rings(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """FFJORD ``rings``: 4 concentric circles of radius 3, 2.25, 1.5 (``n // 4`` points each) and 0.75 (the
    rest), the points of each circle at evenly spaced angles ``2 pi k / n_ring``, plus N(0, 0.08^2) noise.
    Labels: the ring, 0..3 from the outside in."""
    counts = [n // 4, n // 4, n // 4, n - 3 * (n // 4)]
    points, labels = [], []
    for label, (radius, count) in enumerate(zip(RINGS_RADII, counts)):
        angles = torch.arange(count, dtype=torch.float32) * (2 * math.pi / max(count, 1))
        points.append(radius * torch.stack([torch.cos(angles), torch.sin(angles)], 1))
        labels.append(torch.full((count,), label, dtype=torch.int64))
    x, y = _shuffled(torch.cat(points), torch.cat(labels), generator)
    return x + 0.08 * torch.randn(n, 2, generator=generator), y


TOY_DISTRIBUTIONS: dict[str, Sampler] = {
    "gaussian": gaussian,
    "8gaussians": eight_gaussians,
    "moons": moons,
    "noisy_moons": noisy_moons,
    "circles": circles,
    "checkerboard": checkerboard,
    "swissroll": swissroll,
    "scurve": scurve,
    "spirals": spirals,
    "pinwheel": pinwheel,
    "rings": rings,
}

#: classes of each distribution's labels
TOY_CLASSES = {
    "gaussian": 1,
    "8gaussians": 8,
    "moons": 2,
    "noisy_moons": 2,
    "circles": 2,
    "checkerboard": 8,
    "swissroll": 1,
    "scurve": 1,
    "spirals": 2,
    "pinwheel": 5,
    "rings": 4,
}


#: constructions whose draws are not i.i.d. (evenly spaced, balanced or mirrored points)
NOT_IID = frozenset({"moons", "circles", "spirals", "pinwheel", "rings"})
#: ``iid=True`` draws a random subset of one construction this many times larger
IID_OVERSAMPLING = 64


def sample_toy(name: str, n: int, generator: torch.Generator | None = None, iid: bool = False) -> tuple[Tensor, Tensor]:
    """Draw ``n`` samples ``(x (n, 2) float32, y (n,) int64)`` of the toy distribution ``name``.

    ``iid=True``: i.i.d. samples of the construction's density, for the constructions in :data:`NOT_IID` a random
    n-subset of one draw of ``IID_OVERSAMPLING * n`` points. ``generator=None`` uses torch's global generator.
    """
    if name not in TOY_DISTRIBUTIONS:
        raise ValueError(f"unknown toy distribution {name!r}; choose one of {sorted(TOY_DISTRIBUTIONS)}")
    if n < 1:
        raise ValueError(f"the number of samples must be >= 1, got {n}")
    generator = torch.default_generator if generator is None else generator
    if iid and name in NOT_IID:
        x, y = TOY_DISTRIBUTIONS[name](IID_OVERSAMPLING * int(n), generator)
        keep = torch.randperm(len(x), generator=generator)[: int(n)]
        x, y = x[keep], y[keep]
    else:
        x, y = TOY_DISTRIBUTIONS[name](int(n), generator)
    return x.to(torch.float32).contiguous(), y.to(torch.int64)
