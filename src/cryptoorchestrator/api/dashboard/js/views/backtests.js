// Backtests: run one (strategy, its declared Params, period, fees) on the cluster, follow its
// status, read its report (metrics, candles with the fills, equity and drawdown), and compare
// two or more runs side by side (metrics table and overlaid equity). Runs are followed live
// over /ws/runs (see runs.js).
//
// Routes: #/backtests (form and runs), #/backtests/<id> (a report),
// #/backtests/compare/<id>,<id>[,...] (a comparison).

import { api, canTrade, describe } from "../api.js";
import { loadChartLibrary, palette, themeOptions } from "../chart.js";
import { fmtTime, h, replace, toast } from "../dom.js";
import { clearErrors, field, fillStrategies, isoDate, loadStrategies, numberInput, paramFields, select, showErrors, submitForm } from "../forms.js";
import { followRuns, liveRunList, paramsText, runStatus } from "../runs.js";
import { themeEvents } from "../theme.js";

/** Metrics shown, in order, with how to show them. */
export const METRICS = [
  ["total_return", "Total return", "pct"],
  ["cagr", "CAGR", "pct"],
  ["sharpe", "Sharpe", "num"],
  ["sortino", "Sortino", "num"],
  ["calmar", "Calmar", "num"],
  ["max_drawdown", "Max drawdown", "pct"],
  ["volatility", "Volatility", "pct"],
  ["win_rate", "Win rate", "pct"],
  ["profit_factor", "Profit factor", "num"],
  ["expectancy", "Expectancy", "num"],
  ["exposure", "Exposure", "pct"],
  ["trade_count", "Trades", "int"],
  ["fees_paid", "Fees paid", "money"],
  ["final_equity", "Final equity", "money"],
];
/** Metrics where less is better, as the optimizer has them (platform/optimize/objective.py). */
export const LOWER_IS_BETTER = new Set(["max_drawdown", "max_drawdown_duration", "volatility", "fees_paid", "skipped_orders"]);
const SERIES_COLOURS = ["#3b82f6", "#f59e0b", "#a855f7", "#14b8a6", "#ef4444", "#84cc16"];

/** Format one metric value. */
export function fmtMetric(value, kind) {
  if (value === null || value === undefined) return "—";
  const n = Number(value);
  if (!Number.isFinite(n)) return String(value);
  if (kind === "pct") return `${(n * 100).toFixed(2)}%`;
  if (kind === "int") return String(Math.round(n));
  if (kind === "money") return n.toFixed(2);
  return n.toFixed(3);
}

/** Render the backtests pages into `root`; returns a cleanup function. */
export function render(root, [id, compare]) {
  if (compare) return renderCompare(root, compare.split(","));
  if (id) return renderReport(root, id);
  return renderList(root);
}

function renderList(root) {
  const body = h("tbody");
  const empty = h("p", { class: "empty", hidden: true, text: "No backtests yet." });
  const compareButton = h("button", { type: "button", class: "btn", id: "bt-compare", text: "Compare selected", disabled: true });
  const formSlot = h("div");
  root.append(
    h("div", { class: "page-head" },
      h("div", {}, h("h1", { text: "Backtests" }), h("p", { class: "sub", text: "Run a strategy on stored candles; compare runs." })),
      compareButton),
    formSlot,
    h("section", { class: "panel" }, h("h2", { text: "Runs" }),
      h("div", { class: "table-wrap" }, h("table", { class: "responsive runs" },
        h("thead", {}, h("tr", {}, ["", "Run", "Status", "Market", "Return", "Sharpe", "Max DD", "Created"].map((t, i) => h("th", { class: i > 3 && i < 7 ? "num" : "", text: t })))),
        body)), empty));
  const selected = new Set();
  compareButton.addEventListener("click", () => {
    location.hash = `#/backtests/compare/${[...selected].join(",")}`;
  });

  function row(run) {
    const pick = h("input", { type: "checkbox", "aria-label": `Select ${run.id.slice(0, 8)} to compare`, disabled: run.status !== "succeeded", checked: selected.has(run.id) });
    pick.addEventListener("change", () => {
      if (pick.checked) selected.add(run.id);
      else selected.delete(run.id);
      compareButton.disabled = selected.size < 2;
    });
    const m = run.metrics || {};
    const status = h("td", { "data-label": "Status" }, ...runStatus(run));
    return h("tr", { dataset: { runId: run.id, status: run.status } },
      h("td", { "data-label": "Compare" }, pick),
      h("td", { "data-label": "Run" }, h("a", { href: `#/backtests/${run.id}`, text: `${run.strategy} ${run.id.slice(0, 8)}` }),
        h("span", { class: "reason", text: paramsText(run.params) })),
      status,
      h("td", { "data-label": "Market", text: `${run.symbol || ""} ${run.timeframe || ""}` }),
      h("td", { "data-label": "Return", class: "num", text: fmtMetric(m.total_return, "pct") }),
      h("td", { "data-label": "Sharpe", class: "num", text: fmtMetric(m.sharpe, "num") }),
      h("td", { "data-label": "Max DD", class: "num", text: fmtMetric(m.max_drawdown, "pct") }),
      h("td", { "data-label": "Created", text: fmtTime(run.createdAt) }));
  }

  const list = liveRunList("backtest", "/api/backtests?limit=100", body, empty, row, "backtests");
  if (canTrade()) {
    replace(formSlot, backtestForm((submitted) => {
      toast(`Backtest ${submitted.id.slice(0, 8)} queued.`, "ok");
      list.load().catch(() => null);
    }));
  }
  return list.stop;
}

