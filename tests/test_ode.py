"""ODE solvers against closed-form solutions: values, orders of accuracy, NFE, backward integration, recording."""

import math

import pytest
import torch

from lightning_fm.sampling import FIXED_STEP_STAGES, METHODS, SampleResult, integrate

F64 = torch.float64
ORDERS = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
X0 = torch.tensor([[1.0, -2.0], [0.5, 3.0], [-1.5, 0.25]], dtype=F64)


def decay(t, x):  # dx/dt = -x  ->  x(t1) = x(t0) exp(-(t1 - t0))
    return -x


def exact_decay(x, t0, t1):
    return x * math.exp(-(t1 - t0))


def modulated(t, x):  # dx/dt = cos(t) x  ->  x(t1) = x(t0) exp(sin t1 - sin t0)
    return torch.cos(t)[:, None] * x


def exact_modulated(x, t0, t1):
    return x * math.exp(math.sin(t1) - math.sin(t0))


def forcing(t, x):  # dx/dt = cos(t)  ->  x(t1) = x(t0) + sin t1 - sin t0
    return torch.cos(t)[:, None].expand_as(x)


def exact_forcing(x, t0, t1):
    return x + (math.sin(t1) - math.sin(t0))


PROBLEMS = [(decay, exact_decay, 0.0, 1.0), (modulated, exact_modulated, 0.3, 2.0), (forcing, exact_forcing, 0.0, 1.0)]


def error(method, problem, steps):
    f, exact, t0, t1 = problem
    sol = integrate(f, X0, t0, t1, method=method, steps=steps)
    return (sol.x - exact(X0, t0, t1)).abs().max().item(), sol


def test_method_catalogue():
    assert METHODS == ("euler", "midpoint", "heun", "rk4", "dopri5")
    assert FIXED_STEP_STAGES == {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}


@pytest.mark.parametrize("problem", PROBLEMS, ids=["decay", "modulated", "forcing"])
@pytest.mark.parametrize("method", list(ORDERS))
def test_fixed_step_order_and_nfe(method, problem):
    n = 8 if method == "rk4" else 32
    e1, sol1 = error(method, problem, n)
    e2, sol2 = error(method, problem, 2 * n)
    order = ORDERS[method]
    assert e2 < e1
    ratio = e1 / e2
    assert 2**order * 0.85 < ratio < 2**order * 1.15, (method, ratio)
    assert sol1.nfe == FIXED_STEP_STAGES[method] * n and sol2.nfe == FIXED_STEP_STAGES[method] * 2 * n
    assert isinstance(sol1, SampleResult) and sol1.times is None and sol1.trajectory is None


def test_fixed_step_values_are_accurate():
    for method, tol in (("euler", 1e-2), ("midpoint", 2e-5), ("heun", 2e-5), ("rk4", 1e-10)):
        err, _ = error(method, PROBLEMS[0], 100)
        assert err < tol, (method, err)
    # one Euler step is x + h f: a closed form
    sol = integrate(decay, X0, 0.0, 0.5, method="euler", steps=1)
    torch.testing.assert_close(sol.x, 0.5 * X0, rtol=0, atol=0)


def test_time_argument_is_a_batch_vector_on_x_dtype():
    seen = []

    def f(t, x):
        seen.append(t)
        return torch.zeros_like(x)

    x = torch.zeros(5, 3, 4, 4, dtype=torch.float32)
    sol = integrate(f, x, 0.25, 0.75, method="midpoint", steps=2)
    assert sol.x.shape == x.shape and sol.nfe == 4 == len(seen)
    assert all(t.shape == (5,) and t.dtype == torch.float32 and t.device == x.device for t in seen)
    assert [round(float(t[0]), 6) for t in seen] == [0.25, 0.375, 0.5, 0.625]
    seen.clear()
    integrate(f, x.double(), 0.0, 1.0, method="dopri5")
    assert seen and all(t.shape == (5,) and t.dtype == F64 for t in seen)


@pytest.mark.parametrize("problem", PROBLEMS, ids=["decay", "modulated", "forcing"])
def test_dopri5_reaches_exact_value_and_counts_calls(problem):
    f, exact, t0, t1 = problem
    calls = 0

    def counted(t, x):
        nonlocal calls
        calls += 1
        return f(t, x)

    sol = integrate(counted, X0, t0, t1, method="dopri5", atol=1e-9, rtol=1e-9)
    assert (sol.x - exact(X0, t0, t1)).abs().max() < 1e-6
    assert sol.nfe > 0 and sol.nfe == calls
    default = integrate(f, X0, t0, t1, method="dopri5")  # atol = rtol = 1e-5
    assert ((default.x - exact(X0, t0, t1)).abs() / exact(X0, t0, t1).abs()).max() < 1e-4
    assert default.nfe < sol.nfe


