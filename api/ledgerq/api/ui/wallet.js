// The wallet (seed 004): the balance, held and available amounts shown are only ever what the ledger
// returned. After each command (deposit, withdrawal, payout hold, capture, void, refund) the page
// waits for the command's outcome and reads the account again; it never adds or subtracts on its
// own, so a reload always shows the same numbers.
"use strict";

const $ = (id) => document.getElementById(id);
const HISTORY_ROWS_MAX = 20;  // the newest entries shown
const HOLDS_MAX = 50;  // pending holds shown
const LOG_LINES_MAX = 6;  // lines kept under "Latest commands"
const WAIT_S = 10;  // one long-poll of a command's status
const POLLS_MAX = 30;  // long-polls before the page stops following a command (5 minutes)
const MESSAGES = {
  insufficient_funds: "Insufficient funds: that is more than the account has available. Nothing moved.",
  currency_mismatch: "The two accounts hold different currencies.",
  unknown_account: "No account has that id.",
  hold_not_pending: "This hold is no longer pending (it was captured, voided or has expired). Nothing moved.",
  hold_expired: "This hold has expired; its money was released. Nothing moved.",
  amount_exceeds_hold: "That is more than the hold: capture at most the held amount. Nothing moved.",
  not_reversible: "This entry cannot be refunded. Nothing moved.",
  amount_exceeds_reversible: "That is more than is left to refund of this entry. Nothing moved.",
  unknown_hold: "There is no hold with that id.",
  unknown_command: "There is no command with that id.",
};
const KINDS = {
  deposit: "Deposit", withdraw: "Withdrawal", transfer: "Transfer", transaction: "Split",
  capture: "Payout", reversal: "Refund",
};
const REVERSIBLE = new Set(["deposit", "withdraw", "transfer", "capture", "transaction"]);

let shown = null;  // the account as last read from the ledger
let refunding = null;  // {entry, command, left} while the refund form is open

function account() { return sessionStorage.getItem("ledgerq.account") || ""; }
function counterparty(id) { return id.startsWith("@world") ? "outside world" : id; }
function when(iso) { return new Date(iso).toLocaleString(undefined, { dateStyle: "short", timeStyle: "short" }); }
function amountOf(currency, minor) { return `${ledgerq.money(minor)} ${currency}`; }

async function openAccount() {
  $("signin-error").textContent = "";
  $("wallet").dataset.state = "loading";
  try {
    const found = await ledgerq.call("GET", `/v1/accounts/${encodeURIComponent(account())}`);
    await showWallet(found);
  } catch (error) {
    if (error.status === 404) { $("create").hidden = false; return; }
    $("signin-error").textContent = error.message;
    $("signin").hidden = false;
    $("wallet").hidden = true;
  }
}

async function showWallet(found) {
  // "ready" once the figures, the pending holds and the history are all on the page (tests and
  // scripts wait for it).
  const id = encodeURIComponent(found.id);
  const after = Math.max(0, found.entry_count - HISTORY_ROWS_MAX);
  const [page, holds] = await Promise.all([
    ledgerq.call("GET", `/v1/accounts/${id}/entries?after_seq=${after}&limit=${HISTORY_ROWS_MAX}`),
    ledgerq.call("GET", `/v1/accounts/${id}/holds?status=pending&limit=${HOLDS_MAX}`),
  ]);
  // Each entry's command says what it was and how much of it was refunded already.
  const commands = await Promise.all(page.entries.map((entry) =>
    ledgerq.call("GET", `/v1/commands/${encodeURIComponent(entry.command_id)}`).catch(() => null)));
  shown = found;
  $("signin").hidden = true;
  $("wallet").hidden = false;
  $("account-id").textContent = found.id;
  for (const name of ["balance", "held", "available"]) $(name).textContent = ledgerq.money(found[name]);
  $("held").parentElement.classList.toggle("nonzero", found.held !== 0);
  document.querySelectorAll(".currency").forEach((el) => { el.textContent = found.currency; });
  $("read-at").textContent = new Date().toLocaleTimeString();
  $("holds").replaceChildren(...holds.holds.map(holdRow));
  $("holds-table").hidden = holds.holds.length === 0;
  $("no-holds").hidden = holds.holds.length > 0;
  $("more-holds").hidden = holds.next_after_id === null;
  const rows = page.entries.map((entry, i) => historyRow(entry, commands[i]));
  $("history").replaceChildren(...rows.reverse());
  $("history-table").hidden = page.entries.length === 0;
  $("no-history").hidden = page.entries.length > 0;
  $("wallet").dataset.state = "ready";
}

