// Optimizations: start a parameter study, watch its trials arrive, the best-so-far curve, a
// heatmap of the objective over two parameters, parallel coordinates over more than two, each
// parameter's importance, and the walk-forward folds a study belongs to.
//
// The page reads the study and its trials once, then /ws/runs pushes the run's changes and the
// trials recorded after the last one it has (runSocket.watch); only while that socket is down
// does the page read them itself, slowly (see runs.js).
// Routes: #/optimizations (form and studies), #/optimizations/<id> (one study).

import { api, canTrade, describe } from "../api.js";
import { fmtTime, h, replace, toast } from "../dom.js";
import { checkRange, clearErrors, field, fillStrategies, isoDate, loadStrategies, numberInput, select, showErrors, submitForm } from "../forms.js";
import { followRuns, liveRunList, paramsText, runStatus } from "../runs.js";
import { runSocket } from "../ws.js";
import { LOWER_IS_BETTER, METRICS } from "./backtests.js";

const SVG = "http://www.w3.org/2000/svg";
const HEAT_STEPS = 8;

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) if (c) el.append(c);
  return el;
}

/** Render the optimization pages into `root`; returns a cleanup function. */
export function render(root, [id]) {
  return id ? renderStudy(root, id) : renderList(root);
}

function renderList(root) {
  const body = h("tbody");
  const empty = h("p", { class: "empty", hidden: true, text: "No studies yet." });
  const formSlot = h("div");
  root.append(
    h("div", { class: "page-head" },
      h("div", {}, h("h1", { text: "Optimizations" }), h("p", { class: "sub", text: "Parameter studies on the cluster, trial by trial." }))),
    formSlot,
    h("section", { class: "panel" }, h("h2", { text: "Studies" }),
      h("div", { class: "table-wrap" }, h("table", { class: "responsive studies" },
        h("thead", {}, h("tr", {}, ["Study", "Status", "Method", "Trials", "Best", "Created"].map((t, i) => h("th", { class: i === 3 || i === 4 ? "num" : "", text: t })))),
        body)), empty));
  function row(run) {
    const status = h("td", { "data-label": "Status" }, ...runStatus(run));
    return h("tr", { dataset: { runId: run.id, status: run.status } },
      h("td", { "data-label": "Study" }, h("a", { href: `#/optimizations/${run.id}`, text: `${run.strategy} ${run.id.slice(0, 8)}` }),
        h("span", { class: "reason", text: run.bestParams ? `best: ${paramsText(run.bestParams)}` : "" })),
      status,
      h("td", { "data-label": "Method", text: `${run.method} · ${run.objective}` }),
      h("td", { "data-label": "Trials", class: "num", text: String(run.nTrials) }),
      h("td", { "data-label": "Best", class: "num", text: run.bestValue === null ? "—" : Number(run.bestValue).toFixed(4) }),
      h("td", { "data-label": "Created", text: fmtTime(run.createdAt) }));
  }
  const list = liveRunList("optimization", "/api/optimizations?limit=100", body, empty, row, "studies");
  if (canTrade()) {
    replace(formSlot, studyForm((submitted) => {
      toast(`Study ${submitted.id.slice(0, 8)} queued.`, "ok");
      location.hash = `#/optimizations/${submitted.id}`;
    }));
  }
  return list.stop;
}

