// The head node's authenticated sockets: /ws/bots (status changes, orders and fills of the
// user's bots) and /ws/runs (backtest and optimization runs as they change, and the trials of
// the studies a page watches). Each authenticates with a first message (the token never goes
// into the URL), pings to stay open (the server closes silent sockets), and reconnects with a
// growing delay.

import { accessToken, refresh } from "./api.js";

const PING_MS = 30000;
const MAX_BACKOFF_MS = 30000;

/** One authenticated socket at `path`; subclasses say what its messages mean (`handle`). */
export class AuthSocket extends EventTarget {
  constructor(path) {
    super();
    this.path = path;
    this.ws = null;
    this.stopped = true;
    this.backoff = 1000;
    this.ping = null;
    this.retry = null;
    this.state = "off";
    this.connections = 0; // sockets authenticated so far: more than one means a reconnect
  }

  /** Open the socket (again) for the signed-in user. */
  start() {
    this.stopped = false;
    this.open();
  }

  /** Close the socket and stop reconnecting (logout). */
  stop() {
    this.stopped = true;
    this.connections = 0;
    clearTimeout(this.retry);
    clearInterval(this.ping);
    if (this.ws) this.ws.close(1000, "logout");
    this.ws = null;
    this.setState("off");
  }

  setState(state) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: state }));
  }

  open() {
    if (this.stopped || !accessToken()) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}${this.path}`);
    this.ws = ws;
    this.setState("connecting");
    ws.addEventListener("open", () => {
      ws.send(JSON.stringify({ type: "auth", token: accessToken() }));
    });
    ws.addEventListener("message", (event) => this.onMessage(event));
    ws.addEventListener("close", (event) => {
      clearInterval(this.ping);
      if (this.ws !== ws) return;
      this.ws = null;
      this.setState("off");
      if (this.stopped) return;
      // 4401: the token was refused (expired during a reconnect): renew it first.
      const renew = event.code === 4401 ? refresh().catch(() => null) : Promise.resolve();
      const delay = this.backoff;
      this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
      this.retry = setTimeout(() => renew.then(() => this.open()), delay);
    });
  }

  onMessage(event) {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    if (message.type === "authenticated") {
      this.backoff = 1000;
      this.connections += 1;
      this.setState("on");
      clearInterval(this.ping);
      this.ping = setInterval(() => {
        if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send('{"type":"ping"}');
      }, PING_MS);
      this.dispatchEvent(new CustomEvent("connected"));
      return;
    }
    if (message.type === "pong") return;
    this.handle(message);
  }

  /** Send `message` when the socket is open; false when it is not (it is resent on connect). */
  send(message) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN || this.state !== "on") return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  /** What a message other than the handshake's and pongs means: overridden. */
  handle(_message) {}
}

/** /ws/bots: dispatches "bot" events ({botId, type: status|order|fill, ...}). */
export class BotSocket extends AuthSocket {
  constructor() {
    super("/ws/bots");
  }

  handle(message) {
    if (typeof message.botId === "number") this.dispatchEvent(new CustomEvent("bot", { detail: message }));
  }
}

/**
 * /ws/runs: dispatches "run" events ({kind, id, status, progress, error, nTrials?, bestValue?})
 * and "trials" events ({runId, items}) of the studies watched with `watch`.
 */
export class RunSocket extends AuthSocket {
  constructor() {
    super("/ws/runs");
    this.watches = new Map(); // study id -> last trial id received
    this.addEventListener("connected", () => {
      for (const [runId, after] of this.watches) this.send({ type: "watch", runId, after });
    });
  }

  /** Receive the trials of study `runId` recorded after trial `after` (kept across reconnects). */
  watch(runId, after = 0) {
    this.watches.set(runId, after);
    this.send({ type: "watch", runId, after });
  }

  unwatch(runId) {
    if (this.watches.delete(runId)) this.send({ type: "unwatch", runId });
  }

  handle(message) {
    if (message.type === "run") {
      this.dispatchEvent(new CustomEvent("run", { detail: message }));
    } else if (message.type === "trials" && this.watches.has(message.runId) && message.items.length) {
      this.watches.set(message.runId, message.items[message.items.length - 1].id);
      this.dispatchEvent(new CustomEvent("trials", { detail: message }));
    }
  }
}

export const botSocket = new BotSocket();
export const runSocket = new RunSocket();