@pytest.mark.parametrize("method", METHODS)
def test_backward_integration(method):
    start = exact_modulated(X0, 0.3, 2.0)  # the state at t = 2.0; go back to 0.3
    sol = integrate(modulated, start, 2.0, 0.3, method=method, steps=200, atol=1e-10, rtol=1e-10)
    tol = {"euler": 2e-2, "midpoint": 1e-4, "heun": 1e-4}.get(method, 1e-7)
    assert (sol.x - X0).abs().max() < tol
    # decay backwards grows: x(0) = x(1) e
    back = integrate(decay, X0, 1.0, 0.0, method=method, steps=200, atol=1e-10, rtol=1e-10)
    assert (back.x - X0 * math.e).abs().max() < 10 * tol


@pytest.mark.parametrize("method", METHODS)
def test_record_trajectory(method):
    x = torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    sol = integrate(decay, x, 0.0, 1.0, method=method, steps=10, record=True, atol=1e-9, rtol=1e-9)
    assert sol.times.shape == (11,) and sol.trajectory.shape == (11, 4, 3, 2)
    torch.testing.assert_close(sol.times, torch.linspace(0, 1, 11, dtype=F64), rtol=0, atol=1e-15)
    assert torch.equal(sol.trajectory[0], x) and torch.equal(sol.trajectory[-1], sol.x)
    expected = x[None] * torch.exp(-sol.times)[:, None, None, None]
    tol = {"euler": 5e-2, "midpoint": 5e-3, "heun": 5e-3, "rk4": 1e-5, "dopri5": 1e-7}[method]
    assert (sol.trajectory - expected).abs().max() < tol
    if method != "dopri5":
        assert sol.nfe == FIXED_STEP_STAGES[method] * 10
    backward = integrate(decay, x, 1.0, 0.5, method=method, steps=5, record=True)
    torch.testing.assert_close(backward.times, torch.linspace(1.0, 0.5, 6, dtype=F64))
    some = integrate(decay, x, 0.0, 1.0, method=method, steps=10, record=2, atol=1e-9, rtol=1e-9)
    assert torch.equal(some.trajectory, sol.trajectory[:, :2]) and torch.equal(some.x, sol.x)  # the first 2 lines
    assert integrate(decay, x, 0.0, 1.0, method=method, steps=10, record=0).trajectory is None


def test_zero_length_interval_is_the_identity():
    sol = integrate(decay, X0, 0.4, 0.4, method="dopri5")
    assert torch.equal(sol.x, X0) and sol.nfe == 0
    rec = integrate(decay, X0, 0.4, 0.4, method="rk4", steps=3, record=True)
    assert rec.trajectory.shape == (4, *X0.shape) and rec.nfe == 0


def test_gradients_flow_unless_the_caller_disables_them():
    x = X0.clone().requires_grad_(True)
    sol = integrate(decay, x, 0.0, 1.0, method="rk4", steps=20)
    sol.x.sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, math.exp(-1)), rtol=1e-6, atol=0)
    with torch.no_grad():
        assert not integrate(decay, x, 0.0, 1.0, method="heun", steps=5).x.requires_grad


def test_errors():
    with pytest.raises(ValueError, match=r"unknown ODE method 'rk45'.*euler.*dopri5"):
        integrate(decay, X0, method="rk45")
    for steps in (0, -3, 2.5):
        with pytest.raises(ValueError, match="steps"):
            integrate(decay, X0, steps=steps)
    for t0, t1 in ((float("nan"), 1.0), (0.0, float("inf"))):
        with pytest.raises(ValueError, match="finite"):
            integrate(decay, X0, t0, t1)
    with pytest.raises(ValueError, match="max_steps"):
        integrate(decay, X0, method="dopri5", max_steps=0)
    with pytest.raises(ValueError, match="atol"):
        integrate(decay, X0, method="dopri5", atol=-1.0)
    # a stiff problem with a tiny step bound: a clear error instead of an endless loop
    with pytest.raises(RuntimeError, match="max_steps=3"):
        integrate(lambda t, x: -1e4 * x, X0, method="dopri5", max_steps=3, atol=1e-10, rtol=1e-10)
