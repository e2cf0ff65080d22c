// The create-bot form (traders and admins): the API's bot fields, the strategy's declared Params,
// the same ranges as the API shown and checked, and the API's 422 details next to their field.

import { api, describe } from "../api.js";
import { checkRange, clearErrors, field, fillStrategies, loadStrategies, numberInput, paramFields, select, showErrors, submitForm } from "../forms.js";
import { h, replace } from "../dom.js";

/** Ranges of the bot's money fields (percent), as the API's BotCreate declares them. */
const RANGES = {
  riskPerTrade: { min: 0.1, max: 5.0, label: "Risk per trade (% of equity)", value: "1", required: true },
  maxPositionSize: { min: 1, max: 100, label: "Max position (% of equity)", value: "10", required: true },
  stopLoss: { min: 0.01, max: 100, label: "Stop loss (%, optional)" },
  takeProfit: { min: 0.01, max: 1000, label: "Take profit (%, optional)" },
  trailingStop: { min: 0.01, max: 100, label: "Trailing stop (%, optional)" },
};
const TIMEFRAMES = ["1m", "5m", "15m", "30m", "1h", "4h", "1d"];

/**
 * Build the form; `onCreated(bot)` runs after the API created the bot.
 * @param {(bot: Object) => void} onCreated
 * @param {() => void} onCancel
 * @returns {HTMLElement}
 */
export function createBotForm(onCreated, onCancel) {
  const name = h("input", { type: "text", maxlength: 100, required: true, autocomplete: "off" });
  const pair = h("input", { type: "text", value: "BTC/USDT", maxlength: 40 });
  const strategy = select([]);
  const timeframe = select(TIMEFRAMES, "1h");
  const mode = select([["paper", "paper (simulated fills)"], ["live", "live (real orders)"]], "paper");
  const balance = numberInput("", { min: 0, placeholder: "10000" });
  const account = select([["", "none (paper trading)"]], "");
  const money = {};
  for (const [key, rule] of Object.entries(RANGES)) {
    money[key] = numberInput(rule.value ?? "", { min: rule.min, max: rule.max, step: "any" });
  }
  const paramsBox = h("div", { class: "form-grid params" });
  let params = paramFields([]);
  let catalogue = [];
  const submit = h("button", { type: "submit", class: "btn btn-primary", text: "Create bot" });
  const form = h("form", { class: "panel bot-form", id: "bot-form", novalidate: true, "aria-label": "Create a bot" },
    h("h2", { text: "New bot" }),
    h("div", { class: "form-error", role: "alert", hidden: true }),
    h("div", { class: "form-grid" },
      field("name", "Name", name, "1-100 characters"),
      field("tradingPair", "Pair", pair, "BASE/QUOTE, e.g. BTC/USDT"),
      field("strategy", "Strategy", strategy),
      field("timeframe", "Timeframe", timeframe),
      field("mode", "Mode", mode),
      field("exchangeAccountId", "Exchange account", account, "required for live bots"),
      ...Object.entries(RANGES).map(([key, rule]) => field(key, rule.label, money[key], `${rule.min}-${rule.max}`)),
      field("startingBalance", "Starting balance (optional)", balance, "in the quote currency, greater than 0")),
    h("h3", { class: "sub-head", text: "Strategy parameters" }),
    paramsBox,
    h("div", { class: "actions" },
      h("button", { type: "button", class: "btn", text: "Cancel", onclick: () => onCancel() }),
      submit));

  function drawParams() {
    const chosen = catalogue.find((s) => s.name === strategy.value);
    params = paramFields(chosen ? chosen.params : []);
    replace(paramsBox, params.nodes.length ? params.nodes : h("p", { class: "muted", text: "This strategy has no parameters." }));
  }
  strategy.addEventListener("change", drawParams);

  api("/api/integrations/exchanges/accounts").then((accounts) => {
    for (const a of accounts) account.append(h("option", { value: String(a.id), text: `${a.name} (${a.exchange}, ${a.mode})` }));
  }).catch(() => null); // without accounts the form still creates paper bots
  loadStrategies().then((list) => {
    catalogue = list;
    fillStrategies(strategy, list, (s) => (s.summary ? `${s.name} — ${s.summary}` : s.name));
    drawParams();
  }).catch((error) => showErrors(form, [], `Could not read the strategies: ${describe(error)}`));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const errors = [];
    if (!name.value.trim()) errors.push({ field: "name", message: "required", allowed: "1-100 characters" });
    if (pair.value.trim().length < 3) errors.push({ field: "tradingPair", message: "too short", allowed: "3-40 characters" });
    const body = { name: name.value.trim(), tradingPair: pair.value.trim(), strategy: strategy.value, timeframe: timeframe.value, mode: mode.value };
    if (account.value) body.exchangeAccountId = Number(account.value);
    else if (mode.value === "live") errors.push({ field: "exchangeAccountId", message: "live bots need an exchange account", allowed: "one of your exchange accounts" });
    for (const [key, rule] of Object.entries(RANGES)) {
      const error = checkRange(key, money[key].value, rule);
      if (error) errors.push(error);
      else if (money[key].value.trim()) body[key] = money[key].value.trim();
    }
    const balanceError = checkRange("startingBalance", balance.value, { min: 0, exclusiveMin: true });
    if (balanceError) errors.push(balanceError);
    else if (balance.value.trim()) body.startingBalance = balance.value.trim();
    const read = params.read();
    errors.push(...read.errors);
    body.params = read.values;
    if (errors.length) {
      showErrors(form, errors, "Please correct the fields marked.");
      return;
    }
    await submitForm(form, submit, "/api/bots", body, onCreated);
  });
  return form;
}
