"""Take docs/web.png: `zibrato demo --web` on free ports, a real chromium, the web.request charts.

Run by bin/web-screenshot (python tests/support/web_screenshot.py [OUTPUT] [--seconds S]).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from support import browser
from support.daemons import BIN, free_ports, wait_until

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("output", nargs="?", default=str(ROOT / "docs" / "web.png"))
    parser.add_argument("--seconds", type=float, default=30.0, help="demo time before the shot")
    args = parser.parse_args()
    problem = browser.missing()
    if problem:
        print(f"web-screenshot: {problem}", file=sys.stderr)
        return 1
    base, web_port = free_ports(3), free_ports(1)
    url = f"http://127.0.0.1:{web_port}/"
    demo = subprocess.Popen(
        [
            str(BIN / "zibrato"),
            "demo",
            "--port",
            str(base),
            "--flush",
            "1",
            "--web",
            "--web-listen",
            f"127.0.0.1:{web_port}",
        ],
        stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        rows = wait_until(
            lambda: _rows(url + "api/series?q=web.request+outcome:ok"),
            timeout=30,
            message="the demo's web.request in the web view",
        )
        time.sleep(args.seconds)  # a script, not a test: let the charts fill
        with browser.chromium(1280, 820) as driver:
            driver.get(f"{url}#series={rows[0]['id']}")
            wait_until(
                lambda: driver.execute_script("return document.querySelectorAll('#variants figure').length >= 2"),
                message="both outcome charts",
            )
            time.sleep(0.5)
            driver.save_screenshot(args.output)
        print(f"web-screenshot: wrote {args.output}", file=sys.stderr)
    finally:
        demo.send_signal(signal.SIGTERM)
        demo.wait(20)
    return 0


def _rows(url: str) -> list:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.load(response)["rows"]
    except OSError:
        return []


if __name__ == "__main__":
    raise SystemExit(main())
