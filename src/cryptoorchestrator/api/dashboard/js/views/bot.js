// Bot page: candles of the bot's market with its fills as markers, equity below, its trades.

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
  root.append(
    h("div", { class: "page-head" },
      h("div", {}, h("p", { class: "sub" }, h("a", { href: "#/overview", text: "← Bots" })), title, sub),
      h("div", { class: "session" }, status, actions)),
    summary,
    h("section", { class: "panel" }, h("h2", { text: "Market, fills and equity" }), chartBox, legend),
    h("section", { class: "panel trades-panel" }, h("h2", { text: "Trades" }),
      h("div", { class: "table-wrap" }, h("table", { class: "responsive trades" },
        h("thead", {}, h("tr", {}, ["Time", "Side", "Price", "Amount", "Fee", "Realized P&L"].map((t, i) => h("th", { class: i > 1 ? "num" : "", text: t })))),
        tradesBody)), tradesEmpty),
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
    drawSummary(positions.items[0], perf && perf.bots[0]);
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
  }

  // A fill adds a marker and a row: re-read this bot's trades (one request per burst).
  let pending = null;
  function onBot(event) {
    const message = event.detail;
    if (message.botId !== botId) return;
    if (message.type === "status") setStatus(message.status, message.reason);
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
    botSocket.removeEventListener("bot", onBot);
    themeEvents.removeEventListener("change", onTheme);
    if (state.chart) state.chart.remove();
  };
}
