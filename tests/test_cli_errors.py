"""The package's user errors in the anomalib CLI come in two lines, not at the end of 85-268 lines of Rich
traceback (issue 30); other errors keep their traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from anomalib_ssimae import cli_errors
from anomalib_ssimae.models.ssim_ae.checkpoint import check_checkpoint_class

from .helpers import QUICKSTART, config_args


def caught(function: object) -> tuple[type[BaseException], BaseException, object]:
    try:
        function()  # type: ignore[operator]
    except Exception as error:  # noqa: BLE001
        return type(error), error, error.__traceback__
    raise AssertionError


def test_user_errors_are_those_the_package_raises(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from anomalib_ssimae import SsimAe

    ours = caught(lambda: check_checkpoint_class(SsimAe(), {"anomalib_ssimae_model_class": "SsimDae"}))
    theirs = caught(lambda: int("not a number"))  # a ValueError raised outside the package
    assert cli_errors.is_user_error(ours[0], ours[2])
    assert not cli_errors.is_user_error(theirs[0], theirs[2])
    seen = []
    monkeypatch.setattr(sys, "argv", ["/venv/bin/anomalib", "test"])
    monkeypatch.setattr(sys, "excepthook", lambda *args: seen.append(args[0]))
    cli_errors.install()
    cli_errors.install()  # once only
    sys.excepthook(*ours)
    assert capsys.readouterr().err.splitlines() == [
        f"error: {ours[1]}",
        f"(the full traceback: run the command again with {cli_errors.DEBUG}=1)",
    ]
    sys.excepthook(*theirs)
    monkeypatch.setenv(cli_errors.DEBUG, "1")
    sys.excepthook(*ours)
    assert seen == [ValueError, ValueError]  # the other error and the debug run go to the previous hook


@pytest.mark.slow
def test_cli_prints_a_missing_data_root_in_two_lines(tmp_path: Path) -> None:
    command = [
        str(Path(sys.executable).parent / "anomalib"),
        "train",
        *config_args(*QUICKSTART),
        "--data.root",
        str(tmp_path / "no_such_folder"),
        "--default_root_dir",
        str(tmp_path / "results"),
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop(cli_errors.DEBUG, None)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    expected = (
        f"error: {tmp_path / 'no_such_folder' / 'bsdata_pitting_mini'}: no such folder (data.init_args.root "
        f"{tmp_path / 'no_such_folder'}, category bsdata_pitting_mini); anomalib downloads only the MVTec AD "
        "categories. Check data.init_args.root and data.init_args.category"
    )
    assert errors == [expected]