/** The study form: strategy, a low/high/step per numeric Param (or its default), method, data. */
function studyForm(onSubmitted) {
  const strategy = select([]);
  const method = select(["grid", "random", "tpe"], "grid");
  const objective = select(METRICS.filter(([, , kind]) => kind !== "money").map(([k, label]) => [k, label]), "sharpe");
  const trials = numberInput("", { min: 1, max: 100000, step: 1, placeholder: "grid: all points" });
  const symbol = h("input", { type: "text", value: "BTC/USDT", maxlength: 40 });
  const timeframe = select(["1m", "5m", "15m", "30m", "1h", "4h", "1d"], "1h");
  const start = h("input", { type: "date", value: "2022-01-01" });
  const end = h("input", { type: "date", value: "2022-03-01" });
  const spaceBox = h("div", { class: "space" });
  let catalogue = [];
  let rows = [];
  const submit = h("button", { type: "submit", class: "btn btn-primary", id: "opt-run", text: "Start study" });
  const form = h("form", { class: "panel", id: "opt-form", novalidate: true, "aria-label": "Start a study" },
    h("h2", { text: "New study" }),
    h("div", { class: "form-error", role: "alert", hidden: true }),
    h("div", { class: "form-grid" },
      field("strategy", "Strategy", strategy),
      field("method", "Method", method),
      field("objective", "Objective", objective),
      field("nTrials", "Trials", trials, "required for random and tpe; 1-100000"),
      field("symbol", "Symbol", symbol),
      field("timeframe", "Timeframe", timeframe),
      field("start", "From (UTC)", start),
      field("end", "To (UTC, exclusive)", end)),
    h("h3", { class: "sub-head", text: "Search space (unchecked parameters keep their default)" }),
    spaceBox,
    h("div", { class: "actions" }, submit));

  function drawSpace() {
    const chosen = catalogue.find((s) => s.name === strategy.value);
    rows = (chosen ? chosen.params : []).filter((p) => p.type === "int" || p.type === "float").map((p, i) => {
      const span = (p.high - p.low) || 1;
      const guessStep = p.type === "int" ? Math.max(1, Math.round(span / 40)) : span / 10;
      const low = numberInput(p.default, { min: p.low, max: p.high, step: p.type === "int" ? 1 : "any" });
      const high = numberInput(p.type === "int" ? Math.min(p.high, p.default + 4 * guessStep) : Math.min(p.high, p.default * 2), { min: p.low, max: p.high, step: p.type === "int" ? 1 : "any" });
      const step = numberInput(p.step ?? guessStep, { min: 0, step: "any" });
      const use = h("input", { type: "checkbox", checked: i < 2, "aria-label": `Search ${p.name}` });
      return { p, low, high, step, use,
        node: h("div", { class: "space-row", dataset: { field: `space.${p.name}` } },
          h("label", { class: "checkbox" }, use, h("span", { text: `${p.name} · ${p.type} in [${p.low}, ${p.high}]` })),
          field(`space.${p.name}.low`, "low", low), field(`space.${p.name}.high`, "high", high), field(`space.${p.name}.step`, "step", step)) };
    });
    replace(spaceBox, rows.length ? rows.map((r) => r.node) : h("p", { class: "muted", text: "This strategy has no numeric parameters to search." }));
  }
  strategy.addEventListener("change", drawSpace);
  loadStrategies().then((list) => {
    catalogue = list;
    fillStrategies(strategy, list);
    drawSpace();
  }).catch((error) => showErrors(form, [], `Could not read the strategies: ${describe(error)}`));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const errors = [];
    const space = {};
    for (const r of rows.filter((x) => x.use.checked)) {
      const name = r.p.name;
      const rule = { min: r.p.low, max: r.p.high, integer: r.p.type === "int", required: true };
      const bad = [checkRange(`space.${name}.low`, r.low.value, rule), checkRange(`space.${name}.high`, r.high.value, rule),
        checkRange(`space.${name}.step`, r.step.value, { min: 0, exclusiveMin: true, required: true })].filter(Boolean);
      if (!bad.length && Number(r.low.value) > Number(r.high.value)) bad.push({ field: `space.${name}.high`, message: "below low" });
      errors.push(...bad);
      if (!bad.length) space[name] = { low: Number(r.low.value), high: Number(r.high.value), step: Number(r.step.value) };
    }
    if (!Object.keys(space).length && !errors.length) errors.push({ field: "strategy", message: "check at least one parameter to search" });
    const nTrials = trials.value.trim();
    if (nTrials) {
      const bad = checkRange("nTrials", nTrials, { min: 1, max: 100000, integer: true });
      if (bad) errors.push(bad);
    } else if (method.value !== "grid") errors.push({ field: "nTrials", message: "required for random and tpe", allowed: "1-100000" });
    if (errors.length) {
      showErrors(form, errors, "Please correct the fields marked.");
      return;
    }
    const body = { strategy: strategy.value, space, method: method.value, objective: objective.value, symbol: symbol.value.trim(),
      timeframe: timeframe.value, start: isoDate(start.value), end: isoDate(end.value) };
    if (nTrials) body.nTrials = Number(nTrials);
    await submitForm(form, submit, "/api/optimizations", body, onSubmitted);
  });
  return form;
}

