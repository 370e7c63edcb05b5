"""The fused guided step: every backend against the pure-torch reference, and the reference against first principles.

Backends: cpp (always, when qsharp_ext._C is built), triton (on the CPU under TRITON_INTERPRET=1, small sizes;
skipped if triton is not importable) and cuda (only with a GPU). The draw is compared token for token: noise
values within 2e-5 of a boundary of the (float64) sampling CDF are redrawn, since float32 rounding may put
such a u on either side.
"""

import importlib.util
import math
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the Triton kernels are defined (lazy import)

from qsharp_ext import distributions as D
from qsharp_ext import kernels
from qsharp_ext.kernels import fused_step as FS

_C = kernels.compiled_extension()
HAS_TRITON = importlib.util.find_spec("triton") is not None
HAS_CUDA = torch.cuda.is_available() and _C is not None and _C.has_cuda()
INF = math.inf
HEADS = ("bernoulli", "histogram", "mean")
N_ATOMS = 5
V_MIN = {"bernoulli": 0.0, "histogram": -1.0, "mean": -1.0}  # the histogram's atoms span [-1, 1]
BOUNDARY_MARGIN = 2e-5

needs_cpp = pytest.mark.skipif(_C is None, reason="qsharp_ext._C is not built")
BACKENDS = [
    pytest.param("cpp", marks=needs_cpp),
    pytest.param("triton", marks=pytest.mark.skipif(not HAS_TRITON, reason="triton is not importable")),
    pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU and _C built with CUDA")),
]
# (B, V, k) per backend: the Triton interpreter is slow, so it gets small rows.
SIZES = {
    "cpp": [(1, 50, 1), (7, 50, 20), (64, 50, 50), (7, 49152, 20)],
    "cuda": [(1, 50, 1), (7, 50, 20), (64, 50, 50), (7, 49152, 20)],
    "triton": [(1, 50, 1), (7, 50, 20), (3, 50, 50), (2, 3000, 20)],
}
# The compiled top-k works in chunks of 4,096 logits: expansions that cross chunk borders (a last chunk of one
# logit, Llama 3's vocabulary, k over a whole chunk).
CHUNKED_SIZES = {"cuda": [(2, 4097, 20), (2, 128256, 20), (1, 9000, 4096)]}
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy inf/nan arithmetic in the interpreter


def device_of(backend: str) -> str:
    """CUDA for the cuda backend, and for triton where a GPU is present (its interpreter is off there)."""
    return "cuda" if backend == "cuda" or (backend == "triton" and torch.cuda.is_available()) else "cpu"


