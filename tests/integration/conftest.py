"""Fixtures of the whole-system tests: one key pair set per module, and SystemRigs stopped at teardown.

A module that needs its own rig sets ``RIG_CLASS`` (a SystemRig subclass); ``make_rig(**kw)`` builds it.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.helpers_system import SystemRig, key_pairs


@pytest.fixture(scope="module")
def keys():
    return key_pairs()


@pytest.fixture
def make_rig(request, keys, tmp_path):
    cls = getattr(request.module, "RIG_CLASS", SystemRig)
    rigs: list[SystemRig] = []

    def make(**kw: Any) -> SystemRig:
        rig = cls(keys, tmp_path, **kw)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        rig.close()
