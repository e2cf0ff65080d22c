// Notifications: the user's channels (webhook, Telegram, Discord, Slack, email) with their
// subscriptions, a test send, pause/resume, signing-secret rotation and removal; the delivery
// log with its dead letters and their retry.
//
// A webhook's signing secret arrives in the answer that creates the channel or rotates its
// secret, and nowhere else: it is shown once in a dialog (with a copy button), kept in no
// storage and no variable of the page, and wiped from the dialog when it closes.

import { ApiError, api, describe } from "../api.js";
import { clearErrors, field, select, showErrors } from "../forms.js";
import { badge, fmtTime, h, replace, toast } from "../dom.js";

const KINDS = [
  ["webhook", "Webhook (signed JSON)"],
  ["telegram", "Telegram"],
  ["discord", "Discord"],
  ["slack", "Slack"],
  ["email", "Email"],
];
const KIND_LABEL = Object.fromEntries(KINDS.map(([k, label]) => [k, label.replace(/ \(.*\)$/, "")]));
/** The destination fields of each kind (the API's wire names). */
const DESTINATION = {
  webhook: ["url"],
  discord: ["url"],
  slack: ["url"],
  telegram: ["botToken", "chatId"],
  email: ["address"],
};
const URL_HINT = {
  webhook: "https://… (http only on hosts your operator allows)",
  discord: "https://discord.com/api/webhooks/…",
  slack: "https://hooks.slack.com/services/…",
};
const LOG_PAGE = 50;

/** The API's field name for a detail: camelCase, a list item named by its list. */
function wireField(name) {
  const camel = String(name || "").replace(/_([a-z])/g, (_, c) => c.toUpperCase());
  return camel.replace(/^(events|botIds)\.\d+$/, "$1");
}

/** Show an API error on `form`: its field details next to their fields, the rest on top. */
function showApiError(form, error) {
  if (error instanceof ApiError && error.details.length) {
    const details = error.details.map((d) => ({ ...d, field: wireField(d.field) }));
    showErrors(form, details, error.message);
  } else {
    showErrors(form, [], describe(error));
  }
}

/** The browser's IANA time zone when it has one, else UTC. */
function browserZone() {
  try {
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    return zone && /^[A-Za-z][A-Za-z0-9_+\-/]*$/.test(zone) ? zone : "UTC";
  } catch {
    return "UTC";
  }
}

/** The IANA zones the browser knows (for the time zone field's suggestions). */
function zones() {
  try {
    return typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];
  } catch {
    return [];
  }
}

/** One line saying what a channel receives. */
export function summary(channel, botNames = new Map()) {
  const parts = [];
  const events = channel.events;
  parts.push(events === null || events === undefined ? "all events" : `${events.length} event type${events.length === 1 ? "" : "s"}`);
  if (channel.minSeverity && channel.minSeverity !== "info") parts.push(`${channel.minSeverity} and above`);
  const bots = channel.botIds;
  if (bots && bots.length) parts.push(`bots ${bots.map((id) => botNames.get(id) || `#${id}`).join(", ")}`);
  else parts.push("all bots");
  if (channel.quietStart && channel.quietEnd) parts.push(`quiet ${channel.quietStart}–${channel.quietEnd} ${channel.timezone || "UTC"}`);
  if (channel.dailySummaryAt) parts.push(`daily summary ${channel.dailySummaryAt}${channel.quietStart ? "" : ` ${channel.timezone || "UTC"}`}`);
  return parts.join(" · ");
}

/**
 * A dialog asking to confirm; resolves true when confirmed.
 * @param {HTMLElement} host where the dialog lives while open
 * @param {{id: string, title: string, text: string, confirm: string, danger?: boolean}} options
 */
function confirmDialog(host, { id, title, text, confirm, danger = false }) {
  return new Promise((resolve) => {
    const dialog = h("dialog", { id, "aria-labelledby": `${id}-title` },
      h("form", { method: "dialog" },
        h("h2", { id: `${id}-title`, text: title }),
        h("p", { text }),
        h("div", { class: "actions" },
          h("button", { class: "btn", type: "submit", value: "cancel", text: "Cancel" }),
          h("button", { class: danger ? "btn btn-danger" : "btn btn-primary", type: "submit", value: "confirm", text: confirm, id: `${id}-confirm` }))));
    dialog.addEventListener("close", () => {
      const ok = dialog.returnValue === "confirm";
      dialog.remove();
      resolve(ok);
    });
    host.append(dialog);
    dialog.showModal();
  });
}

/**
 * Show a signing secret once: a dialog with the secret, a copy button and the warning that it
 * is not shown again. The secret lives only in the dialog's input and is wiped when it closes.
 */
function secretDialog(host, { title, secret, note }) {
  const value = h("input", { type: "text", readonly: true, id: "secret-value", autocomplete: "off", spellcheck: "false", "aria-label": "Signing secret" });
  value.value = secret;
  const copied = h("span", { class: "muted copy-state", role: "status" });
  const copy = h("button", { type: "button", class: "btn", id: "secret-copy", text: "Copy" });
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(value.value);
      replace(copied, "Copied.");
    } catch {
      value.select();
      const ok = document.execCommand && document.execCommand("copy");
      replace(copied, ok ? "Copied." : "Select the secret and copy it by hand.");
    }
  });
  const dialog = h("dialog", { id: "secret-dialog", "aria-labelledby": "secret-title" },
    h("form", { method: "dialog" },
      h("h2", { id: "secret-title", text: title }),
      h("p", { class: "warning-text", text: "Copy this signing secret now: it will not be shown again. Your receiver verifies every request with it (Standard Webhooks)." }),
      h("div", { class: "secret-row" }, value, copy),
      copied,
      note ? h("p", { class: "muted", text: note }) : null,
      h("div", { class: "actions" },
        h("button", { class: "btn btn-primary", type: "submit", value: "done", text: "I have saved it", id: "secret-done" }))));
  dialog.addEventListener("close", () => {
    value.value = "";
    dialog.remove();
  });
  host.append(dialog);
  dialog.showModal();
  value.select();
  return dialog;
}

