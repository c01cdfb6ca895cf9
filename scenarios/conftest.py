"""Order: the seed scenarios first, then the controls (each control stack comes up after the shared stack
has done its work, and goes away before the next one)."""

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("control") is not None)
