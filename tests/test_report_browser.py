"""The report in a real headless Chromium: every figure decodes under the page's no-outside-resources policy.

Chromium (Debian package ``chromium``, /usr/bin/chromium) is started by the test with a fresh profile and
the flags a closed network needs; the page is served from a 127.0.0.1 http.server started by the test.
The page's own inline script marks each <img> with data-loaded="1" once it has decoded (naturalWidth > 0);
``--dump-dom`` after a virtual-time budget returns the DOM with those marks.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import struct
import subprocess
import threading
from pathlib import Path

import pytest

pytest.importorskip("pandas")
pytest.importorskip("pyarrow")
pytest.importorskip("seaborn")
pytest.importorskip("jinja2")

from precond_core.bench.grid import Cell  # noqa: E402
from precond_core.bench.report import build_report  # noqa: E402
from precond_core.bench.runner import run_sweep  # noqa: E402

pytestmark = pytest.mark.browser


def chromium_path() -> str | None:
    for cand in (
        os.environ.get("CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


CHROMIUM = chromium_path()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)"
)


def chromium(args: list[str], profile: Path, timeout: float = 90) -> subprocess.CompletedProcess:
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def served_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    cells = [
        Cell("scalable", {"n": n}, m, mp, seed=s, eps=1e-5, max_iters=20, max_seconds=5.0, suite="browser")
        for n in (100, 300)
        for m, mp in (("gd", {}), ("adagrad_bma", {"k": 2}), ("newton", {}))
        for s in (0, 1)
    ]
    summary = run_sweep(("browser", cells), root / "store", git=("c" * 40, False), progress=False, log=lambda m: None)
    assert not summary.failed, summary.failed
    page = build_report(
        root / "store", root / "site" / "index.html", asv_results_dir=root / "none", benchmark_dir=root / "none"
    )
    handler = functools.partial(_QuietHandler, directory=str(page.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield page, f"http://127.0.0.1:{server.server_address[1]}/{page.name}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@needs_chromium
def test_every_figure_loads_in_chromium(served_report, tmp_path):
    page, url = served_report
    n_figures = int(re.search(r'<body data-figures="(\d+)"', page.read_text()).group(1))
    assert n_figures >= 4  # convergence, scaling, block count, performance profile
    out = chromium(["--virtual-time-budget=15000", "--dump-dom", url], tmp_path / "profile")
    assert out.returncode == 0, out.stderr[-2000:]
    dom = out.stdout
    body = re.search(r"<body([^>]*)>", dom).group(1)
    loaded = re.search(r'data-images-loaded="(\d+)"', body)
    total = re.search(r'data-images-total="(\d+)"', body)
    assert loaded and total, f"the page's load handler did not run: {body}"
    assert int(total.group(1)) == n_figures and int(loaded.group(1)) == n_figures
    imgs = re.findall(r"<img[^>]*>", dom)
    assert len(imgs) == n_figures
    assert all('data-loaded="1"' in tag for tag in imgs)
    # the leaderboard answers first: its table is in the rendered DOM, before every figure
    assert 'id="table-leaderboard"' in dom and dom.index('id="table-leaderboard"') < dom.index("<img")


@needs_chromium
def test_screenshot_renders(served_report, tmp_path):
    _, url = served_report
    shot = tmp_path / "page.png"
    out = chromium(
        ["--hide-scrollbars", "--window-size=1280,2400", "--virtual-time-budget=15000", f"--screenshot={shot}", url],
        tmp_path / "profile",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1280, 2400)
    assert len(data) > 50_000  # a blank page compresses to a few kB; figures and tables do not
