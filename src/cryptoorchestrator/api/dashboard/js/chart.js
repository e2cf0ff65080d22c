// TradingView Lightweight Charts, served by the head node from the npm package that
// scripts/bootstrap.sh installed. Without it (no Node.js at set-up) the page says why instead.

import { getPublic } from "./api.js";
import { cssVar } from "./theme.js";

let library = null;

/** The chart library's module; rejects with a readable reason when it is not installed. */
export async function loadChartLibrary() {
  if (library) return library;
  const config = await getPublic("/dashboard/config.json");
  const vendor = config.lightweightCharts;
  if (!vendor || !vendor.url) throw new Error(config.reason || "the chart library is not installed");
  library = await import(vendor.url);
  return library;
}

/** Chart options that follow the current theme. */
export function themeOptions() {
  const text = cssVar("--muted");
  const grid = cssVar("--border");
  return {
    // The library's own logo injects a <style> element, which the page's CSP (style-src
    // 'self') refuses: the attribution its license asks for is a link beside the chart and
    // the notice in the footer instead, as its README allows.
    layout: { background: { type: "solid", color: cssVar("--panel") }, textColor: text, attributionLogo: false },
    grid: { vertLines: { color: grid }, horzLines: { color: grid } },
    rightPriceScale: { borderColor: grid },
    // A small minimum bar spacing lets a long history fit the width when asked to.
    timeScale: { borderColor: grid, timeVisible: true, secondsVisible: false, minBarSpacing: 0.1 },
    crosshair: { mode: 0 },
  };
}

/** Colours of up/down candles and markers from the theme. */
export function palette() {
  return { up: cssVar("--good"), down: cssVar("--bad"), line: cssVar("--accent") };
}
