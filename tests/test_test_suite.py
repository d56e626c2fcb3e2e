"""The suite itself: with `-q` a slow test gets a line as soon as it ends, and the slowest are listed."""

from __future__ import annotations

from pathlib import Path

CONFTEST = (Path(__file__).parent / "conftest.py").read_text(encoding="utf-8")


def test_slow_tests_are_named_as_they_finish(pytester):
    inner = CONFTEST.replace('pytest_plugins = ["pytester"]', "pytest_plugins = []")
    pytester.makeconftest(inner.replace("SLOW_TEST_S = 15.0", "SLOW_TEST_S = 0.2"))
    pytester.makepyfile(test_inner="""
        import time

        def test_quick():
            pass

        def test_sleepy():
            time.sleep(0.3)
    """)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "--durations=5", "--durations-min=0.2")
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    assert "slow: test_inner.py::test_sleepy 0s" in out and "test_quick 0s" not in out
    assert "slowest 5 durations" in out
    assert "--durations=10" in (Path(__file__).parent.parent / "pyproject.toml").read_text()
