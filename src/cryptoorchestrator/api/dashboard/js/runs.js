// What the backtests and optimizations pages share: a run's status cell, its parameters, the
// live list of runs, and following runs live over /ws/runs, with a slow read only while that socket is down.

import { api, describe } from "./api.js";
import { badge, h, replace } from "./dom.js";
import { runSocket } from "./ws.js";

/** How often a page reads its runs itself, only while /ws/runs is not connected. */
export const FALLBACK_MS = 15000;

/** Whether a run's status means it may still change (the server's ACTIVE_RUN_STATUSES). */
export function active(status) {
  return status === "queued" || status === "running" || status === "pending" || status === "cancelling";
}

/** A run's badge, its progress bar while active, and its error: nodes for a cell or a header. */
export function runStatus(run, errorClass = "reason") {
  return [
    badge(run.status),
    active(run.status) ? h("progress", { max: "1", value: String(run.progress || 0), "aria-label": "progress" }) : null,
    run.error ? h("span", { class: errorClass, text: run.error }) : null,
  ];
}

/** `k=v, k=v` of a run's parameters. */
export function paramsText(params) {
  return Object.entries(params || {}).map(([k, v]) => `${k}=${v}`).join(", ");
}

/**
 * Follow runs of `kind` ("backtest" | "optimization"): `onRun(event)` for each change pushed on
 * /ws/runs; `reload()` once when the socket (re)connects (what changed meanwhile was not pushed)
 * and every FALLBACK_MS while it is down. Returns a function that stops following.
 */
export function followRuns(kind, onRun, reload) {
  let timer = null;
  const read = () => Promise.resolve().then(reload).catch(() => null);
  const onEvent = (event) => {
    if (event.detail.kind === kind) onRun(event.detail);
  };
  const onState = () => {
    if (runSocket.state === "on") {
      clearInterval(timer);
      timer = null;
    } else if (timer === null) {
      timer = setInterval(read, FALLBACK_MS);
    }
  };
  const onConnected = () => read();
  runSocket.addEventListener("run", onEvent);
  runSocket.addEventListener("state", onState);
  runSocket.addEventListener("connected", onConnected);
  onState();
  return () => {
    clearInterval(timer);
    runSocket.removeEventListener("run", onEvent);
    runSocket.removeEventListener("state", onState);
    runSocket.removeEventListener("connected", onConnected);
  };
}

/**
 * The list of runs read from `url` into `body` (a row each, by `row`), kept live: a pushed
 * change updates its row; a run the list lacks (just submitted, or from another tab) or one
 * that just succeeded (its metrics, its best parameters) reads the list again.
 * @returns {{load: () => Promise<void>, stop: () => void}}
 */
export function liveRunList(kind, url, body, empty, row, what) {
  let runs = [];
  const draw = () => {
    replace(body, runs.map(row));
    empty.hidden = runs.length > 0;
  };
  const load = async () => {
    runs = await api(url);
    draw();
  };
  const stop = followRuns(kind, (event) => {
    const run = runs.find((r) => r.id === event.id);
    if (!run || (event.status === "succeeded" && run.status !== "succeeded")) {
      load().catch(() => null);
      return;
    }
    const { type: _type, kind: _kind, ...changes } = event;
    Object.assign(run, changes);
    draw();
  }, load);
  load().catch((error) => {
    replace(empty, `Could not load the ${what}: ${describe(error)}`);
    empty.hidden = false;
  });
  return { load, stop };
}
