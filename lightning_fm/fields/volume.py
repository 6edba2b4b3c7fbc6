"""Volume coverage: where IFM training points ``(z, x)`` between the plates are drawn
(docs/concepts/interaction-fields.md#training-volumes).

A sampler builds one point per given pair: ``sampler(x0, x1, L, generator=None) -> (z (b,), x (b, *dims))`` with
``x0, x1`` of shape ``(b, *dims)``. The regression minimiser is the same field direction wherever the sampling
density is positive, so the choice only changes where the network is accurate (and the variance of the targets).

* :class:`UniformVolume` - IFM/EFM ``Uniform``: ``z ~ U(eps, L - eps)`` on the pair's segment, optional tube noise.
* :class:`PFGMMixing` - EFM/IFM ``Uniform_mixing``: PFGM's heavy-tailed distance from a plate, then the segment.
* :class:`GaussianMixing` - IFM ``Gaussian_mixing``: a PFGM perturbation (height and radius) around a plate's charge.
* :class:`SlabAndBeyondVolume` - for fields that are not forward-only (EFM): the slab as :class:`UniformVolume`,
  plus a fraction of points behind the target plate (``z > L``), under arcs joining the pair's two ends, where
  the lines that cross the target plate loop back to it.
* :class:`PathVolume` - what CFM does: ``t ~ U(eps, 1 - eps)``, ``x ~ p_t(.|c)`` of a path, ``z = t L``.
* :class:`TimeDensityVolume` - a CFM time density as a volume: ``t ~`` a :mod:`lightning_fm.time_samplers` sampler,
  ``z = t L`` (the converse of :class:`lightning_fm.time_samplers.VolumeTime`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from lightning_fm.paths import GaussianPath
from lightning_fm.time_samplers import TimeSampler
from lightning_fm.utils.spec import Buildable, describe
from lightning_fm.utils.tensors import pad_like


def _uniform(n: int, like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.rand(n, generator=generator, device=like.device, dtype=like.dtype)


def _check(x0: Tensor, x1: Tensor, L: float, eps: float) -> float:
    if x0.shape != x1.shape:
        raise ValueError(f"source x0 {tuple(x0.shape)} and target x1 {tuple(x1.shape)} must have the same shape")
    L = float(L)
    if not L > 2 * eps:
        raise ValueError(f"plate distance L = {L} must exceed 2 * eps = {2 * eps}")
    return L


def segment(x0: Tensor, x1: Tensor, z: Tensor, L: float) -> Tensor:
    """The pair's straight segment at height z: ``(1 - z/L) x0 + (z/L) x1``."""
    s = pad_like(z / L, x0)
    return (1 - s) * x0 + s * x1


def path_points(path: GaussianPath, x0: Tensor, x1: Tensor, t: Tensor, generator: torch.Generator | None) -> Tensor:
    """``x ~ p_t(.|x0, x1)`` of ``path``, its Gaussian noise drawn from ``generator`` where given (and the path draws
    the standard Gaussian noise), else by the path itself."""
    noise = None
    if generator is not None and type(path).default_noise is GaussianPath.default_noise:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return path.sample(x0, x1, t, noise=noise).xt


