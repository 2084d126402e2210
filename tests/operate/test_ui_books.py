"""The books page (`/ui/books`), driven in headless Chromium against a live API and worker: the trial
balance, accounts found by id prefix, an account's history with running balances and its chart, holds
and reversals, the audit log with a call's request and response, and reconciliation runs with their
discrepancies, each checked against the API's own answers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from fastapi.testclient import TestClient
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from ledgerq.shared.apikeys import create_key
from tests.chaos.cluster import Cluster
from tests.conftest import uid
from tests.operate.test_ui import CHROMEDRIVER, CHROMIUM, SCREENSHOTS, money, until

WAIT_S = 30  # one long-poll of a command, and the longest wait for the page
AUDIT_POLLS_MAX = 600  # reads of the audit log while waiting for a row to be written (30 s at 50 ms)

# What a canvas holds once Chart.js has drawn on it: its points, how many pixels are painted, and how
# many are the line's blue (the accent colour, #2454d6).
CANVAS_CHECK = """
const canvas = document.getElementById(arguments[0]);
const chart = window.Chart && Chart.getChart(canvas);
const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
let painted = 0, blue = 0;
for (let i = 0; i < pixels.length; i += 4) {
  if (pixels[i + 3] === 0) continue;
  painted += 1;
  const [r, g, b] = [pixels[i], pixels[i + 1], pixels[i + 2]];
  if (Math.abs(r - 36) < 40 && Math.abs(g - 84) < 40 && Math.abs(b - 214) < 40) blue += 1;
}
return {painted, blue, total: canvas.width * canvas.height,
        values: chart ? chart.data.datasets.map((d) => d.data.map((p) => (typeof p === "object" ? p.y : p))) : null,
        xs: chart ? chart.data.datasets.map((d) => d.data.map((p) => (typeof p === "object" ? p.x : null))) : null};
"""


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """As test_ui's, in a window wide enough for the books' tables."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1000",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


@pytest.fixture
def api(cluster: Cluster) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cluster.url, headers={"Authorization": f"Bearer {cluster.key}"}, timeout=40) as client:
        yield client


def applied(api: httpx.Client, **body: Any) -> dict[str, Any]:
    """Submit one command and wait for its outcome."""
    body.setdefault("id", uid(str(body["type"])))
    answer = api.post("/v1/commands", json=body)
    assert answer.status_code == 202, answer.text
    final: dict[str, Any] = api.get(f"/v1/commands/{body['id']}", params={"wait": WAIT_S}).json()
    return final