function button(text, action, className) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.dataset.action = action;
  if (className) b.className = className;
  return b;
}

function holdRow(hold) {
  const row = document.createElement("tr");
  row.dataset.holdId = hold.id;
  ledgerq.cell(row, ledgerq.short(hold.id), "id").title = hold.id;
  ledgerq.cell(row, counterparty(hold.to_account_id || "@world"), hold.to_account_id ? "" : "muted");
  ledgerq.cell(row, ledgerq.money(hold.amount), "num amount");
  ledgerq.cell(row, when(hold.expires_at), "muted");
  const answer = ledgerq.cell(row, "", "num answer");
  const part = document.createElement("input");
  part.className = "part";
  part.inputMode = "decimal";
  part.placeholder = "all";
  part.pattern = "[0-9]{1,15}(\\.[0-9]{1,2})?";
  part.setAttribute("aria-label", "amount to capture (blank: all)");
  answer.append(part, button("Capture", "capture"), button("Void", "void", "secondary"));
  return row;
}

// What is left to refund of an entry's command, in minor units (a split is refunded whole).
function refundable(entry, command) {
  if (!command || command.status !== "applied" || !REVERSIBLE.has(command.type)) return 0;
  if (command.type === "transaction") return command.reversed_amount ? 0 : Math.abs(entry.amount);
  return Math.abs(entry.amount) - (command.reversed_amount || 0);
}

function historyRow(entry, command) {
  const row = document.createElement("tr");
  row.dataset.commandId = entry.command_id;
  row.dataset.seq = entry.seq;
  ledgerq.cell(row, entry.seq, "muted");
  ledgerq.cell(row, when(entry.created_at), "muted");
  const what = ledgerq.cell(row, command ? KINDS[command.type] || command.type : "–", "what");
  const id = document.createElement("span");
  id.className = "id muted";
  id.textContent = ledgerq.short(entry.command_id);
  id.title = entry.command_id;
  what.append(" ", id);
  ledgerq.cell(row, counterparty(entry.counterparty), "with");
  ledgerq.cell(row, ledgerq.money(entry.amount), entry.amount < 0 ? "num amount out" : "num amount in");
  ledgerq.cell(row, ledgerq.money(entry.balance_after), "num");
  const refund = ledgerq.cell(row, "", "num refund-cell");
  const left = refundable(entry, command);
  if (left > 0) {
    const b = button("Refund", "refund", "small secondary");
    b.addEventListener("click", () => openRefund(entry, command, left));
    refund.append(b);
  }
  if (command && command.reversed_amount) {
    const note = document.createElement("div");
    note.className = "muted refunded";
    note.textContent = left > 0 ? `${ledgerq.money(command.reversed_amount)} refunded` : "fully refunded";
    refund.append(note);
  }
  return row;
}

function openRefund(entry, command, left) {
  refunding = { entry, command, left };
  const whole = command.type === "transaction";
  const kind = KINDS[command.type] || command.type;
  $("refund-what").textContent = whole
    ? `Refund ${kind} #${entry.seq}: a split is refunded whole, every leg of it.`
    : `Refund ${kind} #${entry.seq} (${ledgerq.money(entry.amount)} with ${counterparty(entry.counterparty)}): `
      + `up to ${amountOf(shown.currency, left)} left to refund.`;
  $("refund-amount-label").hidden = whole;
  $("refund-amount").value = "";
  $("refund-amount").placeholder = `all: ${ledgerq.money(left)}`;
  $("refund-error").textContent = "";
  $("refund-form").hidden = false;
  $("refund-form").dataset.commandId = entry.command_id;
  if (!whole) $("refund-amount").focus();
}

function closeRefund() {
  refunding = null;
  $("refund-form").hidden = true;
}

function logLine(body) {
  const item = document.createElement("li");
  const status = document.createElement("span");
  const text = document.createElement("span");
  item.append(status, " ", text);
  item.dataset.commandId = body.id;
  item.dataset.type = body.type;
  $("commands").prepend(item);
  while ($("commands").children.length > LOG_LINES_MAX) $("commands").lastElementChild.remove();
  $("commands-card").hidden = false;
  return (state, message) => {
    status.textContent = state;
    status.className = `status status-${state}`;
    text.textContent = message;
    item.dataset.status = state;
    item.dataset.seen = item.dataset.seen ? `${item.dataset.seen} ${state}` : state;
  };
}

