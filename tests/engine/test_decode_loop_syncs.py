"""The decoding loop never asks the device for a value, except the stop flag that a GPU reads one step late.

Every way a tensor's value reaches Python (bool, item, tolist, int, float) is watched while guided_generate's
loop runs; a call from the package's own code is a host round trip per step on a GPU.
"""

import sys
from pathlib import Path

import pytest
import torch

import qsharp_ext
from qsharp_ext.generate import _NoiseSource, guided_generate
from qsharp_ext.value_model import ValueModel
from tests.engine.conftest import make_causal_lm

PACKAGE = str(Path(qsharp_ext.__file__).parent)
READS = ["__bool__", "item", "tolist", "__int__", "__float__"]
ALLOWED = {"_AllStopped.__call__"}  # read one step late on a GPU (generate.py)


def watch_reads(monkeypatch, calls: list[str], active: list[bool]) -> None:
    for name in READS:
        original = getattr(torch.Tensor, name)

        def read(self, *args, _original=original, _name=name):
            caller = sys._getframe(1).f_code
            if active[0] and caller.co_filename.startswith(PACKAGE):
                calls.append(f"{caller.co_qualname} ({_name})")
            return _original(self, *args)

        monkeypatch.setattr(torch.Tensor, name, read)


@pytest.mark.parametrize("value", ["v", "q", "shared", None])
@pytest.mark.parametrize("fixed_shapes", [False, True])
def test_no_host_reads_between_steps(monkeypatch, tokenizer, value, fixed_shapes):
    ref = make_causal_lm("llama", len(tokenizer))
    vm = None
    if value is not None:
        share = value == "shared"
        vm = ValueModel.from_reference(
            ref, 0 if share else 2, tokenizer, parameterization="v" if value == "v" else "q", share_trunk=share
        ).eval()  # fmt: skip
    steps, calls, active = 6, [], [False]

    def on_step(step, tensors):  # from the first step's end to the last step's: every part of the loop runs
        active[0] = step < steps - 1

    watch_reads(monkeypatch, calls, active)
    etas = (None,) if vm is None else (0.5, None)
    out = guided_generate(
        ref, tokenizer, ["w1 w2 w3", "w4"], vm, etas=etas, num_samples=2, max_new_tokens=steps, top_k=3, seed=0,
        eos_token_id=[], rollin_steps=[3] * (4 * len(etas)), on_step=on_step, fixed_shapes=fixed_shapes,
    )  # fmt: skip
    assert out.sequences.shape[1] == steps
    assert set(calls) <= {f"{name} (__bool__)" for name in ALLOWED}, calls
    assert len(calls) == steps - 1  # the stop flag, once per step: the watch does see reads


def test_noise_drawn_up_front_equals_one_draw_per_step():
    steps, n = 7, 5
    for row_seeds in (None, [3, 1, 4, 1, 5]):
        noise = _NoiseSource(n, 11, row_seeds, greedy=False).draw(steps, torch.device("cpu"))
        gens = [torch.Generator().manual_seed(s) for s in (row_seeds or [11])]
        if row_seeds is None:
            want = torch.stack([torch.rand(n, generator=gens[0], dtype=torch.float64) for _ in range(steps)])
        else:
            want = torch.stack(
                [torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in gens]) for _ in range(steps)]
            )
        assert torch.equal(noise, want)
