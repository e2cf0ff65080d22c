// Trades: every fill of the user's bots, newest first, in pages (the API's cursor pagination),
// filtered by bot and period, exported to CSV from the same pages.
//
// The API filters by bot and period (`from` inclusive, `to` exclusive), so a page of the
// table is one request, and the CSV export reads the same filtered pages, 500 rows each.

import { api, describe } from "../api.js";
import { fmtAmount, fmtMoney, fmtTime, h, pnl, replace, toast } from "../dom.js";
import { download, select } from "../forms.js";
import { botSocket } from "../ws.js";

const PAGE_ROWS = 50;
const EXPORT_PAGE = 500;
const CSV_COLUMNS = ["id", "timestamp", "botId", "bot", "symbol", "side", "price", "amount", "fee", "feeCurrency", "realizedPnl", "orderId", "exchangeTradeId"];

/** One CSV cell: quoted when needed; text that a spreadsheet would run as a formula is defused. */
export function csvCell(value) {
  if (value === null || value === undefined) return "";
  let text = String(value);
  if (typeof value === "string" && /^[=+\-@\t\r]/.test(text) && !/^-?\d+(\.\d+)?$/.test(text)) text = `'${text}`;
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/** Render the trades page into `root`; returns a cleanup function. */
export function render(root) {
  const state = { bots: new Map(), starts: [null], index: 0, next: null, rows: [] };
  const botFilter = select([["", "All bots"]]);
  botFilter.id = "trades-bot";
  const from = h("input", { type: "date", id: "trades-from", "aria-label": "From (UTC)" });
  const to = h("input", { type: "date", id: "trades-to", "aria-label": "To (UTC, inclusive)" });
  const prev = h("button", { type: "button", class: "btn btn-sm", id: "trades-prev", text: "← Newer", disabled: true });
  const next = h("button", { type: "button", class: "btn btn-sm", id: "trades-next", text: "Older →", disabled: true });
  const where = h("span", { class: "muted", id: "trades-page" });
  const exportButton = h("button", { type: "button", class: "btn", id: "trades-export", text: "Export CSV" });
  const body = h("tbody");
  const empty = h("p", { class: "empty", hidden: true });
  root.append(
    h("div", { class: "page-head" },
      h("div", {}, h("h1", { text: "Trades" }), h("p", { class: "sub", text: "Fills of your bots, newest first." })),
      exportButton),
    h("section", { class: "panel filters" },
      h("label", { class: "inline" }, "Bot", botFilter),
      h("label", { class: "inline" }, "From", from),
      h("label", { class: "inline" }, "To", to)),
    h("section", { class: "panel" },
      h("div", { class: "table-wrap" }, h("table", { class: "responsive trades-all" },
        h("thead", {}, h("tr", {}, ["Time", "Bot", "Symbol", "Side", "Price", "Amount", "Fee", "Realized P&L"]
          .map((t, i) => h("th", { class: i > 3 ? "num" : "", text: t })))),
        body)),
      empty,
      h("div", { class: "pager" }, prev, where, next)));

  /** The filters as the API's query: bot, and the period's UTC days (`to` made exclusive). */
  function filters(limit) {
    const query = new URLSearchParams({ limit: String(limit) });
    if (botFilter.value) query.set("botId", botFilter.value);
    if (from.value) query.set("from", `${from.value}T00:00:00Z`);
    if (to.value) query.set("to", new Date(Date.parse(`${to.value}T00:00:00Z`) + 86400000).toISOString());
    return query;
  }

  /** Read filtered pages from `cursor` until `want` rows are collected or none are left. */
  async function collect(cursor, want, limit) {
    const rows = [];
    let at = cursor;
    for (;;) {
      const query = filters(limit);
      if (at) query.set("cursor", at);
      const page = await api(`/api/trades/?${query}`);
      rows.push(...page.items);
      at = page.nextCursor;
      if (!at || rows.length >= want) return { rows, next: at };
    }
  }

  function row(t) {
    const realized = t.realizedPnl === null ? { cls: "num", text: "—" } : pnl(t.realizedPnl);
    const bot = state.bots.get(t.botId);
    return h("tr", { dataset: { tradeId: String(t.id) } },
      h("td", { "data-label": "Time", text: fmtTime(t.timestamp) }),
      h("td", { "data-label": "Bot" }, t.botId ? h("a", { href: `#/bots/${t.botId}`, text: bot ? bot.name : `#${t.botId}` }) : "—"),
      h("td", { "data-label": "Symbol", text: t.symbol }),
      h("td", { "data-label": "Side", class: t.side === "buy" ? "pos" : "neg", text: t.side }),
      h("td", { "data-label": "Price", class: "num", text: fmtMoney(t.price) }),
      h("td", { "data-label": "Amount", class: "num", text: fmtAmount(t.amount) }),
      h("td", { "data-label": "Fee", class: "num", text: fmtAmount(t.fee) }),
      h("td", { "data-label": "Realized P&L", class: realized.cls, text: realized.text }));
  }

  async function show() {
    prev.disabled = true;
    next.disabled = true;
    if (from.value && to.value && to.value < from.value) {
      replace(body);
      replace(empty, "The period ends before it starts: choose a To on or after From.");
      empty.hidden = false;
      return;
    }
    try {
      const { rows, next: after } = await collect(state.starts[state.index], PAGE_ROWS, PAGE_ROWS);
      state.rows = rows;
      state.next = after;
      replace(body, rows.map(row));
      empty.hidden = rows.length > 0;
      replace(empty, "No trades in this selection.");
      replace(where, `Page ${state.index + 1}`);
      prev.disabled = state.index === 0;
      next.disabled = !after;
      root.dataset.loaded = String(Date.now());
    } catch (error) {
      replace(empty, `Could not load the trades: ${describe(error)}`);
      empty.hidden = false;
    }
  }

  function restart() {
    state.starts = [null];
    state.index = 0;
    show();
  }
  prev.addEventListener("click", () => {
    state.index = Math.max(0, state.index - 1);
    show();
  });
  next.addEventListener("click", () => {
    if (!state.next) return;
    state.starts = state.starts.slice(0, state.index + 1).concat(state.next);
    state.index += 1;
    show();
  });
  for (const el of [botFilter, from, to]) el.addEventListener("change", restart);

  exportButton.addEventListener("click", async () => {
    exportButton.disabled = true;
    try {
      const { rows } = await collect(null, Infinity, EXPORT_PAGE);
      const lines = [CSV_COLUMNS.join(",")];
      for (const t of rows) {
        const bot = state.bots.get(t.botId);
        lines.push(CSV_COLUMNS.map((c) => csvCell(c === "bot" ? (bot ? bot.name : "") : t[c])).join(","));
      }
      const scope = [botFilter.value ? `bot${botFilter.value}` : "all", from.value, to.value].filter(Boolean).join("_");
      download(`trades_${scope}.csv`, `${lines.join("\r\n")}\r\n`);
      toast(`Exported ${rows.length} trades.`, "ok");
    } catch (error) {
      toast(`Export failed: ${describe(error)}`, "error");
    } finally {
      exportButton.disabled = false;
    }
  });

  // A new fill changes the first page only: re-read it when it is the one shown.
  let pending = null;
  const onBot = (event) => {
    if (event.detail.type !== "fill" || state.index !== 0) return;
    clearTimeout(pending);
    pending = setTimeout(show, 300);
  };
  botSocket.addEventListener("bot", onBot);

  api("/api/bots?limit=500").then((bots) => {
    for (const b of bots.items) state.bots.set(b.id, b);
    for (const b of bots.items) botFilter.append(h("option", { value: String(b.id), text: b.name }));
    const wanted = new URLSearchParams(location.hash.split("?")[1] || "").get("bot");
    if (wanted && state.bots.has(Number(wanted))) botFilter.value = wanted;
  }).catch(() => null).finally(show);
  return () => {
    clearTimeout(pending);
    botSocket.removeEventListener("bot", onBot);
  };
}
