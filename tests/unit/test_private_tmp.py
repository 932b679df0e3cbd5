"""SeaweedFS's private /tmp: given where it can, never where the bind would hide what it runs."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from devstack.components import _private_tmp

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="the private /tmp is only made as root with unshare; elsewhere it is never made",
)


def test_a_stack_outside_tmp_gets_a_tmp_of_its_own() -> None:
    # A folder outside /tmp for the stack, as the repository's .state is in a clone made elsewhere
    # (not the working directory: CI may clone under /tmp).
    root = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="unit-private-tmp-"))
    try:
        argv = _private_tmp(root / "tmp", needs=(root / "bin", root / "data"))
        assert argv[:3] == ["unshare", "--mount", "--propagation"]
        assert argv[-1] == str(root / "tmp")
        assert (root / "tmp").is_dir()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_stack_whose_binary_or_data_is_under_tmp_shares_tmp() -> None:
    # A clone made under /tmp: binding a folder onto /tmp would hide the weed binary and its data.
    clone = Path(tempfile.mkdtemp(dir="/tmp", prefix="unit-clone-"))
    outside = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="unit-private-tmp-"))
    try:
        assert _private_tmp(clone / "tmp", needs=(clone / "bin",)) == []
        assert _private_tmp(outside / "tmp", needs=(clone / "bin",)) == []
    finally:
        shutil.rmtree(clone, ignore_errors=True)
        shutil.rmtree(outside, ignore_errors=True)
