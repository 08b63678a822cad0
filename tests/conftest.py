"""A skipped test fails the suite when IMAGEGATE_FAIL_ON_SKIP is set (scripts/test sets it).

scripts/test installs and starts everything the suites need, so a skip there means a
missing install step or a test that hides a failure. The one exception is a test marked
`@pytest.mark.needs_outside_ci("why")`: it needs something CI cannot have, and may skip.
The hooks live in this top-level conftest (pytest.ini beside it makes tests/ the rootdir,
so it is loaded for every suite) rather than being imported into each suite's conftest:
two conftest modules both named `conftest` would shadow each other when tests/conformance
and tests/cluster run in one session, and the test files import helpers from the
conformance one by that name.
"""
from __future__ import annotations

import os

import pytest


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "needs_outside_ci(why): the test needs what CI cannot have and may skip there"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or not os.environ.get("IMAGEGATE_FAIL_ON_SKIP"):
        return
    if item.get_closest_marker("needs_outside_ci") is not None:
        return
    if hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"skipped under IMAGEGATE_FAIL_ON_SKIP (not marked needs_outside_ci): {reason}"
