// Form helpers shared by the create-bot, backtest and optimization forms: labelled fields with
// their allowed ranges shown, client checks that mirror the API's, and the API's 422 details
// placed next to the field they name.

import { ApiError, api, describe } from "./api.js";
import { h, replace } from "./dom.js";

let strategies = null;

/** The strategies the API accepts, with their declared Params (read once per page load). */
export async function loadStrategies() {
  if (!strategies) strategies = await api("/api/strategies");
  return strategies;
}

/**
 * POST `body` to `url` with `submit` disabled meanwhile and hand the answer to `onDone`; the
 * API's field errors go next to their fields in `form`, anything else above them.
 */
export async function submitForm(form, submit, url, body, onDone) {
  submit.disabled = true;
  try {
    onDone(await api(url, { method: "POST", body }));
  } catch (error) {
    if (error instanceof ApiError && error.details.length) showErrors(form, error.details, error.message);
    else showErrors(form, [], describe(error));
  } finally {
    submit.disabled = false;
  }
}

/**
 * Fill `select` with the strategies of `list` (labelled by `label`) and choose sma_cross, or the
 * first one; returns the chosen name.
 */
export function fillStrategies(select, list, label = (s) => s.name) {
  replace(select, list.map((s) => h("option", { value: s.name, text: label(s) })));
  select.value = list.some((s) => s.name === "sma_cross") ? "sma_cross" : (list[0] && list[0].name) || "";
  return select.value;
}

/**
 * A labelled field: `<div class="field" data-field=NAME>` with a hint and an error slot.
 * @param {string} name the API's field name (camelCase, "params.fast")
 * @param {string} label
 * @param {HTMLElement} control
 * @param {string} [hint]
 */
export function field(name, label, control, hint) {
  const id = `f-${name.replace(/[^a-zA-Z0-9]+/g, "-")}`;
  control.id = id;
  control.name = name;
  return h("div", { class: "field", dataset: { field: name } },
    h("label", { for: id, text: label }),
    control,
    hint ? h("div", { class: "hint", text: hint }) : null,
    h("div", { class: "field-error", role: "alert", hidden: true }));
}

/** A number input with its range as attributes (the page checks it too, see `checkRange`). */
export function numberInput(value, { min, max, step = "any", placeholder } = {}) {
  return h("input", { type: "number", inputmode: "decimal", value: value ?? "", min, max, step, placeholder });
}

/** A select of `options` ([value, label] pairs or plain values). */
export function select(options, value) {
  const el = h("select", {}, options.map((o) => {
    const [v, label] = Array.isArray(o) ? o : [o, o];
    return h("option", { value: String(v), text: String(label) });
  }));
  if (value !== undefined && value !== null) el.value = String(value);
  return el;
}

/** Clear every error shown in `form`. */
export function clearErrors(form) {
  for (const slot of form.querySelectorAll(".field-error")) {
    slot.hidden = true;
    replace(slot);
  }
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  const top = form.querySelector(".form-error");
  if (top) {
    top.hidden = true;
    replace(top);
  }
}

/**
 * Show errors ({field, message, allowed}) next to their fields; the rest at the form's top.
 * @returns {number} how many were placed next to a field
 */
export function showErrors(form, details, fallback) {
  let placed = 0;
  const rest = [];
  for (const d of details) {
    const wrap = form.querySelector(`.field[data-field="${CSS.escape(d.field)}"]`);
    const text = d.allowed ? `${d.message} (allowed: ${d.allowed})` : d.message;
    if (!wrap) {
      rest.push(`${d.field}: ${text}`);
      continue;
    }
    const slot = wrap.querySelector(".field-error");
    slot.append(h("div", { text }));
    slot.hidden = false;
    const control = wrap.querySelector("input, select, textarea");
    if (control) control.setAttribute("aria-invalid", "true");
    placed += 1;
  }
  const top = form.querySelector(".form-error");
  if (top && (rest.length || (!placed && fallback))) {
    replace(top, [...rest, ...(placed ? [] : [fallback])].filter(Boolean).join(" · "));
    top.hidden = false;
  }
  const first = form.querySelector("[aria-invalid]");
  if (first) first.focus();
  return placed;
}

/**
 * Check a number against an inclusive range, as the API does; returns an error or null.
 * @param {string} fieldName
 * @param {string} raw the input's text
 * @param {{min?: number, max?: number, integer?: boolean, required?: boolean, exclusiveMin?: boolean}} rule
 */
export function checkRange(fieldName, raw, rule) {
  const text = String(raw ?? "").trim();
  const words = rule.integer ? "an integer" : "a number";
  const allowed = rule.exclusiveMin
    ? `greater than ${rule.min}`
    : `${rule.integer ? "int" : "number"} in [${rule.min}, ${rule.max}]`;
  if (!text) return rule.required ? { field: fieldName, message: "required", allowed } : null;
  const n = Number(text);
  if (!Number.isFinite(n) || (rule.integer && !Number.isInteger(n))) {
    return { field: fieldName, message: `not ${words}: ${text}`, allowed };
  }
  const low = rule.min !== undefined && rule.min !== null && (rule.exclusiveMin ? n <= rule.min : n < rule.min);
  const high = rule.max !== undefined && rule.max !== null && n > rule.max;
  if (low || high) return { field: fieldName, message: `${text} is out of range`, allowed };
  return null;
}

/** The "allowed" words of a declared Param, as the API writes them. */
export function paramRange(p) {
  if (p.type === "choice") return (p.choices || []).map((c) => JSON.stringify(c)).join(", ");
  if (p.type === "bool") return "true, false";
  return `${p.type} in [${p.low}, ${p.high}]`;
}

/**
 * Inputs for a strategy's declared Params.
 * @param {Array} params the strategy's Params from the API
 * @param {Object} [values] initial values (defaults otherwise)
 * @returns {{nodes: HTMLElement[], read: () => {values: Object, errors: Array}}}
 */
export function paramFields(params, values = {}) {
  const controls = new Map();
  const nodes = params.map((p) => {
    const value = values[p.name] ?? p.default;
    let control;
    if (p.type === "bool") control = select([["true", "true"], ["false", "false"]], String(!!value));
    else if (p.type === "choice") {
      control = select((p.choices || []).map((c, i) => [String(i), String(c)]));
      control.value = String(Math.max(0, (p.choices || []).findIndex((c) => c === value)));
    } else {
      control = numberInput(value, { min: p.low, max: p.high, step: p.type === "int" ? 1 : "any" });
    }
    controls.set(p.name, control);
    return field(`params.${p.name}`, p.name, control, `${p.doc ? `${p.doc} · ` : ""}${paramRange(p)}`);
  });
  function read() {
    const out = {};
    const errors = [];
    for (const p of params) {
      const control = controls.get(p.name);
      if (p.type === "bool") out[p.name] = control.value === "true";
      else if (p.type === "choice") out[p.name] = p.choices[Number(control.value)];
      else {
        const error = checkRange(`params.${p.name}`, control.value, { min: p.low, max: p.high, integer: p.type === "int", required: true });
        if (error) errors.push(error);
        else out[p.name] = Number(control.value);
      }
    }
    return { values: out, errors };
  }
  return { nodes, read };
}

/** A date input's value (YYYY-MM-DD) as an ISO time at UTC midnight, or undefined. */
export function isoDate(value) {
  return value ? `${value}T00:00:00Z` : undefined;
}

/** Download `text` as a file named `name` (a Blob URL: nothing leaves the page). */
export function download(name, text, type = "text/csv") {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = h("a", { href: url, download: name, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
