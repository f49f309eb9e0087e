"""Read-only, escaped, token-guarded, and every malformed request answered with a 4xx message."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tunescope.ui import create_app

BAD_REQUESTS = [
    ("/api/runs/spiky/series", 400, "'key' is required"),
    ("/api/runs/spiky/series?key=train/loss&points=abc", 400, "must be an integer"),
    ("/api/runs/spiky/series?key=train/loss&points=0", 400, "must be in [1, 10000]"),
    ("/api/runs/spiky/series?key=train/loss&points=99999999999999999999", 400, "must be in"),
    ("/api/runs/spiky/series?key=train/loss&points=1.5", 400, "must be an integer"),
    ("/api/runs/spiky/series?key=train/loss&start=-1", 400, "'start' must be in"),
    ("/api/runs/spiky/series?key=train/loss&start=1e3", 400, "must be an integer"),
    ("/api/runs/spiky/series?key=train/loss&start=10&end=5", 400, "must not be lower"),
    ("/api/runs/spiky/series?key=train/loss&points=5&points=6", 400, "more than once"),
    ("/api/runs/spiky/series?key=nope", 404, "has no metric 'nope'"),
    ("/api/runs/spiky/series?key=" + "k" * 600, 400, "longer than"),
    ("/api/runs/nope", 404, "no run named or with id 'nope'"),
    ("/api/runs/" + "x" * 400, 400, "limit 300"),
    ("/api/runs/nope/series?key=train/loss", 404, "no run named"),
    ("/api/runs/nope/events", 404, "no run named"),
    ("/api/compare", 400, "'runs' is required"),
    ("/api/compare?runs=,,", 400, "must list run names"),
    ("/api/compare?runs=" + ",".join(f"r{i}" for i in range(60)), 400, "at most 50"),
    ("/api/compare?runs=spiky,nope", 404, "no run named"),
    ("/api/compare?runs=spiky&key=nope", 404, "has a metric 'nope'"),
    ("/api/stream?run=nope", 404, "no run named"),
    ("/api/nothing", 404, "no such page or API route"),
]


@pytest.mark.parametrize(("url", "status", "message"), BAD_REQUESTS)
def test_malformed_requests_get_a_4xx_with_a_message(
    client: TestClient, url: str, status: int, message: str
) -> None:
    res = client.get(url)
    assert res.status_code == status, res.text
    assert message in res.json()["error"]


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("url", ["/api/runs", "/api/runs/spiky", "/", "/static/style.css"])
def test_read_only(client: TestClient, method: str, url: str) -> None:
    res = client.request(method, url)
    assert res.status_code == 405
    assert "read-only" in res.json()["error"]


def test_no_request_changes_the_store(store: Path, client: TestClient) -> None:
    def digest() -> str:
        return "".join(
            hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(store.glob("store.db*"))
        )

    before = digest()
    for url in [
        "/",
        "/api/runs",
        "/api/runs/spiky",
        "/api/runs/spiky/keys",
        "/api/runs/spiky/events",
        "/api/runs/spiky/series?key=train/loss",
        "/api/compare?runs=spiky,diverged&key=train/loss",
    ]:
        assert client.get(url).status_code == 200
    assert digest() == before


@pytest.mark.parametrize(
    "url",
    [
        "/static/../app.py",
        "/static/..%2fapp.py",
        "/static/%2e%2e/app.py",
        "/static/%2e%2e%2f%2e%2e%2fstore%2fschema.py",
        "/static/..%5capp.py",
        "/static/%2fetc%2fpasswd",
        "/static//etc/passwd",
        "/static/app.py",  # a real file beside static/, not in it
        "/static/.",
        "/static/",
    ],
)
def test_static_refuses_path_traversal(client: TestClient, url: str) -> None:
    res = client.get(url)
    assert res.status_code == 404
    assert b"def " not in res.content and b"root:" not in res.content


def test_static_serves_its_files_and_plotly_from_the_package(client: TestClient) -> None:
    res = client.get("/static/plotly.min.js")
    assert res.status_code == 200 and len(res.content) > 1_000_000
    assert res.headers["content-type"].startswith("text/javascript")
    assert client.get("/static/charts.js").status_code == 200


def test_pages_are_fixed_files_with_a_strict_csp(client: TestClient) -> None:
    # Whatever the address holds, the page is the same static shell: data arrives as JSON.
    a = client.get("/runs/%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E")
    b = client.get("/runs/spiky")
    assert a.status_code == b.status_code == 200 and a.content == b.content
    assert b"onerror" not in a.content
    csp = a.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-eval" not in csp
    assert "script-src 'self' 'unsafe-inline'" not in csp
    assert a.headers["x-content-type-options"] == "nosniff"
    assert a.headers["referrer-policy"] == "no-referrer"


def test_loopback_only_without_token(store: Path) -> None:
    app = create_app(store)
    assert TestClient(app, base_url="http://localhost:8765").get("/api/runs").status_code == 200
    assert TestClient(app, base_url="http://[::1]:8765").get("/api/runs").status_code == 200
    # DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends its own Host header
    res = TestClient(app, base_url="http://evil.example:8765").get("/api/runs")
    assert res.status_code == 403 and "127.0.0.1" in res.json()["error"]


TOKEN = "s3cret-token-for-tests-0123456789"


@pytest.mark.parametrize("url", ["/", "/api/runs", "/static/style.css", "/api/stream"])
def test_token_required_everywhere(store: Path, url: str) -> None:
    c = TestClient(create_app(store, token=TOKEN), base_url="http://10.1.2.3:8765")
    res = c.get(url)
    assert res.status_code == 401 and "token" in res.json()["error"]
    assert c.get(url, headers={"authorization": "Bearer wrong"}).status_code == 401
    assert c.get(url, params={"token": TOKEN[:-1]}).status_code == 401


def test_token_by_header_query_or_cookie(store: Path) -> None:
    c = TestClient(create_app(store, token=TOKEN), base_url="http://10.1.2.3:8765")
    assert c.get("/api/runs", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert c.get("/api/runs", headers={"x-tunescope-token": TOKEN}).status_code == 200
    assert c.get("/api/runs", params={"token": TOKEN}).status_code == 200
    # Opening the printed URL trades the token for a cookie and drops it from the address.
    res = c.get("/", params={"token": TOKEN, "x": "1"}, follow_redirects=False)
    assert res.status_code == 303 and res.headers["location"] == "/?x=1"
    cookie = res.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert c.get("/api/runs").status_code == 200  # the client kept the cookie
    assert c.get("/static/plotly.min.js").status_code == 200


WEIRD = [
    "",
    " ",
    "-1",
    "1e309",
    "nan",
    "0x10",
    "１２",
    "%00",
    "\x00",
    "'; DROP TABLE runs;--",
    "../../etc/passwd",
    "9" * 400,
    "<script>",
    "[]",
    "{}",
    "true",
]
PARAMS = {
    "/api/runs/spiky/series": ["key", "points", "start", "end"],
    "/api/compare": ["runs", "key", "points", "start", "end"],
    "/api/runs/spiky/events": ["type"],
    "/api/runs": ["project"],
}


@pytest.mark.parametrize("path", list(PARAMS))
def test_no_query_value_makes_a_500(client: TestClient, path: str) -> None:
    base = {"key": "train/loss", "runs": "spiky"}
    for name in PARAMS[path]:
        for value in WEIRD:
            res = client.get(path, params={**base, name: value})
            assert res.status_code < 500, (path, name, value, res.text)
            if res.status_code >= 400:
                assert res.json()["error"]
