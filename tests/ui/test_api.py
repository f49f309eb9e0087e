"""The dashboard's HTTP API against a real store written through `tunescope.init`."""

from __future__ import annotations

import json
from typing import Any

from starlette.testclient import TestClient
from ui_stores import XSS


def strict(text: str) -> Any:
    """Parse JSON refusing NaN/Infinity tokens, as browsers' JSON.parse does."""

    def refuse(token: str) -> None:
        raise AssertionError(f"non-strict JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_runs_list_has_what_the_table_shows(client: TestClient, ids: dict[str, str]) -> None:
    res = client.get("/api/runs")
    assert res.status_code == 200
    rows = {r["name"]: r for r in strict(res.text)["runs"]}
    assert set(rows) == {"spiky", XSS, "diverged"}  # the hostile name comes back verbatim
    a = rows[XSS]
    assert a["project"] == "ui-test" and a["status"] == "finished"
    assert a["steps"] == 49 and a["segments"] == 2  # last step after the rollback
    assert a["best"]["key"] == "eval/accuracy"
    assert a["best"]["value"] == 0.5 + 59 * 0.004 and a["best"]["step"] == 59
    assert a["best_eval"]["eval/loss"]["value"] == 1.5 - 59 * 0.005  # loss: lowest is best
    assert a["test"] == {"test/accuracy": 0.91, "test/f1": 0.9}
    # f1 was raised (warning) then updated (critical): one finding, counted at its latest severity.
    assert a["findings"] == {"critical": 1, "warning": 0, "info": 1, "interventions": 1}
    assert a["duration"] >= 0
    assert rows["spiky"]["best"] is None and rows["spiky"]["steps"] == 4_999


def test_run_detail(client: TestClient, ids: dict[str, str]) -> None:
    body = strict(client.get(f"/api/runs/{ids[XSS]}").text)
    assert body["config"]["model"]["name"] == XSS
    assert body["confusion"] == {
        "key": "test/confusion_matrix",
        "matrix": [[5, 1], [0, 4]],
        "labels": [XSS, "sport"],
    }
    groups = {k["key"]: k["group"] for k in body["keys"]}
    assert groups["train/loss"] == "train" and groups["eval/accuracy"] == "eval"
    assert body["segment_starts"] == {"0": 0, "1": 41}
    # by name works as well as by id
    assert strict(client.get("/api/runs/spiky").text)["id"] == ids["spiky"]


def test_keys(client: TestClient, ids: dict[str, str]) -> None:
    body = strict(client.get("/api/runs/spiky/keys").text)
    assert body["keys"] == [
        {
            "key": "train/loss",
            "n": 5_000,
            "last_step": 4_999,
            "last": body["keys"][0]["last"],
            "group": "train",
        }
    ]


def _buckets(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for seg in body["segments"] for b in seg["buckets"]]


def test_series_keeps_spike_nan_and_inf_at_their_exact_steps(client: TestClient) -> None:
    for points in (40, 100, 1_000):
        res = client.get("/api/runs/spiky/series", params={"key": "train/loss", "points": points})
        body = strict(res.text)
        buckets = _buckets(body)
        assert len(buckets) <= points
        assert sum(b["n"] for b in buckets) == 5_000  # every point is accounted for
        top = max(buckets, key=lambda b: b["max"] or 0)
        assert (top["max"], top["max_step"]) == (40.0, 3_217)
        assert [(s["step"], s["value"]) for s in body["segments"][0]["spikes"]] == [(3_217, 40.0)]
        bad = {b["nonfinite_step"]: b["nonfinite_kind"] for b in buckets if "nonfinite_step" in b}
        assert bad == {4_000: "nan", 4_500: "inf"}
        assert sum(b["nan"] for b in buckets) == 1 and sum(b["posinf"] for b in buckets) == 1


def test_series_zoom_window_is_rebucketed(client: TestClient) -> None:
    full = strict(client.get("/api/runs/spiky/series?key=train/loss&points=50").text)
    zoom = strict(
        client.get("/api/runs/spiky/series?key=train/loss&points=50&start=3200&end=3249").text
    )
    zb = _buckets(zoom)
    assert (zoom["start"], zoom["end"]) == (3_200, 3_249)
    assert all(3_200 <= b["step"] <= 3_249 for b in zb)
    assert len(zb) == 50 and all(b["n"] == 1 for b in zb)  # one bucket per step when zoomed in
    assert [b["value"] for b in zb if b["step"] == 3_217] == [40.0]
    assert _buckets(full)[0]["n"] == 100  # the full range is 100 steps per bucket


def test_series_rollback_segments(client: TestClient, ids: dict[str, str]) -> None:
    body = strict(client.get(f"/api/runs/{ids[XSS]}/series?key=train/loss").text)
    seg0, seg1 = body["segments"]
    assert seg0["abandoned_from"] == 41 and seg1["abandoned_from"] is None
    assert [b["step"] for b in seg1["buckets"]] == list(range(41, 50))
    assert len(seg0["buckets"]) == 60  # the abandoned stretch is kept, the page draws it faded


def test_events_group_findings_by_ref(client: TestClient, ids: dict[str, str]) -> None:
    body = strict(client.get(f"/api/runs/{ids[XSS]}/events").text)
    assert len(body["events"]) == 4
    f1, f2 = body["findings"]
    assert (f1["ref"], f1["severity"], f1["first_step"], f1["last_step"]) == (
        "f1",
        "critical",
        30,
        50,
    )
    assert f1["raised_step"] == 40 and f1["updates"] == 2
    assert (f2["kind"], f2["first_step"], f2["last_step"]) == ("plateau", 35, 45)
    (iv,) = body["interventions"]
    assert iv["kind"] == "rollback" and iv["data"]["after"] == 40


def test_compare(client: TestClient, ids: dict[str, str]) -> None:
    runs = f"spiky,{ids[XSS]}"
    body = strict(client.get("/api/compare", params={"runs": runs}).text)
    assert [r["name"] for r in body["runs"]] == ["spiky", XSS]
    assert "train/loss" in body["keys"] and body["series"] == []
    diff = {r["key"]: r for r in body["config_diff"]}
    assert diff["lr"]["values"] == [None, 3e-5] and diff["lr"]["missing"] == [True, False]
    body = strict(
        client.get("/api/compare", params={"runs": runs, "key": "train/loss", "points": 30}).text
    )
    assert [s["run"] for s in body["series"]] == [ids["spiky"], ids[XSS]]
    assert all(len(_buckets(s)) <= 30 * len(s["segments"]) for s in body["series"])
    # a key only one run has: the other gets an empty curve
    body = strict(client.get("/api/compare", params={"runs": runs, "key": "eval/loss"}).text)
    assert body["series"][0]["segments"] == [] and body["series"][1]["segments"]


def test_strict_json_for_nonfinite_last_values(client: TestClient) -> None:
    res = client.get("/api/runs/diverged/keys")
    assert res.headers["content-type"] == "application/json"
    last = {k["key"]: k["last"] for k in strict(res.text)["keys"]}  # no NaN/Infinity tokens
    assert last == {"train/loss": "nan", "train/grad_norm": "inf"}
    run = strict(client.get("/api/runs/diverged").text)
    assert run["status"] == "failed"
    body = strict(client.get("/api/runs/diverged/series?key=train/grad_norm&points=10").text)
    (last_bucket,) = [b for b in _buckets(body) if b["step"] == 100]
    assert last_bucket["value"] is None and last_bucket["nonfinite"] == "inf"
    assert last_bucket["nonfinite_step"] == 100
