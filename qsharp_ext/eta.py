"""η, the KL-regularization strength, as a user gives it: checked once, where it enters.

η is a positive finite number. Where a list of η may also ask for π_ref itself (guided_generate's `etas`,
`generate --etas`, `evaluate --etas`), None means "unguided": that is the one spelling of it (`None` on the
command line, `null` in YAML); there is no η = ∞ and no separate switch. The entry points (guided_generate,
QSharpLogitsProcessor, the commands' config checks) call these checks, which raise a UserError in one
sentence; the numerics and kernels below them take η as given (a float tensor of rows, ∞ for an unguided
row) and check shapes only, so that decoding never stops to look at η.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

from qsharp_ext.errors import UserError


def _positive_finite(eta: object) -> bool:
    return not isinstance(eta, bool) and isinstance(eta, numbers.Real) and 0 < eta < math.inf


def check_eta(eta: object, name: str = "eta") -> float:
    """`eta` as a float; a UserError unless it is a positive finite number."""
    if not _positive_finite(eta):
        raise UserError(f"{name} must be positive and finite, got {eta!r}")
    return float(eta)


def check_etas(etas: Sequence[float | None], name: str = "etas") -> list[float | None]:
    """`etas` as a list: at least one value, each positive and finite, or None for π_ref itself (unguided)."""
    if isinstance(etas, str) or not isinstance(etas, Sequence) or not etas:
        raise UserError(f"{name} must hold at least one value (a positive η, or None for unguided π_ref)")
    bad = next((eta for eta in etas if eta is not None and not _positive_finite(eta)), None)
    if bad is not None:
        raise UserError(f"eta must be positive and finite, or None for unguided π_ref ({name}), got {bad!r}")
    return [None if eta is None else float(eta) for eta in etas]
