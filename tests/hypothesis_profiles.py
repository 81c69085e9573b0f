"""The hypothesis profiles of the test suite (loaded by tests/conftest.py; no torch here, so a probe run is quick)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import pytest
from hypothesis import settings

# Hypothesis: in CI (CI=true) every run draws the same examples (derandomized, no example database), so a
# submission never fails on a draw the previous run did not make; locally the default profile does the same.
# `--hypothesis-seed N` (locally) draws other examples, fixed by N (profile `seeded`: a derandomized profile would
# ignore the seed); `--hypothesis-profile explore` draws new examples on every run, with the example database.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("default", derandomize=True, database=None)
settings.register_profile("seeded", derandomize=False, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False)


def hypothesis_profile(environ: Mapping[str, str], seed: object = None) -> str:
    """The profile a run loads: ``ci`` under ``CI=true`` (whatever the seed), else ``seeded`` when a seed was
    given, else ``default``."""
    if environ.get("CI", "").lower() in ("1", "true", "yes"):
        return "ci"
    return "default" if seed is None else "seeded"


settings.load_profile(hypothesis_profile(os.environ))


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    """A ``--hypothesis-seed`` given locally takes effect (an explicit ``--hypothesis-profile`` is kept)."""
    if not config.getoption("--hypothesis-profile", None):
        settings.load_profile(hypothesis_profile(os.environ, config.getoption("--hypothesis-seed", None)))
