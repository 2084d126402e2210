"""The UI's routes: pages and assets under a strict CSP, unknown assets a problem+json 404, and the
partitions view for admin keys only."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_pages_and_assets_are_served_with_a_strict_policy(http: TestClient) -> None:
    for path, kind in (("/ui", "text/html"), ("/ui/ops", "text/html"), ("/ui/static/wallet.js", "text/javascript")):
        answer = http.get(path)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith(kind)
        assert "script-src 'self'" in answer.headers["content-security-policy"]
        assert "'unsafe-inline'" not in answer.headers["content-security-policy"]
    assert "wallet.js" in http.get("/ui").text


def test_unknown_assets_are_a_problem_404(http: TestClient) -> None:
    for path in ("/ui/static/nope.js", "/ui/static/..%2Fapp.py", "/ui/static/%2e%2e%2fsettings.py"):
        answer = http.get(path)
        assert answer.status_code == 404, path
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert answer.json()["code"] == "not_found"


def test_partitions_view_is_for_admin_keys(http: TestClient, keys: dict[str, str]) -> None:
    refused = http.get("/v1/partitions")  # the fixture's key has the write scope
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    shown = http.get("/v1/partitions", headers={"Authorization": f"Bearer {keys['admin']}"})
    assert shown.status_code == 200
    rows = shown.json()["partitions"]
    assert [r["partition"] for r in rows] == list(range(len(rows))) and len(rows) >= 1
    assert set(rows[0]) == {"partition", "owner", "queued", "inflight", "oldest_job_age_s"}
