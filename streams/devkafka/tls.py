"""A SASL_SSL (SCRAM-SHA-512) listener for the local broker: a private CA, the broker's certificate, the users.

Tests and demos need a broker that *requires* the ``RATEWARDEN_KAFKA_*`` security settings, without a
certificate authority or Docker. :func:`ensure_tls_files` makes a self-signed CA and a broker
certificate for the loopback address with the ``openssl`` command (the ``cryptography`` package is
not a dependency); the broker reads them as PEM, so no Java keystore is involved. SCRAM users are
written through the Admin API on the broker's loopback PLAINTEXT listener (:func:`upsert_scram_user`):
only a salted hash leaves this process, no password is put on a command line or in a file, and an
existing broker home picks up a changed password on its next start.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from streams.devkafka.jars import tail
from streams.settings import Settings

__all__ = ["MECHANISM", "SaslSsl", "TlsFiles", "ensure_tls_files", "sasl_ssl_properties", "upsert_scram_user"]

logger = logging.getLogger(__name__)

MECHANISM = "SCRAM-SHA-512"
_CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]  # fast to make, Java reads it


@dataclass(frozen=True)
class TlsFiles:
    """``ca``: the certificate clients trust (``RATEWARDEN_KAFKA_SSL_CAFILE``); ``keystore``: broker key + chain."""

    ca: Path
    keystore: Path


@dataclass(frozen=True)
class SaslSsl:
    """The one SCRAM user a local SASL_SSL broker is started with; the password stays a SecretStr."""

    username: str
    password: SecretStr

    def __post_init__(self) -> None:
        if not self.username or not self.password.get_secret_value():
            raise ValueError("a SASL_SSL broker needs a SCRAM user name and password "
                             "(RATEWARDEN_KAFKA_SASL_USERNAME, RATEWARDEN_KAFKA_SASL_PASSWORD)")

    @classmethod
    def from_settings(cls, settings: Settings) -> SaslSsl:
        """The user a client with these settings logs in as."""
        return cls(settings.kafka_sasl_username or "", settings.kafka_sasl_password or SecretStr(""))


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("`openssl` not found on PATH: it makes the local broker's TLS certificates")
    proc = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed (exit {proc.returncode}):\n{tail(proc.stdout + proc.stderr)}")


def ensure_tls_files(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> TlsFiles:
    """The CA and broker certificate in ``directory``, made once and kept (clients keep trusting the CA)."""
    directory = Path(directory)
    files = TlsFiles(ca=directory / "ca.pem", keystore=directory / "broker-keystore.pem")
    if files.ca.is_file() and files.keystore.is_file():
        return files
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)  # the private keys are not encrypted
    _openssl("req", "-x509", *_CURVE, "-keyout", "ca.key", "-out", "ca.pem", "-days", "3650",
             "-subj", "/CN=ratewarden local Kafka CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    _openssl("req", "-new", *_CURVE, "-keyout", "broker.key", "-out", "broker.csr",
             "-subj", "/CN=ratewarden local Kafka broker", cwd=directory)
    names = ",".join(f"IP:{h}" if h.replace(".", "").isdigit() else f"DNS:{h}" for h in hosts)
    (directory / "broker.ext").write_text(f"subjectAltName={names}\nextendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "broker.pem", "-days", "825", "-extfile", "broker.ext", cwd=directory)
    # Kafka's PEM keystore: the PKCS#8 key, then the certificate chain, in one file
    keystore = "".join((directory / name).read_text() for name in ("broker.key", "broker.pem", "ca.pem"))
    files.keystore.write_text(keystore)
    files.keystore.chmod(0o600)
    for name in ("broker.csr", "broker.ext", "ca.srl"):
        (directory / name).unlink(missing_ok=True)
    logger.info("made a CA and a broker certificate for %s in %s", names, directory)
    return files


def sasl_ssl_properties(tls: TlsFiles) -> str:
    """server.properties lines for a listener named SASL_SSL that accepts SCRAM-SHA-512 over TLS."""
    jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    return (
        f"sasl.enabled.mechanisms={MECHANISM}\n"
        f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config={jaas}\n"
        "ssl.keystore.type=PEM\n"
        f"ssl.keystore.location={tls.keystore}\n"
        "ssl.client.auth=none\n"
    )


def upsert_scram_user(admin_bootstrap: str, user: SaslSsl) -> None:
    """Create or update ``user``'s SCRAM-SHA-512 credential through the (unauthenticated) loopback listener."""
    from kafka.admin import KafkaAdminClient, UserScramCredentialUpsertion

    upsert = UserScramCredentialUpsertion(user.username, MECHANISM, user.password.get_secret_value())
    with KafkaAdminClient(bootstrap_servers=admin_bootstrap, request_timeout_ms=15_000) as admin:
        errors = {name: error for name, error in admin.alter_user_scram_credentials([upsert]).items() if error}
    if errors:
        raise RuntimeError(f"could not set the SCRAM credential of {user.username}: {errors[user.username]}")
    logger.info("SCRAM-SHA-512 credential of %s is set", user.username)
