// The operator view: each partition's lease owner, queue depth, jobs in flight and lag, every 2 s.
"use strict";

const $ = (id) => document.getElementById(id);
let timer = null;

async function refresh() {
  try {
    const data = await ledgerq.call("GET", "/v1/partitions");
    $("signin").hidden = true;
    $("partitions-card").hidden = false;
    const body = $("partitions");
    body.replaceChildren();
    for (const p of data.partitions) {
      const row = document.createElement("tr");
      row.dataset.partition = p.partition;
      ledgerq.cell(row, p.partition);
      ledgerq.cell(row, p.owner || "none", p.owner ? "" : "none");
      ledgerq.cell(row, p.queued, "num");
      ledgerq.cell(row, p.inflight, "num");
      ledgerq.cell(row, p.oldest_job_age_s === null ? "–" : `${p.oldest_job_age_s.toFixed(1)} s`, "num");
      body.appendChild(row);
    }
    $("refreshed").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    clearInterval(timer);
    $("signin").hidden = false;
    $("partitions-card").hidden = true;
    $("signin-error").textContent = `${error.message} (${error.code})`;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("ledgerq.key", $("key").value.trim());
    refresh();
    timer = setInterval(refresh, 2000);
  });
  $("signout").addEventListener("click", () => { sessionStorage.clear(); location.reload(); });
  if (ledgerq.key()) { refresh(); timer = setInterval(refresh, 2000); }
});
