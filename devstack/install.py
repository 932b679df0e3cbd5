"""`make setup`: installs each missing local-stack tool from the allowed registries, skipping the rest.

Each step is one entry of STEPS: `(name, function)`, the function returning a word for what it did
("present", "built", ...). A step runs its commands through `run`, which streams their output into
the step's log (`.state/logs/setup/<step>.log`); while a step runs longer than a few seconds,
`setup` prints its elapsed time, the log's path and the log's last line every few seconds.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from devstack.k8s import install_kubernetes_tools
from devstack.paths import REPO, Paths

# Pinned component versions (bumping one rebuilds that tool on the next `make setup`).
KAFKA_VERSION = "4.4.0"  # also in devstack/kafka/pom.xml
SEAWEEDFS_VERSION = "v0.0.0-20261109003541-7506e5f91cd6"  # SeaweedFS 4.53; see devstack/seaweedfs/go.mod
RIE_VERSION = "v0.0.0-20261030222936-bef5c4ba774d"  # the upstream repo has no semver tags
FLINK_KAFKA_CONNECTOR_VERSION = "5.0.0-2.2"  # also in devstack/flink/pom.xml
ZIPKIN_VERSION = "3.6.1"  # also in devstack/zipkin/pom.xml

APT_PACKAGES = {
    "postgres": ["postgresql"],
    "java": ["openjdk-17-jre-headless"],
    "mvn": ["maven"],
    "pdftotext": ["poppler-utils"],
    "fonts": ["fonts-dejavu-core"],  # invoice PDFs print Greek and Cyrillic names with DejaVu Sans
}


class SetupError(Exception):
    pass


def say(message: str) -> None:
    print(message, flush=True)


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # colour codes some tools print even when told not to
PROGRESS_FIRST = 5.0  # seconds before a running step first says so
PROGRESS_EVERY = 15.0
_step_log: Path | None = None  # the log of the step that is running


def run(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    """Run one command of a setup step; its output goes to the step's log, its failure names it."""
    log = _step_log
    with log.open("a") if log else contextlib.nullcontext() as out:
        if out is not None:
            out.write(f"$ {' '.join(argv)}\n")
            out.flush()
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=out if out is not None else subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        tail = _last_lines(log, 5) if log else (proc.stdout or "").strip().splitlines()[-5:]
        where = f" (full output: {log})" if log else ""
        raise SetupError(f"`{' '.join(argv[:3])} ...` failed: {' | '.join(tail)}{where}")


def _last_lines(path: Path, n: int) -> list[str]:
    with contextlib.suppress(OSError):
        return [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()][-n:]
    return []


@contextlib.contextmanager
def progress(name: str, log: Path) -> Iterator[None]:
    """While the block runs: after PROGRESS_FIRST seconds, and every PROGRESS_EVERY seconds after,
    print the step's elapsed time, its log and the log's last line."""
    global _step_log  # noqa: PLW0603 - one step at a time
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    _step_log = log
    done = threading.Event()
    began = time.monotonic()

    def tick() -> None:
        wait = PROGRESS_FIRST
        while not done.wait(wait):
            elapsed = time.monotonic() - began
            last = ANSI.sub("", (_last_lines(log, 1) or [""])[0])[:100]
            tail = f"  | {last}" if last else ""
            say(f"  {name:<10} ... {elapsed // 60:.0f}m{elapsed % 60:02.0f}s (log: {log}){tail}")
            wait = PROGRESS_EVERY

    ticker = threading.Thread(target=tick, name=f"progress-{name}", daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()
        _step_log = None


def postgres_bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=_pg_major)
    return Path(found[-1]).parent if found else None


def _pg_major(path: str) -> int:
    try:
        return int(Path(path).parts[-3])
    except ValueError:
        return 0


_apt_updated = False


def apt_install(packages: list[str]) -> None:
    global _apt_updated  # noqa: PLW0603 - one `apt-get update` per setup run
    if os.geteuid() != 0:
        raise SetupError(f"needs Debian packages {packages}: run `sudo apt-get install {' '.join(packages)}`")
    if not _apt_updated:
        run(["apt-get", "update", "-q"])
        _apt_updated = True
    # Debian's postgresql package would create and start a 'main' cluster on 5432; ours lives in .state.
    conf = Path("/etc/postgresql-common/createcluster.conf")
    conf.parent.mkdir(parents=True, exist_ok=True)
    if not conf.exists():
        conf.write_text("create_main_cluster = false\n")
    run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        env={"DEBIAN_FRONTEND": "noninteractive"},
    )


def _stamp_ok(stamp: Path, version: str, *artifacts: Path) -> bool:
    return stamp.exists() and stamp.read_text().strip() == version and all(a.exists() for a in artifacts)


def go_env(paths: Paths) -> dict[str, str]:
    return {"GOBIN": str(paths.bin), "GOFLAGS": "-modcacherw", "CGO_ENABLED": "0"}


def install_seaweedfs(paths: Paths) -> str:
    target = paths.bin / "weed"
    stamp = paths.tools / "weed.version"
    if _stamp_ok(stamp, SEAWEEDFS_VERSION, target):
        return "present"
    _need("go", "Go 1.26+ (https://go.dev) is needed to build SeaweedFS and the Lambda emulator")
    # A wrapper module, because SeaweedFS's go.mod has a `replace` that `go install pkg@v` refuses.
    run(
        [
            "go",
            "build",
            "-v",  # one line per package compiled: the progress shown while it builds
            "-trimpath",
            "-ldflags=-s -w",
            "-o",
            str(target),
            "github.com/seaweedfs/seaweedfs/weed",
        ],
        cwd=REPO / "devstack" / "seaweedfs",
        env=go_env(paths),
    )
    stamp.write_text(SEAWEEDFS_VERSION)
    return "built"


