"""The test command survives a native crash, and runs the narrow_conv tests twice.

A segfault or abort inside native code (torch, oneDNN, libgomp) used to end the whole
pytest process: the tests after it never ran and no summary named the culprit.  The
project's pytest options (``addopts`` in pyproject.toml) run the tests in a pytest-xdist
worker process; here a child pytest with exactly those options runs a file whose tests
crash in between passing ones.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The Makefile's own options; pyproject.toml adds the rest (-c below).
MAKE_TEST_OPTIONS = ["-q", "-ra"]

CRASHING_TESTS = '''
import ctypes
import os
from pathlib import Path


def ran(name):
    Path(os.environ["RAN_DIR"], name).touch()


def test_before():
    ran("before")


def test_segfault():
    ctypes.string_at(0)  # reads address 0: SIGSEGV in C code, as a native bug would


def test_between():
    ran("between")


def test_abort():
    os.abort()  # SIGABRT, as from "terminate called ..." in C++


def test_after():
    ran("after")
'''


def clean_env(**extra) -> dict:
    # The outer run's own xdist/pytest variables must not leak into the child's session,
    # nor an ISA limit into the pass that should run at the CPU's own.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYTEST_") and k != "ONEDNN_MAX_CPU_ISA"}
    env.update(extra)
    return env


def test_a_native_crash_fails_that_test_and_the_rest_still_run(tmp_path):
    suite, ran = tmp_path / "suite", tmp_path / "ran"
    suite.mkdir()
    ran.mkdir()
    (suite / "test_crashes.py").write_text(CRASHING_TESTS)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(REPO / "pyproject.toml"),
         "--rootdir", str(suite), "-p", "no:cacheprovider", *MAKE_TEST_OPTIONS,
         "test_crashes.py"],
        capture_output=True, text=True, cwd=suite, env=clean_env(RAN_DIR=str(ran)),
        timeout=300,
    )
    output = result.stdout + result.stderr
    # Not 5 (nothing ran), nor a signal (-11, -6): an ordinary "tests failed".
    assert result.returncode == 1, output
    for name in ("test_segfault", "test_abort"):
        assert re.search(rf"worker 'gw\d+' crashed while running 'test_crashes.py::{name}'",
                         output), output
        assert f"FAILED test_crashes.py::{name}" in result.stdout, output  # in the -ra summary
    assert sorted(p.name for p in ran.iterdir()) == ["after", "before", "between"], output
    last_line = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"2 failed, 3 passed in [\d.]+s( \(.*\))?", last_line), output


STUB_PYTHON = """#!/bin/sh
echo "${ONEDNN_MAX_CPU_ISA:-native} $*" >> "$STUB_LOG"
case "$*" in
  *narrow_conv*) exit "$NARROW_PASS_RC" ;;
  *) exit "$FIRST_PASS_RC" ;;
esac
"""


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize(
    "first, narrow, narrow_file_exists, expected",
    [
        (0, 0, True, 0),
        (1, 0, True, 1),  # the second pass still runs after a failed first one
        (0, 1, True, 1),
        (2, 1, True, 2),  # the first failure's own code wins
        (0, 5, False, 0),  # the narrow_conv tests are not written yet
        (0, 5, True, 5),  # they are, but none was collected: a broken marker
    ],
    ids=["both-pass", "first-fails", "narrow-fails", "both-fail", "no-narrow-file",
         "narrow-file-collects-nothing"],
)
def test_make_test_runs_narrow_conv_tests_again_with_avx2(
        first, narrow, narrow_file_exists, expected, tmp_path):
    # The real Makefile recipe with a stand-in interpreter: the real suite takes many
    # minutes, and what matters here is which commands run and the exit status.
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(STUB_PYTHON)
    python.chmod(0o755)
    stamp = venv / ".installed"
    stamp.touch()
    narrow_file = tmp_path / "test_memory_layout.py"
    if narrow_file_exists:
        narrow_file.touch()
    log = tmp_path / "log"
    result = subprocess.run(
        # -o: neither re-create the venv nor install chromium.
        ["make", "-s", "-C", str(REPO), "-o", str(stamp), "-o", "browser", "test",
         f"VENV={venv}", f"NARROW_TESTS={narrow_file}"],
        capture_output=True, text=True, timeout=60,
        env=clean_env(STUB_LOG=str(log), FIRST_PASS_RC=str(first),
                      NARROW_PASS_RC=str(narrow)),
    )
    output = result.stdout + result.stderr
    # make reports a failed recipe as 2 whatever the code; the code itself is in its message.
    assert (result.returncode == 0) == (expected == 0), output
    if expected:
        assert f"Error {expected}" in result.stderr, output
    assert log.read_text().splitlines() == [
        "native -m pytest -q -ra --durations=25",
        "AVX2 -m pytest -q -ra -m narrow_conv",
    ], output
