"""Builds the deployable zip of the invoice-PDF Lambda (runtime python3.11, architecture x86_64).

    python lambda/package.py [--out dist/invoice-pdf-lambda.zip]

The zip holds invoice_pdf.py at its root, reportlab (and its pillow and charset-normalizer) built for
the Lambda platform (manylinux2014 x86_64, CPython 3.11: Amazon Linux 2 has glibc 2.26, so no
manylinux_2_28 wheel), and DejaVu Sans in fonts/ so names in Greek or Cyrillic script render.
boto3 is left out: the Lambda runtime provides it. reportlab is pinned to the version of the
interpreter running this script, so the zip renders what the tests rendered. Entries are sorted
and carry fixed timestamps and modes: the same inputs give the same zip, byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
HANDLER = HERE / "invoice_pdf.py"
FONT_FILES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf")
DEFAULT_FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONT_LICENSE = Path("/usr/share/doc/fonts-dejavu-core/copyright")
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry
LAMBDA_ZIP_LIMIT = 50 * 1024 * 1024  # direct upload; larger zips must go through S3
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024


class PackageError(Exception):
    pass


def find_uv(explicit: str | None) -> str:
    """The uv the Makefile pins (under .state/tools), else $UV, else uv on PATH."""
    pinned = sorted(REPO.glob(".state/tools/uv-*/bin/uv"))
    for candidate in (
        explicit,
        *(str(p) for p in reversed(pinned)),
        os.environ.get("UV"),
        shutil.which("uv"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    raise PackageError("uv not found: run `make install` or pass --uv PATH")


def install_dependencies(uv: str, target: Path, reportlab_version: str) -> None:
    command = [
        uv,
        "pip",
        "install",
        "--quiet",
        "--target",
        str(target),
        "--python-platform",
        "x86_64-manylinux2014",
        "--python-version",
        "3.11",
        "--only-binary",
        ":all:",
        "--no-compile",
        f"reportlab=={reportlab_version}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        raise PackageError(f"uv could not install reportlab for the Lambda platform:\n{result.stderr}")


def collect(site: Path, font_dir: Path | None) -> dict[str, Path]:
    """Archive name -> file on disk, for everything the zip carries."""
    files = {"invoice_pdf.py": HANDLER}
    for path in site.rglob("*"):
        relative = path.relative_to(site)
        # Console scripts point at an interpreter that Lambda lacks; uv's .lock is not code.
        if path.is_dir() or relative.parts[0] in ("bin", ".lock") or "__pycache__" in relative.parts:
            continue
        files[relative.as_posix()] = path
    if font_dir is not None:
        missing = [name for name in FONT_FILES if not (font_dir / name).is_file()]
        if missing:
            raise PackageError(
                f"{missing} not in {font_dir}: install Debian's fonts-dejavu-core, pass --font-dir, "
                "or --no-fonts (names then render in Helvetica, Latin-1 only)"
            )
        for name in FONT_FILES:
            files[f"fonts/{name}"] = font_dir / name
        if FONT_LICENSE.is_file():
            files["fonts/LICENSE-DejaVu.txt"] = FONT_LICENSE
    return files


def write_zip(files: dict[str, Path], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with zipfile.ZipFile(partial, "w") as archive:
        for name in sorted(files):
            path = files[name]
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.create_system = 3  # Unix, so the mode below is honoured when Lambda unpacks
            mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes(), compresslevel=9)
    partial.replace(out)


def smoke_test(out: Path, with_fonts: bool) -> str:
    """Renders one invoice with the zip's own code and libraries (needs Linux x86_64, CPython 3.11)."""
    if (sys.platform, platform.machine(), sys.version_info[:2]) != ("linux", "x86_64", (3, 11)):
        return "skipped (needs Linux x86_64 with CPython 3.11)"
    check = f"""
import sys
root = sys.argv[1]
sys.path.insert(0, root)
import invoice_pdf, reportlab
from PIL import Image
assert reportlab.__file__.startswith(root), reportlab.__file__
Image.new("RGB", (1, 1))
assert (invoice_pdf._fonts()[0] == "InvoiceSans") is {with_fonts}, invoice_pdf._fonts()
invoice = invoice_pdf.parse_request({{
    "invoiceId": "00000000-0000-4000-8000-000000000000", "patientId": "p-1",
    "amount": "10.00", "date": "2025-01-01", "status": "ISSUED", "patientName": "Ελένη Иванова",
}})
assert invoice_pdf.render_pdf(invoice).startswith(b"%PDF-")
"""
    with tempfile.TemporaryDirectory() as root:
        with zipfile.ZipFile(out) as archive:
            archive.extractall(root)
        env = {k: v for k, v in os.environ.items() if k != "INVOICE_FONT_DIR"}
        result = subprocess.run(  # noqa: S603
            [sys.executable, "-I", "-c", check, root], capture_output=True, text=True, env=env, check=False
        )
    if result.returncode != 0:
        raise PackageError(f"the built zip does not render an invoice:\n{result.stderr}")
    return "ok (rendered an invoice with the zip's reportlab, pillow and fonts)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist" / "invoice-pdf-lambda.zip")
    parser.add_argument("--uv", help="uv binary (default: the pinned one under .state/tools, then PATH)")
    parser.add_argument("--reportlab-version", help="default: the version this interpreter has")
    parser.add_argument("--font-dir", type=Path, default=DEFAULT_FONT_DIR)
    parser.add_argument("--no-fonts", action="store_true", help="leave DejaVu out (Latin-1 names only)")
    parser.add_argument("--no-smoke-test", action="store_true")
    args = parser.parse_args(argv)
    try:
        version = args.reportlab_version or metadata.version("reportlab")
        uv = find_uv(args.uv)
        with tempfile.TemporaryDirectory() as tmp:
            site = Path(tmp) / "site"
            install_dependencies(uv, site, version)
            bundled = sorted(p.name.removesuffix(".dist-info") for p in site.glob("*.dist-info"))
            files = collect(site, None if args.no_fonts else args.font_dir)
            unzipped = sum(path.stat().st_size for path in files.values())
            write_zip(files, args.out)
        smoke = "skipped" if args.no_smoke_test else smoke_test(args.out, not args.no_fonts)
    except (PackageError, metadata.PackageNotFoundError) as exc:
        print(f"package: {exc}", file=sys.stderr)
        return 1
    size = args.out.stat().st_size
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(
        f"{args.out} {size} bytes ({size / 1024 / 1024:.1f} MiB; {unzipped / 1024 / 1024:.1f} MiB unzipped)"
    )
    print(f"  sha256 {digest}")
    print(f"  bundled {', '.join(bundled)}; fonts {'no' if args.no_fonts else 'DejaVu Sans'}")
    print(f"  smoke test {smoke}")
    print("  deploy as runtime python3.11, architecture x86_64, handler invoice_pdf.handler")
    if size > LAMBDA_ZIP_LIMIT or unzipped > LAMBDA_UNZIPPED_LIMIT:
        print("  warning: above Lambda's direct-upload limits (50 MiB zipped / 250 MiB unzipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