function explain(code, detail) { return `${MESSAGES[code] || detail} (${code})`; }

// Submit one command and follow it to its outcome; answers the problem's text when it was refused.
async function follow(body, label) {
  const show = logLine(body);
  try {
    let outcome = await ledgerq.call("POST", "/v1/commands", body);
    show(outcome.status, label);
    for (let polls = 0; !["applied", "rejected", "failed"].includes(outcome.status); polls += 1) {
      if (polls === POLLS_MAX) {
        const problem = `still ${outcome.status} after ${POLLS_MAX * WAIT_S} s: reload later to see its outcome`;
        show(outcome.status, `${label}: ${problem}`);
        return problem;
      }
      outcome = await ledgerq.call("GET", `/v1/commands/${encodeURIComponent(body.id)}?wait=${WAIT_S}`);
      show(outcome.status, label);
    }
    if (outcome.status === "applied") return null;
    const problem = outcome.error ? explain(outcome.error.code, outcome.error.detail) : outcome.status;
    show(outcome.status, `${label}: ${problem}`);
    return problem;
  } catch (error) {
    const problem = explain(error.code, error.message);
    show("error", `${label}: ${problem}`);
    return problem;
  }
}

// One command at a time: every action is disabled until its outcome is known and the account is
// read again from the ledger. The form it came from is emptied once it is applied (so a second
// click cannot repeat it by mistake) and kept as typed when it was refused, to be corrected.
async function act(fields, label, form) {
  const body = { id: crypto.randomUUID(), ...fields };  // fixed before the first attempt: a retry never applies twice
  $("actions").disabled = true;
  let problem = "unknown";
  try {
    problem = await follow(body, label);
    return problem;
  } finally {
    await openAccount();
    if (form && problem === null) form.reset();
    $("actions").disabled = false;
  }
}

function move(type, amountText) {
  const amount = ledgerq.minor(amountText);
  const label = `${type} ${amountOf(shown.currency, amount)}`;
  return act({ type, account_id: shown.id, amount, currency: shown.currency }, label, $("move-form"));
}

function payout(amountText, to) {
  const amount = ledgerq.minor(amountText);
  const fields = { type: "hold", account_id: shown.id, amount, currency: shown.currency };
  if (to) fields.to_account_id = to;
  const label = `payout hold ${amountOf(shown.currency, amount)} to ${counterparty(to || "@world")}`;
  return act(fields, label, $("payout-form"));
}

function answerHold(row, action) {
  const holdId = row.dataset.holdId;
  const part = row.querySelector("input.part");
  if (action === "void") return act({ type: "void", hold_id: holdId }, `void hold ${ledgerq.short(holdId)}`);
  if (!part.checkValidity()) { part.reportValidity(); return null; }
  const fields = { type: "capture", hold_id: holdId };
  if (part.value.trim()) fields.amount = ledgerq.minor(part.value);
  const what = fields.amount ? amountOf(shown.currency, fields.amount) : "all";
  return act(fields, `capture ${what} of hold ${ledgerq.short(holdId)}`);
}

async function refund() {
  const { entry, command } = refunding;
  const fields = { type: "reversal", command_id: entry.command_id };
  const text = $("refund-amount").value.trim();
  if (text && command.type !== "transaction") fields.amount = ledgerq.minor(text);
  const what = fields.amount ? amountOf(shown.currency, fields.amount) : "all that is left";
  const problem = await act(fields, `refund ${what} of ${KINDS[command.type]} #${entry.seq}`);
  if (problem) $("refund-error").textContent = problem; else closeRefund();
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
  $("move-form").addEventListener("submit", (event) => {
    event.preventDefault();
    move(event.submitter.value, $("amount").value);
  });
  $("payout-form").addEventListener("submit", (event) => {
    event.preventDefault();
    payout($("payout-amount").value, $("payout-to").value.trim());
  });
  $("holds").addEventListener("click", (event) => {
    const clicked = event.target.closest("button[data-action]");
    if (clicked) answerHold(clicked.closest("tr"), clicked.dataset.action);
  });
  $("refund-form").addEventListener("submit", (event) => {
    event.preventDefault();
    refund();
  });
  $("refund-cancel").addEventListener("click", closeRefund);
  $("signout").addEventListener("click", () => {
    sessionStorage.clear();
    location.reload();
  });
  if (ledgerq.key() && account()) openAccount();
});
