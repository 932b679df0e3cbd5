"""`make down` must see an exited supervisor as gone, even before anyone reaped it."""

import subprocess
import sys
import time

from devstack.__main__ import _alive


def test_running_then_exited_child_is_gone_even_as_a_zombie() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    assert _alive(proc.pid)
    time.sleep(1.0)  # it has exited but nobody called wait(): a zombie
    assert not _alive(proc.pid)


def test_unknown_pid_is_gone() -> None:
    assert not _alive(2**22 + 12345)
