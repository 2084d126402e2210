// The books (seed 003's finance dashboard): the trial balance, accounts by id prefix with their history,
// running balance, chart and holds, reconciliation runs with their discrepancies, and the audit log
// with each call's request and response. It only reads: every figure is what the API answered, and
// each panel loads on its own, so one that fails (or a server without reconciliation yet) leaves the
// others working. Each card's `data-state` says "loading", "ready", "error" (or "unavailable").
"use strict";

const $ = (id) => document.getElementById(id);
const ACCOUNTS_PAGE = 50;  // accounts per page of a search
const ENTRIES_PAGE = 25;  // history rows per page
const CHART_POINTS_MAX = 1000;  // the newest entries drawn (one page of the entries endpoint)
const HOLDS_MAX = 100;  // holds listed per account
const AUDIT_PAGE = 20;  // audit ids per page
const AUDIT_PROBES_MAX = 128;  // bounds the search for the newest audit id (ids are int64)
const RECONS_PAGE = 50;  // runs per page
const RECON_CHART_RUNS = 10;  // the newest runs in the chart
const ITEMS_SHOWN_MAX = 500;  // a run's items drawn in the table
const COLORS = {
  accent: "#2454d6", fill: "rgba(36, 84, 214, 0.08)", good: "#067647", bad: "#b42318",
  amber: "#b54708", violet: "#6941c6", muted: "#98a2b3", grid: "#eef0f3",
};
const OUTCOMES = [
  ["matched", "matched", COLORS.good],
  ["mismatched", "mismatched", COLORS.bad],
  ["unmatched_external", "only outside", COLORS.amber],
  ["unmatched_ledger", "only in ledger", COLORS.violet],
];
const KINDS = {
  deposit: "Deposit", withdraw: "Withdrawal", transfer: "Transfer", transaction: "Split",
  capture: "Capture", reversal: "Reversal", hold: "Hold", void: "Void",
};

const view = {
  accountPages: [""],  // the `after_id` of each accounts page seen, to go back to the first
  accountNext: null,
  account: null,  // the open account as last read
  entriesTop: 0,  // the newest seq on the history page shown
  auditNewest: 0,  // the newest audit id when the log was last read
  auditTop: 0,  // the newest id on the audit page shown
  recons: [],  // the runs loaded so far
  reconNext: null,
  recon: null,  // the open run, with its items
  axis: "time",  // the balance chart's horizontal axis: "time", or "seq" (one step per entry)
  drawn: null,  // what the balance chart was drawn from: {account, entries, after}
  charts: {},
};

// --- small helpers -------------------------------------------------------------------------------

function when(iso) { return iso ? new Date(iso).toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" }) : "–"; }
function signed(minor) { return minor > 0 ? `+${ledgerq.money(minor)}` : ledgerq.money(minor); }
function counterparty(id) { return id.startsWith("@world") ? "outside world" : id; }
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}
function idCell(row, id) {
  const cell = ledgerq.cell(row, ledgerq.short(id), "id");
  cell.title = id;
  return cell;
}
function problem(error) { return `${error.message} (${error.code})`; }
function unavailable(error) { return error.status === 404 || error.status === 405; }
function setState(id, state) { $(id).dataset.state = state; }

// Two loads of one panel in flight (a quick second search, Refresh while paging): only the newest
// renders. `ticket(name)` returns a check that stays true until the next ticket of that name.
const tickets = {};
function ticket(name) {
  const mine = (tickets[name] || 0) + 1;
  tickets[name] = mine;
  return () => tickets[name] === mine;
}

// The chart library is vendored (ui/vendor); the page still works, without pictures, if it is missing.
function chartReady() { return typeof window.Chart === "function"; }

function draw(name, canvas, config) {
  if (view.charts[name]) view.charts[name].destroy();
  delete view.charts[name];
  if (!chartReady()) return false;
  // No animation: the picture is final when `new Chart` returns (and tests need not wait).
  config.options = { animation: false, responsive: true, maintainAspectRatio: false, ...config.options };
  view.charts[name] = new window.Chart(canvas, config);
  return true;
}

// --- sign-in -------------------------------------------------------------------------------------

