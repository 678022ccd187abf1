"""The README's example runs, and its two set-up commands are the ones CI runs."""

import pathlib
import re

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CI = ROOT / ".ci" / "run"

pytestmark = pytest.mark.skipif(not README.exists(), reason="not run from a source checkout")


def _blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), re.S)


def test_exactly_two_setup_commands():
    commands = [b.strip() for b in _blocks("bash")]
    assert commands == ["pip install . && scitensor demo",
                        "pip install '.[test]' && python -m pytest"]


def test_ci_runs_the_readme_test_command_verbatim():
    test_command = _blocks("bash")[1].strip()
    ci = CI.read_text()
    assert f'TEST_COMMAND="{test_command}"' in ci
    assert 'eval "$TEST_COMMAND"' in ci
    assert ci.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in ci


def test_readme_example_runs():
    (code,) = _blocks("python")
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert np.allclose(namespace["w"].grad.numpy(), [2, 4, 6])
    assert np.allclose(namespace["g"].numpy(), [2, 2, 2])
    assert namespace["out"].tolist() == [1.0, 1.0]
    assert namespace["loss"].shape == ()