/** The run form: strategy, its Params, market, period, fees. */
function backtestForm(onSubmitted) {
  const strategy = select([]);
  const symbol = h("input", { type: "text", value: "BTC/USDT", maxlength: 40 });
  const exchange = h("input", { type: "text", value: "binance", maxlength: 50 });
  const timeframe = select(["1m", "5m", "15m", "30m", "1h", "4h", "1d"], "1h");
  const start = h("input", { type: "date", value: "2022-01-01" });
  const end = h("input", { type: "date", value: "2022-03-01" });
  const fee = numberInput("10", { min: 0, max: 1000 });
  const paramsBox = h("div", { class: "form-grid params" });
  let params = paramFields([]);
  let catalogue = [];
  const submit = h("button", { type: "submit", class: "btn btn-primary", id: "bt-run", text: "Run backtest" });
  const form = h("form", { class: "panel", id: "bt-form", novalidate: true, "aria-label": "Run a backtest" },
    h("h2", { text: "New backtest" }),
    h("div", { class: "form-error", role: "alert", hidden: true }),
    h("div", { class: "form-grid" },
      field("strategy", "Strategy", strategy),
      field("exchange", "Exchange", exchange),
      field("symbol", "Symbol", symbol),
      field("timeframe", "Timeframe", timeframe),
      field("start", "From (UTC)", start),
      field("end", "To (UTC, exclusive)", end),
      field("feeBps", "Fee (bps)", fee, "0-1000 basis points per fill")),
    h("h3", { class: "sub-head", text: "Parameters" }),
    paramsBox,
    h("div", { class: "actions" }, submit));
  function drawParams() {
    const chosen = catalogue.find((s) => s.name === strategy.value);
    params = paramFields(chosen ? chosen.params : []);
    replace(paramsBox, params.nodes);
  }
  strategy.addEventListener("change", drawParams);
  loadStrategies().then((list) => {
    catalogue = list;
    fillStrategies(strategy, list);
    drawParams();
  }).catch((error) => showErrors(form, [], `Could not read the strategies: ${describe(error)}`));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const read = params.read();
    const errors = [...read.errors];
    const feeValue = Number(fee.value);
    if (fee.value.trim() === "" || !Number.isFinite(feeValue) || feeValue < 0 || feeValue > 1000) {
      errors.push({ field: "feeBps", message: "out of range", allowed: "0-1000" });
    }
    if (start.value && end.value && end.value <= start.value) errors.push({ field: "end", message: "must be after From" });
    if (errors.length) {
      showErrors(form, errors, "Please correct the fields marked.");
      return;
    }
    const body = {
      strategy: strategy.value, params: read.values, exchange: exchange.value.trim(), symbol: symbol.value.trim(),
      timeframe: timeframe.value, start: isoDate(start.value), end: isoDate(end.value), feeBps: feeValue,
    };
    await submitForm(form, submit, "/api/backtests", body, onSubmitted);
  });
  return form;
}

