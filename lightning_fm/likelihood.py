"""Log-likelihoods of flow models by the instantaneous change of variables
(docs/concepts/likelihoods.md#change-of-variables). Pure torch.

For ``dx/dt = v(x, t)`` carrying the source density ``p_0`` (t = 0) to ``p_1`` (t = 1),

    d/dt log p_t(x(t)) = -div v(x(t), t),   so   log p_1(x) = log p_0(x(0)) - int_0^1 div v(x(t), t) dt.

:func:`log_likelihood` integrates the augmented state ``(x, a)`` with ``dx/dt = v``, ``da/dt = div v`` BACKWARD from
``x(1) = x, a(1) = 0`` to t = 0, with the solvers of :mod:`lightning_fm.sampling` (one state tensor ``(B, D + 1)``:
the flattened x and a). Then ``a(0) = int_1^0 div v dt = -int_0^1 div v dt`` and

    log p_1(x) = log p_0(x(0)) + a(0).

The divergence is either exact, ``div v = sum_i dv_i/dx_i`` by one autograd pass per dimension (D up to a few
hundred), or Hutchinson's estimate ``div v ~ (1/K) sum_k e_k^T (dv/dx) e_k`` with K = ``probes`` vector-Jacobian
products, ``E[e e^T] = I`` (Rademacher +-1 or standard Gaussian entries), the probes drawn once and kept fixed
along the whole trajectory. The state x does not depend on the probes, so with a fixed-step method the estimate of
``log p_1`` is exactly unbiased for the discretised integral; with dopri5 the step sizes also see ``a`` (the error
norm covers the whole state), which biases it by no more than the solver tolerance.

Any forward-only model has a density this way: a CFM velocity ``v_theta``, and a forward-only IFM field through the
duality ``v = L f_x / f_z`` at ``z = t L`` (docs/concepts/duality.md#time-and-velocity,
:class:`lightning_fm.duality.FieldAsVelocity`). A field that is not forward-only (EFM) has no time variable and no
density.

Bits per dimension of quantised data (:func:`dequantize`, :func:`bits_per_dim`): data on a grid of ``levels`` values
in [-1, 1] with spacing ``delta = 2 / (levels - 1)`` (8-bit images ``u8 / 127.5 - 1``: levels 256; the 8x8 digits
``pixel / 8 - 1``, pixels 0..16: levels 17, delta 1/8) are dequantised over the cell centred on each grid value,
``y = x + delta (U - 1/2)``, ``U ~ U[0, 1)^D``. The probability of the grid point is
``P(x) = int_cell p(y) dy >= delta^D exp(E_U log p(y))`` (Jensen), so

    bpd = -log2 P(x) / D <= E_U[-log p(y)] / (D ln 2) - log2(delta) = E_U[-log p(y)] / (D ln 2) + log2((levels-1)/2).

The constant is 7 - log2(256/255) (about 6.994) for this package's 8-bit scaling, 3 for the digits; the
``y = 2 (x + U)/256 - 1`` convention of the literature (docs/concepts/likelihoods.md#bits-per-dim) gives exactly 7. A
one-sample estimate of ``E_U`` is unbiased for the bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lightning_fm.sampling.ode import FIXED_STEP_STAGES, check_solver_options, integrate

Velocity = Callable[[Tensor, Tensor], Tensor]
LogProb = Callable[[Tensor], Tensor]

DIVERGENCES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")


@dataclass
class LikelihoodResult:
    """``log_prob`` ``(B,)``: ``log p_1(x)`` of each point; ``nfe``: evaluations of the velocity (one batched call
    each, every one followed by D (exact) or ``probes`` (Hutchinson) backward passes); ``x0``: the points carried back
    to t = 0 ``(B, *dims)``; ``source_log_prob``: ``log p_0(x0)`` ``(B,)``; ``log_det``: ``a(0) = -int_0^1 div v dt``
    ``(B,)`` (``log_prob = source_log_prob + log_det``); ``guarded``: ``(B,)`` bool, the lines along which a
    forward-only IFM field had ``f_z <= min_fz`` at some evaluation (there ``v = 0`` was used, so their
    ``log_prob`` is not the model's density), None for a velocity model; ``info``: counts (``backward_passes``,
    ``guarded_evaluations``, ...)."""

    log_prob: Tensor
    nfe: int
    x0: Tensor
    source_log_prob: Tensor
    log_det: Tensor
    guarded: Tensor | None = None
    info: dict[str, float] = field(default_factory=dict)


# -- divergences -------------------------------------------------------------------------------------------------
def exact_divergence(v: Tensor, x: Tensor) -> Tensor:
    """``sum_i dv_i/dx_i`` per row ``(B,)`` by one backward pass per dimension (``v`` computed from ``x`` with rows
    that do not interact, e.g. no batch statistics)."""
    flat = v.flatten(1)
    div = torch.zeros(x.shape[0], dtype=v.dtype, device=v.device)
    if not v.requires_grad:
        return div  # v does not depend on x (e.g. a constant)
    for i in range(flat.shape[1]):
        (grad,) = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=True, allow_unused=True)
        if grad is not None:
            div = div + grad.flatten(1)[:, i]
    return div


def hutchinson_divergence(v: Tensor, x: Tensor, probes: Tensor) -> Tensor:
    """``(1/K) sum_k e_k^T (dv/dx) e_k`` per row ``(B,)`` with ``probes`` ``(K, B, *dims)``: one vector-Jacobian
    product per probe."""
    div = torch.zeros(x.shape[0], dtype=v.dtype, device=v.device)
    if not v.requires_grad:
        return div
    for k in range(probes.shape[0]):
        (grad,) = torch.autograd.grad((v * probes[k]).sum(), x, retain_graph=True, allow_unused=True)
        if grad is not None:
            div = div + (grad * probes[k]).flatten(1).sum(1)
    return div / probes.shape[0]


def draw_probes(
    shape: tuple[int, ...], probes: int, kind: str, like: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """``(probes, *shape)`` Hutchinson probes with ``E[e e^T] = I``: Rademacher (+-1) or standard Gaussian entries,
    drawn on the generator's device (CPU without one) and moved to ``like``'s device and dtype."""
    if kind not in PROBES:
        raise ValueError(f"unknown Hutchinson probe {kind!r}; choose one of {list(PROBES)}")
    device = generator.device if generator is not None else torch.device("cpu")
    size = (int(probes), *shape)
    if kind == "rademacher":
        e = torch.randint(0, 2, size, generator=generator, device=device).mul_(2).sub_(1)
    else:
        e = torch.randn(size, generator=generator, device=device, dtype=torch.float64)
    return e.to(device=like.device, dtype=like.dtype)


# -- the change of variables -------------------------------------------------------------------------------------
def check_likelihood_options(
    method: str,
    steps: int | None,
    atol: float,
    rtol: float,
    divergence: str,
    probes: int,
    probe: str,
    max_steps: int = 10_000,
) -> None:
    """Raise a ValueError naming the bad option (solver, divergence, probes)."""
    if method in FIXED_STEP_STAGES and steps is None:
        raise ValueError(f"likelihood method {method!r} is a fixed-step method: give steps (or use dopri5)")
    check_solver_options(method, 1 if steps is None else steps, atol, rtol, max_steps, owner="likelihood")
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; choose one of {list(DIVERGENCES)}")
    if isinstance(probes, bool) or int(probes) != probes or probes < 1:
        raise ValueError(f"probes must be an integer >= 1, got {probes!r}")
    if probe not in PROBES:
        raise ValueError(f"unknown Hutchinson probe {probe!r}; choose one of {list(PROBES)}")


def log_likelihood(
    velocity: Velocity,
    x: Tensor,
    source_log_prob: LogProb,
    *,
    method: str = "dopri5",
    steps: int | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    divergence: str = "exact",
    probes: int = 1,
    probe: str = "rademacher",
    generator: torch.Generator | None = None,
    max_steps: int = 10_000,
) -> LikelihoodResult:
    """``log p_1(x) = log p_0(x(0)) + a(0)`` by integrating ``(dx/dt, da/dt) = (v, div v)`` from t = 1 to t = 0
    (module docstring): a :class:`LikelihoodResult`.

    Args:
        velocity: ``v(x, t)`` with ``x`` ``(B, *dims)`` and ``t`` ``(B,)``; rows must not interact (the divergence
            sums gradients over the batch). Evaluated with gradients enabled whatever the caller's mode (also inside
            ``torch.no_grad`` and ``torch.inference_mode``); the result is detached: for evaluation, not training.
        x: points ``(B, *dims)`` at t = 1 (data).
        source_log_prob: ``log p_0`` of the points carried back to t = 0, ``(B, *dims) -> (B,)``.
        method: a solver of :func:`lightning_fm.sampling.integrate` (``dopri5``, or a fixed-step one with ``steps``).
        steps: steps of a fixed-step method (None with dopri5). atol, rtol, max_steps: dopri5's settings.
        divergence: ``"exact"`` (D backward passes per evaluation) or ``"hutchinson"`` (``probes`` of them).
        probes: Hutchinson probes per point, fixed along the trajectory. probe: ``"rademacher"`` or ``"gaussian"``.
        generator: draws the probes (CPU or the generator's device); None: torch's global generator.
    """
    check_likelihood_options(method, steps, atol, rtol, divergence, probes, probe, max_steps)
    shape, batch = tuple(x.shape), x.shape[0]
    dim = x[0].numel()
    with torch.inference_mode(False):
        x = x.detach().clone()  # a normal tensor even when the caller is in inference mode
        eps = draw_probes(shape, probes, probe, x, generator) if divergence == "hutchinson" else None
        backward_passes = 0

        def augmented(t: Tensor, state: Tensor) -> Tensor:
            nonlocal backward_passes
            with torch.enable_grad():
                xs = state[:, :dim].detach().reshape(shape).requires_grad_(True)
                v = velocity(xs, t)
                if v.shape != xs.shape:
                    raise ValueError(f"velocity(x, t) returned shape {tuple(v.shape)} for x of shape {shape}")
                if eps is None:
                    div = exact_divergence(v, xs)
                    backward_passes += dim
                else:
                    div = hutchinson_divergence(v, xs, eps)
                    backward_passes += eps.shape[0]
            return torch.cat([v.detach().flatten(1), div.detach().to(state.dtype)[:, None]], dim=1)

        start = torch.cat([x.flatten(1), torch.zeros(batch, 1, dtype=x.dtype, device=x.device)], dim=1)
        end = integrate(
            augmented,
            start,
            t0=1.0,
            t1=0.0,
            method=method,
            steps=1 if steps is None else steps,
            atol=atol,
            rtol=rtol,
            max_steps=max_steps,
        )
        x0 = end.x[:, :dim].reshape(shape)
        log_det = end.x[:, dim]
        with torch.no_grad():
            prior = source_log_prob(x0)
        if tuple(prior.shape) != (batch,):
            raise ValueError(f"source_log_prob returned shape {tuple(prior.shape)}; expected ({batch},)")
        prior = prior.to(log_det.dtype)
    return LikelihoodResult(
        log_prob=prior + log_det,
        nfe=end.nfe,
        x0=x0,
        source_log_prob=prior,
        log_det=log_det,
        info={"backward_passes": float(backward_passes)},
    )


# -- source densities --------------------------------------------------------------------------------------------
def standard_normal_log_prob(x: Tensor) -> Tensor:
    """``log N(x; 0, I) = -||x||^2 / 2 - (D/2) log(2 pi)`` per row ``(B,)``."""
    flat = x.flatten(1)
    return -0.5 * flat.square().sum(1) - 0.5 * flat.shape[1] * math.log(2 * math.pi)


def gaussian_mixture_log_prob(centres: Tensor, std: float) -> LogProb:
    """``log (1/K) sum_k N(x; c_k, std^2 I)`` (equal weights; ``centres`` ``(K, D)``), by log-sum-exp."""
    centres = torch.as_tensor(centres)
    if centres.dim() != 2 or not std > 0:
        raise ValueError(f"a mixture needs centres (K, D) and std > 0, got {tuple(centres.shape)} and std={std}")
    count, dim = centres.shape

    def log_prob(x: Tensor) -> Tensor:
        c = centres.to(device=x.device, dtype=x.dtype)
        sq = (x.flatten(1)[:, None, :] - c[None]).square().sum(-1)  # (B, K)
        log_norm = -dim * math.log(std) - 0.5 * dim * math.log(2 * math.pi) - math.log(count)
        return torch.logsumexp(-0.5 * sq / std**2, dim=1) + log_norm

    return log_prob


# -- quantised data ----------------------------------------------------------------------------------------------
def grid_spacing(levels: int) -> float:
    """``delta = 2 / (levels - 1)``: the spacing of ``levels`` equally spaced values from -1 to 1."""
    if isinstance(levels, bool) or int(levels) != levels or levels < 2:
        raise ValueError(f"quantisation levels must be an integer >= 2, got {levels!r}")
    return 2.0 / (int(levels) - 1)


def dequantize(x: Tensor, levels: int, generator: torch.Generator | None = None) -> Tensor:
    """``y = x + delta (U - 1/2)``, ``U ~ U[0, 1)``: uniform over the cell of width ``delta = 2/(levels - 1)``
    centred on each grid value of ``x`` (data in [-1, 1]; module docstring)."""
    device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(x.shape, generator=generator, device=device, dtype=torch.float64)
    return x + (grid_spacing(levels) * (u - 0.5)).to(device=x.device, dtype=x.dtype)


def bits_per_dim(log_prob: Tensor, dim: int, levels: int) -> Tensor:
    """``-log p(y) / (D ln 2) + log2((levels - 1) / 2)`` per point: the bits/dim bound of the grid point from the
    density ``log_prob`` of its dequantised ``y`` (module docstring)."""
    return -log_prob / (dim * math.log(2)) - math.log2(grid_spacing(levels))


def trainable_copy(tensor: Tensor | None) -> Tensor | None:
    """``tensor`` as an ordinary tensor that autograd may save (Lightning moves evaluation batches to the device
    under ``torch.inference_mode``; a network whose divergence is taken cannot save such an input, e.g. labels
    entering an embedding)."""
    if tensor is None or not tensor.is_inference():
        return tensor
    with torch.inference_mode(False):
        return tensor.clone()
