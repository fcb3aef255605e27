"""fcnseg.errors: a ParameterError reads in the library's terms and in a front end's."""

from __future__ import annotations

import pytest

from fcnseg.errors import ParameterError, UserError, for_flags


def test_parameter_error_in_python_terms() -> None:
    error = ParameterError("{overlap} must be >= 0 (or use {backend})", overlap=-32, backend="sim")
    assert isinstance(error, UserError)
    assert str(error) == "overlap=-32 must be >= 0 (or use backend='sim')"
    assert error.parameters == {"overlap": -32, "backend": "sim"}


def test_parameter_error_in_flag_terms() -> None:
    error = ParameterError(
        "{shift_stitch} needs {batch}; {flag} alone", shift_stitch=3, batch=2, flag=None
    )
    flags = {"shift_stitch": "--shift-stitch", "flag": "--overlay"}
    # a parameter without a flag keeps its Python spelling; a None value shows the bare flag
    assert error.spelled(flags) == "--shift-stitch 3 needs batch=2; --overlay alone"
    assert for_flags(error, flags) == error.spelled(flags)


def test_for_flags_leaves_other_errors_alone() -> None:
    assert for_flags(UserError("no such package x"), {"package": "--package"}) == (
        "no such package x"
    )
    with pytest.raises(ParameterError, match=r"^overlap=-1 "):
        raise ParameterError("{overlap} is negative", overlap=-1)


def test_braces_in_values_are_not_templates() -> None:
    error = ParameterError("{package} has {shape}", package="/tmp/{shape}", shape={"a": 1})
    assert str(error) == "package='/tmp/{shape}' has shape={'a': 1}"
    assert ParameterError("{unknown} stays", batch=1).spelled({}) == "{unknown} stays"