function metricsGrid(metrics) {
  return METRICS.filter(([key]) => key in (metrics || {})).map(([key, label, kind]) =>
    h("div", { class: "panel card", dataset: { metric: key } },
      h("div", { class: "label", text: label }),
      h("div", { class: "value", text: fmtMetric(metrics[key], kind) })));
}

function renderReport(root, id) {
  const state = { chart: null, stop: null, disposed: false, report: null, reporting: false };
  const title = h("h1", { text: `Backtest ${id.slice(0, 8)}` });
  const sub = h("p", { class: "sub" });
  const status = h("div", { class: "session", id: "bt-status" });
  const cards = h("div", { class: "grid cards metrics", id: "bt-metrics" });
  const chartBox = h("div", { class: "chart-box tall", id: "bt-chart" });
  const legend = h("div", { class: "legend", id: "bt-legend" });
  root.append(
    h("div", { class: "page-head" },
      h("div", {}, h("p", { class: "sub" }, h("a", { href: "#/backtests", text: "← Backtests" })), title, sub),
      status),
    cards,
    h("section", { class: "panel" }, h("h2", { text: "Candles with fills, equity and drawdown" }), chartBox, legend));

  async function draw(report) {
    replace(cards, metricsGrid(report.metrics));
    let lib;
    try {
      lib = await loadChartLibrary();
    } catch (error) {
      replace(chartBox, h("div", { class: "chart-missing", id: "chart-missing", text: `Chart unavailable: ${error.message}` }));
      return;
    }
    if (state.disposed) return;
    const colors = palette();
    chartBox.replaceChildren();
    const chart = lib.createChart(chartBox, { ...themeOptions(), autoSize: true });
    state.chart = chart;
    const c = report.candles;
    const candles = chart.addSeries(lib.CandlestickSeries, { upColor: colors.up, downColor: colors.down, borderVisible: false, wickUpColor: colors.up, wickDownColor: colors.down });
    candles.setData(c.timestamp.map((t, i) => ({ time: t / 1000, open: c.open[i], high: c.high[i], low: c.low[i], close: c.close[i] })).filter((b) => b.open !== null));
    lib.createSeriesMarkers(candles, report.fills.map((f) => {
      const buy = f.side === "buy";
      return { time: f.timestamp / 1000, position: buy ? "belowBar" : "aboveBar", color: buy ? colors.up : colors.down, shape: buy ? "arrowUp" : "arrowDown", text: buy ? "B" : "S" };
    }));
    const equity = chart.addSeries(lib.LineSeries, { color: colors.line, lineWidth: 2, priceLineVisible: false, title: "equity" }, 1);
    equity.setData(c.timestamp.map((t, i) => ({ time: t / 1000, value: report.equity[i] })).filter((p) => p.value !== null));
    // Drawdown hangs from zero (a filled area above its line), faintly, under the equity pane.
    const dd = chart.addSeries(lib.AreaSeries, { lineColor: colors.down, topColor: "rgba(239, 68, 68, 0.28)", bottomColor: "rgba(239, 68, 68, 0.04)", lineWidth: 1, priceLineVisible: false, title: "drawdown %", invertFilledArea: true }, 2);
    dd.setData(c.timestamp.map((t, i) => ({ time: t / 1000, value: report.drawdown[i] === null ? 0 : report.drawdown[i] * 100 })));
    const panes = chart.panes();
    // Shares of the height: candles, equity, drawdown.
    [0.6, 0.24, 0.16].forEach((share, i) => panes[i] && panes[i].setStretchFactor(share));
    chart.timeScale().fitContent();
    replace(legend,
      h("span", { text: `${c.timestamp.length} candles (${report.timeframe})${report.truncated ? `, the last of ${report.bars}` : ""}` }),
      h("span", { text: `${report.fills.length} fills` }),
      h("span", { text: `fee ${report.feeBps} bps` }),
      h("a", { class: "attribution", href: "https://www.tradingview.com/", target: "_blank", rel: "noopener noreferrer", text: "Charting by TradingView" }));
  }

  async function show(run) {
    replace(status, ...runStatus(run, "error-text"));
    if (run.status === "succeeded" && !state.reporting) {
      state.reporting = true; // the push and the first read may both see it succeed
      state.report = await api(`/api/backtests/${encodeURIComponent(id)}/report`);
      if (!state.disposed) await draw(state.report);
    }
  }
  async function load() {
    const run = await api(`/api/backtests/${encodeURIComponent(id)}`);
    replace(title, `${run.strategy} · ${run.id.slice(0, 8)}`);
    replace(sub, `${run.exchange || ""} ${run.symbol || ""} ${run.timeframe || ""} · ${paramsText(run.params)}`);
    await show(run);
  }
  state.stop = followRuns("backtest", (event) => {
    if (event.id === id) show(event).catch((error) => replace(sub, describe(error)));
  }, load);
  load().catch((error) => replace(sub, describe(error)));
  const onTheme = () => {
    if (state.report && state.chart) {
      state.chart.remove();
      state.chart = null;
      draw(state.report);
    }
  };
  themeEvents.addEventListener("change", onTheme);
  return () => {
    state.disposed = true;
    if (state.stop) state.stop();
    themeEvents.removeEventListener("change", onTheme);
    if (state.chart) state.chart.remove();
  };
}

