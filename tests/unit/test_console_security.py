"""The console's session cookies and CSRF tokens (``ratewarden.gateway.console.security``): pure, no server."""

import pytest
from pydantic import SecretStr

from ratewarden.gateway.console.security import Signer, key_fingerprint, secret_of

NOW = 1_800_000_000.0


@pytest.fixture
def signer() -> Signer:
    return Signer(b"k" * 32, max_age=3600)


def test_a_session_reads_back_until_it_expires(signer):
    session, cookie = signer.new_session("alice", "admin", "sha256:abc", NOW)
    assert signer.session(cookie, NOW + 3599) == session
    assert (session.user_id, session.role, session.key) == ("alice", "admin", key_fingerprint("sha256:abc"))
    assert session.expires == NOW + 3600
    assert signer.session(cookie, NOW + 3600) is None


def test_a_forged_tampered_or_foreign_cookie_is_no_session(signer):
    _, cookie = signer.new_session("alice", "analyst", "sha256:abc", NOW)
    body, mac = cookie.split(".")
    other = Signer(b"x" * 32, 3600)
    _, theirs = other.new_session("alice", "admin", "sha256:abc", NOW)
    _, admin = signer.new_session("alice", "admin", "sha256:abc", NOW)
    for bad in (None, "", "garbage", cookie + ".x", body + "." + mac[:-1] + ("A" if mac[-1] != "A" else "B"),
                admin.split(".")[0] + "." + mac, theirs, "%%%." + mac):
        assert signer.session(bad, NOW) is None, bad


def test_csrf_tokens_belong_to_one_session(signer):
    first, _ = signer.new_session("alice", "admin", "sha256:abc", NOW)
    second, _ = signer.new_session("alice", "admin", "sha256:abc", NOW)
    token = signer.csrf(first)
    assert signer.csrf_ok(first, token)
    assert not signer.csrf_ok(second, token)
    assert not signer.csrf_ok(first, None) and not signer.csrf_ok(first, "") and not signer.csrf_ok(first, token[:-1])


def test_the_login_pair_is_double_submitted(signer):
    cookie, token = signer.login_pair()
    assert signer.login_ok(cookie, token)
    other_cookie, other_token = signer.login_pair()
    assert not signer.login_ok(cookie, other_token) and not signer.login_ok(other_cookie, token)
    assert not signer.login_ok(None, token) and not signer.login_ok(cookie, None)
    assert not Signer(b"x" * 32, 60).login_ok(cookie, token)


def test_the_secret_is_the_configured_one_or_generated_and_never_logged(caplog):
    assert secret_of(SecretStr("s3cret")) == b"s3cret"
    with caplog.at_level("INFO"):
        one, two = secret_of(None), secret_of(SecretStr(""))
    assert len(one) == 32 and one != two
    assert "generated" in caplog.text and one.hex() not in caplog.text
