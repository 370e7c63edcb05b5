"""The compiled log-offset kernels (qsharp_ext._C) against the pure-torch reference, CPU and CUDA."""

import pytest
import torch

from qsharp_ext import distributions as D
from qsharp_ext import kernels
from tests.conftest import ETAS, extreme_logits

_C = kernels.compiled_extension()
pytestmark = pytest.mark.skipif(_C is None, reason="qsharp_ext._C is not built")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and _C is not None and _C.has_cuda() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("eta", ETAS)
def test_bernoulli_kernel_equals_torch(rng, device, dtype, eta):
    logits = extreme_logits(rng, 5000, dtype).reshape(-1, 1).expand(-1, 3).contiguous()  # (n, 3): > one grain
    logits = logits.to(device)
    out = _C.bernoulli_log_offset(logits, eta)
    expected = D.bernoulli_log_offset(logits.double(), eta).to(dtype)
    assert out.shape == logits.shape and torch.isfinite(out).all()
    torch.testing.assert_close(out, expected, rtol=1e-5 if dtype == torch.float32 else 1e-13, atol=1e-30)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("eta", ETAS)
@pytest.mark.parametrize("n_atoms", [2, 51])
def test_histogram_kernel_equals_torch(rng, device, dtype, eta, n_atoms):
    logits = (torch.randn(3, 700, n_atoms, generator=rng, dtype=dtype) * 15).to(device)
    logits[0, 0, 0], logits[0, 1, -1] = 50.0, -50.0
    atoms = D.make_atoms(0.0, 1.0, n_atoms).to(device, dtype)
    out = _C.histogram_log_offset(logits, atoms, eta)
    expected = D.histogram_log_offset(logits.double(), atoms.double(), eta).to(dtype)
    assert out.shape == logits.shape[:-1] and torch.isfinite(out).all()
    # float32: the result is a difference of two log-sum-exps of size up to 1/η + 50.
    tol = dict(rtol=1e-5, atol=2e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, expected, **tol)


def test_non_contiguous_input_is_handled(rng):
    logits = torch.randn(20, 30, generator=rng).t()  # (30, 20), strided
    torch.testing.assert_close(_C.bernoulli_log_offset(logits, 0.1), D.bernoulli_log_offset(logits, 0.1))


def test_kernel_rejects_mismatched_atoms():
    with pytest.raises(RuntimeError, match="one value per logit"):
        _C.histogram_log_offset(torch.zeros(2, 5), torch.linspace(0, 1, 4), 1.0)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        _C.bernoulli_log_offset(torch.zeros(3, dtype=torch.int64), 1.0)


def test_dispatcher_runs_the_forced_backend(monkeypatch, rng):
    logits = extreme_logits(rng, 50, torch.float32)
    monkeypatch.setenv("QSHARP_EXT_BACKEND", "cpp")
    assert kernels.resolve_backend(logits.device) == "cpp"
    calls = []
    monkeypatch.setattr(_C, "bernoulli_log_offset", lambda *a: calls.append(a) or D.bernoulli_log_offset(*a))
    kernels.bernoulli_log_offset(logits, 0.1)
    assert len(calls) == 1
    monkeypatch.setenv("QSHARP_EXT_BACKEND", "torch")
    kernels.bernoulli_log_offset(logits, 0.1)
    assert len(calls) == 1
    monkeypatch.setenv("QSHARP_EXT_BACKEND", "bogus")
    with pytest.raises(ValueError, match="unknown kernel backend"):
        kernels.resolve_backend(logits.device)
    monkeypatch.setenv("QSHARP_EXT_BACKEND", "cuda")
    with pytest.raises(RuntimeError, match="cuda backend"):
        kernels.bernoulli_log_offset(logits, 0.1)
