"""`make setup` steps for the web portal: Debian's Chromium for the browser tests, and the portal's
build (`npm ci` from package-lock.json, then `vite build`), each redone only when its inputs change."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from devstack.install import APT_PACKAGES, SetupError, apt_install, run, say
from devstack.paths import REPO, Paths

PORTAL = REPO / "portal"
CHROMIUM = Path("/usr/bin/chromium")
MIN_NODE = (20, 19)  # Vite 8's floor
# What the build reads; a change to any of them rebuilds.
BUILD_INPUTS = ("src", "index.html", "package-lock.json", "tsconfig.json", "vite.config.ts")

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


def build_portal(paths: Paths) -> str:
    node = _node_version()
    if node < MIN_NODE:
        raise SetupError(
            f"Node.js {node[0]}.{node[1]} is too old for the portal: needs {MIN_NODE[0]}.{MIN_NODE[1]}+"
        )
    env = {"npm_config_cache": str(paths.tools / "npm-cache"), "npm_config_update_notifier": "false"}
    did = []
    lock = _digest(PORTAL / "package-lock.json")
    lock_stamp = PORTAL / "node_modules" / ".package-lock.sha256"
    if not lock_stamp.exists() or lock_stamp.read_text() != lock:
        say("  portal     installing packages from package-lock.json (npm ci) ...")
        run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PORTAL, env=env)
        lock_stamp.write_text(lock)
        did.append("installed")
    sources = _digest(*(PORTAL / name for name in BUILD_INPUTS))
    build_stamp = PORTAL / "dist" / ".inputs.sha256"
    if (
        not build_stamp.exists()
        or build_stamp.read_text() != sources
        or not (PORTAL / "dist" / "index.html").exists()
    ):
        say("  portal     building (tsc + vite build) ...")
        run(
            ["npm", "run", "build", "--silent"],
            cwd=PORTAL,
            env={**env, "NODE_ENV": os.environ.get("NODE_ENV", "production")},
        )
        build_stamp.write_text(sources)
        did.append("built")
    return " and ".join(did) if did else "present"
