// Risk: the kill switch (with a confirmation) and its release, the limits, the risk events.

import { api, apiAllowing503, canTrade, currentUser, describe } from "../api.js";
import { fmtTime, h, replace, toast } from "../dom.js";
import { botSocket } from "../ws.js";

/** Whose kill switches are engaged, from detailed health as this user may see it. */
function switchState(health) {
  const risk = (health && health.components && health.components.risk_actor) || {};
  const ks = risk.kill_switch;
  if (!ks || typeof ks !== "object" || "error" in ks) return { known: false, global: false, user: false };
  const me = currentUser();
  const user = typeof ks.user === "boolean" ? ks.user : Array.isArray(ks.user_ids) && ks.user_ids.includes(me.id);
  return { known: true, global: !!ks.global, user: !!user };
}

/** Render the risk page into `root`; returns a cleanup function. */
export function render(root) {
  const admin = currentUser().role === "admin";
  const stateText = h("div", { class: "state", id: "kill-state", text: "…" });
  const stateNote = h("div", { class: "muted" });
  const actions = h("div", { class: "session" });
  const limitsBody = h("tbody");
  const eventsBody = h("tbody");
  const eventsEmpty = h("p", { class: "empty", hidden: true, text: "No risk events." });
  const limitsEmpty = h("p", { class: "empty", hidden: true, text: "No limits stored: the defaults apply." });

  const flatten = h("input", { type: "checkbox", id: "kill-flatten", name: "flatten" });
  const scope = admin
    ? h("select", { id: "kill-scope", name: "scope" },
        h("option", { value: "user", text: "My bots" }),
        h("option", { value: "global", text: "Every bot of every user (global)" }))
    : null;
  const confirm = h("button", { class: "btn btn-danger", type: "submit", value: "engage", text: "Engage kill switch", id: "kill-confirm" });
  const dialog = h("dialog", { id: "kill-dialog", "aria-labelledby": "kill-title" },
    h("form", { method: "dialog" },
      h("h2", { id: "kill-title", text: "Engage the kill switch?" }),
      h("p", { text: "Open orders are cancelled and your bots stop at once. Every new order is refused until you release the switch; bots do not restart by themselves." }),
      scope ? h("div", { class: "field" }, h("label", { for: "kill-scope", text: "Scope" }), scope) : null,
      h("label", { class: "checkbox", for: "kill-flatten" }, flatten, "Also close the open positions at market (flatten)"),
      h("div", { class: "actions" },
        h("button", { class: "btn", type: "submit", value: "cancel", text: "Cancel", id: "kill-cancel" }),
        confirm)));

  root.append(
    h("div", { class: "page-head" }, h("div", {}, h("h1", { text: "Risk" }), h("p", { class: "sub", text: "Kill switch, limits and risk events of your bots." }))),
    h("section", { class: "panel kill", "aria-label": "Kill switch" },
      h("div", {}, h("div", { class: "muted", text: "Kill switch" }), stateText, stateNote),
      actions),
    h("div", { class: "grid two-col" },
      h("section", { class: "panel" }, h("h2", { text: "Limits" }),
        h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, h("tr", {}, h("th", { text: "Scope" }), h("th", { text: "Limit" }), h("th", { class: "num", text: "Value" }))), limitsBody)), limitsEmpty),
      h("section", { class: "panel" }, h("h2", { text: "Risk events" }),
        h("div", { class: "table-wrap" }, h("table", { class: "events responsive" }, h("thead", {}, h("tr", {}, h("th", { text: "Time" }), h("th", { text: "Bot" }), h("th", { text: "Kind" }), h("th", { text: "Message" }))), eventsBody)), eventsEmpty)),
    dialog,
  );

  function drawSwitch(state) {
    stateText.className = "state";
    if (!state.known) {
      replace(stateText, "Unknown");
      replace(stateNote, "The risk actor did not report its kill switches (is the cluster up?).");
    } else if (state.global || state.user) {
      stateText.classList.add("engaged");
      replace(stateText, state.global && state.user ? "Engaged (global and yours)" : state.global ? "Engaged (global)" : "Engaged");
      replace(stateNote, "New orders are refused; bots it covers cannot start.");
    } else {
      stateText.classList.add("released");
      replace(stateText, "Released");
      replace(stateNote, "Orders are checked against the limits as usual.");
    }
    stateText.dataset.engaged = String(state.global || state.user);
    const buttons = [];
    if (canTrade()) {
      const engage = h("button", { class: "btn btn-danger", type: "button", text: "Engage kill switch", id: "kill-open" });
      engage.addEventListener("click", () => {
        flatten.checked = false;
        if (scope) scope.value = "user";
        dialog.showModal();
      });
      buttons.push(engage);
      if (!state.known || state.user) buttons.push(releaseButton("user", "Release"));
      if (admin && (!state.known || state.global)) buttons.push(releaseButton("global", "Release global"));
    }
    replace(actions, buttons);
  }

  function releaseButton(which, label) {
    const button = h("button", { class: "btn", type: "button", text: label, id: `kill-release-${which}` });
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await api(`/api/risk/kill-switch?scope=${which}`, { method: "DELETE" });
        toast("Kill switch released. Start your bots again when you are ready.", "ok");
        await load();
      } catch (error) {
        toast(describe(error), "error");
        button.disabled = false;
      }
    });
    return button;
  }

  let seenKill = false;
  let followUp = null;
  let closed = false;

  dialog.addEventListener("close", async () => {
    if (dialog.returnValue !== "engage") return;
    dialog.returnValue = "";
    const body = { flatten: flatten.checked };
    if (scope) body.scope = scope.value;
    try {
      const result = await api("/api/risk/kill-switch", { method: "POST", body });
      const stopped = (result && result.bots_stopped) || [];
      toast(`Kill switch engaged: ${stopped.length} bot(s) stopped.`, "ok");
    } catch (error) {
      toast(describe(error), "error");
    }
    await load();
    // The risk actor records the switch's event as it halts the bots, which may finish after
    // the answer: look again a few times (backing off) until the event is there.
    for (let wait = 500; wait <= 8000 && !seenKill; wait *= 2) {
      await new Promise((resolve) => { followUp = setTimeout(resolve, wait); });
      if (closed) return;
      await load();
    }
  });

  async function load() {
    try {
      const [health, limits, events] = await Promise.all([
        apiAllowing503("/api/health/detailed"),
        api("/api/risk/limits"),
        api("/api/risk/events?limit=50"),
      ]);
      drawSwitch(switchState(health));
      replace(limitsBody, limits.map((l) => h("tr", {},
        h("td", { text: l.scope }), h("td", { text: l.name }), h("td", { class: "num", text: l.value }))));
      limitsEmpty.hidden = limits.length > 0;
      replace(eventsBody, events.map((e) => h("tr", { dataset: { kind: e.kind } },
        h("td", { "data-label": "Time", text: fmtTime(e.createdAt) }),
        h("td", { "data-label": "Bot" }, e.botId ? h("a", { href: `#/bots/${e.botId}`, text: `#${e.botId}` }) : "—"),
        h("td", { "data-label": "Kind", text: e.limitName ? `${e.kind} (${e.limitName})` : e.kind }),
        h("td", { "data-label": "Message", text: e.message || "" }))));
      eventsEmpty.hidden = events.length > 0;
      seenKill = events.some((e) => e.kind === "kill_switch");
    } catch (error) {
      replace(stateNote, `Could not load the risk state: ${describe(error)}`);
    }
  }

  // Live: a bot's status change or risk event (pushed on /ws/bots) reloads the page's state.
  let pending = null;
  const onBot = () => {
    clearTimeout(pending);
    pending = setTimeout(load, 300);
  };
  botSocket.addEventListener("bot", onBot);
  load();
  return () => {
    closed = true;
    clearTimeout(pending);
    clearTimeout(followUp);
    botSocket.removeEventListener("bot", onBot);
    if (dialog.open) dialog.close();
  };
}