def install_rie(paths: Paths) -> str:
    target = paths.bin / "aws-lambda-rie"
    stamp = paths.tools / "aws-lambda-rie.version"
    if _stamp_ok(stamp, RIE_VERSION, target):
        return "present"
    _need("go", "Go 1.26+ is needed to build the Lambda runtime interface emulator")
    run(
        [
            "go",
            "install",
            "-v",
            "-trimpath",
            f"github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@{RIE_VERSION}",
        ],
        env=go_env(paths),
    )
    stamp.write_text(RIE_VERSION)
    return "built"


def kafka_libs(paths: Paths) -> Path:
    return paths.tools / f"kafka-{KAFKA_VERSION}" / "libs"


def maven_fetch(pom: Path, target: Path) -> None:
    """Copy a pom's runtime jars from Maven Central into `target`; only a complete fetch lands there."""
    for tool, pkgs in (("java", APT_PACKAGES["java"]), ("mvn", APT_PACKAGES["mvn"])):
        if shutil.which(tool) is None:
            apt_install(pkgs)
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    run(
        [
            "mvn",
            "-B",
            "-Dstyle.color=never",  # plain text in the step's log
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={tmp}",
        ],
    )
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def _maven_jars(component: str, target: Path, expected_jar: str) -> str:
    """The jars of devstack/<component>/pom.xml in `target`, unless `expected_jar` is there already."""
    if (target / expected_jar).exists():
        return "present"
    maven_fetch(REPO / "devstack" / component / "pom.xml", target)
    return "downloaded"


def install_kafka(paths: Paths) -> str:
    return _maven_jars("kafka", kafka_libs(paths), f"kafka_2.13-{KAFKA_VERSION}.jar")


def zipkin_jar(paths: Paths) -> Path:
    return paths.tools / f"zipkin-{ZIPKIN_VERSION}" / f"zipkin-server-{ZIPKIN_VERSION}-exec.jar"


def install_zipkin(paths: Paths) -> str:
    """Zipkin's self-contained server jar (the trace backend), from Maven Central: 135 MB, no build."""
    jar = zipkin_jar(paths)
    return _maven_jars("zipkin", jar.parent, jar.name)


def install_postgres(paths: Paths) -> str:
    if postgres_bin_dir() is not None:
        return "present"
    apt_install(APT_PACKAGES["postgres"])
    if postgres_bin_dir() is None:
        raise SetupError("postgresql installed but no server binary under /usr/lib/postgresql")
    return "installed"


def install_poppler(paths: Paths) -> str:
    if shutil.which("pdftotext"):
        return "present"
    apt_install(APT_PACKAGES["pdftotext"])
    return "installed"


def install_fonts(paths: Paths) -> str:
    if Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").exists():
        return "present"
    apt_install(APT_PACKAGES["fonts"])
    return "installed"


def _need(tool: str, why: str) -> None:
    if shutil.which(tool) is None:
        raise SetupError(f"{tool} not found: {why}")


def connector_dir(paths: Paths) -> Path:
    """Where the Flink job finds its Kafka connector jar (devstack.flink passes it to the job)."""
    return paths.tools / "flink-connectors"


def install_flink_connectors(paths: Paths) -> str:
    """The shaded Kafka connector jar of the Flink job, from Maven Central."""
    jar = f"flink-sql-connector-kafka-{FLINK_KAFKA_CONNECTOR_VERSION}.jar"
    return _maven_jars("flink", connector_dir(paths), jar)


def install_chromium(paths: Paths) -> str:
    from devstack.portal import install_chromium as install

    return install(paths)


def build_portal(paths: Paths) -> str:
    from devstack.portal import build_portal as build

    return build(paths)


STEPS: list[tuple[str, Callable[[Paths], str]]] = [
    ("postgres", install_postgres),
    ("kafka", install_kafka),
    ("lambda-rie", install_rie),
    ("seaweedfs", install_seaweedfs),
    ("pdftotext", install_poppler),
    ("fonts", install_fonts),
    ("flink-connectors", install_flink_connectors),
    ("zipkin", install_zipkin),
    ("kubernetes", install_kubernetes_tools),  # devstack/k8s.py: helm, kube-apiserver, etcd, kwok, CRDs
    ("chromium", install_chromium),  # the browser tests drive Debian's Chromium
    ("portal", build_portal),
]


def setup(paths: Paths) -> None:
    paths.bin.mkdir(parents=True, exist_ok=True)
    for name, step in STEPS:
        began = time.monotonic()
        if name == "seaweedfs" and not (paths.bin / "weed").exists():
            say(f"  {name:<10} building from the Go module proxy (first time: several minutes) ...")
        if name == "chromium" and not Path("/usr/bin/chromium").exists():
            say(f"  {name:<10} installing Debian's chromium (first time: about two minutes) ...")
        with progress(name, paths.setup_logs / f"{name}.log"):
            result = step(paths)
        say(f"  {name:<10} {result} ({time.monotonic() - began:.1f}s)")
