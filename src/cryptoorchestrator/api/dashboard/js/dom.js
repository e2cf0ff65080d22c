// Small DOM helpers. Text always goes in through textContent (never innerHTML), so data from
// the API can never become markup; styles come from classes (the CSP forbids inline styles).

/**
 * Create an element.
 * @param {string} tag
 * @param {Object} [attrs] class, text, dataset, on<Event> handlers, other attributes
 * @param {...(Node|string|null|undefined|false)} children
 * @returns {HTMLElement}
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = String(value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "style") throw new Error("inline styles are not allowed (CSP)");
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace the children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const money = new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const amount = new Intl.NumberFormat(undefined, { maximumFractionDigits: 8 });

/** Format a decimal string or number as money (2 decimals); "—" for null. */
export function fmtMoney(value) {
  if (value === null || value === undefined || value === "") return "—";
  const n = Number(value);
  return Number.isFinite(n) ? money.format(n) : String(value);
}

/** Format an amount with up to 8 decimals; "—" for null. */
export function fmtAmount(value) {
  if (value === null || value === undefined || value === "") return "—";
  const n = Number(value);
  return Number.isFinite(n) ? amount.format(n) : String(value);
}

/** Format a signed P&L with its sign and a class for its colour. */
export function pnl(value) {
  const n = Number(value);
  const cls = !Number.isFinite(n) || n === 0 ? "num" : n > 0 ? "num pos" : "num neg";
  const text = Number.isFinite(n) && n > 0 ? `+${fmtMoney(value)}` : fmtMoney(value);
  return { cls, text };
}

/** Format a time (ISO string or ms) in the user's locale. */
export function fmtTime(value) {
  if (value === null || value === undefined) return "—";
  const date = typeof value === "number" ? new Date(value) : new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

/** A status badge: Starting / Running / Stopped / Error (or a health status). */
export function badge(status, extraClass = "") {
  const key = String(status || "unknown").toLowerCase().replace(/[^a-z]+/g, "-");
  return h("span", { class: `badge badge-${key} ${extraClass}`.trim(), text: status || "unknown" });
}

const toasts = () => document.getElementById("toasts");

/** Show a short message in the corner for a few seconds. */
export function toast(message, kind = "info") {
  const box = toasts();
  if (!box) return;
  const item = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status", text: message });
  box.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 4000);
}