function renderStudy(root, id) {
  const state = { trials: [], last: 0, run: null, stop: null, x: null, y: null, frame: 0 };
  const title = h("h1", { text: `Study ${id.slice(0, 8)}` });
  const sub = h("p", { class: "sub" });
  const status = h("div", { class: "session", id: "opt-status" });
  const cards = h("div", { class: "grid cards" });
  const curve = h("div", { class: "curve", id: "opt-curve" });
  const xSel = select([]);
  const ySel = select([]);
  xSel.id = "heat-x";
  ySel.id = "heat-y";
  const heat = h("div", { class: "heatmap-wrap", id: "opt-heatmap" });
  const parallel = h("div", { class: "parallel", id: "opt-parallel" });
  const folds = h("div", { class: "table-wrap", id: "opt-folds" }, h("p", { class: "muted", text: "Reading the walk-forward folds…" }));
  const body = h("tbody");
  const importance = h("tbody");
  root.append(
    h("div", { class: "page-head" },
      h("div", {}, h("p", { class: "sub" }, h("a", { href: "#/optimizations", text: "← Optimizations" })), title, sub),
      status),
    cards,
    h("div", { class: "grid two-col" },
      h("section", { class: "panel" }, h("h2", { text: "Best so far" }), curve),
      h("section", { class: "panel" }, h("h2", { text: "Objective over two parameters" }),
        h("div", { class: "filters-inline" }, h("label", { class: "inline" }, "x", xSel), h("label", { class: "inline" }, "y", ySel)), heat)),
    h("section", { class: "panel", id: "opt-parallel-panel", hidden: true }, h("h2", { text: "Parallel coordinates" }),
      h("p", { class: "muted", text: "One line per trial across every searched parameter to its objective value; greener is better." }),
      parallel),
    h("section", { class: "panel" }, h("h2", { text: "Parameter importance" }),
      h("p", { class: "muted", text: "Share of the objective's variance across trials explained by each parameter alone (its main effect)." }),
      h("div", { class: "table-wrap" }, h("table", { class: "importance" },
        h("thead", {}, h("tr", {}, h("th", { text: "Parameter" }), h("th", { text: "Importance" }))), importance))),
    h("section", { class: "panel" }, h("h2", { text: "Trials, newest first" }),
      h("div", { class: "table-wrap" }, h("table", { class: "responsive trials" },
        h("thead", {}, h("tr", {}, ["#", "Parameters", "Value", "Status", "Finished"].map((t, i) => h("th", { class: i === 2 ? "num" : "", text: t })))),
        body))),
    h("section", { class: "panel" }, h("h2", { text: "Walk-forward folds" }), folds));
  for (const sel of [xSel, ySel]) sel.addEventListener("change", drawHeat);
  /** Whether objective value `a` beats `b` (the study minimises some metrics). */
  const beats = (a, b) => (state.run && LOWER_IS_BETTER.has(state.run.objective) ? a < b : a > b);

  function names() {
    const space = (state.run && state.run.space) || {};
    const fromTrials = state.trials.length ? Object.keys(state.trials[0].params || {}) : [];
    return [...new Set([...Object.keys(space), ...fromTrials])];
  }

  function drawHeader(run) {
    replace(title, `${run.strategy} · ${run.id.slice(0, 8)}`);
    replace(sub, `${run.method} search · objective ${run.objective}`);
    replace(status, ...runStatus(run, "error-text"));
    const ok = state.trials.filter((t) => t.value !== null);
    const best = ok.reduce((b, t) => (b === null || beats(t.value, b.value) ? t : b), null);
    const cell = (label, value, key) => h("div", { class: "panel card", dataset: { card: key } }, h("div", { class: "label", text: label }), h("div", { class: "value", text: value }));
    replace(cards,
      cell("Trials", String(state.trials.length), "trials"),
      cell("Failed or rejected", String(state.trials.length - ok.length), "failed"),
      cell(`Best ${run.objective}`, best ? best.value.toFixed(4) : "—", "best"),
      cell("Best parameters", best ? paramsText(best.params) : "—", "best-params"));
  }

  function drawCurve() {
    const points = [];
    let best = null;
    state.trials.forEach((t, i) => {
      if (t.value !== null && (best === null || beats(t.value, best))) best = t.value;
      if (best !== null) points.push([i + 1, best, t.value]);
    });
    if (!points.length) {
      replace(curve, h("p", { class: "muted", text: "No finished trials yet." }));
      return;
    }
    const W = 560;
    const H = 220;
    const pad = 36;
    const values = state.trials.map((t) => t.value).filter((v) => v !== null);
    const lo = Math.min(...values);
    const hi = Math.max(...values);
    const span = hi - lo || 1;
    const n = Math.max(2, state.trials.length);
    const x = (i) => pad + ((i - 1) / (n - 1)) * (W - 2 * pad);
    const y = (v) => H - pad + 8 - ((v - lo) / span) * (H - 2 * pad);
    const dots = points.filter((p) => p[2] !== null).map((p) => svg("circle", { cx: x(p[0]).toFixed(1), cy: y(p[2]).toFixed(1), r: 2.5, class: "trial-dot" }));
    const line = svg("polyline", { class: "best-line", points: points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ") });
    const label = (text, lx, ly, anchor = "start") => {
      const t = svg("text", { x: lx, y: ly, class: "axis", "text-anchor": anchor });
      t.textContent = text;
      return t;
    };
    replace(curve, svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `best ${state.run ? state.run.objective : ""} after each trial`, "data-points": String(points.length) },
      svg("line", { x1: pad, y1: H - pad + 8, x2: W - pad, y2: H - pad + 8, class: "axis-line" }),
      line, ...dots,
      label(hi.toFixed(3), 2, y(hi) + 4), label(lo.toFixed(3), 2, y(lo) + 4),
      label("trial 1", pad, H - 6), label(`trial ${state.trials.length}`, W - pad, H - 6, "end")));
  }

  function drawHeat() {
    const all = names();
    const x = xSel.value;
    const yName = ySel.value;
    if (all.length < 2 || !x || !yName || x === yName) {
      replace(heat, h("p", { class: "muted", text: all.length < 2 ? "The heatmap needs a study over two parameters or more." : "Choose two different parameters." }));
      return;
    }
    const xs = [...new Set(state.trials.map((t) => t.params[x]))].sort((a, b) => a - b);
    const ys = [...new Set(state.trials.map((t) => t.params[yName]))].sort((a, b) => b - a);
    // Several trials may share a cell (other parameters differ): the cell shows the best one.
    const cells = new Map();
    for (const t of state.trials) {
      if (t.value === null) continue;
      const key = `${t.params[x]}|${t.params[yName]}`;
      if (!cells.has(key) || beats(t.value, cells.get(key))) cells.set(key, t.value);
    }
    const values = [...cells.values()];
    const lo = Math.min(...values);
    const hi = Math.max(...values);
    // Green is better: for a minimised objective the scale runs the other way.
    const lower = state.run && LOWER_IS_BETTER.has(state.run.objective);
    const level = (v) => {
      if (hi === lo) return HEAT_STEPS - 1;
      const share = Math.min(HEAT_STEPS - 1, Math.floor(((v - lo) / (hi - lo)) * HEAT_STEPS));
      return lower ? HEAT_STEPS - 1 - share : share;
    };
    replace(heat, h("table", { class: "heatmap", "aria-label": `${state.run ? state.run.objective : "objective"} by ${x} and ${yName}` },
      h("thead", {}, h("tr", {}, h("th", { text: `${yName} \\ ${x}` }), xs.map((v) => h("th", { text: String(v) })))),
      h("tbody", {}, ys.map((yv) => h("tr", {}, h("th", { text: String(yv) }), xs.map((xv) => {
        const v = cells.get(`${xv}|${yv}`);
        return v === undefined
          ? h("td", { class: "heat-none", title: `${x}=${xv}, ${yName}=${yv}: no trial` })
          : h("td", { class: `heat heat-${level(v)}`, title: `${x}=${xv}, ${yName}=${yv}: ${v.toFixed(4)}`, dataset: { value: String(v) }, text: v.toFixed(2) });
      }))))));
  }

  /** Main-effect share of the variance of the objective, per parameter (0..1). */
  function drawImportance() {
    const ok = state.trials.filter((t) => t.value !== null && Number.isFinite(t.value));
    const mean = ok.reduce((a, t) => a + t.value, 0) / (ok.length || 1);
    const total = ok.reduce((a, t) => a + (t.value - mean) ** 2, 0);
    const rows = names().map((name) => {
      const groups = new Map();
      for (const t of ok) {
        const key = JSON.stringify(t.params[name]);
        const g = groups.get(key) || { n: 0, sum: 0 };
        g.n += 1;
        g.sum += t.value;
        groups.set(key, g);
      }
      const between = [...groups.values()].reduce((a, g) => a + g.n * (g.sum / g.n - mean) ** 2, 0);
      return { name, share: total > 0 ? between / total : 0 };
    }).sort((a, b) => b.share - a.share);
    replace(importance, rows.map((r) => h("tr", { dataset: { param: r.name } },
      h("td", { text: r.name }),
      h("td", {}, h("div", { class: "util" },
        h("meter", { min: "0", max: "1", value: r.share.toFixed(4), "aria-label": `${r.name} importance` }),
        h("span", { class: "muted", text: `${(r.share * 100).toFixed(1)}%` }))))));
  }

  function drawTrials() {
    replace(body, state.trials.slice().reverse().slice(0, 200).map((t, i) =>
      h("tr", { dataset: { trialId: String(t.id), status: t.status } },
        h("td", { "data-label": "#", text: String(state.trials.length - i) }),
        h("td", { "data-label": "Parameters", text: paramsText(t.params) }),
        h("td", { "data-label": "Value", class: "num", text: t.value === null ? "—" : t.value.toFixed(4) }),
        h("td", { "data-label": "Status" }, h("span", { text: t.status }), t.error ? h("span", { class: "reason", text: t.error }) : null),
        h("td", { "data-label": "Finished", text: fmtTime(t.finishedAt) }))));
  }

  function syncSelectors() {
    const all = names();
    if (xSel.options.length === all.length) return;
    const [keepX, keepY] = [xSel.value, ySel.value];
    replace(xSel, all.map((n) => h("option", { value: n, text: n })));
    replace(ySel, all.map((n) => h("option", { value: n, text: n })));
    xSel.value = keepX && all.includes(keepX) ? keepX : all[0] || "";
    ySel.value = keepY && all.includes(keepY) ? keepY : all[1] || all[0] || "";
  }

  /** Parallel coordinates: an axis per parameter and one for the objective, a line per trial. */
  function drawParallel() {
    const all = names();
    const panel = parallel.parentElement;
    if (panel) panel.hidden = all.length <= 2;
    if (all.length <= 2) return;
    const ok = state.trials.filter((t) => t.value !== null && Number.isFinite(t.value));
    if (!ok.length) {
      replace(parallel, h("p", { class: "muted", text: "No finished trials yet." }));
      return;
    }
    const axes = [...all, "value"];
    // Wide: the panel spans the page, so the drawing keeps a sane height and text size.
    const W = Math.max(960, axes.length * 200);
    const H = 300;
    const top = 28;
    const bottom = H - 24;
    const pad = 48;
    const xAt = (i) => pad + (i / (axes.length - 1)) * (W - 2 * pad);
    const read = (t, name) => (name === "value" ? t.value : Number(t.params[name]));
    const spans = axes.map((name) => {
      const values = ok.map((t) => read(t, name)).filter(Number.isFinite);
      return [Math.min(...values), Math.max(...values)];
    });
    const yAt = (i, v) => {
      const [lo, hi] = spans[i];
      return hi === lo ? (top + bottom) / 2 : bottom - ((v - lo) / (hi - lo)) * (bottom - top);
    };
    const [vlo, vhi] = spans[axes.length - 1];
    const lower = state.run && LOWER_IS_BETTER.has(state.run.objective);
    const level = (v) => {
      if (vhi === vlo) return HEAT_STEPS - 1;
      const share = Math.min(HEAT_STEPS - 1, Math.floor(((v - vlo) / (vhi - vlo)) * HEAT_STEPS));
      return lower ? HEAT_STEPS - 1 - share : share;
    };
    const label = (text, x, y, anchor = "middle") => {
      const el = svg("text", { x, y, class: "axis", "text-anchor": anchor });
      el.textContent = text;
      return el;
    };
    const fmt = (v) => (Number.isInteger(v) ? String(v) : v.toFixed(3));
    // Worse lines first, so the best ones are drawn on top.
    const order = ok.slice().sort((a, b) => level(a.value) - level(b.value));
    const lines = order.map((t) => svg("polyline", {
      class: `pc-line pc-${level(t.value)}`,
      "data-trial-id": String(t.id),
      points: axes.map((name, i) => {
        const v = read(t, name);
        return `${xAt(i).toFixed(1)},${(Number.isFinite(v) ? yAt(i, v) : bottom).toFixed(1)}`;
      }).join(" "),
    }, svg("title", {}, document.createTextNode(`${paramsText(t.params)}: ${t.value.toFixed(4)}`))));
    const axisNodes = axes.flatMap((name, i) => [
      svg("line", { class: "pc-axis", x1: xAt(i), x2: xAt(i), y1: top, y2: bottom, "data-axis": name }),
      label(name === "value" ? (state.run ? state.run.objective : "value") : name, xAt(i), 14),
      label(fmt(spans[i][1]), xAt(i) + 4, top - 2, "start"),
      label(fmt(spans[i][0]), xAt(i) + 4, bottom + 14, "start"),
    ]);
    replace(parallel, svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${ok.length} trials across ${all.join(", ")} and the objective`, "data-lines": String(lines.length) },
      ...lines, ...axisNodes));
  }

  async function loadFolds() {
    const answer = await api(`/api/optimizations/${encodeURIComponent(id)}/folds`);
    if (!answer.walkForward) {
      replace(folds, h("p", { class: "muted", text: "This study is not part of a walk-forward analysis (its folds would be stored as studies named <name>:fold<k>)." }));
      return;
    }
    replace(folds, h("table", { class: "responsive folds" },
      h("thead", {}, h("tr", {}, ["Fold", "Status", "Trials", "Best parameters (in sample)", `Best ${answer.objective}`].map((t, i) => h("th", { class: i === 2 || i === 4 ? "num" : "", text: t })))),
      h("tbody", {}, answer.folds.map((f) => h("tr", { dataset: { fold: String(f.fold), runId: f.runId, current: String(f.runId === id) } },
        h("td", { "data-label": "Fold" }, f.runId === id ? h("strong", { text: `fold ${f.fold} (this study)` }) : h("a", { href: `#/optimizations/${f.runId}`, text: `fold ${f.fold}` })),
        h("td", { "data-label": "Status" }, ...runStatus(f)),
        h("td", { "data-label": "Trials", class: "num", text: String(f.nTrials) }),
        h("td", { "data-label": "Best parameters", text: f.bestParams ? paramsText(f.bestParams) : "—" }),
        h("td", { "data-label": "Best", class: "num", text: f.bestValue === null ? "—" : Number(f.bestValue).toFixed(4) }))))));
  }

  function drawAll() {
    syncSelectors();
    drawHeader(state.run);
    drawTrials();
    drawCurve();
    drawHeat();
    drawParallel();
    drawImportance();
    root.dataset.trials = String(state.trials.length);
  }

  /** Add trials newer than the last one held (a reconnect may send some again). */
  function addTrials(items) {
    const fresh = items.filter((t) => t.id > state.last);
    if (!fresh.length) return false;
    state.trials.push(...fresh);
    state.last = fresh[fresh.length - 1].id;
    return true;
  }

  /** The first read, and the fallback's while /ws/runs is down. */
  async function load() {
    const page = await api(`/api/optimizations/${encodeURIComponent(id)}/trials?after=${state.last}`);
    addTrials(page.items);
    const run = await api(`/api/optimizations/${encodeURIComponent(id)}`);
    state.run = { ...run, space: page.space };
    drawAll();
    runSocket.watch(id, state.last);
  }

  // Trials may come in bursts: draw once per animation frame.
  function schedule() {
    if (state.frame) return;
    state.frame = requestAnimationFrame(() => {
      state.frame = 0;
      if (state.run) drawAll();
    });
  }
  const onTrials = (event) => {
    if (event.detail.runId === id && addTrials(event.detail.items)) schedule();
  };
  runSocket.addEventListener("trials", onTrials);
  state.stop = followRuns("optimization", (event) => {
    if (event.id !== id || !state.run) return;
    const ended = event.status !== state.run.status && event.status === "succeeded";
    Object.assign(state.run, { status: event.status, progress: event.progress, error: event.error, nTrials: event.nTrials, bestValue: event.bestValue });
    drawHeader(state.run);
    if (ended) loadFolds().catch(() => null);
  }, load);
  load().catch((error) => replace(sub, describe(error)));
  loadFolds().catch((error) => replace(folds, h("p", { class: "muted", text: `Could not read the folds: ${describe(error)}` })));
  return () => {
    if (state.stop) state.stop();
    cancelAnimationFrame(state.frame);
    runSocket.removeEventListener("trials", onTrials);
    runSocket.unwatch(id);
  };
}
