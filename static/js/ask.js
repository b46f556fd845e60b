// The Ask tab, live (no build step: a plain ES module). Without it the form posts to the dashboard
// and the answer page refreshes itself until the answer is final.
//
// On the Ask page the form is sent to POST /api/v1/ask (session + CSRF header) and the answer panel
// follows the task; on an answer page the panel follows its task if it is not finished. Following
// means /ws/answers/<id>/: a {"type": "state"} message (the truth from PostgreSQL: on connect, and
// again when a retried task starts over) replaces what is shown; {"type": "token", offset, text}
// appends text where `offset` says; {"type": "answer"} is final: the text is rendered again with
// its [n] markers linked to the sources list. A dropped socket reconnects (reconnecting_socket.js)
// and resyncs from the next state message; close codes 44xx mean "do not retry".

import { reasonText } from "./reason.js";
import { ReconnectingSocket } from "./reconnecting_socket.js";

const FINAL = new Set(["succeeded", "failed", "canceled"]);
const RETRYABLE = new Set(["failed", "canceled"]);
const CITATION = /\[(\d{1,3})\]/g;
const STATUS_TEXT = {
  queued: "Waiting for a worker.",
  running: "Answering…",
  succeeded: "Answer complete.",
  failed: "The answer failed.",
  canceled: "Canceled.",
};

function field(root, name) {
  return root.querySelector(`[data-field="${name}"]`);
}

