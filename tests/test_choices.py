"""The shared checks behind --strength, --precision and --runtime (CLI, API and engine alike)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from anyrestore.choices import PRECISIONS, RUNTIMES, check_choice, check_strength
from anyrestore.errors import UsageError


@pytest.mark.parametrize("bad", [-0.01, 1.5, math.nan, math.inf])
def test_strength_outside_zero_to_one_is_refused_with_its_spelling(bad: float) -> None:
    with pytest.raises(UsageError, match=r"^--strength must be a number from 0 to 1, got "):
        check_strength(bad, "--strength")


def test_strength_ends_are_allowed() -> None:
    assert check_strength(0.0) == 0.0 and check_strength(1.0) == 1.0


def test_choices_ignore_case_and_spaces_and_name_what_the_user_wrote() -> None:
    assert check_choice(" BF16 ", PRECISIONS, "precision") == "bf16"
    with pytest.raises(UsageError) as err:
        check_choice("tensorrt", RUNTIMES, "runtime", "ANYRESTORE_RUNTIME=tensorrt")
    assert str(err.value) == (
        "unknown runtime 'ANYRESTORE_RUNTIME=tensorrt'; use one of auto, torch, openvino"
    )


def test_the_checks_need_no_torch() -> None:
    """The CLI refuses bad values while parsing, before importing torch costs seconds."""
    code = "import sys, anyrestore.choices; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
