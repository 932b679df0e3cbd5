"""`make setup` steps for the web portal: Debian's Chromium for the browser tests, and the portal's
build (`npm ci` from package-lock.json, then `vite build`), each redone only when its inputs change."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from devstack.install import APT_PACKAGES, SetupError, apt_install, run, say
from devstack.paths import REPO, Paths

PORTAL = REPO / "portal"
CHROMIUM = Path("/usr/bin/chromium")
MIN_NODE = (20, 19)  # Vite 8's floor
# What the build reads; a change to any of them rebuilds.
BUILD_INPUTS = ("src", "index.html", "package.json", "package-lock.json", "tsconfig.json", "vite.config.ts")
KEEP_BUILDS = 3  # portal builds kept in the tools folder

APT_PACKAGES.setdefault("chromium", ["chromium"])


def install_chromium(paths: Paths) -> str:
    if CHROMIUM.exists():
        return "present"
    apt_install(APT_PACKAGES["chromium"])
    if not CHROMIUM.exists():
        raise SetupError(f"chromium installed but {CHROMIUM} is missing")
    return "installed"


def _node_version() -> tuple[int, int]:
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise SetupError("node and npm are needed to build the portal (Node.js 20.19 or newer)")
    out = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False).stdout
    found = re.match(r"v(\d+)\.(\d+)", out.strip())
    if not found:
        raise SetupError(f"cannot read the Node.js version from {out!r}")
    return int(found[1]), int(found[2])


def _digest(*items: Path) -> str:
    h = hashlib.sha256()
    for item in items:
        files = sorted(p for p in item.rglob("*") if p.is_file()) if item.is_dir() else [item]
        for f in files:
            h.update(str(f.relative_to(PORTAL)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def install_packages(paths: Paths) -> bool:
    """`npm ci` from package-lock.json unless node_modules already holds that lock; True if it ran."""
    node = _node_version()
    if node < MIN_NODE:
        raise SetupError(
            f"Node.js {node[0]}.{node[1]} is too old for the portal: needs {MIN_NODE[0]}.{MIN_NODE[1]}+"
        )
    lock = _digest(PORTAL / "package-lock.json")
    lock_stamp = PORTAL / "node_modules" / ".package-lock.sha256"
    if lock_stamp.exists() and lock_stamp.read_text() == lock:
        return False
    say("  portal     installing packages from package-lock.json (npm ci) ...")
    run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PORTAL, env=_npm_env(paths))
    lock_stamp.write_text(lock)
    return True


def _npm_env(paths: Paths) -> dict[str, str]:
    return {"npm_config_cache": str(paths.tools / "npm-cache"), "npm_config_update_notifier": "false"}


def _copy(src: Path, dest: Path) -> None:
    """Replace dest by a copy of src; a half-written copy never takes dest's name."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def _used(build: Path) -> None:
    (build.parent / f"{build.name}.used").write_text(str(time.time_ns()))  # finer than an mtime


def _last_used(build: Path) -> int:
    used = build.parent / f"{build.name}.used"
    return int(used.read_text()) if used.exists() else 0


def build_portal(paths: Paths) -> str:
    """portal/dist for the current sources: as it is when it was built from them, else copied from
    the build cache in the tools folder (another clone built the same sources), else built and
    cached there. The newest KEEP_BUILDS builds stay in the cache."""
    sources = _digest(*(PORTAL / name for name in BUILD_INPUTS))
    dist = PORTAL / "dist"
    stamp = dist / ".inputs.sha256"
    if stamp.exists() and stamp.read_text() == sources and (dist / "index.html").exists():
        return "present"
    builds = paths.tools / "portal-builds"
    cached = builds / sources[:24]
    if (cached / "index.html").exists() and (cached / ".inputs.sha256").read_text() == sources:
        _copy(cached, dist)
        _used(cached)
        return f"copied from {cached.relative_to(paths.tools.parent)}"
    did = ["installed"] if install_packages(paths) else []
    say("  portal     building (tsc + vite build) ...")
    run(
        ["npm", "run", "build", "--silent"],
        cwd=PORTAL,
        env={**_npm_env(paths), "NODE_ENV": os.environ.get("NODE_ENV", "production")},
    )
    stamp.write_text(sources)
    builds.mkdir(parents=True, exist_ok=True)
    _copy(dist, cached)
    _used(cached)
    kept = [b for b in builds.iterdir() if b.is_dir() and not b.name.startswith(".")]
    for old in sorted(kept, key=_last_used, reverse=True)[KEEP_BUILDS:]:
        shutil.rmtree(old, ignore_errors=True)
        (builds / f"{old.name}.used").unlink(missing_ok=True)
    return " and ".join([*did, "built"])


if __name__ == "__main__":  # `make portal-dev` / `make portal-client`: the packages, not a build
    from devstack.install import progress
    from healthcare.settings import get_settings

    p = Paths.from_settings(get_settings())
    with progress("portal", p.setup_logs / "portal-packages.log"):
        print("  portal     " + ("installed" if install_packages(p) else "packages present"))
