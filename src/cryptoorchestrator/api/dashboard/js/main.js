// The dashboard's shell: session, top bar, hash routes (#/overview, #/bots/7, #/trades,
// #/backtests[/<id>|/compare/<id>,<id>], #/optimizations[/<id>], #/risk, #/notifications,
// #/health).

import { currentUser, logout, resume, session } from "./api.js";
import { h, replace, toast } from "./dom.js";
import { initTheme, toggleTheme } from "./theme.js";
import { botSocket, runSocket } from "./ws.js";
import * as loginView from "./views/login.js";
import * as overviewView from "./views/overview.js";
import * as botView from "./views/bot.js";
import * as riskView from "./views/risk.js";
import * as healthView from "./views/health.js";
import * as tradesView from "./views/trades.js";
import * as backtestsView from "./views/backtests.js";
import * as optimizationsView from "./views/optimizations.js";
import * as notificationsView from "./views/notifications.js";

const ROUTES = [
  { pattern: /^#\/overview$/, name: "overview", view: overviewView },
  { pattern: /^#\/bots\/(\d{1,10})$/, name: "overview", view: botView },
  { pattern: /^#\/trades(?:\?[a-z0-9=&]*)?$/, name: "trades", view: tradesView },
  { pattern: /^#\/backtests(?:\/([0-9a-f-]{36}))?$/, name: "backtests", view: backtestsView },
  { pattern: /^#\/backtests\/compare\/((?:[0-9a-f-]{36},)+[0-9a-f-]{36})$/, name: "backtests", view: { render: (root, [ids]) => backtestsView.render(root, [null, ids]) } },
  { pattern: /^#\/optimizations(?:\/([0-9a-f-]{36}))?$/, name: "optimizations", view: optimizationsView },
  { pattern: /^#\/risk$/, name: "risk", view: riskView },
  { pattern: /^#\/notifications$/, name: "notifications", view: notificationsView },
  { pattern: /^#\/health$/, name: "health", view: healthView },
];

const app = document.getElementById("app");
const topbar = document.getElementById("topbar");
let cleanup = null;
let booted = false;

function showShell(user) {
  topbar.hidden = !user;
  const who = document.getElementById("who");
  if (user) {
    replace(who, user.email, h("span", { class: "role", text: user.role }));
  } else {
    replace(who);
  }
}

function render() {
  if (typeof cleanup === "function") cleanup();
  cleanup = null;
  const user = currentUser();
  showShell(user);
  app.replaceChildren();
  if (!user) {
    cleanup = loginView.render(app);
    return;
  }
  let route = ROUTES.find((r) => r.pattern.test(location.hash));
  if (!route) {
    if (location.hash !== "#/overview") {
      location.replace("#/overview");
      return;
    }
    route = ROUTES[0];
  }
  const match = location.hash.match(route.pattern);
  for (const link of document.querySelectorAll(".nav a")) {
    if (link.dataset.route === route.name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  cleanup = route.view.render(app, match.slice(1));
}

function onSession(event) {
  if (currentUser()) {
    botSocket.start();
    runSocket.start();
  } else {
    botSocket.stop();
    runSocket.stop();
    const reason = event && event.detail && event.detail.reason;
    if (reason) toast(reason);
  }
  if (booted) render();
}

async function boot() {
  initTheme();
  document.getElementById("theme-toggle").addEventListener("click", toggleTheme);
  document.getElementById("logout").addEventListener("click", () => {
    logout().catch(() => null);
  });
  const live = document.getElementById("live");
  botSocket.addEventListener("state", (event) => {
    live.dataset.state = event.detail;
    live.title = event.detail === "on" ? "Live updates connected" : "Live updates not connected";
  });
  runSocket.addEventListener("state", (event) => {
    live.dataset.runs = event.detail; // /ws/runs: the run pages' live updates
  });
  session.addEventListener("change", onSession);
  window.addEventListener("hashchange", () => {
    if (booted) render();
  });
  await resume();
  booted = true;
  render();
}

boot();