async function openBooks() {
  $("signin-error").textContent = "";
  try {
    await ledgerq.call("GET", "/v1/audit?limit=1");  // the audit log is for admin keys: others stop here
  } catch (error) {
    $("signin").hidden = false;
    $("books").hidden = true;
    $("signin-error").textContent = error.status === 403
      ? `This key may not read the books: an admin key is needed. ${problem(error)}`
      : problem(error);
    return;
  }
  $("signin").hidden = true;
  $("books").hidden = false;
  setState("books", "loading");
  await Promise.all([loadTrial(), searchAccounts(""), loadRecons(), loadAudit()]);
  const wanted = accountInHash();
  if (wanted) await openAccount(wanted);
  setState("books", "ready");
}

function accountInHash() {
  const found = /^#account=(.+)$/.exec(location.hash);
  try { return found ? decodeURIComponent(found[1]) : ""; } catch { return ""; }  // a mangled hash opens nothing
}

// --- trial balance -------------------------------------------------------------------------------

async function loadTrial() {
  setState("trial-card", "loading");
  try {
    const data = await ledgerq.call("GET", "/v1/trial-balance");
    const currencies = Object.entries(data.currencies).sort(([a], [b]) => a.localeCompare(b));
    $("trial").replaceChildren(...currencies.map(([currency, total]) => trialTile(currency, total)));
    $("no-trial").hidden = currencies.length > 0;
    $("trial-card").dataset.balanced = currencies.every(([, t]) => t.balanced) ? "yes" : "no";
    $("trial-read-at").textContent = `read ${new Date().toLocaleTimeString()}`;
    setState("trial-card", "ready");
  } catch (error) {
    $("trial").replaceChildren(el("p", "error", problem(error)));
    setState("trial-card", "error");
  }
}

function trialTile(currency, total) {
  const tile = el("div", `tile ${total.balanced ? "ok" : "bad"}`);
  tile.dataset.currency = currency;
  tile.dataset.balanced = total.balanced ? "yes" : "no";
  const verdict = total.balanced ? "✓ balanced" : `✗ off by ${ledgerq.money(total.total)}`;
  tile.append(el("div", "tile-currency", currency), el("div", "tile-verdict", verdict),
    el("div", "muted", `sum of all entries: ${ledgerq.money(total.total)}`));
  return tile;
}

// --- accounts ------------------------------------------------------------------------------------

async function searchAccounts(after) {
  const query = new URLSearchParams({ prefix: $("prefix").value.trim(), limit: ACCOUNTS_PAGE, after_id: after });
  const system = $("system").checked;
  if (system) query.set("kind", "system");
  setState("accounts-card", "loading");
  $("accounts-error").textContent = "";
  const current = ticket("accounts");
  try {
    const page = await ledgerq.call("GET", `/v1/accounts?${query}`);
    if (!current()) return;
    $("accounts").replaceChildren(...page.accounts.map((a) => accountRow(a, system)));
    $("accounts-table").hidden = page.accounts.length === 0;
    $("no-accounts").hidden = page.accounts.length > 0;
    $("accounts-sum").textContent = page.accounts.length ? `Balances on this page: ${pageSums(page.accounts)}` : "";
    view.accountNext = page.next_after_id;
    $("accounts-next").hidden = page.next_after_id === null;
    $("accounts-first").hidden = after === "";
    setState("accounts-card", "ready");
  } catch (error) {
    if (!current()) return;
    $("accounts-error").textContent = problem(error);
    setState("accounts-card", "error");
  }
}

function pageSums(found) {
  const sums = new Map();
  for (const a of found) sums.set(a.currency, (sums.get(a.currency) || 0) + a.balance);
  return [...sums].sort(([a], [b]) => a.localeCompare(b)).map(([c, minor]) => `${ledgerq.money(minor)} ${c}`).join(" · ");
}

function accountRow(account, system) {
  const row = document.createElement("tr");
  row.dataset.accountId = account.id;
  const cell = ledgerq.cell(row, "", "id");
  if (system) {
    cell.textContent = account.id;  // system accounts have no history page of their own in the API
  } else {
    const link = el("a", "", account.id);
    link.href = `#account=${encodeURIComponent(account.id)}`;
    cell.append(link);
  }
  ledgerq.cell(row, account.currency, "muted");
  ledgerq.cell(row, ledgerq.money(account.balance), `num balance${account.balance < 0 ? " out" : ""}`);
  ledgerq.cell(row, ledgerq.money(account.held), account.held ? "num held nonzero" : "num held");
  ledgerq.cell(row, ledgerq.money(account.available), "num");
  ledgerq.cell(row, account.entry_count, "num");
  ledgerq.cell(row, when(account.updated_at), "muted");
  return row;
}

