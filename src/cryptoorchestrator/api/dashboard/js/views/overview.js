// Overview: the user's bots with status, P&L, open position and their warnings and errors of
// the last 24 hours (one aggregate read for all bots); live over /ws/bots.

import { api, canTrade, describe } from "../api.js";
import { badge, fmtAmount, fmtMoney, h, pnl, replace, toast } from "../dom.js";
import { botSocket } from "../ws.js";
import { createBotForm } from "./botform.js";

/** Start or stop a bot; returns its new status record. */
export async function control(botId, action) {
  return api(`/api/bots/${botId}/${action}`, { method: "POST" });
}

/** A Start or Stop button for a bot, for traders and admins only (the server checks too). */
export function controlButton(bot, onDone) {
  if (!canTrade()) return null;
  const running = bot.status === "Running" || bot.status === "Starting";
  const action = running ? "stop" : "start";
  const button = h("button", {
    class: `btn btn-sm ${running ? "" : "btn-primary"}`.trim(),
    type: "button",
    text: running ? "Stop" : "Start",
    dataset: { action },
    "aria-label": `${running ? "Stop" : "Start"} ${bot.name}`,
  });
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const result = await control(bot.id, action);
      onDone(result);
    } catch (error) {
      toast(`${bot.name}: ${describe(error)}`, "error");
      button.disabled = false;
    }
  });
  return button;
}