def screenshots(driver: WebDriver, name: str, cards: dict[str, str]) -> None:
    """The whole page as `books-<name>.png`, and each card id in `cards` as `books-<file>.png`."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    size = driver.get_window_size()
    page_height_px = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(size["width"], max(size["height"], page_height_px + 140))
    driver.save_screenshot(str(SCREENSHOTS / f"books-{name}.png"))
    for card, file in cards.items():
        driver.find_element(By.ID, card).screenshot(str(SCREENSHOTS / f"books-{file}.png"))
    driver.set_window_size(size["width"], size["height"])


def state(driver: WebDriver, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).get_attribute("data-state"))


def ready(driver: WebDriver, element_id: str) -> None:
    until(driver, f"{element_id} rendered", lambda d: state(d, element_id) in ("ready", "unavailable", "error"))
    assert state(driver, element_id) in ("ready", "unavailable"), driver.find_element(By.ID, element_id).text


def sign_in(driver: WebDriver, url: str, key: str) -> None:
    driver.get(f"{url}/ui/books")
    driver.find_element(By.ID, "key").send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "#signin-form button").click()


def table(driver: WebDriver, body_id: str) -> list[dict[str, Any]]:
    """Each row of a table body in one script (data attributes and cell texts), so none goes stale."""
    rows: list[dict[str, Any]] = driver.execute_script(
        "return [...document.querySelectorAll(`#${arguments[0]} > tr`)].map((r) =>"
        " ({data: {...r.dataset}, cells: [...r.cells].map((c) => c.textContent)}))",
        body_id,
    )
    return rows


def audit_row(api: httpx.Client, method: str, path: str, status: int) -> dict[str, Any]:
    """The newest audit row of that call, once the log has it (rows are written after the answer)."""
    for _ in range(AUDIT_POLLS_MAX):
        found, after = [], 0
        while after is not None:
            page = api.get("/v1/audit", params={"after_id": after, "limit": 1000}).json()
            found += page["entries"]
            after = page["next_after_id"]
        matching = [r for r in found if (r["method"], r["path"], r["status"]) == (method, path, status)]
        if matching:
            return cast(dict[str, Any], matching[-1])
        time.sleep(0.05)
    raise AssertionError(f"no audit row for {method} {path} {status}")


def seed(api: httpx.Client, tag: str) -> dict[str, str]:
    """Accounts under `tag:` with 31 entries on alice: deposits, a withdrawal, a transfer reversed in
    part, a hold captured in part, a pending hold, a refused overdraft, and a refused account."""
    ids = {name: f"{tag}:{name}" for name in ("alice", "bob", "carol", "euro")}
    for name, account in ids.items():
        body = {"id": account, "currency": "EUR" if name == "euro" else "USD"}
        assert api.post("/v1/accounts", json=body).status_code == 201
    alice = ids["alice"]
    assert applied(api, type="deposit", account_id=alice, amount=50_000, currency="USD")["status"] == "applied"
    batch = [
        {"id": uid("dep"), "type": "deposit", "account_id": alice, "amount": 100 * (n % 7 + 1), "currency": "USD"}
        for n in range(26)
    ]
    assert api.post("/v1/commands/batch", json={"commands": batch}).status_code == 200
    assert api.get(f"/v1/commands/{batch[-1]['id']}", params={"wait": WAIT_S}).json()["status"] == "applied"
    assert applied(api, type="withdraw", account_id=alice, amount=9_000, currency="USD")["status"] == "applied"
    transfer = applied(api, type="transfer", account_id=alice, to_account_id=ids["bob"], amount=12_000, currency="USD")
    ids["transfer"] = transfer["id"]
    reversal = applied(api, type="reversal", command_id=transfer["id"], amount=4_000)
    assert reversal["status"] == "applied", reversal
    ids["reversal"] = reversal["id"]
    hold = applied(api, type="hold", account_id=alice, amount=3_000, currency="USD", to_account_id=ids["carol"])
    assert applied(api, type="capture", hold_id=hold["id"], amount=2_000)["status"] == "applied"
    ids["captured_hold"] = hold["id"]
    ids["pending_hold"] = applied(api, type="hold", account_id=alice, amount=2_500, currency="USD")["id"]
    assert applied(api, type="deposit", account_id=ids["euro"], amount=999, currency="EUR")["status"] == "applied"
    refused = applied(api, type="withdraw", account_id=ids["bob"], amount=10**9, currency="USD")
    assert refused["status"] == "rejected"
    # Last of all: a refused call, for the audit log (the same id with another currency).
    assert api.post("/v1/accounts", json={"id": alice, "currency": "EUR"}).status_code == 409
    return ids


def test_books_show_the_ledger_as_the_api_does(cluster: Cluster, browser: WebDriver, api: httpx.Client) -> None:
    cluster.add_worker([])
    tag = uid("books")
    ids = seed(api, tag)
    alice = ids["alice"]
    conflict = audit_row(api, "POST", "/v1/accounts", 409)

    # A key without the admin scope is turned away with the reason.
    writer = create_key(cluster.engine, "write", name="not the finance team")[0]
    sign_in(browser, cluster.url, writer)
    until(browser, "a refusal", lambda d: "(forbidden)" in d.find_element(By.ID, "signin-error").text)
    assert "admin key" in browser.find_element(By.ID, "signin-error").text
    assert not browser.find_element(By.ID, "books").is_displayed()
    browser.execute_script("sessionStorage.clear()")

    sign_in(browser, cluster.url, cluster.key)
    until(browser, "the books", lambda d: state(d, "books") == "ready")
    assert browser.execute_script("return typeof Chart") == "function"  # the vendored library ran under the CSP

    # The trial balance: one tile per currency, each balanced, as the API says.
    ready(browser, "trial-card")
    trial = api.get("/v1/trial-balance").json()["currencies"]
    tiles = {t.get_attribute("data-currency"): t for t in browser.find_elements(By.CSS_SELECTOR, "#trial .tile")}
    assert set(tiles) == set(trial) == {"USD", "EUR"}
    assert all(t.get_attribute("data-balanced") == "yes" and "balanced" in t.text for t in tiles.values())
    assert browser.find_element(By.ID, "trial-card").get_attribute("data-balanced") == "yes"

    # Accounts by id prefix: the API's listing, with its balances.
    browser.find_element(By.ID, "prefix").send_keys(f"{tag}:")
    browser.find_element(By.CSS_SELECTOR, "#search-form button").click()
    until(browser, "the search", lambda d: len(table(d, "accounts")) == 4 and state(d, "accounts-card") == "ready")
    listed = api.get("/v1/accounts", params={"prefix": f"{tag}:"}).json()["accounts"]
    rows = table(browser, "accounts")
    assert [r["data"]["accountId"] for r in rows] == [a["id"] for a in listed]
    assert [r["cells"][2] for r in rows] == [money(a["balance"]) for a in listed]
    usd = sum(a["balance"] for a in listed if a["currency"] == "USD")
    assert browser.find_element(By.ID, "accounts-sum").text == f"Balances on this page: 9.99 EUR · {money(usd)} USD"
    screenshots(browser, "overview", {"trial-card": "trial", "accounts-card": "accounts"})

    # An account's history: every running balance is the API's balance_after; reversals are marked.
    browser.find_element(By.LINK_TEXT, alice).click()
    until(
        browser,
        "the account",
        lambda d: d.find_element(By.ID, "account-card").get_attribute("data-account-id") == alice,
    )
    ready(browser, "account-card")
    account = api.get(f"/v1/accounts/{alice}").json()
    entries = api.get(f"/v1/accounts/{alice}/entries", params={"limit": 1000}).json()["entries"]
    assert len(entries) == account["entry_count"] == 31
    for name in ("balance", "held", "available"):
        assert browser.find_element(By.ID, f"account-{name}").text == f"{money(account[name])} USD"
    assert browser.find_element(By.ID, "running-check").get_attribute("data-ok") == "yes"
    check_history_page(browser, entries, newest_seq=31, oldest_seq=7)
    history = {int(r["data"]["seq"]): r for r in table(browser, "entries")}
    by_command = {r["data"]["commandId"]: r for r in history.values()}
    assert by_command[ids["reversal"]]["data"]["type"] == "reversal"
    assert "40.00 reversed" in by_command[ids["transfer"]]["cells"][6]

    # The chart: one point per entry with the API's balances, and the line painted on the canvas.
    drawn = browser.execute_script(CANVAS_CHECK, "balance-chart")
    assert drawn["values"] == [[e["balance_after"] for e in entries]]
    assert drawn["blue"] > 500 and drawn["painted"] > drawn["total"] // 50, drawn
    screenshots(browser, "account-by-time", {"balance-chart": "chart-by-time"})
    # By entry instead of by time: the same balances, one step per entry (the batch spread out).
    browser.find_element(By.CSS_SELECTOR, ".axis-toggle button[data-axis=seq]").click()
    by_entry = browser.execute_script(CANVAS_CHECK, "balance-chart")
    assert by_entry["xs"] == [[e["seq"] for e in entries]] and by_entry["values"] == drawn["values"]
    assert by_entry["blue"] > 500, by_entry

    # Holds: the captured one and the pending one, with the API's statuses.
    holds = {r["data"]["holdId"]: r for r in table(browser, "holds")}
    api_holds = {h["id"]: h for h in api.get(f"/v1/accounts/{alice}/holds").json()["holds"]}
    assert set(holds) == set(api_holds) == {ids["captured_hold"], ids["pending_hold"]}
    assert (
        holds[ids["captured_hold"]]["data"]["status"] == "captured"
        and holds[ids["captured_hold"]]["cells"][3] == "20.00"
    )
    assert holds[ids["pending_hold"]]["data"]["status"] == "pending"
    screenshots(browser, "account", {"account-card": "account-card"})

    # The older page of the history.
    browser.find_element(By.ID, "entries-older").click()
    until(browser, "the older page", lambda d: [r["data"]["seq"] for r in table(d, "entries")][:1] == ["6"])
    ready(browser, "account-card")
    check_history_page(browser, entries, newest_seq=6, oldest_seq=1)

    # The audit log: the refused call is listed with its request and response as recorded.
    ready(browser, "audit-card")
    row = browser.find_element(By.CSS_SELECTOR, f'#audit tr[data-audit-id="{conflict["id"]}"]')
    assert "/v1/accounts" in row.text and "409" in row.text and "→ conflict" in row.text
    row.find_element(By.CSS_SELECTOR, "button[data-audit-id]").click()
    detail = f'#audit tr.audit-detail[data-audit-id="{conflict["id"]}"]'
    until(browser, "the call's bodies", lambda d: d.find_elements(By.CSS_SELECTOR, detail))
    shown = browser.find_element(By.CSS_SELECTOR, detail)
    request_shown = shown.find_element(By.CSS_SELECTOR, ".request pre").text
    response_shown = shown.find_element(By.CSS_SELECTOR, ".response pre").text
    recorded = api.get(f"/v1/audit/{conflict['id']}").json()
    assert json.loads(request_shown) == json.loads(recorded["request_body"]) == {"id": alice, "currency": "EUR"}
    assert json.loads(response_shown) == json.loads(recorded["response_body"])
    assert json.loads(response_shown)["code"] == "conflict"
    screenshots(browser, "audit", {"audit-card": "audit-card"})

    # System accounts are listed (balances only) when asked: the `@world` shards, not clickable.
    browser.find_element(By.ID, "prefix").clear()
    browser.find_element(By.ID, "system").click()
    browser.find_element(By.CSS_SELECTOR, "#search-form button").click()

    def system_rows(d: WebDriver) -> list[dict[str, Any]]:
        rows = table(d, "accounts") if state(d, "accounts-card") == "ready" else []
        return rows if rows and all(r["data"]["accountId"].startswith("@world:") for r in rows) else []

    until(browser, "the system accounts", system_rows)
    assert not browser.find_elements(By.CSS_SELECTOR, "#accounts a")

    no_policy_refusals(browser)


def no_policy_refusals(driver: WebDriver) -> None:
    """Nothing on the page was refused by the Content-Security-Policy (Chromium logs each refusal)."""
    console: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[attr-defined]  # Chrome's, untyped
    refusals = [e for e in console if "Content Security Policy" in e["message"]]
    assert not refusals, refusals


def check_history_page(driver: WebDriver, entries: list[dict[str, Any]], newest_seq: int, oldest_seq: int) -> None:
    """The history page shows entries newest_seq..oldest_seq, each with the API's amount and running balance."""
    rows = table(driver, "entries")
    assert [int(r["data"]["seq"]) for r in rows] == list(range(newest_seq, oldest_seq - 1, -1))
    by_seq = {e["seq"]: e for e in entries}
    for r in rows:
        entry = by_seq[int(r["data"]["seq"])]
        assert r["data"]["commandId"] == entry["command_id"]
        assert r["cells"][5] == money(entry["balance_after"]), (r, entry)
        assert r["cells"][4].lstrip("+") == money(entry["amount"])