// --- one account ---------------------------------------------------------------------------------

async function entriesOf(id, afterSeq, limit) {
  if (limit < 1) return { entries: [], next_after_seq: null };
  return ledgerq.call("GET", `/v1/accounts/${id}/entries?after_seq=${afterSeq}&limit=${limit}`);
}

async function openAccount(accountId, top) {
  const card = $("account-card");
  card.hidden = false;
  card.dataset.accountId = accountId;
  setState("account-card", "loading");
  $("account-error").textContent = "";
  const id = encodeURIComponent(accountId);
  const current = ticket("account");
  try {
    const account = await ledgerq.call("GET", `/v1/accounts/${id}`);
    const newest = account.entry_count;
    const shownTop = Math.min(top ?? newest, newest);
    const pageAfter = Math.max(0, shownTop - ENTRIES_PAGE);
    const chartAfter = Math.max(0, newest - CHART_POINTS_MAX);
    const [drawn, page, holds] = await Promise.all([
      entriesOf(id, chartAfter, CHART_POINTS_MAX),
      entriesOf(id, pageAfter, shownTop - pageAfter),
      ledgerq.call("GET", `/v1/accounts/${id}/holds?limit=${HOLDS_MAX}`),
    ]);
    // Each entry's command says what it was, and for an original how much of it was reversed.
    const commands = await Promise.all(page.entries.map((e) =>
      ledgerq.call("GET", `/v1/commands/${encodeURIComponent(e.command_id)}`).catch(() => null)));
    if (!current()) return;
    view.account = account;
    view.entriesTop = shownTop;
    showFigures(account);
    showChart(account, drawn.entries, chartAfter);
    showRunningCheck(account, drawn.entries, chartAfter);
    showHistory(account, page.entries, commands, pageAfter);
    showHolds(holds);
    setState("account-card", "ready");
  } catch (error) {
    if (!current()) return;
    $("account-error").textContent = error.status === 404 ? `No account ${accountId}.` : problem(error);
    setState("account-card", "error");
  }
}

function showFigures(account) {
  $("account-id").textContent = account.id;
  $("account-currency").textContent = account.currency;
  for (const name of ["balance", "held", "available"]) {
    $(`account-${name}`).textContent = `${ledgerq.money(account[name])} ${account.currency}`;
  }
  $("account-held").classList.toggle("held", account.held !== 0);
  $("account-held").classList.toggle("nonzero", account.held !== 0);
  $("account-overdraft").textContent = `${ledgerq.money(account.overdraft_limit)} ${account.currency}`;
}

// A step line: the balance holds from one entry until the next, so it steps *after* each point. By
// time it shows when money moved; by entry it spreads out entries that came in the same instant.
function showChart(account, entries, chartAfter) {
  view.drawn = { account, entries, chartAfter };
  const bySeq = view.axis === "seq";
  const points = entries.map((e) => ({
    x: bySeq ? e.seq : Date.parse(e.created_at), y: e.balance_after, seq: e.seq, amount: e.amount, at: e.created_at,
  }));
  $("chart-empty").hidden = points.length > 0;
  $("balance-chart").parentElement.hidden = points.length === 0;
  for (const b of document.querySelectorAll(".axis-toggle button")) {
    b.setAttribute("aria-pressed", String(b.dataset.axis === view.axis));
  }
  const span = points.length ? points[points.length - 1].x - points[0].x : 0;
  $("chart-note").textContent = !chartReady() ? "(the chart library did not load)"
    : chartAfter > 0 ? `(the newest ${points.length} entries)` : `(${points.length} entries)`;
  if (!points.length) return;
  const colors = points.map((p) => (p.amount < 0 ? COLORS.bad : COLORS.good));
  draw("balance", $("balance-chart"), {
    type: "line",
    data: {
      datasets: [{
        label: `balance (${account.currency})`, data: points, stepped: "after", fill: "origin", clip: 6,
        borderColor: COLORS.accent, backgroundColor: COLORS.fill, borderWidth: 2,
        pointRadius: points.length > 200 ? 0 : 3, pointHoverRadius: 5, pointBackgroundColor: colors, pointBorderColor: colors,
      }],
    },
    options: {
      layout: { padding: { right: 6 } },  // room for the newest point's marker (the line may overflow by `clip`)
      scales: {
        x: {
          type: "linear", grid: { color: COLORS.grid },
          title: { display: true, text: bySeq ? "entry" : "time" },
          ticks: bySeq
            ? { precision: 0, includeBounds: false, callback: (v) => `#${v}` }
            : { maxTicksLimit: 7, callback: (v) => timeTick(v, span) },
          ...(bySeq ? { min: points[0].x, max: points[points.length - 1].x } : {}),
        },
        y: { grid: { color: COLORS.grid }, ticks: { callback: (v) => ledgerq.money(Math.round(v)) },
          title: { display: true, text: account.currency } },
      },
      plugins: {
        legend: { display: false },
        tooltip: { callbacks: {
          title: (items) => `#${items[0].raw.seq} · ${when(items[0].raw.at)}`,
          label: (item) => `balance ${ledgerq.money(item.raw.y)} (${signed(item.raw.amount)})`,
        } },
      },
    },
  });
}