def make_logits(rng: torch.Generator, batch: int, vocab: int) -> torch.Tensor:
    """(B, V) logits with ±50 extremes and exact ties."""
    x = torch.randn(batch, vocab, generator=rng) * 5
    x[0, vocab // 2] = 50.0
    x[-1, vocab - 1] = -50.0
    if vocab > 4:
        x[:, 1] = x[:, 3]  # a tie
    return x


def make_eta(rng: torch.Generator, batch: int, eta: float | str) -> torch.Tensor:
    if eta != "mixed":
        return torch.full((batch,), float(eta))
    choices = torch.tensor([0.01, 1.0, 100.0, INF])
    return choices[torch.randint(0, 4, (batch,), generator=rng)]


def make_head(rng: torch.Generator, head: str, batch: int, k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    if head == "histogram":
        return torch.randn(batch, k, N_ATOMS, generator=rng) * 3, D.make_atoms(V_MIN[head], 1.0, N_ATOMS)
    return torch.randn(batch, k, generator=rng) * 3, None


def make_floor(head: str, eta: torch.Tensor) -> torch.Tensor:
    """(B,) the non-candidates' offset v_min/η of the head's lowest reward (0 where η = ∞)."""
    return D.floor_log_offset(V_MIN[head], eta)


def safe_noise(rng, ref_logits, cand, head_out, head, eta, temperature, atoms, top_p, candidates_only):
    """(B,) noise at least BOUNDARY_MARGIN away from every float64 CDF boundary, and (B,) rows to compare.

    A row is left out of the comparison when its candidates' cumulative mass lies within the margin of top_p
    (rounding then decides the nucleus) or no safe u was found in 200 draws.
    """
    guided = FS.reference_guided_logits(
        ref_logits.double(), cand.ids, head_out.double(), head, eta.double(), temperature,
        floor=make_floor(head, eta.double()), atoms=atoms, candidates_only=candidates_only,
    )  # fmt: skip
    _, p = FS.sampling_probs(guided, cand.ids, 1.0, candidates_only)
    k = cand.ids.shape[1]
    nucleus_ok = ((p[:, :k].cumsum(-1) - top_p).abs() > BOUNDARY_MARGIN).all(-1) | (top_p == 1.0)
    _, p = FS.sampling_probs(guided, cand.ids, top_p, candidates_only)
    cdf = p.cumsum(-1) / p.sum(-1, keepdim=True)  # (B, V) normalized
    noise = torch.rand(ref_logits.shape[0], generator=rng)
    ok = torch.zeros_like(nucleus_ok)
    for _ in range(200):
        safe = (cdf - noise.double().unsqueeze(-1)).abs().amin(-1) > BOUNDARY_MARGIN
        ok |= safe
        if ok.all():
            break
        noise = torch.where(ok, noise, torch.rand(noise.shape, generator=rng))
    return noise, ok & nucleus_ok


def assert_results_match(got: FS.StepResult, want: FS.StepResult, rows: torch.Tensor) -> None:
    assert rows.float().mean() >= 0.5, "too few rows away from CDF boundaries"
    torch.testing.assert_close(got.token.cpu()[rows], want.token[rows], rtol=0, atol=0)
    torch.testing.assert_close(got.cand_index.cpu()[rows], want.cand_index[rows], rtol=0, atol=0)
    for name in ("logp_pi", "logp_ref"):
        torch.testing.assert_close(getattr(got, name).cpu()[rows], getattr(want, name)[rows], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(got.kl.cpu(), want.kl, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------ backends


@pytest.mark.parametrize("backend", BACKENDS)
def test_expand_candidates_equals_reference(rng, backend):
    for batch, vocab, k in [*SIZES[backend], *CHUNKED_SIZES.get(backend, []), (2, 50, 50)]:
        x = make_logits(rng, batch, vocab)
        temperature = 0.7
        want = FS.reference_expand_candidates(x, temperature, k)
        got = FS.expand_candidates(x.to(device_of(backend)), temperature, k, backend=backend)
        assert torch.equal(got.ids.cpu(), want.ids), (batch, vocab, k)
        torch.testing.assert_close(got.ref_logp.cpu(), want.ref_logp, rtol=1e-5, atol=2e-5)
        torch.testing.assert_close(got.lse.cpu(), want.lse, rtol=1e-5, atol=2e-5)


@pytest.mark.skipif(not HAS_TRITON, reason="triton is not importable")
@pytest.mark.parametrize(("chunk", "max_merge"), [(32, 8192), (64, 8192), (32, 100)])
def test_triton_chunked_top_k_equals_reference(rng, chunk, max_merge):
    """Many small chunks (the chunked top-k and its merge), and max_merge below k·C (the one-program kernel):
    ties across chunk boundaries, a row with a masked (-inf) vocabulary and a chunk holding only -inf."""
    from qsharp_ext.kernels import triton_step

    x = make_logits(rng, 3, 300)
    x[:, 40] = x[:, 70] = x[:, 250] = 9.0  # a three-way tie in three chunks
    x[1, 100:260] = -INF  # whole chunks masked
    x[2, :] = -INF
    x[2, [5, 299]] = 1.0  # two finite logits: the rest of the top k are -inf, lower id first
    for k in (1, 20, 45):
        want = FS.reference_expand_candidates(x, 0.7, k)
        got = triton_step.expand_candidates(x.to(device_of("triton")), 0.7, k, chunk=chunk, max_merge=max_merge)
        assert torch.equal(got.ids.cpu(), want.ids), (k, chunk)
        finite = want.ref_logp.isfinite()
        assert torch.equal(got.ref_logp.cpu().isfinite(), finite)
        torch.testing.assert_close(got.ref_logp.cpu()[finite], want.ref_logp[finite], rtol=1e-5, atol=2e-5)
        torch.testing.assert_close(got.lse.cpu(), want.lse, rtol=1e-5, atol=2e-5)


@needs_cpp
def test_cpp_expand_whole_large_vocabulary(rng):
    x = make_logits(rng, 2, 49152)
    want = FS.reference_expand_candidates(x, 1.3, 49152)
    got = FS.expand_candidates(x, 1.3, 49152, backend="cpp")
    assert torch.equal(got.ids, want.ids)
    torch.testing.assert_close(got.ref_logp, want.ref_logp, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("eta", [0.01, 1.0, 100.0, INF, "mixed"])
@pytest.mark.parametrize("top_p", [1.0, 0.9])
@pytest.mark.parametrize("candidates_only", [False, True])
def test_guided_sample_equals_reference(rng, backend, head, eta, top_p, candidates_only):
    sizes = SIZES[backend] if backend != "triton" or eta == "mixed" else SIZES[backend][1:2]
    for batch, vocab, k in sizes:
        x = make_logits(rng, batch, vocab)
        temperature = 0.8
        cand = FS.reference_expand_candidates(x, temperature, k)
        head_out, atoms = make_head(rng, head, batch, k)
        eta_t = make_eta(rng, batch, eta)
        noise, rows = safe_noise(rng, x, cand, head_out, head, eta_t, temperature, atoms, top_p, candidates_only)
        kwargs = dict(floor=make_floor(head, eta_t), atoms=atoms, top_p=top_p, candidates_only=candidates_only)
        want = FS.reference_guided_sample(x, cand, head_out, head, eta_t, temperature, noise, **kwargs)
        dev = device_of(backend)
        cand_dev = FS.Candidates(cand.ids.to(dev), cand.ref_logp.to(dev), cand.lse.to(dev))
        kwargs["atoms"] = None if atoms is None else atoms.to(dev)
        kwargs["floor"] = kwargs["floor"].to(dev)
        got = FS.guided_sample(
            x.to(dev), cand_dev, head_out.to(dev), head, eta_t.to(dev), temperature, noise.to(dev),
            backend=backend, **kwargs,
        )  # fmt: skip
        assert_results_match(got, want, rows)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_candidates_drawn_with_high_floor(rng, backend):
    """A floor above every candidate's offset sends most draws past the candidates: the O(V) walk."""
    x = make_logits(rng, 7, 50)
    cand = FS.reference_expand_candidates(x, 1.0, 3)
    head_out = -torch.rand(7, 3, generator=rng)  # mean head with E[z] < 0: offsets below the floor
    eta, floor = torch.full((7,), 0.1), torch.full((7,), 2.0)
    guided = D.guided_logits(x.double(), cand.ids, head_out.double() / 0.1, floor.double())
    _, p = FS.sampling_probs(guided, cand.ids, 1.0, False)
    cdf = p.cumsum(-1) / p.sum(-1, keepdim=True)  # (B, V) in sampling order
    noise = torch.linspace(0.05, 0.95, 7)
    rows = (cdf - noise.double().unsqueeze(-1)).abs().amin(-1) > BOUNDARY_MARGIN
    want = FS.reference_guided_sample(x, cand, head_out, "mean", eta, 1.0, noise, floor=floor)
    dev = device_of(backend)
    got = FS.guided_sample(
        x.to(dev), FS.Candidates(cand.ids.to(dev), cand.ref_logp.to(dev), cand.lse.to(dev)), head_out.to(dev),
        "mean", eta.to(dev), 1.0, noise.to(dev), floor=floor.to(dev), backend=backend,
    )  # fmt: skip
    assert (want.cand_index[rows] == -1).any()
    assert_results_match(got, want, rows)


@pytest.mark.parametrize("backend", [pytest.param("torch"), *BACKENDS])
def test_unguided_eta_inf_is_the_reference_policy(rng, backend):
    x = make_logits(rng, 7, 50)
    dev = device_of(backend)
    cand = FS.expand_candidates(x.to(dev), 1.0, 5, backend=backend)
    for head in HEADS:
        head_out, atoms = make_head(rng, head, 7, 5)
        eta = torch.full((7,), INF, device=dev)
        res = FS.guided_sample(
            x.to(dev), cand, head_out.to(dev), head, eta, 1.0, torch.rand(7, generator=rng).to(dev),
            floor=make_floor(head, eta), atoms=None if atoms is None else atoms.to(dev), backend=backend,
        )  # fmt: skip
        assert (make_floor(head, eta) == 0).all()
        torch.testing.assert_close(res.kl.cpu(), torch.zeros(7), atol=1e-6, rtol=0)
        torch.testing.assert_close(res.logp_pi, res.logp_ref, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------- reference itself


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("k", [1, 7, 40])
def test_candidate_kl_formula_equals_token_kl(rng, head, k):
    """The O(k) KL (ln Zg from the candidates and the non-candidate mass) is token_kl over the full guided logits."""
    batch, vocab = 6, 40
    x = make_logits(rng, batch, vocab).double()
    cand = FS.reference_expand_candidates(x, 0.9, k)
    head_out, atoms = make_head(rng, head, batch, k)
    eta = torch.tensor([0.01, 0.1, 1.0, 100.0, INF, 0.5], dtype=torch.float64)
    offsets = FS.reference_log_offsets(head_out.double(), head, eta, atoms)
    floor = make_floor(head, eta)
    z = x / 0.9
    guided = D.guided_logits(z, cand.ids, offsets, floor)
    is_cand = torch.zeros_like(z, dtype=torch.bool).scatter(-1, cand.ids, True)
    rest = torch.log_softmax(z, -1).masked_fill(is_cand, -INF).logsumexp(-1)  # ln π_ref(non-candidates)
    got = FS.candidate_kl(cand.ref_logp, offsets, floor, rest)
    torch.testing.assert_close(got, D.token_kl(guided, z), rtol=1e-9, atol=1e-12)
    noise = torch.rand(batch, generator=rng)
    res = FS.reference_guided_sample(x, cand, head_out, head, eta, 0.9, noise, floor=floor, atoms=atoms)
    torch.testing.assert_close(res.kl, got, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("backend", ["torch", pytest.param("cpp", marks=needs_cpp)])
@pytest.mark.parametrize(("top_p", "candidates_only"), [(1.0, False), (0.8, False), (1.0, True)])
def test_draws_follow_the_guided_distribution(rng, backend, top_p, candidates_only):
    """Many draws of one row: frequencies match π (renormalized over the nucleus / candidates) within 5σ."""
    vocab, k, draws = 12, 4, 20000
    row = torch.randn(1, vocab, generator=rng) * 1.5
    x = row.expand(draws, vocab).contiguous()
    cand = FS.reference_expand_candidates(x, 1.0, k)
    head_out = torch.randn(1, k, generator=rng).expand(draws, k).contiguous()
    eta = torch.full((draws,), 0.5)
    res = FS.guided_sample(
        x, cand, head_out, "bernoulli", eta, 1.0, torch.rand(draws, generator=rng),
        floor=torch.zeros(draws), top_p=top_p, candidates_only=candidates_only, backend=backend,
    )  # fmt: skip
    guided = D.guided_logits(row, cand.ids[:1], D.bernoulli_log_offset(head_out[:1], 0.5), 0.0, candidates_only)
    _, p = FS.sampling_probs(guided.double(), cand.ids[:1], top_p, candidates_only)  # in sampling order
    order, _ = FS.sampling_probs(guided.double(), cand.ids[:1], 1.0, candidates_only)
    expected = torch.zeros(vocab, dtype=torch.float64).scatter(0, order[0], p[0] / p[0].sum())
    freq = torch.bincount(res.token, minlength=vocab).double() / draws
    sigma = (expected * (1 - expected) / draws).sqrt()
    assert ((freq - expected).abs() <= 5 * sigma + 1e-12).all(), (freq, expected)


@pytest.mark.parametrize("backend", ["torch", pytest.param("cpp", marks=needs_cpp)])
def test_ties_go_to_the_lower_id(backend):
    x = torch.tensor([[1.0, 3.0, 3.0, 2.0, 3.0, 0.0]])
    cand = FS.expand_candidates(x, 1.0, 4, backend=backend)
    assert cand.ids.tolist() == [[1, 2, 4, 3]]
    # equal guided logits: the lower candidate index comes first in the sampling order
    res = FS.guided_sample(
        x, cand, torch.zeros(1, 4), "mean", torch.ones(1), 1.0, torch.tensor([0.01]), floor=torch.zeros(1),
        backend=backend,
    )  # fmt: skip
    assert res.token.item() == 1 and res.cand_index.item() == 0


@pytest.mark.parametrize("backend", ["torch", pytest.param("cpp", marks=needs_cpp)])
def test_bad_shapes_raise_clear_errors(backend):
    """Shapes and head kinds only: η, T and top_p are checked where a user gives them (tests/unit/test_eta.py)."""
    x = torch.zeros(2, 10)
    with pytest.raises(ValueError, match="k must be in"):
        FS.expand_candidates(x, 1.0, 0, backend=backend)
    with pytest.raises(ValueError, match="k must be in"):
        FS.expand_candidates(x, 1.0, 11, backend=backend)
    with pytest.raises(ValueError, match="must be \\(B, V\\)"):
        FS.expand_candidates(torch.zeros(10), 1.0, 3, backend=backend)
    cand = FS.expand_candidates(x, 1.0, 3, backend=backend)
    ok = dict(
        head_out=torch.zeros(2, 3), head="bernoulli", eta=torch.ones(2), temperature=1.0, noise=torch.zeros(2),
        floor=torch.zeros(2),
    )  # fmt: skip

    def sample(**changes):
        args = {**ok, **changes}
        return FS.guided_sample(x, cand, **args, backend=backend)

    sample()
    with pytest.raises(ValueError, match="floor must have shape"):
        sample(floor=torch.zeros(3))
    with pytest.raises(ValueError, match="head_out must have shape"):
        sample(head_out=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="eta must have shape"):
        sample(eta=torch.ones(3))
    with pytest.raises(ValueError, match="noise must have shape"):
        sample(noise=torch.zeros(1))
    with pytest.raises(ValueError, match="head must be one of"):
        sample(head="gaussian")
    with pytest.raises(ValueError, match="needs atoms"):
        sample(head="histogram", head_out=torch.zeros(2, 3, 4))


def test_forcing_an_unavailable_backend_is_an_error(monkeypatch):
    monkeypatch.setenv("QSHARP_EXT_BACKEND", "cuda")
    with pytest.raises(RuntimeError, match="cuda backend"):
        FS.expand_candidates(torch.zeros(1, 5), 1.0, 2)
    monkeypatch.setenv("QSHARP_EXT_BACKEND", "torch")
    assert FS.expand_candidates(torch.zeros(1, 5), 1.0, 2).ids.tolist() == [[0, 1]]
