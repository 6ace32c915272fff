"""Unit tests are fast: each gets a short timeout (integration tests keep the global one)."""

from __future__ import annotations

from pathlib import Path

import pytest

UNIT_TIMEOUT_S = 20
_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(_HERE) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(UNIT_TIMEOUT_S))
