"""Debian packages that benchmarks and tests install on first use: Redis and ``wrk`` for the Envoy
peer, Chromium and its WebDriver for the console's browser test.

``ensure_packages()`` looks each command up on PATH and installs the packages of the missing ones
with ``apt-get`` (root only; the package lists are refreshed once if an install fails, as they are
empty or stale on a fresh machine). It says what it installs, since an install takes a while.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from typing import Callable

__all__ = ["PACKAGES", "ensure_packages"]

logger = logging.getLogger(__name__)

#: command -> the Debian package that provides it
PACKAGES = {
    "redis-server": "redis-server",
    "wrk": "wrk",
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
}


def _apt_install(packages: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(["apt-get", "install", "-y", *packages], capture_output=True, text=True, env=env)
    if done.returncode != 0:  # maybe the package lists are stale
        logger.info("apt-get install %s failed; apt-get update, then again", " ".join(packages))
        subprocess.run(["apt-get", "update"], capture_output=True, text=True, env=env)
        done = subprocess.run(["apt-get", "install", "-y", *packages], capture_output=True, text=True, env=env)
    return done


def ensure_packages(say: Callable[[str], None] = print, commands: tuple[str, ...] = ("redis-server", "wrk")) -> None:
    """Install the Debian packages of ``commands`` (keys of ``PACKAGES``) that are not on PATH (apt-get; needs root)."""
    missing = list(dict.fromkeys(PACKAGES[c] for c in commands if shutil.which(c) is None))
    if not missing:
        return
    say(f"installing Debian packages {', '.join(missing)} (apt-get install -y; not on PATH)")
    if os.geteuid() != 0:
        raise RuntimeError(f"{', '.join(missing)} missing and not root: run `sudo apt-get install -y {' '.join(missing)}`")
    done = _apt_install(missing)
    if done.returncode != 0:
        raise RuntimeError(f"apt-get install {' '.join(missing)} failed:\n{done.stderr[-2000:]}")
