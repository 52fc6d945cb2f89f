"""Headless Chromium for browser tests: Debian's ``chromium`` driven through its ``chromium-driver``.

The packages are installed on first use (``bench.debian_packages.ensure_packages``, as the Redis
tests do), so ``make test`` on a fresh machine needs nothing installed by hand. Selenium is given the
system driver's path: with a path, Selenium Manager is never asked to find or download a browser or a
driver (this machine reaches package registries only).

Screenshots go to ``var/test-artifacts/<name>/`` in the repository (``artifacts_dir``), kept after the
test so a person can look at what the browser saw; ``assert_png`` checks that a file is a real PNG of
a page, not an empty or blank capture.
"""

from __future__ import annotations

import logging
import shutil
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.debian_packages import ensure_packages

__all__ = ["ARTIFACTS", "CHROMEDRIVER", "artifacts_dir", "assert_png", "headless_chromium", "png_size"]

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
#: Where browser tests leave their screenshots (ignored by git: under ``var/``).
ARTIFACTS = REPO / "var" / "test-artifacts"
#: The driver Debian's ``chromium-driver`` installs.
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def artifacts_dir(name: str) -> Path:
    """``var/test-artifacts/<name>/``, emptied of earlier screenshots and created."""
    out = ARTIFACTS / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    return out


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; AssertionError if ``path`` is not a PNG."""
    head = Path(path).read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def assert_png(path: Path, min_bytes: int = 5_000, min_side: int = 200) -> None:
    """``path`` exists and is a PNG of at least ``min_side`` pixels a side and ``min_bytes`` (a blank
    page compresses to far less: a page with text and tables does not)."""
    path = Path(path)
    assert path.is_file(), f"no screenshot {path}"
    width, height = png_size(path)
    size = path.stat().st_size
    assert width >= min_side and height >= min_side, f"{path}: {width}x{height} pixels"
    assert size >= min_bytes, f"{path}: {size} bytes, an empty page?"


@contextmanager
def headless_chromium(width: int = 1280, height: int = 900, say=logger.info) -> Iterator:
    """A Selenium ``WebDriver`` of headless Chromium (installed first if missing), quit on exit."""
    ensure_packages(say, ("chromium", "chromedriver"))
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for argument in (
        "--headless=new",
        "--no-sandbox",  # tests run as root, where Chromium's sandbox refuses to start
        "--disable-dev-shm-usage",  # /dev/shm is small in containers
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    service = Service(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(service=service, options=options)
    logger.info("headless Chromium %s", driver.capabilities.get("browserVersion"))
    try:
        yield driver
    finally:
        driver.quit()