def test_books_show_reconciliation_runs_with_their_discrepancies(
    cluster: Cluster, browser: WebDriver, api: httpx.Client
) -> None:
    """A run with one of each outcome is listed and charted; opened, it shows the discrepancies."""
    cluster.add_worker([])
    account = f"{uid('recon')}:payouts"
    assert api.post("/v1/accounts", json={"id": account, "currency": "USD"}).status_code == 201
    for reference, amount in (("po-1", 5_000), ("po-2", 7_000), ("po-3", 1_234)):
        done = applied(api, type="deposit", account_id=account, amount=amount, currency="USD", reference=reference)
        assert done["status"] == "applied"
    records = [
        {"external_id": "st_1", "amount": 5_000, "currency": "USD", "reference": "po-1", "date": "2026-12-01"},
        {"external_id": "st_2", "amount": 7_500, "currency": "USD", "reference": "po-2", "date": "2026-12-01"},
        {"external_id": "st_9", "amount": 300, "currency": "USD", "reference": "po-9"},
    ]
    created = api.post("/v1/reconciliations", json={"records": records, "account_id": account})
    sign_in(browser, cluster.url, cluster.key)
    until(browser, "the books", lambda d: state(d, "books") == "ready")
    if created.status_code in (404, 405):  # a server without reconciliation: the panel says so, nothing breaks
        assert state(browser, "recon-card") == "unavailable"
        assert "not available" in browser.find_element(By.ID, "recon-unavailable").text
        screenshots(browser, "reconciliation", {"recon-card": "reconciliation-card"})
        return
    assert created.status_code == 201, created.text
    run = created.json()
    assert run["summary"] == {
        "records": 3,
        "matched": 1,
        "mismatched": 1,
        "unmatched_external": 1,
        "unmatched_ledger": 1,
    }

    ready(browser, "recon-card")
    rows = {r["data"]["reconId"]: r for r in table(browser, "recons")}
    assert rows[run["id"]]["cells"][4:] == ["3", "1", "1", "1", "1"]
    drawn = browser.execute_script(CANVAS_CHECK, "recon-chart")
    assert drawn["values"] == [[1], [1], [1], [1]] and drawn["painted"] > drawn["total"] // 50, drawn

    browser.find_element(By.CSS_SELECTOR, f'#recons button[data-recon-id="{run["id"]}"]').click()
    ready(browser, "recon-detail")
    items = {r["data"]["status"]: r["cells"] for r in table(browser, "items")}
    assert set(items) == {"mismatched", "unmatched_external", "unmatched_ledger"}  # discrepancies only
    assert items["mismatched"][5:8] == ["75.00 USD", "70.00 USD", "+5.00"]
    assert items["unmatched_external"][2] == "st_9" and items["unmatched_ledger"][3] == "po-3"
    screenshots(browser, "reconciliation", {"recon-card": "reconciliation-card"})
    browser.find_element(By.ID, "recon-only-bad").click()
    assert {r["data"]["status"] for r in table(browser, "items")} == {
        "matched",
        "mismatched",
        "unmatched_external",
        "unmatched_ledger",
    }
    no_policy_refusals(browser)


def test_the_books_page_and_the_vendored_chart_are_served_under_the_policy(http: TestClient) -> None:
    """The page, its script and Chart.js come from the API itself, each with the strict CSP; the vendor
    folder serves a fixed list, nothing else."""
    for path, kind in (
        ("/ui/books", "text/html"),
        ("/ui/static/books.js", "text/javascript"),
        ("/ui/static/vendor/chart.umd.min.js", "text/javascript"),
        ("/ui/static/vendor/chart.js.LICENSE.md", "text/plain"),
    ):
        answer = http.get(path)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith(kind), path
        assert "script-src 'self';" in answer.headers["content-security-policy"]
        assert "'unsafe-inline'" not in answer.headers["content-security-policy"]
    page = http.get("/ui/books").text
    assert "/ui/static/vendor/chart.umd.min.js" in page and "<script>" not in page
    assert "MIT" in http.get("/ui/static/vendor/chart.js.LICENSE.md").text
    for path in ("/ui/static/vendor/README.md", "/ui/static/vendor/..%2Fbooks.js", "/ui/static/vendor/chart.js"):
        answer = http.get(path)
        assert answer.status_code == 404 and answer.json()["code"] == "not_found", path
