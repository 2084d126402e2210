// The wallet (seed 004): the balance shown is only ever what the ledger returned. After a deposit
// or withdrawal the page waits for the command's outcome and reads the balance again; it never
// adds or subtracts on its own, so a reload always shows the same number.
"use strict";

const $ = (id) => document.getElementById(id);
const MESSAGES = {
  insufficient_funds: "Insufficient funds: this withdrawal is more than the account holds. Nothing was taken.",
  currency_mismatch: "The account holds another currency.",
  unknown_account: "The account does not exist.",
};

function account() { return sessionStorage.getItem("ledgerq.account") || ""; }

async function openAccount() {
  $("signin-error").textContent = "";
  try {
    const found = await ledgerq.call("GET", `/v1/accounts/${encodeURIComponent(account())}`);
    showWallet(found);
  } catch (error) {
    if (error.status === 404) { $("create").hidden = false; return; }
    $("signin-error").textContent = error.message;
    $("signin").hidden = false;
    $("wallet").hidden = true;
  }
}

async function showWallet(found) {
  // "ready" once the balance and its history are both on the page (tests and scripts wait for it).
  $("wallet").dataset.state = "loading";
  $("signin").hidden = true;
  $("wallet").hidden = false;
  $("account-id").textContent = found.id;
  $("balance").textContent = ledgerq.money(found.balance);
  $("balance-currency").textContent = found.currency;
  $("read-at").textContent = new Date().toLocaleTimeString();
  const after = Math.max(0, found.entry_count - 20);
  const page = await ledgerq.call("GET", `/v1/accounts/${encodeURIComponent(found.id)}/entries?after_seq=${after}&limit=20`);
  const body = $("history");
  body.replaceChildren();
  for (const entry of page.entries.slice().reverse()) {
    const row = document.createElement("tr");
    ledgerq.cell(row, entry.seq);
    ledgerq.cell(row, new Date(entry.created_at).toLocaleString());
    ledgerq.cell(row, entry.command_id);
    ledgerq.cell(row, ledgerq.money(entry.amount), "num");
    ledgerq.cell(row, ledgerq.money(entry.balance_after), "num");
    body.appendChild(row);
  }
  $("no-history").hidden = page.entries.length > 0;
  $("wallet").dataset.state = "ready";
}

async function move(type, amountText) {
  const amount = Math.round(parseFloat(amountText) * 100);
  const item = document.createElement("li");
  const status = document.createElement("span");
  const text = document.createElement("span");
  item.append(status, " ", text);
  $("commands").prepend(item);
  const show = (state, message) => {
    status.textContent = state;
    status.className = `status status-${state}`;
    text.textContent = message;
    item.dataset.status = state;
    item.dataset.seen = item.dataset.seen ? `${item.dataset.seen} ${state}` : state;
  };
  const id = crypto.randomUUID();  // fixed before the first attempt: a retry can never apply twice
  item.dataset.commandId = id;
  const label = `${type} ${ledgerq.money(amount)} ${$("balance-currency").textContent}`;
  try {
    const accepted = await ledgerq.call("POST", "/v1/commands", {
      id, type, account_id: account(), amount, currency: $("balance-currency").textContent,
    });
    show(accepted.status, label);
    let outcome = accepted;
    while (!["applied", "rejected", "failed"].includes(outcome.status)) {
      outcome = await ledgerq.call("GET", `/v1/commands/${encodeURIComponent(id)}?wait=10`);
      show(outcome.status, label);
    }
    if (outcome.status === "rejected" || outcome.status === "failed") {
      const code = outcome.error ? outcome.error.code : outcome.status;
      show(outcome.status, `${label}: ${MESSAGES[code] || outcome.error.detail} (${code})`);
    }
  } catch (error) {
    show("error", `${label}: ${error.message} (${error.code})`);
  }
  await openAccount();  // the balance, again, from the ledger
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("ledgerq.key", $("key").value.trim());
    sessionStorage.setItem("ledgerq.account", $("account").value.trim());
    openAccount();
  });
  $("create-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await ledgerq.call("POST", "/v1/accounts", { id: account(), currency: $("currency").value.trim() });
      $("create").hidden = true;
      openAccount();
    } catch (error) { $("signin-error").textContent = error.message; }
  });
  $("move-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const buttons = $("move-form").querySelectorAll("button");
    buttons.forEach((b) => { b.disabled = true; });
    try { await move(event.submitter.value, $("amount").value); } finally { buttons.forEach((b) => { b.disabled = false; }); }
  });
  $("signout").addEventListener("click", () => {
    sessionStorage.clear();
    location.reload();
  });
  if (ledgerq.key() && account()) openAccount();
});