// Tick labels as fine as the span needs: tenths of seconds for a burst, dates for months.
function timeTick(ms, span) {
  const at = new Date(ms);
  const clock = at.toLocaleTimeString(undefined, { hour12: false, hour: "2-digit", minute: "2-digit", second: "2-digit" });
  if (span < 60_000) return `${clock}.${Math.floor(at.getMilliseconds() / 100)}`;
  if (span < 3_600_000) return clock;
  if (span < 86_400_000) return at.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
  return at.toLocaleDateString(undefined, { month: "short", day: "numeric" });
}

// The running balance checked on the page: each balance_after is the one before plus the entry's
// amount, seqs have no gaps, and the newest equals the account's balance.
function showRunningCheck(account, entries, chartAfter) {
  const line = $("running-check");
  let before = chartAfter === 0 ? 0 : null;  // before the first entry the balance is 0
  let problemText = "";
  for (const [i, e] of entries.entries()) {
    if (e.seq !== chartAfter + i + 1) { problemText = `entry #${e.seq} where #${chartAfter + i + 1} was expected`; break; }
    if (before !== null && e.balance_after !== before + e.amount) {
      problemText = `entry #${e.seq}: ${ledgerq.money(before)} ${signed(e.amount)} ≠ ${ledgerq.money(e.balance_after)}`;
      break;
    }
    before = e.balance_after;
  }
  const last = entries[entries.length - 1];
  if (!problemText && last && last.seq === account.entry_count && last.balance_after !== account.balance) {
    problemText = `the newest balance_after ${ledgerq.money(last.balance_after)} is not the account's balance`;
  }
  line.className = `check ${problemText ? "bad" : "ok"}`;
  line.dataset.ok = problemText ? "no" : "yes";
  line.hidden = entries.length === 0;
  line.textContent = problemText ? `✗ Running balance broken: ${problemText}.`
    : `✓ Running balance checks out over entries #${chartAfter + 1}–#${last ? last.seq : 0}: `
      + "each is the one before plus its amount, and the newest is the account's balance.";
}

function showHistory(account, entries, commands, pageAfter) {
  const rows = entries.map((e, i) => entryRow(e, commands[i]));
  $("entries").replaceChildren(...rows.reverse());
  $("entries-table").hidden = entries.length === 0;
  $("no-entries").hidden = entries.length > 0;
  $("entries-older").hidden = pageAfter === 0;
  $("entries-newer").hidden = view.entriesTop >= account.entry_count;
  $("entries-range").textContent = entries.length
    ? `#${entries[entries.length - 1].seq}–#${entries[0].seq} of ${account.entry_count}` : "";
}

