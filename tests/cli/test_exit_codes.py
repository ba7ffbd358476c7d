"""How a command that ends badly ends: one line and a documented exit code."""

from __future__ import annotations

import pytest

from anyrestore.cli.errors import _run
from anyrestore.errors import ExitCode


def _raises(exc: BaseException):
    def body() -> None:
        raise exc

    return body


@pytest.mark.parametrize(
    ("exc", "code", "said"),
    [
        (MemoryError(), ExitCode.DEVICE, "anyrestore: error: out of memory"),
        (OSError(5, "Input/output error", "/mnt/a.jpg"), ExitCode.FAILED, "(/mnt/a.jpg)"),
        (KeyError("x"), ExitCode.FAILED, "internal error, please report it: KeyError"),
    ],
)
def test_what_no_command_expected_is_one_line_and_a_code(
    exc: BaseException, code: int, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as ended:
        _run(_raises(exc))
    assert ended.value.code == code
    err = capsys.readouterr().err
    assert said in err and len(err.strip().splitlines()) == 1
