"""Test-session settings. With pytest-xdist (`make test` runs one worker per core) the OpenMP threads of
each worker and of the processes it starts wait passively, so two workers that train at once share the
cores instead of spinning against each other, and the modules with slow end-to-end tests go first, so
no worker is left with one long test at the end. Consoles are wide enough that a temporary path is
never wrapped inside a message a test looks for."""

import os

os.environ.setdefault("COLUMNS", "1000")
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def pytest_collection_modifyitems(items: list) -> None:
    """Whole modules that hold a `slow` test first, each module's tests in their own order."""
    slow_modules = {item.module.__name__ for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.module.__name__ not in slow_modules)
