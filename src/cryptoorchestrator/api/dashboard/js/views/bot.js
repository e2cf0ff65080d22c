// Bot page: candles of the bot's market with its fills as markers, equity below, its trades,
// its open orders and positions, its risk limits with their utilisation, and its log tail.
// Orders, positions and the log are read again when /ws/bots reports an event of this bot.
//
// The chart comes from one read (GET /api/bots/<id>/chart: the market's whole stored history
// and every fill, in columns); a fill pushed on /ws/bots then reads only the newest fills and
// adds their markers, so a new marker costs one small request, not the history again.

import { api, describe } from "../api.js";
import { loadChartLibrary, palette, themeOptions } from "../chart.js";
import { badge, fmtAmount, fmtMoney, fmtTime, h, pnl, replace, toast } from "../dom.js";
import { themeEvents } from "../theme.js";
import { botSocket } from "../ws.js";
import { controlButton } from "./overview.js";

const UNIT_MS = { m: 60000, h: 3600000, d: 86400000, w: 604800000 };
/** Newest fills read when one is pushed (more than this many at once: the chart is read again). */
const NEW_FILLS = 50;
/** Latest trades in the page's table (all of them: the Trades page, linked from it). */
const TABLE_ROWS = 50;
/** Candles in the first view at most (a month of hourly ones). */
const VIEW_BARS = 720;
/** Candles drawn beyond each side of the first view before the rest of a long history. */
const FIRST_MARGIN = 300;
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
  const state = { bot: null, trades: [], candles: [], fills: new Map(), equity: [], chart: null, candleSeries: null, equitySeries: null, markers: null, lib: null, framed: false, partial: false };
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
      cell("Trades", String(state.fills.size || state.trades.length)));
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

  /** One marker per fill (state.fills: id -> {ms, side, amount}), on its candle, oldest first. */
  function markers() {
    const step = timeframeMs(state.bot.timeframe);
    const colors = palette();
    return [...state.fills.values()]
      .map((f) => {
        const buy = f.side === "buy";
        return {
          time: Math.floor(f.ms / step) * step / 1000,
          position: buy ? "belowBar" : "aboveBar",
          color: buy ? colors.up : colors.down,
          shape: buy ? "arrowUp" : "arrowDown",
          text: `${buy ? "B" : "S"} ${fmtAmount(f.amount)}`,
        };
      })
      .sort((a, b) => a.time - b.time);
  }

  /** Draw the fills' markers again (a new fill needs nothing else redrawn). */
  function drawMarkers() {
    if (state.partial) return []; // the whole history's step draws them all
    const marks = markers();
    state.markers.setMarkers(marks);
    chartBox.dataset.markers = String(state.markers.markers().length);
    return marks;
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
    if (!state.framed && state.candles.length) {
      state.framed = true;
      drawFirst(firstView(markers()));
      return;
    }
    state.candleSeries.setData(state.candles);
    drawEquity();
    drawMarkers();
    drawLegend();
  }

  /** Call `then` in the frame after the next paint (the chart draws on animation frames). */
  function afterPaint(then) {
    requestAnimationFrame(() => requestAnimationFrame(() => {
      if (!disposed && state.chart) then();
    }));
  }

  /**
   * The first view's time range: the fills, from a little before the first to the latest candle
   * or a while after the last when that is long ago, at most VIEW_BARS candles (the latest
   * activity: a long history is there to pan and zoom to, not to draw all at once); the latest
   * candles when the bot has no fills.
   */
  function firstView(marks) {
    const n = state.candles.length;
    const step = timeframeMs(state.bot.timeframe) / 1000;
    const last = state.candles[n - 1].time;
    if (!marks.length) return { from: state.candles[Math.max(0, n - VIEW_BARS)].time, to: last };
    const to = Math.min(last, marks[marks.length - 1].time + 240 * step);
    const from = Math.max(marks[0].time - 60 * step, to - VIEW_BARS * step);
    return { from, to: Math.max(to, from + 2 * step) };
  }

  /** Index of the first candle at or after `time` (seconds). */
  function candleIndex(time) {
    let lo = 0;
    let hi = state.candles.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (state.candles[mid].time < time) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /**
   * Draw the first view. A long history is drawn in two steps: the candles around the view and
   * their markers first (what the screen shows), the whole history and every marker in the
   * frame after that paint, the view kept. `data-painted` and `data-complete` on the chart
   * say when each step has been painted.
   */
  function drawFirst(view) {
    const n = state.candles.length;
    const lo = Math.max(0, candleIndex(view.from) - FIRST_MARGIN);
    const hi = Math.min(n, candleIndex(view.to) + FIRST_MARGIN);
    drawEquity();
    drawLegend();
    const painted = () => {
      chartBox.dataset.painted = String(performance.now());
    };
    const complete = () => {
      chartBox.dataset.complete = String(performance.now());
    };
    if (hi - lo >= n) {
      state.candleSeries.setData(state.candles);
      drawMarkers();
      state.chart.timeScale().setVisibleRange(view);
      afterPaint(() => {
        painted();
        complete();
      });
      return;
    }
    state.partial = true;
    state.candleSeries.setData(state.candles.slice(lo, hi));
    const [first, last] = [state.candles[lo].time, state.candles[hi - 1].time];
    state.markers.setMarkers(markers().filter((m) => m.time >= first && m.time <= last));
    state.chart.timeScale().setVisibleRange(view);
    afterPaint(() => {
      painted();
      const range = state.chart.timeScale().getVisibleRange();
      state.candleSeries.setData(state.candles);
      state.partial = false;
      drawMarkers();
      if (range) state.chart.timeScale().setVisibleRange(range);
      afterPaint(complete);
    });
  }

  function drawEquity() {
    if (!state.chart) return;
    state.equitySeries.setData(state.equity.map((p) => ({ time: Math.floor(p.timestamp / 1000), value: Number(p.equity) })));
  }

  function drawLegend() {
    replace(legend,
      h("span", { text: `${state.candles.length} candles (${state.bot.timeframe})` }),
      h("span", { id: "bot-fill-count", text: `${state.fills.size} fills` }),
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

  /** The bot's market and every fill, in one read. */
  async function loadChartData() {
    applyChartData(await api(`/api/bots/${botId}/chart`));
  }

  function applyChartData(data) {
    const c = data.candles;
    const candles = new Array(c.timestamp.length);
    for (let i = 0; i < candles.length; i += 1) {
      candles[i] = { time: c.timestamp[i] / 1000, open: c.open[i], high: c.high[i], low: c.low[i], close: c.close[i] };
    }
    state.candles = candles;
    const f = data.fills;
    state.fills = new Map(f.id.map((fillId, i) => [fillId, { ms: f.timestamp[i], side: f.side[i], amount: f.amount[i] }]));
    if (!candles.length) throw new Error(`no market data stored for ${state.bot.tradingPair} ${state.bot.timeframe}`);
  }

  /** Add the newest fills (after a push); false when more are new than one read holds. */
  async function loadNewFills() {
    const page = await api(`/api/trades/?botId=${botId}&limit=${NEW_FILLS}`);
    let fresh = 0;
    for (const t of page.items) {
      if (state.fills.has(t.id)) continue;
      fresh += 1;
      state.fills.set(t.id, { ms: Date.parse(t.timestamp), side: t.side, amount: t.amount });
    }
    return fresh < NEW_FILLS || !page.nextCursor;
  }

  async function loadTrades() {
    const page = await api(`/api/trades/?botId=${botId}&limit=${TABLE_ROWS}`);
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
    // The chart's library and data are the page's heaviest reads: they start first, together
    // with the bot's, and the chart is drawn as soon as those three are in.
    const library = loadChartLibrary();
    const chartData = api(`/api/bots/${botId}/chart`);
    library.catch(() => null);
    chartData.catch(() => null);
    try {
      state.bot = await api(`/api/bots/${botId}`);
    } catch (error) {
      replace(sub, describe(error));
      showChartProblem("No chart: the bot could not be read.");
      return;
    }
    drawHeader();
    const charted = (async () => {
      try {
        state.lib = await library;
      } catch (error) {
        showChartProblem(`Chart unavailable: ${error.message}`);
        return;
      }
      try {
        applyChartData(await chartData);
      } catch (error) {
        showChartProblem(`No market data for ${state.bot.tradingPair}: ${describe(error)}`);
        return;
      }
      drawChart();
    })();
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
    drawEquity();
    if (state.chart) drawLegend();
    Promise.all([loadOrders(), loadLog(), api("/api/risk/limits").then((limits) => { state.limits = limits; })])
      .then(drawRisk)
      .catch((error) => toast(describe(error), "error"));
    drawTrades();
    await charted;
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
          if (state.chart) {
            if (await loadNewFills()) drawMarkers();
            else {
              await loadChartData();
              drawChart();
            }
            drawLegend();
          }
          await loadTrades();
          drawTrades();
        } catch (error) {
          toast(describe(error), "error");
        }
      }, 50);
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
