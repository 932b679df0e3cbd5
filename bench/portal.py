"""The portal in a real browser (Debian's Chromium), against the running stack (`make up`).

Prints, each against a baseline measured in the same run:
- booking (API) -> the new total visible on an open analytics page, p50/p99 over N bookings,
  against the same booking -> the websocket frame that carries it reaching the page;
- first render of the signed-in home page (navigation start -> its heading and data), against
  the sign-in page, which needs no API call;
- the gzipped size of the built JavaScript: what the first page loads, and all chunks.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import re
import statistics
import time
import uuid

import httpx
from playwright.sync_api import WebSocket, sync_playwright

from bench.common import PASSWORD, admin_headers, base_url
from healthcare.settings import REPO_ROOT

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
DIST = REPO_ROOT / "portal" / "dist"
TOTAL_ABOVE = (
    "b => Number(document.querySelector('[data-testid=total-created]').innerText.replace(/\\D/g, '')) > b"
)


def pct(values: list[float], p: float) -> float:
    data = sorted(values)
    return data[min(len(data) - 1, int(p / 100 * len(data)))] if data else float("nan")


def bundle_sizes() -> tuple[int, int, int]:
    """(first-load gzipped JS, all gzipped JS, chunk count): the first load is index.html's script
    and the chunks it preloads."""
    index = (DIST / "index.html").read_text()
    first = set(re.findall(r'(?:src|href)="/(assets/[^"]+\.js)"', index))
    sizes = {
        p.relative_to(DIST).as_posix(): len(gzip.compress(p.read_bytes(), 9))
        for p in (DIST / "assets").glob("*.js")
    }
    return sum(sizes[f] for f in first), sum(sizes.values()), len(sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bookings", type=int, default=50)
    parser.add_argument("--renders", type=int, default=15)
    args = parser.parse_args()
    assert args.bookings >= 1 and args.bookings <= 500, "bounded: 1..500 bookings"
    base = base_url()

    with httpx.Client(base_url=base, timeout=30) as http:

        async def _admin() -> dict[str, str]:
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                return await admin_headers(client)

        admin = asyncio.run(_admin())
        email = f"bench-staff-{uuid.uuid4().hex[:8]}@clinic.example.com"
        http.post(
            "/api/v1/users", json={"email": email, "password": PASSWORD, "role": "staff"}, headers=admin
        ).raise_for_status()
        doctor = http.post(
            "/api/v1/doctors", json={"name": "Dr Bench", "specialty": "Bench", "fee": "10.00"}, headers=admin
        ).json()
        patients = [
            http.post("/api/v1/patients", json={"name": f"Bench {i}"}, headers=admin).json()["id"]
            for i in range(args.bookings)
        ]

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            context = browser.new_context()
            page = context.new_page()
            page.goto(f"{base}/sign-in")
            page.get_by_label(re.compile("^Email")).fill(email)
            page.get_by_label(re.compile("^Password")).fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.get_by_role("button", name="Sign out").wait_for()
            state = context.storage_state()

            # -- booking -> total on an open analytics page ------------------------------------
            frames: list[tuple[float, int]] = []

            def on_socket(ws: WebSocket) -> None:
                def got(payload: str | bytes) -> None:
                    value = json.loads(payload)
                    frames.append((time.perf_counter(), int(value["totalEventsCreated"])))

                ws.on("framereceived", got)

            page.on("websocket", on_socket)
            page.goto(f"{base}/analytics")
            page.get_by_test_id("feed-status").filter(has_text="Live").wait_for()
            start = time.perf_counter()
            base_day = time.time() // 86400 * 86400 + 20 * 86400
            to_dom: list[float] = []
            to_frame: list[float] = []
            for i, patient in enumerate(patients):
                before = int(re.sub(r"\D", "", page.get_by_test_id("total-created").inner_text()) or 0)
                slot = time.strftime("%Y-%m-%dT%H:%M:00+00:00", time.gmtime(base_day + i * 1800))
                began = time.perf_counter()
                http.post(
                    "/api/v1/appointments",
                    json={"patientId": patient, "doctorId": doctor["id"], "time": slot},
                    headers={**admin, "Idempotency-Key": uuid.uuid4().hex},
                ).raise_for_status()
                page.wait_for_function(
                    TOTAL_ABOVE,
                    arg=before,
                    timeout=30_000,
                    polling="raf",
                )
                done = time.perf_counter()
                to_dom.append((done - began) * 1000)
                frame = next((t for t, total in frames if t >= began and total > before), done)
                to_frame.append((frame - began) * 1000)
            elapsed = time.perf_counter() - start

            # -- first render ------------------------------------------------------------------
            def render(path: str, ready: str) -> float:
                ctx = browser.new_context(storage_state=state if path == "/" else None)
                pg = ctx.new_page()
                pg.goto(f"{base}{path}", wait_until="commit")
                pg.get_by_role("heading", level=1, name=re.compile(ready)).wait_for()
                if path == "/":
                    pg.get_by_role("heading", name="Next appointments").wait_for()
                ms = float(pg.evaluate("performance.now()"))  # since this navigation started
                ctx.close()
                return ms

            home = [render("/", "^Welcome") for _ in range(args.renders)]
            sign_in = [render("/sign-in", "^Sign in$") for _ in range(args.renders)]
            browser.close()

    first, total, chunks = bundle_sizes()
    render_after_frame = statistics.median(d - f for d, f in zip(to_dom, to_frame, strict=True))
    rows = [
        ("booking -> total on the analytics page", to_dom, f"({elapsed:.0f} s)"),
        ("booking -> websocket frame at the page", to_frame, "(baseline)"),
        ("first render, signed-in home page", home, ""),
        ("first render, sign-in page (no API call)", sign_in, "(baseline)"),
    ]
    print(f"portal benchmark (Chromium {CHROMIUM}; shared machine, figures are noisy)")
    for name, values, note in rows:
        print(
            f"  {name:<41} n={len(values):<3} p50 {pct(values, 50):7.1f} ms"
            f"  p99 {pct(values, 99):7.1f} ms  {note}"
        )
    print(
        f"  page renders {render_after_frame:.1f} ms after the frame (p50); ratio page/frame p50 "
        f"{pct(to_dom, 50) / max(pct(to_frame, 50), 0.001):.2f}; "
        f"home/sign-in p50 {pct(home, 50) / pct(sign_in, 50):.2f}"
    )
    print(
        f"  JavaScript gzipped: first load {first / 1024:.1f} KiB, all {chunks} chunks {total / 1024:.1f} KiB"
    )


if __name__ == "__main__":
    main()