function entryRow(entry, command) {
  const row = document.createElement("tr");
  row.dataset.seq = entry.seq;
  row.dataset.commandId = entry.command_id;
  if (command) row.dataset.type = command.type;
  ledgerq.cell(row, entry.seq, "muted");
  ledgerq.cell(row, when(entry.created_at), "muted");
  const what = ledgerq.cell(row, command ? KINDS[command.type] || command.type : "–", `what ${command ? command.type : ""}`);
  const id = el("span", "id muted", ` ${ledgerq.short(entry.command_id)}`);
  id.title = entry.command_id;
  what.append(id);
  ledgerq.cell(row, counterparty(entry.counterparty), "with").title = entry.counterparty;
  ledgerq.cell(row, signed(entry.amount), entry.amount < 0 ? "num amount out" : "num amount in");
  ledgerq.cell(row, ledgerq.money(entry.balance_after), "num running");
  ledgerq.cell(row, reversalNote(entry, command), "muted reversal-note");
  return row;
}

function reversalNote(entry, command) {
  if (!command) return "";
  if (command.type === "reversal") return "reverses an earlier command";
  if (!command.reversed_amount) return "";
  if (command.type === "transaction" || command.reversed_amount >= Math.abs(entry.amount)) return "fully reversed";
  return `${ledgerq.money(command.reversed_amount)} reversed`;
}

function showHolds(page) {
  $("holds").replaceChildren(...page.holds.map(holdRow));
  $("holds-table").hidden = page.holds.length === 0;
  $("no-holds").hidden = page.holds.length > 0;
  $("more-holds").hidden = page.next_after_id === null;
}

function holdRow(hold) {
  const row = document.createElement("tr");
  row.dataset.holdId = hold.id;
  row.dataset.status = hold.status;
  idCell(row, hold.id);
  ledgerq.cell(row, counterparty(hold.to_account_id || "@world"), hold.to_account_id ? "" : "muted");
  ledgerq.cell(row, ledgerq.money(hold.amount), "num");
  ledgerq.cell(row, hold.captured_amount ? ledgerq.money(hold.captured_amount) : "–", "num");
  ledgerq.cell(row, hold.status, `hold-status hold-${hold.status}`);
  ledgerq.cell(row, when(hold.expires_at), "muted");
  ledgerq.cell(row, when(hold.finished_at), "muted");
  return row;
}

// --- reconciliation ------------------------------------------------------------------------------

async function loadRecons(more) {
  setState("recon-card", "loading");
  $("recon-error").textContent = "";
  const query = new URLSearchParams({ limit: RECONS_PAGE });
  if (more) query.set("after_id", view.reconNext);
  try {
    const page = await ledgerq.call("GET", `/v1/reconciliations?${query}`);
    view.recons = more ? [...view.recons, ...page.reconciliations] : page.reconciliations;
    view.reconNext = page.next_after_id ?? null;
    showRecons();
    setState("recon-card", "ready");
  } catch (error) {
    if (!unavailable(error)) {
      $("recon-error").textContent = problem(error);
      setState("recon-card", "error");
      return;
    }
    $("recon-body").hidden = true;
    $("recon-unavailable").hidden = false;
    $("recon-unavailable").textContent = "Reconciliation is not available on this server yet "
      + `(GET /v1/reconciliations answered ${error.status}). The other panels are unaffected.`;
    setState("recon-card", "unavailable");
  }
}

function showRecons() {
  const runs = [...view.recons].sort((a, b) => b.created_at.localeCompare(a.created_at));
  $("recon-unavailable").hidden = true;
  $("recon-body").hidden = false;
  $("recons").replaceChildren(...runs.map(reconRow));
  $("recon-table").hidden = runs.length === 0;
  $("no-recons").hidden = runs.length > 0;
  $("recons-more").hidden = view.reconNext === null;
  $("recon-chart").parentElement.hidden = runs.length === 0;
  if (runs.length) drawRecons(runs.slice(0, RECON_CHART_RUNS).reverse());
}

function discrepancies(summary) { return summary.mismatched + summary.unmatched_external + summary.unmatched_ledger; }

function reconRow(run) {
  const row = document.createElement("tr");
  row.dataset.reconId = run.id;
  const bad = discrepancies(run.summary);
  row.className = bad ? "has-discrepancies" : "";
  const open = el("button", "link", ledgerq.short(run.id));
  open.type = "button";
  open.title = run.id;
  open.dataset.reconId = run.id;
  ledgerq.cell(row, "", "id").append(open);
  ledgerq.cell(row, when(run.created_at), "muted");
  ledgerq.cell(row, run.source, "muted");
  const scope = ledgerq.cell(row, run.account_id ? "" : "every account", run.account_id ? "" : "muted");
  if (run.account_id) {
    const link = el("a", "", run.account_id);
    link.href = `#account=${encodeURIComponent(run.account_id)}`;
    scope.append(link);
  }
  ledgerq.cell(row, run.summary.records, "num");
  ledgerq.cell(row, run.summary.matched, "num");
  for (const name of ["mismatched", "unmatched_external", "unmatched_ledger"]) {
    ledgerq.cell(row, run.summary[name], run.summary[name] ? "num bad-count" : "num muted");
  }
  return row;
}

