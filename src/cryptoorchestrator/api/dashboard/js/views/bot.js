// Bot page: candles of the bot's market with its fills as markers, equity below, its trades,
// its open orders and positions, its risk limits with their utilisation, and its log tail.
// Orders, positions and the log are read again when /ws/bots reports an event of this bot.

import { api, describe } from "../api.js";
import { loadChartLibrary, palette, themeOptions } from "../chart.js";
import { badge, fmtAmount, fmtMoney, fmtTime, h, pnl, replace, toast } from "../dom.js";
import { themeEvents } from "../theme.js";
import { botSocket } from "../ws.js";
import { controlButton } from "./overview.js";

const UNIT_MS = { m: 60000, h: 3600000, d: 86400000, w: 604800000 };
/** Candles shown before the first fill, and at most in all (the API's page limit). */
const LEAD_BARS = 150;
const MAX_BARS = 5000;
const LOG_LINES = 200;
const DONE_ORDERS = new Set(["closed", "filled", "canceled", "cancelled", "rejected", "expired", "denied", "failed"]);
/** The risk actor's defaults where no limit is stored (platform/risk/limits.py). */
const DEFAULT_MAX_DRAWDOWN_PCT = 20;

function timeframeMs(timeframe) {
  const match = /^(\d+)([mhdw])$/.exec(timeframe || "");
  return match ? Number(match[1]) * UNIT_MS[match[2]] : 3600000;
}

