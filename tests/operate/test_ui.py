"""The wallet page and the operator view, driven in headless Chromium (Debian's chromium and
chromedriver) against a live API and worker, checking seed 004's acceptance criteria and the
payout (hold, capture, void) and refund flows against the API's own numbers."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import text

from ledgerq.shared.apikeys import create_key
from tests.chaos.cluster import PARTITIONS, Cluster, WorkerProcess
from tests.conftest import uid

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SCREENSHOTS = Path(os.environ.get("LEDGERQ_SCREENSHOT_DIR", Path(__file__).resolve().parents[2] / ".screenshots"))

# Without Chromium the test cannot run; on CI (which installs it) that is a failure, not a skip.
if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)) and not os.environ.get("CI"):
    pytest.skip("Debian's chromium and chromium-driver are not installed", allow_module_level=True)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1100,1000",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def until(driver: WebDriver, what: str, check: object, timeout_s: float = 30) -> object:
    return WebDriverWait(driver, timeout_s, poll_frequency=0.05).until(check, what)  # type: ignore[arg-type]


def balance(driver: WebDriver) -> str:
    """The balance shown, once the page has rendered it and its history (not while still loading)."""
    until(
        driver, "the wallet rendered", lambda d: d.find_element(By.ID, "wallet").get_attribute("data-state") == "ready"
    )
    return str(driver.find_element(By.ID, "balance").text)


def move(driver: WebDriver, kind: str, amount: str) -> WebElement:
    """Deposit or withdraw through the form; return the command's line once it is final."""
    before = newest(driver)
    field = driver.find_element(By.ID, "amount")
    field.clear()
    field.send_keys(amount)
    driver.find_element(By.CSS_SELECTOR, f"#move-form button[value={kind}]").click()
    return final_line(driver, before)


def newest(driver: WebDriver) -> str:
    """The command id on the newest line of "Latest commands" ("" before the first)."""
    found = driver.find_elements(By.CSS_SELECTOR, "#commands li")
    return str(found[0].get_attribute("data-command-id")) if found else ""


def final_line(driver: WebDriver, before: str) -> WebElement:
    """The newest command line once it is final and the page has read the account again (the list
    keeps a bounded number of lines, so a new one is told by its id, not by the count)."""
    until(driver, "a new command line", lambda d: newest(d) != before)
    line = driver.find_element(By.CSS_SELECTOR, "#commands li")
    until(driver, "a final status", lambda _: line.get_attribute("data-status") in ("applied", "rejected", "failed"))
    # Every action stays disabled until the page has read the account again; wait for them to come back.
    until(driver, "the actions re-enabled", lambda d: d.find_element(By.CSS_SELECTOR, "#move-form button").is_enabled())
    return line


