"""Links from `ratewarden report` to the web console: the URL of each subject's page, from either form
of the base URL, and the report printing them only when a gateway URL is known."""

import io

import msgspec
import pytest
from rich.console import Console

from ratewarden.cli import main as cli
from ratewarden.reports import build_frames, print_report
from ratewarden.reports.links import console_base, console_link, console_url_from_env
from schemas.decisions import Decision
from schemas.flags import IpFeatures, IpFlag, Population

END = 1_732_900_060.0


@pytest.mark.parametrize("base", ["http://127.0.0.1:8080", "http://127.0.0.1:8080/", "http://127.0.0.1:8080/console",
                                  "http://127.0.0.1:8080/console/", " http://127.0.0.1:8080/console/ "])
def test_gateway_and_console_urls_give_the_same_base(base):
    assert console_base(base) == "http://127.0.0.1:8080/console"


def test_an_address_links_to_its_ip_page_and_a_cidr_to_its_network_page():
    base = "https://rw.example.test:8443/console/"
    assert console_link(base, "203.0.113.7") == "https://rw.example.test:8443/console/ip/203.0.113.7"
    assert console_link(base, "2001:DB8::0:7") == "https://rw.example.test:8443/console/ip/2001:db8::7"
    assert console_link(base, "2001:db8:0:1::/64") == "https://rw.example.test:8443/console/network/2001:db8:0:1::/64"
    # Host bits are cleared: the page of the network, as the console names it.
    assert console_link(base, "198.51.100.77/24") == "https://rw.example.test:8443/console/network/198.51.100.0/24"
    assert console_link(base, "not an ip") == "https://rw.example.test:8443/console/ip/not%20an%20ip"


def test_a_base_without_a_scheme_is_refused():
    with pytest.raises(ValueError, match="http"):
        console_base("127.0.0.1:8080")


def test_the_environment_variable_is_the_default_and_blank_means_none():
    assert console_url_from_env({"RATEWARDEN_GATEWAY_URL": "http://gw:8080"}) == "http://gw:8080"
    assert console_url_from_env({"RATEWARDEN_GATEWAY_URL": "  "}) is None
    assert console_url_from_env({}) is None


def _flag(subject: str, kind: str = "ip") -> bytes:
    features = IpFeatures(700, 11.7, 1, 700.0, 0.0, "read", 1.0, 600, 0, 0.857, END - 59, END - 1)
    return msgspec.json.encode(IpFlag(subject, END - 60, END, 99.0, ["flood"], False, features, {"z_requests": 99.0},
                                      Population(100, 5.0, 2.0, 5.0, 2.0), kind=kind))


def _decisions() -> list[bytes]:
    rows = [("203.0.113.7", "u1"), ("2001:db8:0:1::5", "u2"), ("198.51.100.3", "u3")]
    return [msgspec.json.encode(Decision(f"r{i}", user, ip, "read", "allow", "within_limit", 100, 1, 99, END - 60,
                                         END, 0.0, False, END - 30, END - 30))
            for i, (ip, user) in enumerate(rows)]


def _printed(console_url: str | None) -> str:
    frames = build_frames(_decisions(), [_flag("203.0.113.7"), _flag("2001:db8:0:1::/64", "network")])
    out = io.StringIO()
    print_report(frames, Console(file=out, width=100), top=5, console_url=console_url)
    return out.getvalue()


def test_the_report_prints_each_top_offenders_page_only_with_a_gateway_url():
    text = _printed("http://127.0.0.1:8080")
    assert "  203.0.113.7  http://127.0.0.1:8080/console/ip/203.0.113.7\n" in text
    assert "  2001:db8:0:1::/64  http://127.0.0.1:8080/console/network/2001:db8:0:1::/64\n" in text
    assert "198.51.100.3" not in text.split("console pages")[1].split("timeline")[0]  # not flagged: no link
    assert "/console/" not in _printed(None)


def test_the_cli_option_wins_over_the_environment(tmp_path, monkeypatch, capsys):
    (tmp_path / "d.jsonl").write_bytes(b"\n".join(_decisions()) + b"\n")
    (tmp_path / "f.jsonl").write_bytes(_flag("203.0.113.7") + b"\n")
    monkeypatch.setenv("RATEWARDEN_GATEWAY_URL", "http://from-env:8080")
    args = ["report", "--decisions", str(tmp_path / "d.jsonl"), "--flags", str(tmp_path / "f.jsonl"),
            "--out", str(tmp_path / "out")]
    assert cli(args) == 0
    assert "http://from-env:8080/console/ip/203.0.113.7" in capsys.readouterr().out
    assert cli([*args, "--console-url", "https://gw.test/"]) == 0
    out = capsys.readouterr().out
    assert "https://gw.test/console/ip/203.0.113.7" in out and "from-env" not in out