/** Render the overview into `root`; returns a cleanup function. */
export function render(root) {
  const state = { bots: [], perf: new Map(), positions: new Map(), alerts: new Map(), portfolio: null, filter: "all" };
  const cards = h("div", { class: "grid cards" });
  const body = h("tbody");
  const empty = h("p", { class: "empty", hidden: true });
  const filters = h("div", { class: "segmented", role: "group", "aria-label": "Mode" });
  for (const [value, label] of [["all", "All"], ["paper", "Paper"], ["live", "Live"]]) {
    const button = h("button", { type: "button", text: label, dataset: { filter: value }, "aria-pressed": String(value === state.filter) });
    button.addEventListener("click", () => {
      state.filter = value;
      for (const b of filters.children) b.setAttribute("aria-pressed", String(b.dataset.filter === value));
      drawRows();
    });
    filters.append(button);
  }
  const head = h("thead", {}, h("tr", {}, ["Bot", "Pair", "Mode", "Status", "Alerts (24 h)", "P&L", "Equity", "Position", canTrade() ? "Actions" : null]
    .filter(Boolean).map((label) => h("th", { class: ["P&L", "Equity", "Position"].includes(label) ? "num" : "", text: label }))));
  const formSlot = h("div", { id: "bot-form-slot" });
  const newBot = canTrade()
    ? h("button", { type: "button", class: "btn btn-primary", id: "new-bot", text: "New bot", onclick: () => openForm() })
    : null;
  function openForm() {
    newBot.hidden = true;
    replace(formSlot, createBotForm((bot) => {
      closeForm();
      toast(`Bot ${bot.name} created (stopped).`, "ok");
      state.bots = [bot, ...state.bots.filter((b) => b.id !== bot.id)];
      drawRows();
    }, closeForm));
    const first = formSlot.querySelector("input");
    if (first) first.focus();
  }
  function closeForm() {
    replace(formSlot);
    if (newBot) newBot.hidden = false;
  }
  root.append(
    h("div", { class: "page-head" },
      h("div", {}, h("h1", { text: "Bots" }), h("p", { class: "sub", text: "Your bots, updated live." })),
      h("div", { class: "session" }, filters, newBot)),
    formSlot,
    cards,
    h("section", { class: "panel" }, h("div", { class: "table-wrap" }, h("table", { class: "responsive bots" }, head, body)), empty),
  );

  function drawCards() {
    const running = state.bots.filter((b) => b.status === "Running").length;
    const errors = state.bots.filter((b) => b.status === "Error").length;
    const total = state.portfolio ? pnl(state.portfolio.totalPnl) : { cls: "", text: "—" };
    replace(cards,
      card("Bots", String(state.bots.length)),
      card("Running", String(running)),
      card("In error", String(errors), errors ? "neg" : ""),
      card("Equity", state.portfolio ? fmtMoney(state.portfolio.equity) : "—"),
      card("Total P&L", total.text, total.cls.replace("num", "").trim()));
  }

  function card(label, value, cls = "") {
    return h("div", { class: "panel card" }, h("div", { class: "label", text: label }), h("div", { class: `value ${cls}`.trim(), text: value }));
  }

  function row(bot) {
    const perf = state.perf.get(bot.id);
    const position = state.positions.get(bot.id);
    const profit = perf ? pnl(perf.totalPnl) : { cls: "num", text: "—" };
    const status = h("td", { "data-label": "Status", class: "status" }, badge(bot.status),
      bot.status === "Error" || (bot.statusReason && bot.status !== "Running")
        ? h("span", { class: "reason", text: bot.statusReason || "" })
        : null);
    return h("tr", { dataset: { botId: String(bot.id), status: bot.status, mode: bot.mode } },
      h("td", { "data-label": "Bot" }, h("a", { href: `#/bots/${bot.id}`, text: bot.name }),
        h("span", { class: "reason", text: `${bot.strategy} · ${bot.timeframe}` })),
      h("td", { "data-label": "Pair", text: bot.tradingPair }),
      h("td", { "data-label": "Mode" }, h("span", { class: bot.mode === "live" ? "tag tag-live" : "tag", text: bot.mode })),
      status,
      h("td", { "data-label": "Alerts (24 h)", class: "alerts-cell" }, alerts(bot)),
      h("td", { "data-label": "P&L", class: profit.cls, text: profit.text }),
      h("td", { "data-label": "Equity", class: "num", text: perf ? fmtMoney(perf.equity) : "—" }),
      h("td", { "data-label": "Position", class: "num", text: position ? `${fmtAmount(position.amount)} @ ${fmtMoney(position.averagePrice)}` : "flat" }),
      canTrade() ? h("td", { "data-label": "Actions" }, controlButton(bot, (result) => setStatus(bot.id, result.status, result.reason))) : null);
  }

  /** The bot's warning and error counts: amber and red pills, grey when nothing happened. */
  function alerts(bot) {
    const found = state.alerts.get(bot.id);
    if (!found) return h("span", { class: "muted", text: "—" });
    const pill = (n, kind, cls, word) => h("a", {
      class: `alert-count ${n ? cls : ""}`.trim(),
      href: `#/bots/${bot.id}`,
      dataset: { kind },
      title: `${n} ${word}${n === 1 ? "" : "s"} in the last 24 h (log and risk events)`,
      "aria-label": `${n} ${word}${n === 1 ? "" : "s"}`,
      text: String(n),
    });
    return h("span", { class: "alerts", dataset: { warnings: String(found.warnings), errors: String(found.errors) } },
      pill(found.warnings, "warnings", "warn", "warning"), pill(found.errors, "errors", "err", "error"));
  }

  function drawRows() {
    const shown = state.bots.filter((b) => state.filter === "all" || b.mode === state.filter);
    replace(body, shown.map(row));
    empty.hidden = shown.length > 0;
    replace(empty, state.bots.length ? `No ${state.filter} bots.` : canTrade() ? "No bots yet: create one with New bot." : "No bots yet.");
    drawCards();
  }

  function setStatus(botId, status, reason) {
    const bot = state.bots.find((b) => b.id === botId);
    if (!bot || !status) return;
    bot.status = status;
    bot.statusReason = reason ?? null;
    drawRows();
  }

  async function loadFigures() {
    const [perf, positions, alerts] = await Promise.all([
      api("/api/analytics/performance"),
      api("/api/positions?limit=500"),
      api("/api/dashboard/bot-alerts"),
    ]);
    state.alerts = new Map(alerts.items.map((a) => [a.botId, a]));
    state.portfolio = perf.portfolio;
    state.perf = new Map(perf.bots.map((b) => [b.botId, b]));
    // Open positions (one symbol per bot here: the bot's pair).
    state.positions = new Map(positions.items.map((p) => [p.botId, p]));
  }

  async function load() {
    try {
      const [bots] = await Promise.all([api("/api/bots?limit=500"), loadFigures()]);
      state.bots = bots.items;
      drawRows();
    } catch (error) {
      replace(empty, `Could not load your bots: ${describe(error)}`);
      empty.hidden = false;
    }
  }

  // Fills and orders change P&L and positions: re-read them once per burst of events.
  let pending = null;
  function onBot(event) {
    const message = event.detail;
    if (message.type === "status") setStatus(message.botId, message.status, message.reason);
    if (message.type === "fill" || message.type === "order" || message.type === "status") {
      clearTimeout(pending);
      pending = setTimeout(() => loadFigures().then(drawRows).catch(() => null), 300);
    }
  }
  // After a reconnect, events sent meanwhile were missed: read the state once.
  const onConnected = () => {
    if (botSocket.connections > 1) load();
  };
  botSocket.addEventListener("bot", onBot);
  botSocket.addEventListener("connected", onConnected);
  load();
  return () => {
    clearTimeout(pending);
    botSocket.removeEventListener("bot", onBot);
    botSocket.removeEventListener("connected", onConnected);
  };
}