function csrfToken() {
  const input = document.querySelector('input[name="csrfmiddlewaretoken"]');
  if (input) return input.value;
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

/** Plain text of an HTML-escaped snippet, parsed inertly (nothing in it runs or loads). */
function unescapeHtml(html) {
  return new DOMParser().parseFromString(html, "text/html").body.textContent || "";
}

/** `text` as nodes: plain text, and links for the [n] markers of cited sources. */
export function answerNodes(text, cited, taskId) {
  const nodes = [];
  let start = 0;
  for (const match of text.matchAll(CITATION)) {
    const number = Number(match[1]);
    if (!cited.has(number)) continue;
    if (match.index > start) nodes.push(document.createTextNode(text.slice(start, match.index)));
    const link = document.createElement("a");
    link.href = `#cite-${taskId}-${number}`;
    link.className = "cite-ref";
    link.setAttribute("aria-label", `Source ${number}`);
    link.textContent = match[0];
    nodes.push(link);
    start = match.index + match[0].length;
  }
  if (start < text.length) nodes.push(document.createTextNode(text.slice(start)));
  return nodes;
}

/** What one answer panel shows; knows nothing about sockets. */
class AnswerView {
  constructor(panel) {
    this.panel = panel;
    this.kbBase = panel.dataset.kbBase;
    this.answerBase = panel.dataset.answerBase;
    this.text = "";
    this.id = null;
    this.kb = "";
  }

  reset(state) {
    this.id = state.id;
    this.kb = state.kb;
    this.panel.dataset.answerId = state.id;
    this.panel.hidden = false;
    this.text = "";
    field(this.panel, "answer").replaceChildren();
    this.render(state);
  }

  setStatus(status) {
    this.panel.dataset.status = status;
    const badge = field(this.panel, "status");
    badge.textContent = status;
    badge.className = `badge badge-${status}`;
    this.panel.classList.forEach((name) => name.startsWith("status-") && this.panel.classList.remove(name));
    this.panel.classList.add(`status-${status}`);
    const active = !FINAL.has(status);
    this.panel.querySelectorAll('[data-show-when="active"]').forEach((element) => {
      element.hidden = !active;
    });
    this.panel.querySelectorAll('[data-show-when="retryable"]').forEach((element) => {
      element.hidden = !RETRYABLE.has(status);
    });
    field(this.panel, "answer").setAttribute("aria-busy", active ? "true" : "false");
  }

  setConnection(text, state) {
    const box = this.panel.querySelector("[data-live-status]");
    box.dataset.state = state;
    box.querySelector("[data-live-text]").textContent = text;
  }

  /** Text from a token message; `offset` is where it starts in the whole answer. */
  append(offset, text) {
    if (offset > this.text.length) return false; // a gap: wait for the state the server sends
    const region = field(this.panel, "answer");
    if (offset < this.text.length) {
      this.text = this.text.slice(0, offset) + text;
      region.textContent = this.text;
    } else {
      this.text += text;
      region.append(document.createTextNode(text));
    }
    return true;
  }

  /** A whole state (connect, resync, final): everything on the panel from it. */
  render(state) {
    const panel = this.panel;
    const final = FINAL.has(state.status);
    field(panel, "question").textContent = state.question;
    this.setStatus(state.status);
    const extractive = Boolean(state.extractive);
    field(panel, "extractive").hidden = !extractive;
    panel.querySelectorAll('[data-show-when="extractive"]').forEach((element) => {
      element.hidden = !extractive;
    });
    field(panel, "model").textContent = state.model || "";
    const timing = [];
    if (state.retrieval_ms !== null && state.retrieval_ms !== undefined) timing.push(`retrieval ${Math.round(state.retrieval_ms)} ms`);
    if (state.generation_ms !== null && state.generation_ms !== undefined) timing.push(`generation ${Math.round(state.generation_ms)} ms`);
    if (state.reused) timing.push("reused");
    field(panel, "timing").textContent = timing.join(" · ");

    this.text = state.answer || "";
    const citations = final ? state.citations || [] : [];
    const cited = new Set(citations.map((citation) => citation.number));
    field(panel, "answer").replaceChildren(...(final ? answerNodes(this.text, cited, this.id) : [document.createTextNode(this.text)]));

    const reason = field(panel, "reason");
    reason.textContent = reasonText(state);
    reason.hidden = !reason.textContent;
    field(panel, "sources").hidden = citations.length === 0;
    field(panel, "citations").replaceChildren(...citations.map((citation) => this.citationItem(citation)));
    const permalink = field(panel, "permalink");
    if (permalink && this.answerBase) {
      permalink.href = `${this.answerBase}${this.id}/`;
      permalink.hidden = false;
    }
  }

  citationItem(citation) {
    const item = document.createElement("li");
    item.id = `cite-${this.id}-${citation.number}`;
    item.value = citation.number;
    const number = document.createElement("span");
    number.className = "cite-number";
    number.setAttribute("aria-hidden", "true");
    number.textContent = `[${citation.number}]`;
    const body = document.createElement("div");
    body.className = "cite-body";
    const title = document.createElement("a");
    title.className = "cite-title";
    const query = citation.title ? `?${new URLSearchParams({ q: citation.title })}` : "";
    title.href = `${this.kbBase}${encodeURIComponent(this.kb)}/${query}#doc-${citation.document_id}`;
    title.textContent = citation.title || "Untitled";
    const meta = document.createElement("span");
    meta.className = "muted small";
    meta.append(` ${citation.where || `chunk ${citation.position}`}`);
    if (/^https?:\/\//.test(citation.url || "")) {
      const source = document.createElement("a");
      source.href = citation.url;
      source.rel = "noopener";
      source.textContent = "source page";
      meta.append(" · ", source);
    }
    const quote = document.createElement("blockquote");
    quote.className = "cite-quote";
    quote.textContent = citation.quote || unescapeHtml(citation.snippet || "");
    body.append(title, meta, quote);
    item.append(number, body);
    return item;
  }
}

/** Follows one task over /ws/answers/<id>/ until its final answer, reconnecting when dropped. */
function answerSocket(view, id) {
  const socket = new ReconnectingSocket(`/ws/answers/${id}/`, {
    onMessage: (message) => {
      if (message.type === "token") {
        view.append(message.offset, message.text);
      } else if (message.type === "state" || message.type === "answer") {
        view.render(message);
        view.setConnection(STATUS_TEXT[message.status] || message.status, "live");
        if (message.type === "answer" || FINAL.has(message.status)) socket.stop();
      }
    },
    onStatus: (status) => {
      if (status === "reconnecting") view.setConnection("Connection lost: reconnecting…", "reconnecting");
      else if (status === "closed") {
        view.setConnection("Live updates stopped (signed out or not allowed): reload the page.", "closed");
      }
    },
  });
  return socket;
}

async function postJson(url, body) {
  return fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken() },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

/** Show `state` in the panel and follow it live unless it is already final. */
function follow(view, state, previous) {
  if (previous) previous.stop();
  view.reset(state);
  view.setConnection(STATUS_TEXT[state.status] || state.status, "live");
  return FINAL.has(state.status) ? null : answerSocket(view, state.id);
}

function wireCancel(panel, view, apiUrl, current) {
  const cancel = async (event) => {
    event.preventDefault();
    const id = view.id;
    const response = await postJson(`${apiUrl}/${id}/cancel`).catch(() => null);
    if (response && response.ok) {
      const state = await response.json();
      // A queued task is canceled at once; a running one stops at its next flush and the socket
      // brings the final state.
      if (FINAL.has(state.status) && view.id === id) {
        view.render(state);
        view.setConnection(STATUS_TEXT[state.status], "live");
        current()?.stop();
      } else {
        view.setConnection("Canceling…", "live");
      }
    } else {
      view.setConnection("The cancel request failed: try again.", "closed");
    }
  };
  panel.querySelector("[data-cancel-button]")?.addEventListener("click", cancel);
  panel.querySelector("[data-cancel-form]")?.addEventListener("submit", cancel);
}

function attachAskForm(form, panel) {
  const apiUrl = panel.dataset.apiUrl;
  const view = new AnswerView(panel);
  const button = form.querySelector("[data-ask-button]");
  const error = form.querySelector("[data-ask-error]");
  let socket = null;
  wireCancel(panel, view, apiUrl, () => socket);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const body = { kb: data.get("kb"), question: data.get("question"), mode: data.get("mode") };
    if (data.get("passages")) body.passages = Number(data.get("passages"));
    button.disabled = true;
    error.hidden = true;
    try {
      const response = await postJson(apiUrl, body);
      if (response.status === 200 || response.status === 202) {
        socket = follow(view, await response.json(), socket);
        panel.querySelector("#answer-heading").focus();
      } else if (response.status === 400) {
        // The server renders the field errors: send the form the way it works without JavaScript.
        form.submit();
      } else {
        const problem = await response.json().catch(() => ({}));
        error.textContent = problem.detail || `The question was not accepted (HTTP ${response.status}).`;
        error.hidden = false;
      }
    } catch {
      error.textContent = "The server cannot be reached: try again.";
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
}

function attachAnswerPage(panel) {
  const view = new AnswerView(panel);
  view.id = Number(panel.dataset.answerId);
  view.kb = panel.dataset.kb;
  view.text = field(panel, "answer").textContent;
  let socket = null;
  wireCancel(panel, view, panel.dataset.apiUrl, () => socket);
  if (!FINAL.has(panel.dataset.status)) socket = answerSocket(view, view.id);
}

const form = document.querySelector("[data-ask-form]");
const panel = document.querySelector("[data-answer]");
if (form && panel) attachAskForm(form, panel);
else if (panel && panel.dataset.answerId) attachAnswerPage(panel);