/** Render the page of bot `id` into `root`; returns a cleanup function. */
export function render(root, [id]) {
  const botId = Number(id);
  const state = { bot: null, trades: [], candles: [], equity: [], chart: null, candleSeries: null, equitySeries: null, markers: null, lib: null, framed: false };
  let disposed = false;

  const title = h("h1", { text: `Bot #${botId}` });
  const sub = h("p", { class: "sub" });
  const status = h("span", { id: "bot-status" });
  const actions = h("div", { class: "session" });
  const chartBox = h("div", { class: "chart-box", id: "bot-chart" });
  const legend = h("div", { class: "legend" });
  const summary = h("div", { class: "grid cards" });
  const tradesBody = h("tbody");
  const tradesEmpty = h("p", { class: "empty", hidden: true, text: "No trades yet." });
  const ordersBody = h("tbody");
  const positionsBody = h("tbody");
  const riskBody = h("tbody");
  const logBox = h("pre", { class: "log", id: "bot-log", tabindex: "0", "aria-label": "Log tail" });
  const logNote = h("span", { class: "muted" });
  const logRefresh = h("button", { type: "button", class: "btn btn-sm", text: "Refresh", id: "log-refresh" });
  root.append(
    h("div", { class: "page-head" },
      h("div", {}, h("p", { class: "sub" }, h("a", { href: "#/overview", text: "← Bots" })), title, sub),
      h("div", { class: "session" }, status, actions)),
    summary,
    h("section", { class: "panel" }, h("h2", { text: "Market, fills and equity" }), chartBox, legend),
    h("section", { class: "panel trades-panel" },
      h("div", { class: "panel-head" }, h("h2", { text: "Trades" }), h("a", { href: `#/trades?bot=${botId}`, id: "bot-all-trades", text: "All trades, filters and CSV →" })),
      h("div", { class: "table-wrap" }, h("table", { class: "responsive trades" },
        h("thead", {}, h("tr", {}, ["Time", "Side", "Price", "Amount", "Fee", "Realized P&L"].map((t, i) => h("th", { class: i > 1 ? "num" : "", text: t })))),
        tradesBody)), tradesEmpty),
    h("div", { class: "grid two-col" },
      h("section", { class: "panel", id: "bot-book" }, h("h2", { text: "Open orders" }),
        h("div", { class: "table-wrap" }, h("table", { class: "responsive orders" },
          h("thead", {}, h("tr", {}, ["Created", "Side", "Type", "Price", "Amount", "Filled", "Status"].map((t, i) => h("th", { class: i > 2 && i < 6 ? "num" : "", text: t })))),
          ordersBody)),
        h("h2", { class: "gap-top", text: "Positions" }),
        h("div", { class: "table-wrap" }, h("table", { class: "responsive positions" },
          h("thead", {}, h("tr", {}, ["Symbol", "Amount", "Avg price", "Stop", "Realized P&L", "Fees"].map((t, i) => h("th", { class: i ? "num" : "", text: t })))),
          positionsBody))),
      h("section", { class: "panel", id: "bot-risk" }, h("h2", { text: "Risk limits and utilisation" }),
        h("div", { class: "table-wrap" }, h("table", { class: "risk-limits" },
          h("thead", {}, h("tr", {}, ["Limit", "Value", "Used"].map((t) => h("th", { text: t })))),
          riskBody)))),
    h("section", { class: "panel" },
      h("div", { class: "panel-head" }, h("h2", { text: "Log tail" }), h("div", { class: "session" }, logNote, logRefresh)),
      logBox),
  );

  function drawHeader() {
    const bot = state.bot;
    replace(title, bot.name);
    replace(sub, `${bot.tradingPair} · ${bot.strategy} · ${bot.timeframe} · ${bot.mode}`);
    replace(status, badge(bot.status), bot.statusReason && bot.status !== "Running" ? h("span", { class: "muted", text: ` ${bot.statusReason}` }) : null);
    replace(actions, controlButton(bot, (result) => setStatus(result.status, result.reason)));
  }

  function setStatus(newStatus, reason) {
    if (!state.bot || !newStatus) return;
    state.bot.status = newStatus;
    state.bot.statusReason = reason ?? null;
    drawHeader();
  }

  function drawSummary(position, perf) {
    const profit = perf ? pnl(perf.totalPnl) : { cls: "", text: "—" };
    const cell = (label, value, cls = "") => h("div", { class: "panel card" }, h("div", { class: "label", text: label }), h("div", { class: `value ${cls}`.trim(), text: value }));
    replace(summary,
      cell("Equity", perf ? fmtMoney(perf.equity) : "—"),
      cell("Total P&L", profit.text, profit.cls.replace("num", "").trim()),
      cell("Position", position ? `${fmtAmount(position.amount)}` : "flat"),
      cell("Avg price", position ? fmtMoney(position.averagePrice) : "—"),
      cell("Trades", String(state.trades.length)));
  }

  function drawTrades() {
    replace(tradesBody, state.trades.map((t) => {
      const realized = t.realizedPnl === null ? { cls: "num", text: "—" } : pnl(t.realizedPnl);
      return h("tr", { dataset: { tradeId: String(t.id) } },
        h("td", { "data-label": "Time", text: fmtTime(t.timestamp) }),
        h("td", { "data-label": "Side", class: t.side === "buy" ? "pos" : "neg", text: t.side }),
        h("td", { "data-label": "Price", class: "num", text: fmtMoney(t.price) }),
        h("td", { "data-label": "Amount", class: "num", text: fmtAmount(t.amount) }),
        h("td", { "data-label": "Fee", class: "num", text: fmtAmount(t.fee) }),
        h("td", { "data-label": "Realized P&L", class: realized.cls, text: realized.text }));
    }));
    tradesEmpty.hidden = state.trades.length > 0;
  }

  function markers() {
    const step = timeframeMs(state.bot.timeframe);
    const colors = palette();
    return state.trades
      .map((t) => {
        const ms = Date.parse(t.timestamp);
        const buy = t.side === "buy";
        return {
          time: Math.floor(ms / step) * step / 1000,
          position: buy ? "belowBar" : "aboveBar",
          color: buy ? colors.up : colors.down,
          shape: buy ? "arrowUp" : "arrowDown",
          text: `${buy ? "B" : "S"} ${fmtAmount(t.amount)}`,
        };
      })
      .sort((a, b) => a.time - b.time);
  }

  function drawChart() {
    const lib = state.lib;
    if (!lib || disposed) return;
    const colors = palette();
    if (!state.chart) {
      chartBox.replaceChildren();
      state.chart = lib.createChart(chartBox, { ...themeOptions(), autoSize: true });
      state.candleSeries = state.chart.addSeries(lib.CandlestickSeries, {
        upColor: colors.up, downColor: colors.down, borderVisible: false, wickUpColor: colors.up, wickDownColor: colors.down,
      });
      state.equitySeries = state.chart.addSeries(lib.LineSeries, { color: colors.line, lineWidth: 2, priceLineVisible: false, title: "equity" }, 1);
      state.markers = lib.createSeriesMarkers(state.candleSeries, []);
      const panes = state.chart.panes();
      if (panes[1]) panes[1].setHeight(110);
    }
    state.candleSeries.setData(state.candles.map((c) => ({ time: c.timestamp / 1000, open: c.open, high: c.high, low: c.low, close: c.close })));
    state.equitySeries.setData(state.equity.map((p) => ({ time: Math.floor(p.timestamp / 1000), value: Number(p.equity) })));
    const marks = markers();
    state.markers.setMarkers(marks);
    if (!state.framed) {
      // First view: from a little before the first fill to the latest candle, or to a while
      // after the last fill when that is long ago; everything when the bot has no fills.
      state.framed = true;
      const last = state.candles.length ? state.candles[state.candles.length - 1].timestamp / 1000 : null;
      if (marks.length && last !== null) {
        const step = timeframeMs(state.bot.timeframe) / 1000;
        const from = marks[0].time - 60 * step;
        const to = Math.min(last, marks[marks.length - 1].time + 240 * step);
        state.chart.timeScale().setVisibleRange({ from, to: Math.max(to, from + 2 * step) });
      } else {
        state.chart.timeScale().fitContent();
      }
    }
    replace(legend,
      h("span", { text: `${state.candles.length} candles (${state.bot.timeframe})` }),
      h("span", { text: `${state.trades.length} fills` }),
      h("span", { text: `${state.equity.length} equity points` }),
      h("a", { class: "attribution", href: "https://www.tradingview.com/", target: "_blank", rel: "noopener noreferrer", text: "Charting by TradingView" }));
  }

  function showChartProblem(message) {
    if (state.chart) {
      state.chart.remove();
      state.chart = null;
    }
    replace(chartBox, h("div", { class: "chart-missing", id: "chart-missing", role: "note" }, message));
  }

  async function loadCandles() {
    const bot = state.bot;
    const symbol = encodeURIComponent(bot.tradingPair.replace("/", "-"));
    const step = timeframeMs(bot.timeframe);
    let query = `timeframe=${encodeURIComponent(bot.timeframe)}&limit=1000`;
    if (state.trades.length) {
      // Start a little before the oldest fill shown, so every marker has its candle.
      const first = Math.min(...state.trades.map((t) => Date.parse(t.timestamp)));
      const since = Math.floor(first / step) * step - LEAD_BARS * step;
      const bars = Math.min(MAX_BARS, Math.ceil((Date.now() - since) / step) + 1);
      query = `timeframe=${encodeURIComponent(bot.timeframe)}&limit=${bars}&since=${Math.max(0, since)}`;
    }
    const ohlcv = await api(`/api/markets/${symbol}/ohlcv?${query}`);
    state.candles = ohlcv.candles;
  }

  async function loadTrades() {
    const page = await api(`/api/trades/?botId=${botId}&limit=500`);
    state.trades = page.items;
  }

  function drawPositions() {
    replace(positionsBody, (state.positions || []).map((p) => h("tr", { dataset: { positionId: String(p.id) } },
      h("td", { "data-label": "Symbol", text: p.symbol }),
      h("td", { "data-label": "Amount", class: "num", text: fmtAmount(p.amount) }),
      h("td", { "data-label": "Avg price", class: "num", text: fmtMoney(p.averagePrice) }),
      h("td", { "data-label": "Stop", class: "num", text: p.stopPrice === null ? "—" : fmtMoney(p.stopPrice) }),
      h("td", { "data-label": "Realized P&L", ...(() => { const r = pnl(p.realizedPnl); return { class: r.cls, text: r.text }; })() }),
      h("td", { "data-label": "Fees", class: "num", text: fmtAmount(p.feesPaid) }))));
    if (!(state.positions || []).length) replace(positionsBody, h("tr", {}, h("td", { colspan: "6", class: "muted", text: "Flat: no open position." })));
  }

  async function loadOrders() {
    const page = await api(`/api/orders/?botId=${botId}&limit=100`);
    const open = page.items.filter((o) => !DONE_ORDERS.has(String(o.status).toLowerCase()));
    replace(ordersBody, open.map((o) => h("tr", { dataset: { orderId: String(o.id), status: o.status } },
      h("td", { "data-label": "Created", text: fmtTime(o.createdAt) }),
      h("td", { "data-label": "Side", class: o.side === "buy" ? "pos" : "neg", text: o.side }),
      h("td", { "data-label": "Type", text: o.type }),
      h("td", { "data-label": "Price", class: "num", text: o.price === null ? "market" : fmtMoney(o.price) }),
      h("td", { "data-label": "Amount", class: "num", text: fmtAmount(o.amount) }),
      h("td", { "data-label": "Filled", class: "num", text: fmtAmount(o.filled) }),
      h("td", { "data-label": "Status", text: o.status }))));
    if (!open.length) replace(ordersBody, h("tr", {}, h("td", { colspan: "7", class: "muted", text: "No open orders." })));
  }

  async function loadLog() {
    const logs = await api(`/api/bots/${botId}/logs?tail=${LOG_LINES}`);
    const lines = logs.lines.map((line) => {
      try {
        const record = JSON.parse(line);
        const at = record.time || record.timestamp || record.ts || "";
        const level = record.level || record.levelname || "";
        const message = record.message || record.msg || line;
        return [at, level, message].filter(Boolean).join("  ");
      } catch {
        return line;
      }
    });
    const atEnd = logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - 4;
    logBox.textContent = lines.length ? lines.join("\n") : "No log lines yet (the bot writes them once it runs).";
    logBox.dataset.lines = String(lines.length);
    if (atEnd) logBox.scrollTop = logBox.scrollHeight;
    replace(logNote, `last ${lines.length} lines · updated ${new Date().toLocaleTimeString()}`);
  }

  /** The effective value of a stored limit (the tightest of the portfolio's, the user's, the bot's). */
  function storedLimit(name) {
    const values = (state.limits || [])
      .filter((l) => l.name === name && (l.scope === "portfolio" || l.scope.startsWith("user") || l.scope === `bot:${botId}`))
      .map((l) => Number(l.value));
    return values.length ? Math.min(...values) : null;
  }

  function drawRisk() {
    const bot = state.bot;
    const perf = state.perf;
    const position = (state.positions || [])[0];
    const equity = perf && perf.equity !== null ? Number(perf.equity) : null;
    const lastClose = state.candles.length ? state.candles[state.candles.length - 1].close : null;
    const price = lastClose || (position ? Number(position.averagePrice) : null);
    const exposurePct = position && equity && price ? (Math.abs(Number(position.amount)) * price / equity) * 100 : 0;
    const maxPosition = Math.min(Number(bot.maxPositionSize), storedLimit("max_position_pct") ?? Infinity);
    const ddLimit = storedLimit("max_drawdown_pct") ?? DEFAULT_MAX_DRAWDOWN_PCT;
    const ddPct = perf && perf.maxDrawdown !== null ? Math.abs(Number(perf.maxDrawdown)) * 100 : null;
    const rows = [
      ["Max position", `${maxPosition}% of equity`, exposurePct, maxPosition, `${exposurePct.toFixed(2)}% held`],
      ["Max drawdown", `${ddLimit}%`, ddPct, ddLimit, ddPct === null ? "no equity yet" : `${ddPct.toFixed(2)}% so far`],
      ["Risk per trade", `${Number(bot.riskPerTrade)}% of equity`],
      ["Stop loss", bot.stopLoss === null ? "none" : `${Number(bot.stopLoss)}%`],
      ["Take profit", bot.takeProfit === null ? "none" : `${Number(bot.takeProfit)}%`],
      ["Trailing stop", bot.trailingStop === null ? "none" : `${Number(bot.trailingStop)}%`],
    ];
    const daily = storedLimit("max_daily_loss_pct");
    if (daily !== null) rows.push(["Max daily loss", `${daily}%`]);
    replace(riskBody, rows.map(([label, value, used, limit, note]) => h("tr", { dataset: { limit: label } },
      h("td", { text: label }),
      h("td", { text: value }),
      h("td", {}, used === undefined ? h("span", { class: "muted", text: "—" })
        : h("div", { class: "util" },
          h("meter", { min: "0", max: String(limit), low: String(limit * 0.6), high: String(limit * 0.85), optimum: "0", value: String(Math.min(used ?? 0, limit)), "aria-label": `${label} used` }),
          h("span", { class: used !== null && used > limit ? "neg" : "muted", text: used !== null && used > limit ? `${note}: over the limit` : note }))))));
  }

  async function load() {
    try {
      state.bot = await api(`/api/bots/${botId}`);
    } catch (error) {
      replace(sub, describe(error));
      showChartProblem("No chart: the bot could not be read.");
      return;
    }
    drawHeader();
    const [, positions, perf, equity] = await Promise.all([
      loadTrades(),
      api(`/api/positions?botId=${botId}`),
      api(`/api/analytics/performance?botId=${botId}`),
      api(`/api/bots/${botId}/equity`),
    ]).catch((error) => {
      toast(describe(error), "error");
      return [null, { items: [] }, null, { points: [] }];
    });
    state.equity = equity.points;
    state.positions = positions.items;
    state.perf = perf && perf.bots[0];
    drawSummary(positions.items[0], perf && perf.bots[0]);
    drawPositions();
    Promise.all([loadOrders(), loadLog(), api("/api/risk/limits").then((limits) => { state.limits = limits; })])
      .then(drawRisk)
      .catch((error) => toast(describe(error), "error"));
    drawTrades();
    try {
      state.lib = await loadChartLibrary();
    } catch (error) {
      showChartProblem(`Chart unavailable: ${error.message}`);
      return;
    }
    try {
      await loadCandles();
    } catch (error) {
      showChartProblem(`No market data for ${state.bot.tradingPair}: ${describe(error)}`);
      return;
    }
    drawChart();
    if (state.limits) drawRisk();
  }

  // Orders, positions and the log change with the bot's events: one read each per burst.
  let refreshing = null;
  function refreshBook() {
    clearTimeout(refreshing);
    refreshing = setTimeout(async () => {
      try {
        const [positions, perf] = await Promise.all([
          api(`/api/positions?botId=${botId}`),
          api(`/api/analytics/performance?botId=${botId}`),
          loadOrders(),
          loadLog(),
        ]);
        state.positions = positions.items;
        state.perf = perf && perf.bots[0];
        drawPositions();
        drawRisk();
      } catch (error) {
        toast(describe(error), "error");
      }
    }, 300);
  }
  logRefresh.addEventListener("click", () => loadLog().catch((error) => toast(describe(error), "error")));

  // A fill adds a marker and a row: re-read this bot's trades (one request per burst).
  let pending = null;
  function onBot(event) {
    const message = event.detail;
    if (message.botId !== botId) return;
    if (message.type === "status") setStatus(message.status, message.reason);
    if (state.bot) refreshBook();
    if (message.type === "fill") {
      clearTimeout(pending);
      pending = setTimeout(async () => {
        try {
          await loadTrades();
          drawTrades();
          drawChart();
        } catch (error) {
          toast(describe(error), "error");
        }
      }, 200);
    }
  }
  const onTheme = () => {
    if (state.chart) {
      state.chart.applyOptions(themeOptions());
      drawChart();
    }
  };
  botSocket.addEventListener("bot", onBot);
  themeEvents.addEventListener("change", onTheme);
  load();
  return () => {
    disposed = true;
    clearTimeout(pending);
    clearTimeout(refreshing);
    botSocket.removeEventListener("bot", onBot);
    themeEvents.removeEventListener("change", onTheme);
    if (state.chart) state.chart.remove();
  };
}
