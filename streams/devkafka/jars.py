"""Apache Kafka's runtime jars, assembled from Maven Central once and cached.

Machines without Docker still have Java 17+ and Maven, and reach Maven Central: ``kafka_2.13`` pulls
every runtime module a combined KRaft broker needs; log4j-core and its slf4j binding are its
logging backend (see the kafka-local notes).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from rich.console import Console

__all__ = ["KAFKA_VERSION", "LOG4J_VERSION", "ensure_jars", "require_tool", "tail"]

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"

_DEPENDENCIES = [("org.apache.kafka", "kafka_2.13", KAFKA_VERSION),
                 ("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION),
                 ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION)]
_POM = (
    '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>\n'
    " <groupId>local</groupId><artifactId>kafka-libs</artifactId><version>1</version><packaging>pom</packaging>\n"
    " <dependencies>\n"
    + "".join(f"  <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>\n"
              for g, a, v in _DEPENDENCIES)
    + " </dependencies></project>\n"
)


def tail(text: str | bytes, lines: int = 40) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return "\n".join(text.rstrip().splitlines()[-lines:])


def require_tool(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise RuntimeError(f"`{tool}` not found on PATH: the local Kafka broker needs Java 17+ and Maven")
    return path


def ensure_jars(cache_root: Path | None = None) -> Path:
    """Return the directory holding Kafka's runtime jars, resolving them with Maven on first use.

    ``cache_root`` defaults to ``${XDG_CACHE_HOME:-~/.cache}/ratewarden``; the jars live in
    ``cache_root/kafka-{KAFKA_VERSION}/lib``, which appears atomically (rename of a finished temp dir).
    """
    require_tool("java")
    if cache_root is None:
        cache_root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ratewarden"
    version_dir = cache_root / f"kafka-{KAFKA_VERSION}"
    lib = version_dir / "lib"
    if (lib / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file():
        return lib
    mvn = require_tool("mvn")
    version_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".resolve-", dir=version_dir))
    try:
        (work / "pom.xml").write_text(_POM)
        cmd = [mvn, "-B", "-q", "-Dstyle.color=never", "dependency:copy-dependencies",
               "-DincludeScope=runtime", "-DoutputDirectory=lib"]
        logger.info("resolving Kafka %s jars with Maven into %s", KAFKA_VERSION, lib)
        with Console(stderr=True).status(f"Downloading Apache Kafka {KAFKA_VERSION} jars with Maven..."):
            proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not (work / "lib" / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file():
            raise RuntimeError(
                f"mvn failed (exit {proc.returncode}) resolving Kafka {KAFKA_VERSION}:\n"
                f"{tail(proc.stdout + proc.stderr)}"
            )
        try:
            os.rename(work / "lib", lib)
        except OSError:  # another process finished first; keep its copy
            if not (lib / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return lib