def unit_sphere(shape: torch.Size, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Uniform directions on the unit sphere of R^D (D = elements of one sample), shaped ``(b, *dims)``."""
    g = torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)
    return g / pad_like(g.flatten(1).norm(dim=1).clamp_min(torch.finfo(g.dtype).tiny), g)


class VolumeSampler(Buildable, ABC):
    """Base: ``__call__(x0, x1, L, generator=None) -> (z, x)``, one training point per pair."""

    @abstractmethod
    def __call__(
        self, x0: Tensor, x1: Tensor, L: float, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]: ...

    def __repr__(self) -> str:
        return describe(self)


class UniformVolume(VolumeSampler):
    """``z ~ U(eps, L - eps)``, ``x = (1 - z/L) x0 + (z/L) x1 + tube_noise (1 + cos(2 pi (z - L/2)/L)) u`` with
    ``u`` uniform on the unit sphere. The noise is 0 at the plates and ``2 tube_noise`` at ``z = L/2``.

    Defaults = the IFM CIFAR-10/CelebA setting (``Uniform``, no noise, eps = 1e-3). With no noise the points lie on
    the pairs' segments, where a narrow-tube field is dominated by its own pair
    (docs/concepts/interaction-fields.md#reference-code-field).
    """

    def __init__(self, eps: float = 1e-3, tube_noise: float = 0.0) -> None:
        if not eps >= 0 or not tube_noise >= 0:
            raise ValueError(f"UniformVolume needs eps >= 0 and tube_noise >= 0, got {eps}, {tube_noise}")
        self.eps, self.tube_noise = float(eps), float(tube_noise)

    def __call__(self, x0, x1, L, generator=None):
        L = _check(x0, x1, L, self.eps)
        z = self.eps + (L - 2 * self.eps) * _uniform(x0.shape[0], x0, generator)
        return z, self.at(x0, x1, z, L, generator)

    def at(self, x0: Tensor, x1: Tensor, z: Tensor, L: float, generator: torch.Generator | None = None) -> Tensor:
        """The points at heights ``z``: the segment, plus the tube noise."""
        x = segment(x0, x1, z, L)
        if self.tube_noise > 0:
            bump = self.tube_noise * (1 + torch.cos(2 * math.pi * (z - L / 2) / L))
            x = x + pad_like(bump, x) * unit_sphere(x0.shape, x0, generator)
        return x


PLATES = ("target", "source")


def pfgm_distance(
    n: int,
    like: Tensor,
    sigma_end: float,
    tau: float,
    M: int,
    restrict_M: bool,
    m_law: str,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """PFGM's perturbation scale: ``(|N(0, sigma_end^2)|, (1 + tau)^m)``, the distance from the plate being their
    product. ``m_law="uniform"``: ``m ~ U[0, M]`` (PFGM, IFM ``Uniform_mixing``); ``"normal"``: ``m ~ M N(0, 1)``
    (what IFM's ``Gaussian_mixing`` code draws, though its comment says U[0, M]). ``restrict_M``: PFGM's
    ``m ~ U[0, 0.7 M]`` where the Gaussian draw is below 0.005."""
    if m_law == "uniform":
        m = _uniform(n, like, generator) * M
    else:
        m = torch.randn(n, generator=generator, device=like.device, dtype=like.dtype) * M
    base = torch.randn(n, generator=generator, device=like.device, dtype=like.dtype).abs() * sigma_end
    if restrict_M:
        m = torch.where(base < 0.005, _uniform(n, like, generator) * int(0.7 * M), m)
    return base, (1 + tau) ** m


class PFGMMixing(VolumeSampler):
    """IFM/EFM ``Uniform_mixing``: a PFGM distance ``d = |N(0, sigma_end^2)| (1 + tau)^m``, ``m ~ U[0, M]``, from
    the plate ``near`` (``"target"``: the data plate z = L of generation, where the reference code, whose data plate
    is its z = 0, puts it; ``"source"``: z = 0), i.e. ``z = L - d`` or ``z = d``, clamped to ``[eps, L - eps]``; then
    the point on the segment ``(1 - z/L) x0 + (z/L) x1``.

    Defaults are PFGM's CIFAR-10 values (sigma_end = 0.01, tau = 0.03, M = 291; Xu et al. 2022): d is roughly
    log-uniform from ~1e-3 to ~50 (``1.03^291 ~ 5.4e3``), so it concentrates near that plate and, for L below ~50,
    piles up at the other end (clamped). The IFM notebooks use sigma_end = 0.1, M = 191.
    """

    def __init__(
        self,
        sigma_end: float = 0.01,
        tau: float = 0.03,
        M: int = 291,
        eps: float = 1e-3,
        restrict_M: bool = False,
        near: str = "target",
    ) -> None:
        if not (sigma_end > 0 and tau >= 0 and M >= 0 and eps >= 0):
            raise ValueError(
                f"{type(self).__name__} needs sigma_end > 0, tau >= 0, M >= 0, eps >= 0; got "
                f"{sigma_end}, {tau}, {M}, {eps}"
            )
        if near not in PLATES:
            raise ValueError(f"{type(self).__name__}.near must be one of {list(PLATES)}, got {near!r}")
        self.sigma_end, self.tau, self.M, self.eps = float(sigma_end), float(tau), int(M), float(eps)
        self.restrict_M, self.near = bool(restrict_M), near

    def _distance(self, x0: Tensor, L: float, m_law: str, generator) -> tuple[Tensor, Tensor]:
        """``(z, (1 + tau)^m)`` with ``z`` at the clamped PFGM distance from the plate ``near``."""
        base, multiplier = pfgm_distance(
            x0.shape[0], x0, self.sigma_end, self.tau, self.M, self.restrict_M, m_law, generator
        )
        d = (base * multiplier).clamp(self.eps, L - self.eps)
        return (L - d if self.near == "target" else d), multiplier

    def __call__(self, x0, x1, L, generator=None):
        L = _check(x0, x1, L, self.eps)
        z, _ = self._distance(x0, L, "uniform", generator)
        return z, segment(x0, x1, z, L)


class GaussianMixing(PFGMMixing):
    """IFM ``Gaussian_mixing`` (its Colored-MNIST setting): a PFGM perturbation of the pair's point on the plate
    ``near``: with ``d`` as :class:`PFGMMixing` but ``m ~ M N(0, 1)`` (the reference code's draw),

        z = L - d (near the target) or d (near the source),
        x = x_plate + ||N(0, sigma_end^2 I_D)|| (1 + tau)^m u,   u uniform on the unit sphere of R^D,

    where ``x_plate`` is ``x1`` (near the target) or ``x0``. The radius and the height share ``(1 + tau)^m``, as in
    PFGM, so the points fill a cone around each charge. Defaults: the IFM Colored-MNIST notebook (sigma_end = 0.1,
    tau = 0.03, M = 191, eps = 1e-3).
    """

    def __init__(
        self,
        sigma_end: float = 0.1,
        tau: float = 0.03,
        M: int = 191,
        eps: float = 1e-3,
        restrict_M: bool = False,
        near: str = "target",
    ) -> None:
        super().__init__(sigma_end, tau, M, eps, restrict_M, near)

    def __call__(self, x0, x1, L, generator=None):
        L = _check(x0, x1, L, self.eps)
        z, multiplier = self._distance(x0, L, "normal", generator)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype) * self.sigma_end
        radius = noise.flatten(1).norm(dim=1) * multiplier
        plate = x1 if self.near == "target" else x0
        return z, plate + pad_like(radius, x0) * unit_sphere(x0.shape, x0, generator)


class PathVolume(VolumeSampler):
    """The CFM coverage: ``t ~ U(eps, 1 - eps)``, ``x ~ p_t(.|x0, x1)`` of ``path``, ``z = t L``.

    The natural coverage of :class:`~lightning_fm.fields.ForwardOnlyField` of the same path: its training points
    are then exactly CFM's.
    """

    def __init__(self, path: GaussianPath, eps: float = 1e-3) -> None:
        if not isinstance(path, GaussianPath):
            raise TypeError(f"PathVolume needs a lightning_fm.paths path, got {type(path).__name__}")
        if not 0 <= eps < 0.5:
            raise ValueError(f"PathVolume.eps must be in [0, 0.5), got {eps}")
        self.path, self.eps = path, float(eps)

    def __call__(self, x0, x1, L, generator=None):
        L = _check(x0, x1, L, self.eps * L)
        t = self.eps + (1 - 2 * self.eps) * _uniform(x0.shape[0], x0, generator)
        return t * L, path_points(self.path, x0, x1, t, generator)


class SlabAndBeyondVolume(VolumeSampler):
    """Coverage for EFM (docs/concepts/interaction-fields.md#efm): the slab, and the half-space behind the target plate.

    The Coulomb capacitor's lines leave the slab through the target plate wherever the field there points forward
    (in the continuum limit ``E_z(L+, x) = (p_L(x) - q(x)) / 2``, ``p_L`` = the source density smoothed by the
    Poisson kernel at distance L), and come back down onto the plate where ``q > p_L``. The sampler (phase 2 of
    :func:`lightning_fm.sampling.integrate_field_lines`) follows the learned field there, so it must be trained
    there too (the reference EFM toy uses a mesh that also covers ``z > L``).

    With probability ``1 - beyond`` a point is drawn in the slab as :class:`UniformVolume` (``eps``,
    ``tube_noise``), plus an isotropic Gaussian ``spread * sin(pi z / L) * N(0, I)``: when L is not small against
    the data's spread the lines bulge far out laterally in mid-slab (the fringe field of a finite capacitor).

    With probability ``beyond`` it is drawn behind the target plate, under an arc over the pair's chord extended
    by ``extend * d`` beyond both ends (``d = ||x1 - x0||``): with ``s, u ~ U(0, 1)`` and
    ``c = (1 + 2 extend) s - extend`` (the position along the chord: 0 at x0, 1 at x1),

        x = (1 - c) x0 + c x1 + beyond_noise * N(0, I),
        z = L + gap + height * (1 + 2 extend) d * sqrt(s (1 - s)) * u^power + |N(0, floor^2)|.

    ``height = 1`` is the half-disc over the extended chord; ``u^power`` fills it from the plate up (uniformly in
    height for ``power = 1``; ``power > 1`` puts more points near the plate, where most lines travel). ``extend`` and
    ``beyond_noise`` reach the lines that leave the outer edge of the source support outwards and come back from
    high above; ``floor`` adds a layer above the whole plate; ``gap`` (default ``eps``) leaves out a layer just
    behind it. Like every volume sampler this only chooses where the regression is accurate: the target is the
    exact superposed field wherever the point is (docs/concepts/interaction-fields.md#efm-target). Nothing is drawn
    below ``z = 0``: the sampler starts on the source plate and never goes there.
    """

    def __init__(
        self,
        eps: float = 1e-3,
        tube_noise: float = 0.0,
        spread: float = 0.0,
        beyond: float = 0.5,
        height: float = 1.0,
        extend: float = 0.0,
        power: float = 1.0,
        beyond_noise: float = 0.5,
        floor: float = 0.1,
        gap: float | None = None,
    ) -> None:
        values = dict(
            eps=eps,
            tube_noise=tube_noise,
            spread=spread,
            height=height,
            extend=extend,
            power=power,
            beyond_noise=beyond_noise,
            floor=floor,
            gap=eps if gap is None else gap,
        )
        bad = {k: v for k, v in values.items() if not v >= 0}
        if bad or not 0 <= beyond <= 1:
            raise ValueError(f"SlabAndBeyondVolume needs 0 <= beyond <= 1 (got {beyond}) and non-negative {bad}")
        self.slab = UniformVolume(eps, tube_noise)
        self.spread, self.beyond, self.height, self.extend = float(spread), float(beyond), float(height), float(extend)
        self.beyond_noise, self.floor, self.gap = float(beyond_noise), float(floor), float(values["gap"])
        self.power = float(power)

    def __call__(self, x0, x1, L, generator=None):
        z, x = self.slab(x0, x1, L, generator)
        L = float(L)
        if self.spread > 0:
            sigma = self.spread * torch.sin(math.pi * z / L)
            x = x + pad_like(sigma, x) * torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        n = x0.shape[0]
        outside = _uniform(n, x0, generator) < self.beyond
        s, u = _uniform(n, x0, generator), _uniform(n, x0, generator)
        span = 1 + 2 * self.extend
        d = (x1 - x0).flatten(1).norm(dim=1)
        up = self.height * span * d * torch.sqrt(s * (1 - s)) * u.pow(self.power)
        up = up + self.floor * torch.randn(n, generator=generator, device=x0.device, dtype=x0.dtype).abs()
        xb = segment(x0, x1, (span * s - self.extend) * L, L)
        if self.beyond_noise > 0:
            xb = xb + self.beyond_noise * torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return torch.where(outside, L + self.gap + up, z), torch.where(pad_like(outside, x), xb, x)


class TimeDensityVolume(VolumeSampler):
    """A volume whose ``z``-marginal is a given time density (docs/concepts/flow-matching.md#time-sampling):
    ``t ~ time_sampler``, ``z = clamp(t L, eps, L - eps)``, and ``x`` as the path would draw it at that ``t``
    (``path`` given: ``x ~ p_t(.|x0, x1)``, as :class:`PathVolume`) or else as :class:`UniformVolume` does at that
    ``z`` (the segment plus its ``tube_noise``). The converse of :class:`lightning_fm.time_samplers.VolumeTime`:
    ``TimeDensityVolume(VolumeTime(volume, L))`` has the slab ``z``-marginal of ``volume`` (up to the clamp), and
    ``TimeDensityVolume(UniformTime(), path, eps=0)`` draws the same kind of points as ``PathVolume(path, eps=0)``.
    The plate distance L is the call's, as for every volume; ``eps`` keeps the points off the plates (0: no clamp).
    """

    def __init__(
        self,
        time_sampler: TimeSampler,
        path: GaussianPath | None = None,
        eps: float = 1e-3,
        tube_noise: float = 0.0,
    ) -> None:
        if not isinstance(time_sampler, TimeSampler):
            raise TypeError(
                f"TimeDensityVolume needs a lightning_fm.time_samplers sampler, got {type(time_sampler).__name__}"
            )
        if path is not None and not isinstance(path, GaussianPath):
            raise TypeError(f"TimeDensityVolume.path must be a lightning_fm.paths path, got {type(path).__name__}")
        if path is not None and tube_noise > 0:
            raise ValueError("TimeDensityVolume: tube_noise is the path-free option; the path gives its own noise")
        if not eps >= 0 or not tube_noise >= 0:
            raise ValueError(f"TimeDensityVolume needs eps >= 0 and tube_noise >= 0, got {eps}, {tube_noise}")
        self.time_sampler, self.path = time_sampler, path
        self.eps, self.tube_noise = float(eps), float(tube_noise)

    def __call__(self, x0, x1, L, generator=None):
        L = _check(x0, x1, L, self.eps)
        t = self.time_sampler.sample(x0.shape[0], generator, x0.device, x0.dtype)
        z = (t * L).clamp(self.eps, L - self.eps)
        if self.path is None:
            return z, UniformVolume(0.0, self.tube_noise).at(x0, x1, z, L, generator)
        return z, path_points(self.path, x0, x1, z / L, generator)


VOLUMES = {
    "uniform": UniformVolume,
    "pfgm_mixing": PFGMMixing,
    "gaussian_mixing": GaussianMixing,
    "path": PathVolume,
    "slab_and_beyond": SlabAndBeyondVolume,
    "time_density": TimeDensityVolume,
}