def screenshot(driver: WebDriver, name: str) -> None:
    """The whole page, not only the window: the window grows to the page's height for the picture."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    width, height = driver.get_window_size()["width"], driver.get_window_size()["height"]
    page_height_px = int(driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(width, max(height, page_height_px + 140))  # + the browser's own frame
    driver.save_screenshot(str(SCREENSHOTS / name))
    driver.set_window_size(width, height)


def stored_balance(cluster: Cluster, account: str) -> tuple[int, int]:
    with cluster.engine.connect() as conn:
        row = conn.execute(text("SELECT balance, entry_count FROM accounts WHERE id = :i"), {"i": account}).one()
    return int(row.balance), int(row.entry_count)


def sign_in(driver: WebDriver, key: str, account: str) -> None:
    driver.find_element(By.ID, "key").send_keys(key)
    driver.find_element(By.ID, "account").send_keys(account)
    driver.find_element(By.CSS_SELECTOR, "#signin-form button").click()


def worker_lines(worker: WorkerProcess, command_id: str) -> list[dict[str, object]]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = [json.loads(line) for line in worker.log.read_text().splitlines() if command_id in line]
        if found:
            return found
        time.sleep(0.1)
    return []


def test_wallet_page_meets_seed_004(cluster: Cluster, browser: WebDriver) -> None:
    worker = cluster.add_worker([], LEDGERQ_LOG_FORMAT="json", LEDGERQ_LOG_LEVEL="DEBUG")
    key = create_key(cluster.engine, "write", name="wallet user")[0]
    account = uid("wallet")
    browser.get(f"{cluster.url}/ui")
    sign_in(browser, key, account)
    until(browser, "the create form", lambda d: d.find_element(By.ID, "create").is_displayed())
    browser.find_element(By.CSS_SELECTOR, "#create-form button").click()
    assert balance(browser) == "0.00"

    deposit = move(browser, "deposit", "100.00")
    assert deposit.get_attribute("data-status") == "applied"
    assert balance(browser) == "100.00"

    # 1. A withdrawal changes the stored balance; the page watched it go queued -> applied.
    withdrawal = move(browser, "withdraw", "50.00")
    withdrawal_id = str(withdrawal.get_attribute("data-command-id"))
    seen = str(withdrawal.get_attribute("data-seen")).split()
    assert seen[0] == "queued" and seen[-1] == "applied", seen
    assert balance(browser) == "50.00"
    assert stored_balance(cluster, account) == (5000, 2)

    # 2. A reload, and a sign-out and sign-in, show the stored balance.
    browser.refresh()
    assert balance(browser) == "50.00"
    browser.find_element(By.ID, "signout").click()
    until(browser, "the sign-in form", lambda d: d.find_element(By.ID, "signin").is_displayed())
    sign_in(browser, key, account)
    assert balance(browser) == "50.00"

    # 3. More than the stored balance: refused with the insufficient_funds message; nothing moves.
    overdraft = move(browser, "withdraw", "80.00")
    overdraft_id = str(overdraft.get_attribute("data-command-id"))
    assert overdraft.get_attribute("data-status") == "rejected"
    assert "Insufficient funds" in overdraft.text and "(insufficient_funds)" in overdraft.text
    assert balance(browser) == "50.00"
    assert stored_balance(cluster, account) == (5000, 2)
    browser.refresh()
    assert balance(browser) == "50.00"  # waits for the history too
    rows = browser.find_elements(By.CSS_SELECTOR, "#history tr")
    assert [r.find_element(By.CSS_SELECTOR, "td.amount").text for r in rows] == ["-50.00", "100.00"]

    # 4. The worker's log lines confirm the commit and the refusal, by command id.
    withdrawn = worker_lines(worker, withdrawal_id)
    refused = worker_lines(worker, overdraft_id)
    assert [(w["status"], w["code"]) for w in withdrawn] == [("applied", None)]
    assert [(r["status"], r["code"]) for r in refused] == [("rejected", "insufficient_funds")]

    # One more overdraft so the picture shows a refusal beside the history.
    move(browser, "withdraw", "80.00")
    screenshot(browser, "wallet.png")


def test_operator_view_lists_partitions_with_owner_depth_and_lag(cluster: Cluster, browser: WebDriver) -> None:
    worker = cluster.add_worker([])
    write_key = create_key(cluster.engine, "write", name="not an operator")[0]
    browser.get(f"{cluster.url}/ui/ops")
    browser.find_element(By.ID, "key").send_keys(write_key)
    browser.find_element(By.CSS_SELECTOR, "#signin-form button").click()
    until(browser, "a refusal", lambda d: "(forbidden)" in d.find_element(By.ID, "signin-error").text)

    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    browser.find_element(By.ID, "key").send_keys(cluster.key)
    browser.find_element(By.CSS_SELECTOR, "#signin-form button").click()
    assert worker.process is not None
    pid = f":{worker.process.pid}:"

    def owned_rows(d: WebDriver) -> list[list[str]]:
        # Read in one script: the page re-renders the table every 2 s, so elements would go stale.
        rows: list[list[str]] = d.execute_script(
            "return [...document.querySelectorAll('#partitions tr')].map(r => [...r.cells].map(c => c.textContent))"
        )
        return rows if len(rows) == PARTITIONS and all(pid in r[1] for r in rows) else []

    rows = cast(list[list[str]], until(browser, "every partition owned by the worker", owned_rows))
    assert [r[0] for r in rows] == [str(p) for p in range(PARTITIONS)]
    assert all(r[2] == "0" and r[3] == "0" for r in rows)
    screenshot(browser, "partitions.png")


def figures(driver: WebDriver) -> tuple[str, str, str]:
    """Posted, held and available as the page shows them, once it has rendered."""
    balance(driver)
    posted, held, available = (str(driver.find_element(By.ID, name).text) for name in ("balance", "held", "available"))
    return posted, held, available


def money(minor: int) -> str:
    """Minor units as the page writes them: 1234567 -> "12,345.67"."""
    return f"{'-' if minor < 0 else ''}{abs(minor) // 100:,}.{abs(minor) % 100:02d}"


def api_figures(http: httpx.Client, account: str) -> tuple[str, str, str]:
    """The same three numbers from `GET /v1/accounts/{id}`."""
    body = http.get(f"/v1/accounts/{account}").json()
    assert body["available"] == body["balance"] - body["held"]
    return money(body["balance"]), money(body["held"]), money(body["available"])


def pay_out(driver: WebDriver, amount: str, to: str = "") -> WebElement:
    before = newest(driver)
    for field, value in (("payout-amount", amount), ("payout-to", to)):
        driver.find_element(By.ID, field).clear()
        driver.find_element(By.ID, field).send_keys(value)
    driver.find_element(By.CSS_SELECTOR, "#payout-form button").click()
    return final_line(driver, before)


def hold_row(driver: WebDriver, hold_id: str) -> WebElement:
    balance(driver)
    return driver.find_element(By.CSS_SELECTOR, f'#holds tr[data-hold-id="{hold_id}"]')


def answer_hold(driver: WebDriver, hold_id: str, action: str, amount: str = "") -> WebElement:
    before = newest(driver)
    row = hold_row(driver, hold_id)
    if amount:
        row.find_element(By.CSS_SELECTOR, "input.part").send_keys(amount)
    row.find_element(By.CSS_SELECTOR, f"button[data-action={action}]").click()
    return final_line(driver, before)


def history_row(driver: WebDriver, command_id: str) -> WebElement:
    balance(driver)
    return driver.find_element(By.CSS_SELECTOR, f'#history tr[data-command-id="{command_id}"]')


def refund(driver: WebDriver, amount: str) -> WebElement:
    before = newest(driver)
    field = driver.find_element(By.ID, "refund-amount")
    field.clear()
    field.send_keys(amount)
    driver.find_element(By.CSS_SELECTOR, "#refund-form button[type=submit]").click()
    return final_line(driver, before)


@pytest.fixture
def api(cluster: Cluster) -> Iterator[httpx.Client]:
    """The API with the cluster's admin key, to check the page's numbers against."""
    with httpx.Client(base_url=cluster.url, headers={"Authorization": f"Bearer {cluster.key}"}, timeout=40) as client:
        yield client


def test_wallet_payouts_captured_voided_and_refunded(cluster: Cluster, browser: WebDriver, api: httpx.Client) -> None:
    """A payout captured in part, a payout voided, one that is no longer pending, and refunds from the
    history (in part, then too much, then the rest): after each, the page shows the API's numbers."""
    cluster.add_worker([])
    key = create_key(cluster.engine, "write", name="wallet user")[0]
    http = api
    wallet, gateway = uid("wallet"), uid("gateway")
    assert http.post("/v1/accounts", json={"id": gateway, "currency": "USD"}).status_code == 201
    browser.get(f"{cluster.url}/ui")
    sign_in(browser, key, wallet)
    until(browser, "the create form", lambda d: d.find_element(By.ID, "create").is_displayed())
    browser.find_element(By.CSS_SELECTOR, "#create-form button").click()
    assert balance(browser) == "0.00"
    assert move(browser, "deposit", "200.00").get_attribute("data-status") == "applied"
    assert figures(browser) == api_figures(http, wallet) == ("200.00", "0.00", "200.00")

    # A payout to the gateway's account is held: posted stays, available drops, the hold is listed.
    placed = pay_out(browser, "100.00", gateway)
    assert placed.get_attribute("data-status") == "applied"
    hold_id = str(placed.get_attribute("data-command-id"))
    assert figures(browser) == api_figures(http, wallet) == ("200.00", "100.00", "100.00")
    row = hold_row(browser, hold_id)
    assert gateway in row.text and row.find_element(By.CSS_SELECTOR, "td.amount").text == "100.00"
    # The held money cannot be withdrawn.
    refused = move(browser, "withdraw", "150.00")
    assert refused.get_attribute("data-status") == "rejected" and "(insufficient_funds)" in refused.text
    assert figures(browser) == api_figures(http, wallet) == ("200.00", "100.00", "100.00")
    screenshot(browser, "wallet-payout-held.png")

    # The gateway confirms 70.00 of it: captured in part, the rest released.
    captured = answer_hold(browser, hold_id, "capture", "70.00")
    assert captured.get_attribute("data-status") == "applied", captured.text
    assert figures(browser) == api_figures(http, wallet) == ("130.00", "0.00", "130.00")
    assert api_figures(http, gateway)[0] == "70.00"
    hold: dict[str, Any] = http.get(f"/v1/holds/{hold_id}").json()
    assert (hold["status"], hold["captured_amount"]) == ("captured", 7000)
    assert not browser.find_elements(By.CSS_SELECTOR, "#holds tr")
    assert browser.find_element(By.ID, "no-holds").is_displayed()
    capture_id = str(captured.get_attribute("data-command-id"))
    paid = history_row(browser, capture_id)
    assert paid.find_element(By.CSS_SELECTOR, "td.what").text.startswith("Payout")
    assert paid.find_element(By.CSS_SELECTOR, "td.amount").text == "-70.00" and gateway in paid.text

    # A payout to the outside world fails at the gateway: voided, all of it released.
    failed = pay_out(browser, "40.00")
    failed_id = str(failed.get_attribute("data-command-id"))
    assert "outside world" in hold_row(browser, failed_id).text
    assert figures(browser) == api_figures(http, wallet) == ("130.00", "40.00", "90.00")
    voided = answer_hold(browser, failed_id, "void")
    assert voided.get_attribute("data-status") == "applied", voided.text
    assert figures(browser) == api_figures(http, wallet) == ("130.00", "0.00", "130.00")
    assert http.get(f"/v1/holds/{failed_id}").json()["status"] == "voided"

    # A hold released elsewhere (here by the API) while the page still lists it: the capture is
    # refused with a message that says why, and nothing moves.
    stale_id = str(pay_out(browser, "20.00").get_attribute("data-command-id"))
    hold_row(browser, stale_id)
    void = {"id": uid("void"), "type": "void", "hold_id": stale_id}
    assert http.post("/v1/commands", json=void).status_code == 202
    assert http.get(f"/v1/commands/{void['id']}", params={"wait": 30}).json()["status"] == "applied"
    late = answer_hold(browser, stale_id, "capture")
    assert late.get_attribute("data-status") == "rejected"
    assert "no longer pending" in late.text and "(hold_not_pending)" in late.text
    assert figures(browser) == api_figures(http, wallet) == ("130.00", "0.00", "130.00")

    # The customer is refunded 30.00 of the payout from its history row.
    history_row(browser, capture_id).find_element(By.CSS_SELECTOR, "button[data-action=refund]").click()
    assert "70.00 USD left" in browser.find_element(By.ID, "refund-what").text
    part = refund(browser, "30.00")
    assert part.get_attribute("data-status") == "applied", part.text
    assert figures(browser) == api_figures(http, wallet) == ("160.00", "0.00", "160.00")
    assert api_figures(http, gateway)[0] == "40.00"
    assert http.get(f"/v1/commands/{capture_id}").json()["reversed_amount"] == 3000
    assert not browser.find_element(By.ID, "refund-form").is_displayed()
    assert "30.00 refunded" in history_row(browser, capture_id).text
    refund_row = history_row(browser, str(part.get_attribute("data-command-id")))
    assert refund_row.find_element(By.CSS_SELECTOR, "td.amount").text == "30.00"
    assert not refund_row.find_elements(By.CSS_SELECTOR, "button[data-action=refund]")  # a refund is final

    # More than is left is refused, in the refund form and in the command list; nothing moves.
    history_row(browser, capture_id).find_element(By.CSS_SELECTOR, "button[data-action=refund]").click()
    assert "40.00 USD left" in browser.find_element(By.ID, "refund-what").text
    too_much = refund(browser, "50.00")
    assert too_much.get_attribute("data-status") == "rejected"
    assert "(amount_exceeds_reversible)" in too_much.text
    assert "more than is left to refund" in browser.find_element(By.ID, "refund-error").text
    assert figures(browser) == api_figures(http, wallet) == ("160.00", "0.00", "160.00")
    screenshot(browser, "wallet-refund-refused.png")

    # The rest (the amount left blank): the payout is refunded whole and offers no more refunds.
    rest = refund(browser, "")
    assert rest.get_attribute("data-status") == "applied", rest.text
    assert figures(browser) == api_figures(http, wallet) == ("200.00", "0.00", "200.00")
    assert api_figures(http, gateway)[0] == "0.00"
    assert http.get(f"/v1/commands/{capture_id}").json()["reversed_amount"] == 7000
    done = history_row(browser, capture_id)
    assert not done.find_elements(By.CSS_SELECTOR, "button[data-action=refund]") and "refunded" in done.text
    browser.refresh()
    assert figures(browser) == api_figures(http, wallet) == ("200.00", "0.00", "200.00")
    screenshot(browser, "wallet-payouts.png")
