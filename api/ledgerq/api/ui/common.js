// Shared by the wallet and the operator page: the API key lives in sessionStorage (this tab only,
// gone when it closes) and every call sends it; errors arrive as problem+json.
"use strict";

const ledgerq = {
  key() { return sessionStorage.getItem("ledgerq.key") || ""; },

  async call(method, path, body) {
    const response = await fetch(path, {
      method,
      headers: { "Authorization": `Bearer ${ledgerq.key()}`, ...(body ? { "Content-Type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
      cache: "no-store",
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = new Error(data.detail || response.statusText);
      error.code = data.code || "http_" + response.status;
      error.status = response.status;
      throw error;
    }
    return data;
  },

  money(minor) {
    const sign = minor < 0 ? "-" : "";
    const abs = Math.abs(minor);
    return `${sign}${Math.floor(abs / 100).toLocaleString("en-US")}.${String(abs % 100).padStart(2, "0")}`;
  },

  // "12.3" -> 1230 minor units; NaN unless it is a plain amount with at most two decimals.
  minor(text) {
    const match = /^([0-9]{1,15})(?:\.([0-9]{1,2}))?$/.exec(text.trim());
    return match ? Number(match[1]) * 100 + Number((match[2] || "").padEnd(2, "0")) : NaN;
  },

  // Long ids (uuids) cut to their first 8 characters for tables; the whole id stays in the title.
  short(id) { return id.length > 14 ? `${id.slice(0, 8)}…` : id; },

  cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  },
};
