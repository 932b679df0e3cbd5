"""`make setup`: a long step says how long it has run and where its output is; a failure names the log."""

import re
import sys
from pathlib import Path

import pytest

from devstack import install


def test_a_long_step_prints_elapsed_time_its_log_and_last_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(install, "PROGRESS_FIRST", 0.1)
    monkeypatch.setattr(install, "PROGRESS_EVERY", 0.1)
    log = tmp_path / "setup" / "slow.log"
    script = "import time\nprint('compiling pkg/one', flush=True)\ntime.sleep(1.0)\nprint('done')"
    with install.progress("slow", log):
        install.run([sys.executable, "-c", script])
    out = capsys.readouterr().out
    assert re.search(rf"slow +\.\.\. 0m0\ds \(log: {re.escape(str(log))}\)  \| compiling pkg/one", out), out
    assert "compiling pkg/one\ndone\n" in log.read_text()


def test_a_failing_command_names_its_output_and_the_log(tmp_path: Path) -> None:
    log = tmp_path / "broken.log"
    with pytest.raises(install.SetupError) as err, install.progress("broken", log):
        install.run([sys.executable, "-c", "import sys; print('no such module: x'); sys.exit(3)"])
    assert "no such module: x" in str(err.value)
    assert str(log) in str(err.value)
