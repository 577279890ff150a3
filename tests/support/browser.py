"""A headless Debian chromium driven by selenium, with nothing downloaded at run time.

Used by tests/test_web_browser.py and by bin/web-screenshot (which makes docs/web.png).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .lanes import starts_process

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-extensions",
    "--window-size=1280,900",
)


def missing() -> str | None:
    """Why the browser cannot run here (None when it can): the skip reason of the browser tests."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not Path(path).exists():
            return f"{path} is absent: apt-get install {package} (bin/setup --test does)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e .[test] (bin/setup --test does)"
    return None


@starts_process  # selenium starts chromedriver and chromium
@contextmanager
def chromium(width: int = 1280, height: int = 900, *, javascript: bool = True) -> Iterator[object]:
    """A selenium WebDriver on a fresh, temporary profile; quit and removed afterwards.

    ``javascript=False`` blocks the pages' scripts (a content setting), as a user who turned them off.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="zibrato-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if not javascript:
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_window_size(width, height)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
