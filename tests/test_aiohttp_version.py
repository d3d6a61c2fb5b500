"""The keystroke fast path runs only on the aiohttp minor version it is tested with."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from typeahead.http.connection import Site
from typeahead.http.fastpath import TESTED_AIOHTTP, KeystrokeSite
from typeahead.http.server import site_class
from typeahead.settings import Settings

TESTED = ".".join(map(str, TESTED_AIOHTTP))


@pytest.mark.parametrize("version", [f"{TESTED}.0", f"{TESTED}.9", f"{TESTED}.5.dev0"])
def test_the_tested_minor_version_gets_the_fast_path(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, version: str) -> None:
    monkeypatch.setattr(aiohttp, "__version__", version)
    with caplog.at_level(logging.WARNING, logger="typeahead.server"):
        assert site_class(Settings()) is KeystrokeSite
    assert not caplog.records


@pytest.mark.parametrize("version", ["3.13.2", "3.15.0", "4.0.0a1", "nonsense"])
def test_another_version_falls_back_to_aiohttps_own_path_with_one_line(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, version: str) -> None:
    monkeypatch.setattr(aiohttp, "__version__", version)
    with caplog.at_level(logging.WARNING, logger="typeahead.server"):
        assert site_class(Settings()) is Site
    [line] = [r.getMessage() for r in caplog.records]
    assert f"aiohttp {version} " in line and f"({TESTED}.x)" in line and "\n" not in line


def test_the_fast_path_switched_off_is_off_whatever_the_version() -> None:
    assert site_class(Settings(suggest_fast_path=False)) is Site


def test_the_installed_aiohttp_is_the_tested_one() -> None:
    """pyproject pins aiohttp to this minor version; a newer one needs the fast path rechecked."""
    assert tuple(int(p) for p in aiohttp.__version__.split(".")[:2]) == TESTED_AIOHTTP
