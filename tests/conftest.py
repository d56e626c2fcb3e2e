"""Slow tests say so as they finish: with `-q` the suite is otherwise only dots for minutes on a loaded machine."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]  # tests/test_test_suite.py runs a small inner suite through it

SLOW_TEST_S = 15.0  # a test that takes longer gets its own line with its time, as soon as it ends


@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call" or report.duration < SLOW_TEST_S:
        return
    reporter = _reporter()
    if reporter is not None:
        reporter.write_line("")  # end the line of dots
        reporter.write_line(f"slow: {report.nodeid} {report.duration:.0f}s")


_config: pytest.Config | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _config
    _config = config


def _reporter():
    return _config.pluginmanager.get_plugin("terminalreporter") if _config is not None else None