function renderCompare(root, ids) {
  const state = { chart: null, disposed: false };
  const table = h("table", { class: "compare", id: "bt-compare-table" });
  const chartBox = h("div", { class: "chart-box", id: "bt-compare-chart" });
  const legend = h("div", { class: "legend" });
  root.append(
    h("div", { class: "page-head" },
      h("div", {}, h("p", { class: "sub" }, h("a", { href: "#/backtests", text: "← Backtests" })),
        h("h1", { text: `Comparing ${ids.length} backtests` }))),
    h("section", { class: "panel" }, h("h2", { text: "Metrics" }), h("div", { class: "table-wrap" }, table)),
    h("section", { class: "panel" }, h("h2", { text: "Equity, overlaid" }), chartBox, legend));

  Promise.all(ids.map((id) => api(`/api/backtests/${encodeURIComponent(id)}/report`))).then(async (reports) => {
    if (state.disposed) return;
    const name = (r) => `${r.strategy} ${r.id.slice(0, 8)}`;
    replace(table,
      h("thead", {}, h("tr", {}, h("th", { text: "Metric" }), reports.map((r, i) => h("th", { class: `num series-${i % SERIES_COLOURS.length}`, text: name(r) })))),
      h("tbody", {},
        h("tr", {}, h("td", { text: "Parameters" }), reports.map((r) => h("td", { class: "num", text: paramsText(r.params) }))),
        METRICS.map(([key, label, kind]) => {
          const values = reports.map((r) => Number(r.metrics[key]));
          const best = LOWER_IS_BETTER.has(key) ? Math.min(...values) : Math.max(...values);
          return h("tr", { dataset: { metric: key } }, h("td", { text: label }),
            reports.map((r, i) => h("td", { class: values[i] === best && reports.length > 1 ? "num best" : "num", text: fmtMetric(r.metrics[key], kind) })));
        })));
    const lib = await loadChartLibrary();
    if (state.disposed) return;
    const chart = lib.createChart(chartBox, { ...themeOptions(), autoSize: true });
    state.chart = chart;
    reports.forEach((r, i) => {
      const series = chart.addSeries(lib.LineSeries, { color: SERIES_COLOURS[i % SERIES_COLOURS.length], lineWidth: 2, priceLineVisible: false, title: name(r) });
      series.setData(r.candles.timestamp.map((t, k) => ({ time: t / 1000, value: r.equity[k] })).filter((p) => p.value !== null));
    });
    chart.timeScale().fitContent();
    replace(legend, reports.map((r, i) => h("span", { class: `series-${i % SERIES_COLOURS.length}`, text: `■ ${name(r)}` })),
      h("a", { class: "attribution", href: "https://www.tradingview.com/", target: "_blank", rel: "noopener noreferrer", text: "Charting by TradingView" }));
  }).catch((error) => toast(`Could not compare: ${describe(error)}`, "error"));
  return () => {
    state.disposed = true;
    if (state.chart) state.chart.remove();
  };
}