function drawRecons(runs) {
  $("recon-chart").parentElement.style.height = `${90 + 34 * runs.length}px`;  // one bar a run, however few
  draw("recons", $("recon-chart"), {
    type: "bar",
    data: {
      labels: runs.map((r) => `${when(r.created_at)} · ${ledgerq.short(r.id)}`),
      datasets: OUTCOMES.map(([name, label, color]) => ({
        label, data: runs.map((r) => r.summary[name]), backgroundColor: color, stack: "records", maxBarThickness: 26,
      })),
    },
    options: {
      indexAxis: "y",
      scales: { x: { stacked: true, ticks: { precision: 0 }, title: { display: true, text: "records" } }, y: { stacked: true } },
      plugins: { legend: { position: "bottom" } },
    },
  });
}

async function openRecon(reconId) {
  setState("recon-detail", "loading");
  $("recon-error").textContent = "";
  try {
    view.recon = await ledgerq.call("GET", `/v1/reconciliations/${encodeURIComponent(reconId)}`);
    showItems();
    $("recon-detail").hidden = false;
    $("recon-detail").dataset.reconId = reconId;
    setState("recon-detail", "ready");
  } catch (error) {
    $("recon-error").textContent = problem(error);
    setState("recon-detail", "error");
  }
}

function showItems() {
  const run = view.recon;
  const onlyBad = $("recon-only-bad").checked;
  const items = (run.items || []).filter((item) => !onlyBad || item.status !== "matched");
  const s = run.summary;
  $("recon-id").textContent = ledgerq.short(run.id);
  $("recon-id").title = run.id;
  $("recon-summary").textContent = `${s.records} records: ${s.matched} matched, ${s.mismatched} mismatched, `
    + `${s.unmatched_external} only outside, ${s.unmatched_ledger} only in the ledger`;
  $("items").replaceChildren(...items.slice(0, ITEMS_SHOWN_MAX).map(itemRow));
  $("items-table").hidden = items.length === 0;
  $("no-items").hidden = items.length > 0;
}

function amountText(amount, currency) {
  return amount === null || amount === undefined ? "–" : `${ledgerq.money(amount)} ${currency || ""}`.trim();
}

function itemRow(item) {
  const row = document.createElement("tr");
  row.dataset.status = item.status;
  row.className = `item-${item.status}`;
  ledgerq.cell(row, item.n, "muted");
  const label = OUTCOMES.find(([name]) => name === item.status);
  ledgerq.cell(row, label ? label[1] : item.status, `outcome outcome-${item.status}`);
  ledgerq.cell(row, item.external_id || "–", "id");
  ledgerq.cell(row, item.reference || "–", "id");
  if (item.command_id) idCell(row, item.command_id); else ledgerq.cell(row, "–", "muted");
  ledgerq.cell(row, amountText(item.external_amount, item.external_currency), "num");
  ledgerq.cell(row, amountText(item.ledger_amount, item.ledger_currency), "num");
  const comparable = item.external_amount != null && item.ledger_amount != null
    && item.external_currency === item.ledger_currency;
  const difference = comparable ? item.external_amount - item.ledger_amount : null;
  ledgerq.cell(row, difference ? signed(difference) : comparable ? "0.00" : "–", difference ? "num bad-count" : "num muted");
  ledgerq.cell(row, item.date || "–", "muted");
  return row;
}

// --- audit log -----------------------------------------------------------------------------------

async function auditAfter(id) {
  const page = await ledgerq.call("GET", `/v1/audit?after_id=${id}&limit=1`);
  return page.entries.length > 0;
}

