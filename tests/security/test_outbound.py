"""Outbound requests (issue 14): the guard every connector, sink and re-fetch sends through
(config/outbound.py) never lets a request reach a link-local or metadata address, a private one
outside OUTBOUND_PRIVATE_NETWORKS, or a scheme other than http(s), whether the address is written
literally, in another spelling, behind a host name, or at the end of a redirect. Redirects are
served by a real HTTP server on loopback.

And a guard on the code: every module that can send HTTP either goes through config/outbound.py
or is on the short list of clients whose address only an operator sets (the language model).
"""

from __future__ import annotations

import ast
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from config.outbound import OutboundRefused, outbound_client, url_check

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN = [
    "http://169.254.169.254/latest/meta-data/",  # AWS, GCP, Azure, OpenStack metadata
    "http://169.254.170.2/v2/credentials",  # ECS task credentials
    "http://[fd00:ec2::254]/latest/meta-data/",  # AWS metadata over IPv6
    "http://100.100.100.200/latest/meta-data/",  # Alibaba Cloud metadata
    "http://[fe80::1]/",  # IPv6 link-local
    "http://[::ffff:169.254.169.254]/",  # IPv4-mapped IPv6
    "http://[::ffff:a9fe:a9fe]/",  # the same, in hex
    "http://2852039166/",  # 169.254.169.254 as one decimal number
    "http://0xa9fea9fe/",  # ... in hex
    "http://0251.0376.0251.0376/",  # ... in octal
    "https://169.254.169.254:443/",
    "http://0.0.0.0:8000/",  # "this host"
    "http://[::]/",
    "http://127.0.0.1:6379/",  # private: not in OUTBOUND_PRIVATE_NETWORKS by default
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://10.0.0.5/", "http://192.168.1.1/", "http://172.16.0.1/",
    "http://localhost:5432/",  # a name for a private address
    "file:///etc/passwd", "file://localhost/etc/passwd", "ftp://example.org/", "gopher://127.0.0.1:6379/_INFO",
    "dict://127.0.0.1:6379/INFO", "data:text/plain,hello", "//169.254.169.254/", "http:///nohost",
]


@pytest.mark.parametrize("url", FORBIDDEN)
def test_it_refuses_forbidden_addresses(url, settings):
    settings.OUTBOUND_PRIVATE_NETWORKS = []
    with pytest.raises(OutboundRefused):
        url_check(url)


@pytest.mark.parametrize("url", ["http://169.254.169.254/", "http://[::ffff:169.254.169.254]/",
                                 "http://[fd00:ec2::254]/", "http://100.100.100.200/"])
def test_no_setting_lets_a_metadata_address_through(url, settings):
    settings.OUTBOUND_PRIVATE_NETWORKS = ["0.0.0.0/0", "::/0"]
    with pytest.raises(OutboundRefused, match="link-local, metadata or reserved"):
        url_check(url)


def test_it_allows_public_addresses_and_allowed_private_networks(settings):
    settings.OUTBOUND_PRIVATE_NETWORKS = ["10.0.0.0/8"]
    url_check("https://93.184.215.14/")
    url_check("http://10.1.2.3:8080/feed.xml")
    with pytest.raises(OutboundRefused):
        url_check("http://192.168.0.1/")


def test_a_name_that_resolves_to_the_metadata_address_is_refused(monkeypatch, settings):
    # No DNS server here can be made to answer with 169.254.169.254; the resolver is replaced at
    # its boundary (getaddrinfo), the one thing url_check asks, with one forbidden answer among
    # harmless ones (a round-robin name with one poisoned record).
    settings.OUTBOUND_PRIVATE_NETWORKS = []
    real = socket.getaddrinfo

    def resolve(host, port, *args, **kwargs):
        if host == "metadata.attacker.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port)),
                    (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port))]
        if host == "mapped.attacker.example":
            return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::ffff:169.254.169.254", port, 0, 0))]
        return real(host, port, *args, **kwargs)
    monkeypatch.setattr(socket, "getaddrinfo", resolve)

    for url in ("http://metadata.attacker.example/", "https://mapped.attacker.example/x"):
        with pytest.raises(OutboundRefused, match="169.254.169.254"):
            url_check(url)