/**
 * The channel form: a new channel (kind and its destination, then the subscription) or the
 * subscription of an existing one.
 * @param {{channel?: Object, catalogue: Object, bots: Array, onSaved: (answer: Object) => void, onCancel: () => void}} options
 */
function channelForm({ channel, catalogue, bots, onSaved, onCancel }) {
  const editing = !!channel;
  const name = h("input", { type: "text", maxlength: 100, autocomplete: "off", value: editing ? channel.name : "" });
  const kind = select(KINDS, "webhook");
  const url = h("input", { type: "url", maxlength: 500, autocomplete: "off", spellcheck: "false", placeholder: "https://" });
  const botToken = h("input", { type: "password", autocomplete: "new-password", spellcheck: "false" });
  const chatId = h("input", { type: "text", maxlength: 40, autocomplete: "off" });
  const address = h("input", { type: "email", maxlength: 254, autocomplete: "off" });
  const destination = {
    url: field("url", "URL", url, URL_HINT.webhook),
    botToken: field("botToken", "Bot token", botToken, "from @BotFather: <digits>:<secret>"),
    chatId: field("chatId", "Chat id", chatId, "a numeric chat id or @channelname"),
    address: field("address", "Email address", address),
  };
  function showKind() {
    const wanted = DESTINATION[kind.value] || [];
    for (const [key, wrap] of Object.entries(destination)) wrap.hidden = !wanted.includes(key);
    const hint = destination.url.querySelector(".hint");
    if (hint) replace(hint, URL_HINT[kind.value] || "");
  }
  kind.addEventListener("change", showKind);
  showKind();

  // Event types: every type (now and later ones) or the ones ticked.
  const chosen = editing && Array.isArray(channel.events) ? new Set(channel.events) : null;
  const allEvents = h("input", { type: "checkbox", id: "ev-all", checked: chosen === null });
  const eventBoxes = catalogue.events.map((e) => {
    const box = h("input", { type: "checkbox", value: e.type, dataset: { event: e.type }, checked: chosen === null || chosen.has(e.type) });
    return h("label", { class: "checkbox choice" }, box,
      h("span", {}, e.type, " ", h("span", { class: `tag sev-${e.severity}`, text: e.severity }),
        e.system ? h("span", { class: "muted", text: " system alert" }) : null));
  });
  const eventList = h("div", { class: "choices", role: "group", "aria-label": "Event types" }, eventBoxes);
  const eventInputs = () => [...eventList.querySelectorAll("input[type=checkbox]")];
  const syncEvents = () => {
    for (const box of eventInputs()) {
      if (allEvents.checked) box.checked = true;
      box.disabled = allEvents.checked;
    }
  };
  allEvents.addEventListener("change", syncEvents);
  syncEvents();

  // Bots: all of the user's bots (now and later ones) or the ones ticked.
  const chosenBots = editing && Array.isArray(channel.botIds) ? new Set(channel.botIds) : null;
  const allBots = h("input", { type: "checkbox", id: "bots-all", checked: chosenBots === null });
  const botList = h("div", { class: "choices", role: "group", "aria-label": "Bots" },
    bots.length
      ? bots.map((b) => h("label", { class: "checkbox choice" },
        h("input", { type: "checkbox", value: String(b.id), dataset: { bot: String(b.id) }, checked: chosenBots === null || chosenBots.has(b.id) }),
        h("span", { text: `${b.name} (#${b.id})` })))
      : h("p", { class: "muted", text: "You have no bots yet: the channel gets the events of every bot you add." }));
  const botInputs = () => [...botList.querySelectorAll("input[type=checkbox]")];
  const syncBots = () => {
    for (const box of botInputs()) {
      if (allBots.checked) box.checked = true;
      box.disabled = allBots.checked;
    }
  };
  allBots.addEventListener("change", syncBots);
  syncBots();

  const severity = select(catalogue.severities, editing ? channel.minSeverity : "info");
  const quietStart = h("input", { type: "time", step: 60, value: editing ? channel.quietStart || "" : "" });
  const quietEnd = h("input", { type: "time", step: 60, value: editing ? channel.quietEnd || "" : "" });
  const zoneList = h("datalist", { id: "tz-list" }, zones().map((z) => h("option", { value: z })));
  const timezone = h("input", { type: "text", maxlength: 64, list: "tz-list", autocomplete: "off", spellcheck: "false", value: editing ? channel.timezone || "UTC" : browserZone() });
  const summaryAt = h("input", { type: "time", step: 60, value: editing ? channel.dailySummaryAt || "" : "" });

  const submit = h("button", { type: "submit", class: "btn btn-primary", text: editing ? "Save" : "Add channel" });
  const formId = editing ? "subscription-form" : "channel-form";
  const form = h("form", { class: "panel channel-form", id: formId, novalidate: true, "aria-label": editing ? `Edit ${channel.name}` : "Add a channel", dataset: editing ? { channelId: String(channel.id) } : {} },
    h("h2", { text: editing ? `Edit ${channel.name}` : "New channel" }),
    h("div", { class: "form-error", role: "alert", hidden: true }),
    h("div", { class: "form-grid" },
      field("name", "Name", name, "1-100 characters, unique among your channels"),
      editing ? null : field("kind", "Kind", kind),
      editing ? null : Object.values(destination)),
    editing ? h("p", { class: "muted", text: `${KIND_LABEL[channel.kind] || channel.kind} to ${channel.target}: the destination cannot be changed (remove the channel and add a new one).` }) : null,
    h("h3", { class: "sub-head", text: "Events" }),
    h("div", { class: "field", dataset: { field: "events" } },
      h("label", { class: "checkbox", for: "ev-all" }, allEvents, "Every event type (including new ones)"),
      eventList,
      h("div", { class: "field-error", role: "alert", hidden: true })),
    h("h3", { class: "sub-head", text: "Bots" }),
    h("div", { class: "field", dataset: { field: "botIds" } },
      h("label", { class: "checkbox", for: "bots-all" }, allBots, "Every bot of yours (including new ones)"),
      botList,
      h("div", { class: "hint", text: "Events about no single bot (a kill switch, system alerts) are not filtered by bot." }),
      h("div", { class: "field-error", role: "alert", hidden: true })),
    h("h3", { class: "sub-head", text: "Severity, quiet hours and daily summary" }),
    h("div", { class: "form-grid" },
      field("minSeverity", "Minimum severity", severity),
      field("quietStart", "Quiet from", quietStart, "HH:MM local time; empty: no quiet hours"),
      field("quietEnd", "Quiet until", quietEnd, "held events go out together when it ends"),
      field("timezone", "Time zone", timezone, "IANA zone, e.g. Europe/Berlin"),
      field("dailySummaryAt", "Daily summary at", summaryAt, "HH:MM local time; empty: none")),
    zoneList,
    h("div", { class: "actions" },
      h("button", { type: "button", class: "btn", text: "Cancel", onclick: () => onCancel() }),
      submit));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors(form);
    const events = allEvents.checked ? null : eventInputs().filter((b) => b.checked).map((b) => b.value);
    const botIds = allBots.checked || !bots.length ? null : botInputs().filter((b) => b.checked).map((b) => Number(b.value));
    const errors = [];
    if (events && !events.length) errors.push({ field: "events", message: "choose at least one event type", allowed: "every type, or some of them" });
    if (botIds && !botIds.length) errors.push({ field: "botIds", message: "choose at least one bot", allowed: "every bot, or some of yours" });
    if (errors.length) {
      showErrors(form, errors, "Please correct the fields marked.");
      return;
    }
    const body = {
      name: name.value.trim(),
      events,
      botIds,
      minSeverity: severity.value,
      quietStart: quietStart.value || null,
      quietEnd: quietEnd.value || null,
      timezone: timezone.value.trim() || "UTC",
      dailySummaryAt: summaryAt.value || null,
    };
    if (!editing) {
      body.kind = kind.value;
      const values = { url: url.value.trim(), botToken: botToken.value.trim(), chatId: chatId.value.trim(), address: address.value.trim() };
      for (const key of DESTINATION[kind.value] || []) if (values[key]) body[key] = values[key];
    }
    submit.disabled = true;
    try {
      const path = editing ? `/api/notifications/channels/${channel.id}` : "/api/notifications/channels";
      const answer = await api(path, { method: editing ? "PATCH" : "POST", body });
      botToken.value = "";
      onSaved(answer);
    } catch (error) {
      showApiError(form, error);
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

/** Render the notifications page into `root`; returns a cleanup function. */
export function render(root) {
  const state = { channels: [], bots: [], catalogue: null, filter: "all", log: [], logLoaded: false, more: false, tests: new Map() };
  let closed = false;
  const newChannel = h("button", { type: "button", class: "btn btn-primary", id: "new-channel", text: "Add channel", disabled: true });
  const formSlot = h("div", { id: "channel-form-slot" });
  const channelsBody = h("tbody");
  const channelsEmpty = h("p", { class: "empty", hidden: true });
  const logBody = h("tbody");
  const logEmpty = h("p", { class: "empty", hidden: true });
  const older = h("button", { type: "button", class: "btn", id: "log-older", text: "Older", hidden: true });
  const refresh = h("button", { type: "button", class: "btn btn-sm", id: "log-refresh", text: "Refresh" });
  const filters = h("div", { class: "segmented", role: "group", "aria-label": "Delivery status" });
  for (const [value, label] of [["all", "All"], ["dead", "Dead letters"]]) {
    filters.append(h("button", {
      type: "button",
      text: label,
      id: `log-${value}`,
      dataset: { filter: value },
      "aria-pressed": String(value === state.filter),
      onclick: () => {
        state.filter = value;
        for (const b of filters.children) b.setAttribute("aria-pressed", String(b.dataset.filter === value));
        loadLog().catch(() => null);
      },
    }));
  }
  root.append(
    h("div", { class: "page-head" },
      h("div", {}, h("h1", { text: "Notifications" }), h("p", { class: "sub", text: "Where your alerts go, what each channel receives, and what was delivered." })),
      newChannel),
    formSlot,
    h("section", { class: "panel", "aria-label": "Channels" },
      h("h2", { text: "Channels" }),
      h("div", { class: "table-wrap" }, h("table", { class: "responsive channels" },
        h("thead", {}, h("tr", {}, ["Channel", "Kind", "Destination", "Receives", "State", "Last sent", "Actions"].map((t) => h("th", { text: t })))),
        channelsBody)),
      channelsEmpty),
    h("section", { class: "panel", "aria-label": "Delivery log" },
      h("div", { class: "panel-head wrap" }, h("h2", { text: "Delivery log" }), h("div", { class: "util" }, filters, refresh)),
      h("div", { class: "table-wrap" }, h("table", { class: "responsive deliveries" },
        h("thead", {}, h("tr", {}, ["Time", "Channel", "Event", "Severity", "Status", "Attempts", "Last error", ""].map((t) => h("th", { text: t })))),
        logBody)),
      logEmpty,
      h("div", { class: "pager" }, h("span"), older)),
  );

  const botNames = () => new Map(state.bots.map((b) => [b.id, b.name]));
  const channelName = (id) => {
    const found = state.channels.find((c) => c.id === id);
    return found ? found.name : `#${id}`;
  };

  function openForm(channel) {
    if (!state.catalogue) return;
    newChannel.hidden = true;
    replace(formSlot, channelForm({
      channel,
      catalogue: state.catalogue,
      bots: state.bots,
      onSaved: (answer) => {
        closeForm();
        if (channel) {
          toast(`${answer.name}: subscription saved.`, "ok");
          upsert(answer);
        } else {
          toast(`Channel ${answer.name} added.`, "ok");
          const { signingSecret, ...shown } = answer;
          upsert(shown);
          if (signingSecret) secretDialog(root, { title: `Signing secret of ${answer.name}`, secret: signingSecret });
        }
      },
      onCancel: closeForm,
    }));
    const first = formSlot.querySelector("input");
    if (first) first.focus();
    formSlot.scrollIntoView({ block: "nearest" });
  }
  function closeForm() {
    replace(formSlot);
    newChannel.hidden = false;
  }
  newChannel.addEventListener("click", () => openForm(null));

  function upsert(channel) {
    const at = state.channels.findIndex((c) => c.id === channel.id);
    if (at >= 0) state.channels[at] = channel;
    else state.channels.push(channel);
    drawChannels();
  }

  /** A row button that runs `action` with the button disabled meanwhile. */
  function action(label, attrs, run) {
    const button = h("button", { type: "button", class: "btn btn-sm", text: label, ...attrs });
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await run();
      } catch (error) {
        toast(describe(error), "error");
      } finally {
        button.disabled = false;
      }
    });
    return button;
  }

  function channelRow(c) {
    const test = state.tests.get(c.id);
    const result = test
      ? h("span", { class: `reason test-result ${test.ok ? "pos" : "neg"}`, dataset: { ok: String(test.ok) }, text: test.ok ? "Test acknowledged" : `Test failed: ${test.error || "no answer"}` })
      : null;
    const buttons = [
      action("Send test", { dataset: { action: "test" }, "aria-label": `Send a test to ${c.name}` }, async () => {
        const answer = await api(`/api/notifications/channels/${c.id}/test`, { method: "POST" });
        state.tests.set(c.id, answer);
        toast(answer.ok ? `${c.name}: the test was acknowledged.` : `${c.name}: ${answer.error}`, answer.ok ? "ok" : "error");
        drawChannels();
        loadChannels().catch(() => null); // its last sent time
      }),
      action("Edit", { dataset: { action: "edit" }, "aria-label": `Edit ${c.name}` }, async () => openForm(c)),
      action(c.enabled ? "Pause" : "Resume", { dataset: { action: c.enabled ? "pause" : "resume" }, "aria-label": `${c.enabled ? "Pause" : "Resume"} ${c.name}` }, async () => {
        upsert(await api(`/api/notifications/channels/${c.id}`, { method: "PATCH", body: { enabled: !c.enabled } }));
      }),
      c.kind === "webhook"
        ? action("Rotate secret", { dataset: { action: "rotate" }, "aria-label": `Rotate the signing secret of ${c.name}` }, async () => {
          const ok = await confirmDialog(root, {
            id: "rotate-dialog",
            title: `Rotate the signing secret of ${c.name}?`,
            text: "A new secret is made and shown once. For a grace period every request is signed with the old secret too, so your receiver can switch without losing a message.",
            confirm: "Rotate",
          });
          if (!ok || closed) return;
          const answer = await api(`/api/notifications/channels/${c.id}/rotate-secret`, { method: "POST" });
          const note = answer.previousValidUntil
            ? `The old secret still signs until ${fmtTime(answer.previousValidUntil)}.`
            : "The old secret no longer signs.";
          secretDialog(root, { title: `New signing secret of ${c.name}`, secret: answer.signingSecret, note });
        })
        : null,
      action("Remove", { class: "btn btn-sm btn-danger-ghost", dataset: { action: "remove" }, "aria-label": `Remove ${c.name}` }, async () => {
        const ok = await confirmDialog(root, {
          id: "remove-dialog",
          title: `Remove ${c.name}?`,
          text: "The channel stops receiving notifications at once and its delivery log is deleted with it. This cannot be undone.",
          confirm: "Remove",
          danger: true,
        });
        if (!ok || closed) return;
        await api(`/api/notifications/channels/${c.id}`, { method: "DELETE" });
        state.channels = state.channels.filter((x) => x.id !== c.id);
        state.tests.delete(c.id);
        toast(`Channel ${c.name} removed.`, "ok");
        drawChannels();
        const form = formSlot.querySelector(`form[data-channel-id="${c.id}"]`);
        if (form) closeForm();
        loadLog().catch(() => null);
      }),
    ];
    return h("tr", { dataset: { channelId: String(c.id), kind: c.kind, enabled: String(c.enabled) } },
      h("td", { "data-label": "Channel", class: "name" }, h("strong", { text: c.name }), result),
      h("td", { "data-label": "Kind", text: KIND_LABEL[c.kind] || c.kind }),
      h("td", { "data-label": "Destination", class: "target", text: c.target }),
      h("td", { "data-label": "Receives", class: "subscription", text: summary(c, botNames()) }),
      h("td", { "data-label": "State", class: "state" }, badge(c.enabled ? "enabled" : "paused")),
      h("td", { "data-label": "Last sent", class: "last-sent", text: c.lastSentAt ? fmtTime(c.lastSentAt) : "never" }),
      h("td", { "data-label": "Actions" }, h("div", { class: "row-actions" }, buttons)));
  }

  function drawChannels() {
    replace(channelsBody, state.channels.map(channelRow));
    channelsEmpty.hidden = state.channels.length > 0;
    replace(channelsEmpty, "No channels yet: add one to hear about fills, errors and the kill switch without the dashboard open.");
  }

  function logRow(n) {
    const retry = n.status === "dead"
      ? action("Retry", { class: "btn btn-sm btn-primary", dataset: { action: "retry" }, "aria-label": `Send notification ${n.id} again` }, async () => {
        const answer = await api(`/api/notifications/${n.id}/retry`, { method: "POST" });
        toast(`Queued again (${answer.requeued} notification${answer.requeued === 1 ? "" : "s"}).`, "ok");
        await loadLog();
      })
      : null;
    return h("tr", { dataset: { notificationId: String(n.id), status: n.status } },
      h("td", { "data-label": "Time", text: fmtTime(n.createdAt) }),
      h("td", { "data-label": "Channel", text: channelName(n.channelId) }),
      h("td", { "data-label": "Event" }, h("span", { text: n.eventType }), n.title ? h("span", { class: "reason", text: n.title }) : null),
      h("td", { "data-label": "Severity" }, h("span", { class: `tag sev-${n.severity}`, text: n.severity })),
      h("td", { "data-label": "Status", class: "status" }, badge(n.status), n.sentAt ? h("span", { class: "reason", text: fmtTime(n.sentAt) }) : null),
      h("td", { "data-label": "Attempts", class: "num", text: String(n.attempts) }),
      h("td", { "data-label": "Last error", class: "last-error" }, n.lastError ? h("span", { class: "reason", text: n.lastError }) : "—"),
      h("td", { "data-label": "Action" }, retry));
  }

  function drawLog() {
    replace(logBody, state.log.map(logRow));
    logEmpty.hidden = state.log.length > 0;
    replace(logEmpty, state.filter === "dead" ? "No dead letters: everything was delivered or is still being tried." : "Nothing sent yet.");
    older.hidden = !state.more;
  }

  async function loadLog(before) {
    const query = new URLSearchParams({ limit: String(LOG_PAGE) });
    if (state.filter === "dead") query.set("status", "dead");
    if (before) query.set("before", String(before));
    try {
      const rows = await api(`/api/notifications?${query}`);
      if (closed) return;
      state.log = before ? [...state.log, ...rows] : rows;
      state.more = rows.length === LOG_PAGE;
      state.logLoaded = true;
      drawLog();
    } catch (error) {
      replace(logEmpty, `Could not load the delivery log: ${describe(error)}`);
      logEmpty.hidden = false;
    }
  }
  older.addEventListener("click", () => {
    const last = state.log[state.log.length - 1];
    if (last) loadLog(last.id).catch(() => null);
  });
  refresh.addEventListener("click", () => {
    loadChannels().catch(() => null);
    loadLog().catch(() => null);
  });

  async function loadChannels() {
    const channels = await api("/api/notifications/channels");
    if (closed) return;
    state.channels = channels;
    drawChannels();
    if (state.logLoaded) drawLog(); // the log names its channels
  }

  async function load() {
    try {
      const [catalogue, bots] = await Promise.all([
        api("/api/notifications/events"),
        api("/api/bots?limit=500").then((page) => page.items).catch(() => []),
        loadChannels(),
      ]);
      if (closed) return;
      state.catalogue = catalogue;
      state.bots = bots;
      newChannel.disabled = false;
      drawChannels();
    } catch (error) {
      replace(channelsEmpty, `Could not load your channels: ${describe(error)}`);
      channelsEmpty.hidden = false;
    }
  }

  load();
  loadLog().catch(() => null);
  return () => {
    closed = true;
    // Nothing of a secret outlives the page: wipe it now and close any open dialog.
    const secret = root.querySelector("#secret-value");
    if (secret) secret.value = "";
    for (const dialog of root.querySelectorAll("dialog")) if (dialog.open) dialog.close();
  };
}
