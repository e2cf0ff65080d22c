// The /ws/bots socket: status changes, orders and fills of the user's bots, pushed by the head
// node. It authenticates with a first message (the token never goes into the URL), pings to
// stay open (the server closes silent sockets), and reconnects with a growing delay.

import { accessToken, refresh } from "./api.js";

const PING_MS = 30000;
const MAX_BACKOFF_MS = 30000;

export class BotSocket extends EventTarget {
  constructor() {
    super();
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
    const ws = new WebSocket(`${scheme}//${location.host}/ws/bots`);
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
    if (message.type === "pong" || message.type === "error") return;
    if (typeof message.botId === "number") {
      this.dispatchEvent(new CustomEvent("bot", { detail: message }));
    }
  }
}

export const botSocket = new BotSocket();
