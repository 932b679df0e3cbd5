"""`make setup`'s portal step: build once per set of sources, reuse the build from the tools folder.

npm is replaced by a recorder here (this is a unit test of devstack/portal.py alone); the real
build runs in every `make setup` and the browser tests use what it made.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack import portal
from devstack.paths import Paths

INPUTS = {
    "src/main.tsx": "render()",
    "index.html": "<html></html>",
    "package.json": "{}",
    "package-lock.json": '{"lockfileVersion": 3}',
    "tsconfig.json": "{}",
    "vite.config.ts": "export default {}",
}


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Paths, list[list[str]]]:
    front = tmp_path / "portal"
    for name, text in INPUTS.items():
        (front / name).parent.mkdir(parents=True, exist_ok=True)
        (front / name).write_text(text)
    calls: list[list[str]] = []

    def npm(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
        calls.append(argv)
        if argv[:2] == ["npm", "ci"]:
            (front / "node_modules").mkdir(exist_ok=True)
        else:  # what `vite build` leaves: an emptied outDir with the app
            dist = front / "dist"
            if dist.exists():
                for f in dist.iterdir():
                    f.unlink()
            dist.mkdir(exist_ok=True)
            (dist / "index.html").write_text((front / "src/main.tsx").read_text())

    monkeypatch.setattr(portal, "PORTAL", front)
    monkeypatch.setattr(portal, "run", npm)
    monkeypatch.setattr(portal, "_node_version", lambda: (22, 0))
    paths = Paths(tmp_path / "state", tmp_path / "state" / "tools")
    return front, paths, calls


def test_a_build_is_made_once_and_then_present(tree: tuple[Path, Paths, list[list[str]]]) -> None:
    _front, paths, calls = tree
    assert portal.build_portal(paths) == "installed and built"
    assert [c[:2] for c in calls] == [["npm", "ci"], ["npm", "run"]]
    assert portal.build_portal(paths) == "present"
    assert len(calls) == 2


def test_another_clone_copies_the_cached_build_without_npm(tree: tuple[Path, Paths, list[list[str]]]) -> None:
    front, paths, calls = tree
    portal.build_portal(paths)
    calls.clear()
    for gone in ("dist", "node_modules"):  # a fresh clone that copied the tools folder
        for f in sorted((front / gone).rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
        (front / gone).rmdir()
    assert portal.build_portal(paths).startswith("copied from tools/portal-builds/")
    assert calls == []
    assert (front / "dist" / "index.html").read_text() == "render()"


def test_changed_sources_rebuild_and_the_cache_keeps_the_newest(
    tree: tuple[Path, Paths, list[list[str]]],
) -> None:
    front, paths, calls = tree
    for i in range(portal.KEEP_BUILDS + 2):
        (front / "src/main.tsx").write_text(f"render({i})")
        assert portal.build_portal(paths).endswith("built")
        assert (front / "dist" / "index.html").read_text() == f"render({i})"
    assert [c[:2] for c in calls].count(["npm", "ci"]) == 1  # the lock never changed
    builds = paths.tools / "portal-builds"
    assert len([b for b in builds.iterdir() if b.is_dir()]) == portal.KEEP_BUILDS
    assert len(list(builds.glob("*.used"))) == portal.KEEP_BUILDS
    # The oldest builds were let go: going back to the first sources builds again ...
    (front / "src/main.tsx").write_text("render(0)")
    assert portal.build_portal(paths) == "built"
    # ... and one of the newest is still there: going back to it needs no npm.
    calls.clear()
    (front / "src/main.tsx").write_text(f"render({portal.KEEP_BUILDS + 1})")
    assert portal.build_portal(paths).startswith("copied from")
    assert calls == []
    assert (front / "dist" / "index.html").read_text() == f"render({portal.KEEP_BUILDS + 1})"