// The log pages oldest first; the newest id is found by doubling, then halving: about 2·log2(n)
// one-row reads (40 for a million rows), and correct across gaps in the ids.
async function newestAuditId() {
  if (!(await auditAfter(0))) return 0;
  let low = 0;  // some row has an id > low
  let high = 1;  // once found: no row has an id > high
  let probes = 1;
  while (probes < AUDIT_PROBES_MAX && await auditAfter(high)) { low = high; high *= 2; probes += 1; }
  while (probes < AUDIT_PROBES_MAX && high - low > 1) {
    const middle = Math.floor((low + high) / 2);
    if (await auditAfter(middle)) low = middle; else high = middle;
    probes += 1;
  }
  return high;
}

async function loadAudit(top) {
  setState("audit-card", "loading");
  $("audit-error").textContent = "";
  const current = ticket("audit");
  try {
    if (top === undefined) { view.auditNewest = await newestAuditId(); top = view.auditNewest; }
    const after = Math.max(0, top - AUDIT_PAGE);
    const page = top > 0 ? await ledgerq.call("GET", `/v1/audit?after_id=${after}&limit=${AUDIT_PAGE}`) : { entries: [] };
    if (!current()) return;
    const rows = page.entries.filter((r) => r.id <= top).reverse();
    view.auditTop = top;
    $("audit").replaceChildren(...rows.map(auditRow));
    $("audit-table").hidden = rows.length === 0;
    $("no-audit").hidden = rows.length > 0;
    $("audit-older").hidden = after === 0;
    $("audit-newer").hidden = top >= view.auditNewest;
    $("audit-range").textContent = top > 0 ? `ids ${after + 1}–${top} of ${view.auditNewest}` : "";
    setState("audit-card", "ready");
  } catch (error) {
    if (!current()) return;
    $("audit-error").textContent = problem(error);
    setState("audit-card", "error");
  }
}

function auditRow(entry) {
  const row = document.createElement("tr");
  row.dataset.auditId = entry.id;
  ledgerq.cell(row, entry.id, "muted");
  ledgerq.cell(row, when(entry.at), "muted");
  const call = ledgerq.cell(row, "", "call");
  call.append(el("span", `method method-${entry.method.toLowerCase()}`, entry.method), " ", el("span", "id", entry.path));
  const summary = callSummary(entry);
  if (summary) call.append(el("div", "muted summary", summary));
  const family = Math.floor(entry.status / 100);
  ledgerq.cell(row, entry.status, `num http http-${family}xx`);
  ledgerq.cell(row, entry.key_id ? ledgerq.short(entry.key_id) : "none", entry.key_id ? "id" : "muted");
  ledgerq.cell(row, entry.client_addr || "–", "muted");
  const toggle = el("button", "small secondary", "Request & response");
  toggle.type = "button";
  toggle.dataset.auditId = entry.id;
  ledgerq.cell(row, "", "num").append(toggle);
  row.auditEntry = entry;
  return row;
}

function parsed(value) {
  if (typeof value !== "string") return value;
  try { return JSON.parse(value); } catch { return null; }  // a body cut at the cap is no longer JSON
}

// One line on what a call asked for, read from its recorded body: "Withdrawal 50.00 USD from a1".
function callSummary(entry) {
  const body = parsed(entry.request_body);
  const answer = parsed(entry.response_body);
  const refused = entry.status >= 400 && answer && answer.code ? ` → ${answer.code}` : "";
  if (!body || typeof body !== "object" || Array.isArray(body)) return refused.slice(3);
  let what = "";
  if (typeof body.type === "string") {
    const amount = Number.isInteger(body.amount) ? ` ${ledgerq.money(body.amount)} ${body.currency || ""}` : "";
    const accounts = [body.account_id, body.to_account_id && `→ ${body.to_account_id}`].filter(Boolean).join(" ");
    const refers = body.hold_id ? ` of hold ${ledgerq.short(body.hold_id)}`
      : body.command_id ? ` of ${ledgerq.short(body.command_id)}` : "";
    what = `${KINDS[body.type] || body.type}${amount}${refers} ${accounts}`;
  } else if (Array.isArray(body.commands)) {
    what = `batch of ${body.commands.length} commands`;
  } else if (Array.isArray(body.records)) {
    what = `reconcile ${body.records.length} records${body.account_id ? ` on ${body.account_id}` : ""}`;
  } else if (body.id && body.currency) {
    what = `open account ${body.id} (${body.currency})`;
  }
  return `${what.trim()}${refused}`;
}

