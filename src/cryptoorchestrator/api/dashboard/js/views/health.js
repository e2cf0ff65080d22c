// Health: database, Ray, risk actor, circuit breakers, bots by status; a link to Ray's dashboard.

import { apiAllowing503, describe, getPublic } from "../api.js";
import { badge, h, replace } from "../dom.js";

const TITLES = {
  database: "Database",
  ray: "Ray",
  risk_actor: "Risk actor",
  circuit_breaker: "Circuit breakers",
  bots: "Bots",
};

function kv(pairs) {
  const list = h("dl", { class: "kv" });
  for (const [key, value] of pairs) {
    if (value === undefined || value === null || value === "") continue;
    list.append(h("dt", { text: key }), h("dd", { text: typeof value === "object" ? JSON.stringify(value) : String(value) }));
  }
  return list;
}

function details(name, component) {
  if (name === "bots") {
    const counts = component.by_status || {};
    const entries = Object.entries(counts);
    return entries.length ? kv(entries) : h("p", { class: "muted", text: "No bots." });
  }
  if (name === "circuit_breaker") {
    const exchanges = Object.entries(component.exchanges || {});
    if (!exchanges.length) return h("p", { class: "muted", text: "No exchange breakers yet." });
    return kv(exchanges.map(([exchange, s]) => [exchange, s.state || "unknown"]));
  }
  if (name === "risk_actor") {
    const ks = component.kill_switch || {};
    const engaged = ks.global ? "global engaged" : ks.user ? "yours engaged" : "released";
    return kv([["kill switch", "global" in ks ? engaged : undefined], ["error", component.error]]);
  }
  const rest = Object.entries(component).filter(([k]) => k !== "status");
  return rest.length ? kv(rest) : h("p", { class: "muted", text: "Details are shown to admins." });
}

/** Render the health page into `root`; returns a cleanup function. */
export function render(root) {
  const overall = h("span");
  const reasons = h("ul", { class: "error-text" });
  const grid = h("div", { class: "grid components" });
  const rayLink = h("p", { class: "muted" });
  const refresh = h("button", { class: "btn", type: "button", text: "Check again" });
  root.append(
    h("div", { class: "page-head" },
      h("div", {}, h("h1", {}, "Health ", overall), h("p", { class: "sub", text: "Components of the head node and the cluster." })),
      refresh),
    reasons,
    grid,
    h("section", { class: "panel ray-link" }, h("h2", { text: "Ray dashboard" }), rayLink),
  );

  async function load() {
    refresh.disabled = true;
    try {
      const [body, config] = await Promise.all([
        apiAllowing503("/api/health/detailed"),
        getPublic("/dashboard/config.json"),
      ]);
      if (!body.components) {
        // 503 "starting": the head node is still waiting for its parts.
        replace(overall, badge(body.code || "unknown"));
        replace(reasons, h("li", { text: body.message || "no report" }));
        replace(grid);
        return;
      }
      replace(overall, badge(body.status));
      replace(reasons, (body.reasons || []).map((r) => h("li", { text: r })));
      const components = body.components || {};
      replace(grid, Object.entries(components).map(([name, component]) =>
        h("section", { class: "panel component", dataset: { component: name } },
          h("h2", {}, h("span", { text: TITLES[name] || name }), badge(component.status)),
          details(name, component))));
      const ray = config.rayDashboard || {};
      const url = `http://${location.hostname}:${ray.port}/`;
      replace(rayLink,
        ray.enabled ? "Actors, jobs, logs and metrics of the cluster: " : "Ray's dashboard is off on this head node (CRYPTOORCH_RAY_DASHBOARD). When on: ",
        h("a", { href: url, target: "_blank", rel: "noopener noreferrer", id: "ray-dashboard-link", text: url }),
        h("br"),
        "It listens on the head node's loopback only: open it there, or through an SSH tunnel (ssh -L ",
        String(ray.port), ":127.0.0.1:", String(ray.port), " head-node).");
    } catch (error) {
      replace(reasons, h("li", { text: `Could not read health: ${describe(error)}` }));
    } finally {
      refresh.disabled = false;
    }
  }

  refresh.addEventListener("click", load);
  load();
  return () => {};
}
