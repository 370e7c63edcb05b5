"""η as a user gives it: a positive finite number, or None (unguided) in a list; all else one UserError."""

import math

import numpy as np
import pytest

from qsharp_ext.errors import UserError
from qsharp_ext.eta import check_eta, check_etas


@pytest.mark.parametrize("eta", [0.01, 1, 100.0, np.float32(0.5)])
def test_positive_finite_etas_are_accepted_as_floats(eta):
    assert check_eta(eta) == pytest.approx(float(eta)) and isinstance(check_eta(eta), float)


@pytest.mark.parametrize("eta", [0.0, -0.1, math.inf, -math.inf, math.nan, None, True, "0.1", [0.1]])
def test_anything_else_is_one_user_error_naming_the_field(eta):
    with pytest.raises(UserError, match="collect_eta must be positive and finite"):
        check_eta(eta, "collect_eta")


def test_a_list_of_etas_may_hold_none_for_unguided_rows():
    assert check_etas((None, 1, 0.1)) == [None, 1.0, 0.1]
    assert check_etas([None]) == [None]


@pytest.mark.parametrize("etas", [(), [], "0.1", 0.1, None])
def test_an_empty_list_or_a_bare_value_is_refused(etas):
    with pytest.raises(UserError, match="must hold at least one value"):
        check_etas(etas)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan, False])
def test_infinity_is_not_a_second_spelling_of_unguided(bad):
    with pytest.raises(UserError, match="eta must be positive and finite, or None for unguided π_ref"):
        check_etas((None, 0.1, bad))
