"""Fixtures the board tests share: the tiny FCN-8s package of ``tests/board/data`` and the same
package with the emulated board's bitfile/ and driver/settings.json (``emulated_package``).
Module-scoped, so each test file gets its own emulated copy."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def package():
    from fcnseg.host.package import load_package

    return load_package(DATA / "fcn8s-tiny")


@pytest.fixture(scope="module")
def board(package, tmp_path_factory):
    from fcnseg.host.package import load_package
    from fcnseg.testing import emulated_zynq as ez

    return load_package(ez.emulated_package(package, tmp_path_factory.mktemp("emu") / "pkg"))
