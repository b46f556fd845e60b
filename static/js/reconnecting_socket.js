// A WebSocket that reconnects until stopped or refused (no build step: a plain ES module), used by
// jobs.js (/ws/jobs/) and ask.js (/ws/answers/<id>/).
//
// Each JSON message goes to onMessage. On a dropped connection the socket reconnects after an
// exponential backoff with jitter, or at once when the browser comes back online; the server's
// first message after a reconnect is a fresh state, so the page is right again. Close codes 44xx
// mean "do not retry" (signed out, not allowed, no such thing). onStatus hears "connecting",
// "live", "reconnecting" (with the delay in ms) and "closed" (with the close code).

const NO_RETRY = new Set([4400, 4401, 4403, 4404]);
const BASE_DELAY_MS = 500;
const MAX_DELAY_MS = 30000;

function backoffDelay(attempt) {
  const ceiling = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** attempt);
  return Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
}

export class ReconnectingSocket {
  /** `path` is the socket's path and query on this host, e.g. "/ws/jobs/?job=7". */
  constructor(path, { onMessage, onStatus = () => {} }) {
    this.path = path;
    this.onMessage = onMessage;
    this.onStatus = onStatus;
    this.attempt = 0;
    this.timer = null;
    this.stopped = false;
    this.onOnline = () => this.reconnectNow();
    window.addEventListener("online", this.onOnline);
    this.connect();
  }

  connect() {
    this.timer = null;
    this.onStatus("connecting");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}${this.path}`);
    this.ws = ws;
    const current = () => this.ws === ws && !this.stopped;
    ws.addEventListener("open", () => {
      if (!current()) return;
      this.attempt = 0;
      this.onStatus("live");
    });
    ws.addEventListener("message", (event) => {
      if (!current()) return;
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      this.onMessage(message);
    });
    ws.addEventListener("close", (event) => {
      if (!current()) return;
      if (NO_RETRY.has(event.code)) {
        this.stop();
        this.onStatus("closed", event.code);
        return;
      }
      const delay = backoffDelay(this.attempt);
      this.attempt += 1;
      this.onStatus("reconnecting", delay);
      this.timer = setTimeout(() => this.connect(), delay);
    });
  }

  reconnectNow() {
    if (this.stopped || this.timer === null) return;
    clearTimeout(this.timer);
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    window.removeEventListener("online", this.onOnline);
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close();
  }
}
