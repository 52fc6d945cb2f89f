"""``ratewarden ARGS...`` as an operator's shell runs it: a subprocess with a test's settings in its environment."""

import os
import subprocess
import sys
from pathlib import Path

from streams.settings import Settings

__all__ = ["ratewarden"]

ROOT = Path(__file__).resolve().parents[2]


def ratewarden(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    """Run the CLI with ``settings`` (and no other ``RATEWARDEN_*`` of this shell) in its environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RATEWARDEN_") and k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(settings.to_env(), COLUMNS="300", NO_COLOR="1")
    return subprocess.run([sys.executable, "-m", "ratewarden.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