def test_a_name_that_does_not_resolve_is_a_connect_error_not_a_pass():
    with pytest.raises(httpx.ConnectError):
        url_check("http://no-such-host.invalid/")


# --- redirects, against a real HTTP server on loopback ------------------------------------------
class Redirector(BaseHTTPRequestHandler):
    """/to?<url> answers 302 to <url>; /ok answers 200; every path it served is recorded."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        if self.path.startswith("/to?"):
            self.send_response(302)
            self.send_header("Location", self.path[len("/to?"):])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b"fine"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def redirector():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirector)
    server.daemon_threads = True
    server.paths = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("target", [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://[::ffff:169.254.169.254]/",
    "http://2852039166/",
    "http://127.0.0.2:{port}/ok",  # loopback, but outside the one address allowed here
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_INFO",
])
def test_a_redirect_to_a_forbidden_address_is_refused(redirector, settings, target):
    settings.OUTBOUND_PRIVATE_NETWORKS = ["127.0.0.1/32"]  # the test server itself may be fetched
    target = target.format(port=redirector.server_address[1])
    with outbound_client(timeout=5) as client:
        assert client.get(f"{redirector.url}/ok").status_code == 200
        with pytest.raises((OutboundRefused, httpx.UnsupportedProtocol)):
            client.get(f"{redirector.url}/to?{target}")
    assert redirector.paths == ["/ok", f"/to?{target}"], "the forbidden hop must never be sent"


def test_every_hop_of_a_redirect_chain_is_checked(redirector, settings):
    settings.OUTBOUND_PRIVATE_NETWORKS = ["127.0.0.1/32"]
    hop2 = f"{redirector.url}/to?http://169.254.169.254/"
    with outbound_client(timeout=5) as client, pytest.raises(OutboundRefused):
        client.get(f"{redirector.url}/to?{hop2}")
    assert len(redirector.paths) == 2


def test_a_client_that_does_not_follow_redirects_does_not(redirector, settings):
    settings.OUTBOUND_PRIVATE_NETWORKS = ["127.0.0.1/32"]
    with outbound_client(timeout=5, follow_redirects=False) as client:
        response = client.get(f"{redirector.url}/to?http://169.254.169.254/")
    assert response.status_code == 302
    assert redirector.paths == ["/to?http://169.254.169.254/"]


def test_the_guard_ignores_proxy_settings_from_the_environment(redirector, settings, monkeypatch):
    # A proxy would make the connection on the guard's behalf to wherever it is told.
    settings.OUTBOUND_PRIVATE_NETWORKS = ["127.0.0.1/32"]
    monkeypatch.setenv("HTTP_PROXY", "http://169.254.169.254:80")
    monkeypatch.setenv("ALL_PROXY", "http://169.254.169.254:80")
    with outbound_client(timeout=5) as client:
        assert client.get(f"{redirector.url}/ok").text == "fine"


# --- the code: who sends HTTP ---------------------------------------------------------------------
HTTP_MODULES = {"httpx", "requests", "urllib.request", "aiohttp", "http.client", "urllib3", "pycurl"}
# Clients whose address only an operator configures (settings), never a user or a document.
OPERATOR_CONFIGURED = {
    "chat/generation.py": "the language-model server (LLM_BASE_URL)",
    "chat/prompting.py": "the language-model server's tokenizer (LLM_BASE_URL)",
    "ingestion/management/commands/ensure_admin.py": "make run's own /api/health/ on loopback",
    "ingestion/embedding.py": "a remote embedding server (EMBEDDING_URL)",
    "ingestion/encoders.py": "a remote embedding server (EMBEDDING_URL)",
    "config/outbound.py": "the guard itself",
}
APPS = ("config", "events", "ingestion", "chat", "feedback", "dashboard")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_every_module_that_sends_http_goes_through_the_guard():
    unguarded = []
    for app in APPS:
        for path in sorted((ROOT / app).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if "/migrations/" in relative or relative in OPERATOR_CONFIGURED:
                continue
            imports = _imports(path)
            sends = {name for name in imports if name in HTTP_MODULES or name.split(".")[0] in HTTP_MODULES}
            if sends and "config.outbound" not in imports:
                unguarded.append(f"{relative} imports {sorted(sends)} but not config.outbound")
    assert not unguarded, "Outbound HTTP must go through config/outbound.py:\n" + "\n".join(unguarded)
