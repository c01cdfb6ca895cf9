"""Order: the seed scenarios first (on the shared stack as it comes up, as they always ran), then the random
schedules, then the scenarios beyond the guide (a Redis outage, a drain and the rest change the stack's history:
in a session that ran them first, head_failure's worker proxies lost 10-14 requests in 3 of 3 runs, against 0 in
7 of 9 runs without them; docs/findings.md), then the controls (each control stack comes up after the shared stack
has done its work, and goes away before the next one)."""

import pytest

LATE_MODULES = ("test_beyond.py",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: (item.get_closest_marker("control") is not None,
                                 item.path.name in LATE_MODULES))