function bodyText(value) {
  if (value === null || value === undefined || value === "") return "(none recorded)";
  if (typeof value !== "string") return JSON.stringify(value, null, 2);
  try { return JSON.stringify(JSON.parse(value), null, 2); } catch { return value; }
}

async function toggleAudit(row) {
  const next = row.nextElementSibling;
  if (next && next.classList.contains("audit-detail")) { next.remove(); return; }
  let entry = row.auditEntry;
  let note = "";
  if (!("request_body" in entry)) {  // the list may not carry bodies: ask for the one row
    try { entry = await ledgerq.call("GET", `/v1/audit/${entry.id}`); } catch (error) {
      note = unavailable(error) ? "This server does not record request and response bodies yet." : problem(error);
    }
  }
  const detail = el("tr", "audit-detail");
  detail.dataset.auditId = entry.id;
  const cell = el("td");
  cell.colSpan = row.cells.length;
  const meta = el("div", "muted", `request id ${entry.request_id} · body sha256 ${entry.body_sha256 || "–"}`);
  const panes = el("div", "bodies");
  const shown = [["Request body", entry.request_body, "request"], [`Response ${entry.status}`, entry.response_body, "response"]];
  for (const [title, value, name] of shown) {
    const pane = el("div", `body-pane ${name}`);
    pane.append(el("div", "label", title), el("pre", "", note || bodyText(value)));
    panes.append(pane);
  }
  cell.append(meta, panes);
  detail.append(cell);
  row.after(detail);
}

// --- wiring --------------------------------------------------------------------------------------

function refreshAll() {
  const top = view.account ? view.entriesTop : undefined;
  const jobs = [loadTrial(), searchAccounts(view.accountPages[view.accountPages.length - 1]), loadRecons(), loadAudit()];
  if (view.account) jobs.push(openAccount(view.account.id, top === view.account.entry_count ? undefined : top));
  return Promise.all(jobs);
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("ledgerq.key", $("key").value.trim());
    openBooks();
  });
  $("signout").addEventListener("click", () => { sessionStorage.clear(); location.replace("/ui/books"); });
  $("refresh").addEventListener("click", refreshAll);
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    view.accountPages = [""];
    searchAccounts("");
  });
  $("accounts-next").addEventListener("click", () => {
    view.accountPages.push(view.accountNext);
    searchAccounts(view.accountNext);
  });
  $("accounts-first").addEventListener("click", () => { view.accountPages = [""]; searchAccounts(""); });
  window.addEventListener("hashchange", () => {
    const wanted = accountInHash();
    if (wanted) openAccount(wanted).then(() => $("account-card").scrollIntoView({ block: "start" }));
  });
  $("account-close").addEventListener("click", () => {
    view.account = null;
    $("account-card").hidden = true;
    history.replaceState(null, "", "/ui/books");
  });
  document.querySelector(".axis-toggle").addEventListener("click", (event) => {
    const chosen = event.target.closest("button[data-axis]");
    if (!chosen || !view.drawn) return;
    view.axis = chosen.dataset.axis;
    showChart(view.drawn.account, view.drawn.entries, view.drawn.chartAfter);
  });
  $("entries-older").addEventListener("click", () => openAccount(view.account.id, view.entriesTop - ENTRIES_PAGE));
  $("entries-newer").addEventListener("click", () => openAccount(view.account.id, view.entriesTop + ENTRIES_PAGE));
  $("recons").addEventListener("click", (event) => {
    const open = event.target.closest("button[data-recon-id]");
    if (open) openRecon(open.dataset.reconId);
  });
  $("recons-more").addEventListener("click", () => loadRecons(true));
  $("recon-only-bad").addEventListener("change", () => { if (view.recon) showItems(); });
  $("recon-close").addEventListener("click", () => { view.recon = null; $("recon-detail").hidden = true; });
  $("audit").addEventListener("click", (event) => {
    const toggle = event.target.closest("button[data-audit-id]");
    if (toggle) toggleAudit(toggle.closest("tr"));
  });
  $("audit-older").addEventListener("click", () => loadAudit(view.auditTop - AUDIT_PAGE));
  $("audit-newer").addEventListener("click", () => loadAudit(Math.min(view.auditNewest, view.auditTop + AUDIT_PAGE)));
  if (ledgerq.key()) openBooks();
});
