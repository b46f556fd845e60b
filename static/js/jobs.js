// Live job progress for the dashboard (no build step: a plain ES module).
//
// Elements with data-live-job="ID" or data-live-kb="SLUG [SLUG…]" open /ws/jobs/?job=ID or
// ?kb=SLUG. The server first sends {"type": "state", "jobs": [...]} (the truth from PostgreSQL),
// then one {"type": "job", ...} message per progress event. Dropped connections are retried by
// ReconnectingSocket (reconnecting_socket.js) and resync from the new state message, so the page
// is right after a reconnect. Everything on the page is updated in place; focus never moves.
//
// When a job reaches a final state, the parts of the page marked data-refresh-on-job-finish (the
// knowledge base page's Sources and Documents tables) are fetched again from the server and
// swapped in, with the page's own query (filters, page number) kept.

import { reasonText } from "./reason.js";
import { ReconnectingSocket } from "./reconnecting_socket.js";

const FINAL = new Set(["succeeded", "failed", "canceled"]);
const KIND_LABELS = { sync: "Sync a source", delete_documents: "Delete documents", delete_source: "Delete a source" };

export function formatEta(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function field(root, name) {
  return root.querySelector(`[data-field="${name}"]`);
}

function setText(root, name, text) {
  const element = field(root, name);
  if (element && element.textContent !== String(text)) element.textContent = text;
}

function errorRow(item) {
  const row = document.createElement("tr");
  const documentCell = document.createElement("td");
  const errorCell = document.createElement("td");
  documentCell.textContent = item?.document ?? "";
  errorCell.textContent = item?.error ?? String(item);
  row.append(documentCell, errorCell);
  return row;
}

/** Write one job's state into the element that shows it (a table row or the detail panel). */
export function renderJob(root, state) {
  const status = field(root, "status");
  if (status) {
    status.textContent = state.status;
    status.className = `badge badge-${state.status}`;
  }
  root.classList.forEach((name) => name.startsWith("status-") && root.classList.remove(name));
  root.classList.add(`status-${state.status}`);
  const percent = `${Number(state.percent).toFixed(1)}%`;
  const progress = field(root, "progress");
  if (progress) {
    progress.value = state.percent;
    progress.textContent = percent;
  }
  setText(root, "percent", percent);
  setText(root, "stage", stageText(state));
  for (const name of ["done", "total", "failed", "skipped", "attempts"]) setText(root, name, state[name]);
  setText(root, "processed", state.done + state.skipped + state.failed);
  setText(root, "rate", `${state.rate} docs/s`);
  setText(root, "eta", formatEta(state.eta_seconds));
  const reason = field(root, "reason");
  if (reason) {
    const text = reasonText(state);
    if (reason.textContent.trim() !== text) reason.textContent = text;
    if (reason.tagName !== "TD") reason.hidden = !text;
  }
  const errors = field(root, "recent_errors");
  if (errors && Array.isArray(state.recent_errors)) {
    const rows = state.recent_errors.map(errorRow);
    if (!rows.length) {
      const none = document.createElement("tr");
      none.className = "empty";
      none.innerHTML = '<td colspan="2">None.</td>';
      rows.push(none);
    }
    errors.replaceChildren(...rows);
  }
  const finished = FINAL.has(state.status);
  root.querySelectorAll("[data-show-when]").forEach((element) => {
    element.hidden = element.dataset.showWhen === "finished" ? !finished : finished;
  });
}

function newRow(container, list, state) {
  const template = container.querySelector("template[data-job-template]");
  if (!template) return null;
  const row = template.content.firstElementChild.cloneNode(true);
  row.dataset.jobId = state.id;
  const link = field(row, "link");
  link.href = `${link.getAttribute("href")}${state.id}/`;
  link.textContent = `Job ${state.id}`;
  setText(row, "kind", `${KIND_LABELS[state.kind] || state.kind}${state.source ? ` (source ${state.source})` : ""}`);
  const created = field(row, "created");
  if (created && state.created_at) {
    created.dateTime = state.created_at;
    created.textContent = new Date(state.created_at).toLocaleTimeString();
  }
  field(row, "progress").setAttribute("aria-label", `Job ${state.id} progress`);
  const tbody = list.tBodies[0];
  tbody.querySelectorAll("tr.empty").forEach((empty) => empty.remove());
  tbody.prepend(row);
  return row;
}

const FOCUSABLE = "a, button, input, select, textarea";
let refreshing = null; // the refresh in flight, if any
let refreshAgain = false; // another job finished while it was in flight

/** Fetch this page again and swap in its parts marked data-refresh-on-job-finish (matched by id).
 * Focus inside a swapped part goes to the element in the same place of the new part. */
function refreshFinishedParts() {
  const parts = [...document.querySelectorAll("[data-refresh-on-job-finish][id]")];
  if (!parts.length) return;
  if (refreshing) {
    refreshAgain = true;
    return;
  }
  refreshing = (async () => {
    try {
      const response = await fetch(`${location.pathname}${location.search}`, {
        credentials: "same-origin",
        headers: { Accept: "text/html" },
      });
      if (!response.ok) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const part of parts) {
        const replacement = fresh.getElementById(part.id);
        if (!replacement || !part.isConnected) continue;
        const focused = part.contains(document.activeElement)
          ? [...part.querySelectorAll(FOCUSABLE)].indexOf(document.activeElement)
          : -1;
        const adopted = document.importNode(replacement, true);
        part.replaceWith(adopted);
        if (focused >= 0) adopted.querySelectorAll(FOCUSABLE)[focused]?.focus();
      }
    } catch {
      // The server is away: the next finished job (or a reload) brings the parts up to date.
    } finally {
      refreshing = null;
      if (refreshAgain) {
        refreshAgain = false;
        refreshFinishedParts();
      }
    }
  })();
}

/** Wire one live region (a job panel or a job list) to its sockets. */
function attach(container) {
  const statusBox = container.querySelector("[data-live-status]");
  const statusText = container.querySelector("[data-live-text]");
  const announce = container.querySelector("[data-live-announce]");
  const list = container.querySelector("[data-job-list]");
  const onlyStatus = container.dataset.liveFilterStatus || "";
  const page = new URLSearchParams(location.search).get("page");
  const firstPage = !page || page === "1";
  const shown = new Map(); // job id -> last status shown, to announce finishes once

  const rootFor = (state) => {
    if (container.dataset.liveJob) return String(state.id) === container.dataset.liveJob ? container : null;
    let root = list && list.querySelector(`[data-job-id="${state.id}"]`);
    if (!root && list && firstPage && (!onlyStatus || onlyStatus === state.status)) root = newRow(container, list, state);
    return root;
  };

  const apply = (state, fromEvent) => {
    const root = rootFor(state);
    if (!root) return;
    const before = shown.get(state.id) ?? root.querySelector('[data-field="status"]')?.textContent.trim();
    // An event never moves a finished job back; a state message (a fresh read) always wins.
    if (fromEvent && FINAL.has(before) && !FINAL.has(state.status)) return;
    renderJob(root, state);
    shown.set(state.id, state.status);
    if (FINAL.has(state.status) && before !== state.status) {
      if (announce) announce.textContent = `Job ${state.id} ${state.status}.`;
      refreshFinishedParts();
    }
  };

  const sockets = [];
  const states = new Map();
  const showStatus = () => {
    const values = [...states.values()];
    let state = "live";
    if (values.includes("closed")) state = "closed";
    else if (values.some((value) => value === "reconnecting" || value === "connecting")) state = "reconnecting";
    if (statusBox) statusBox.dataset.state = state;
    if (statusText) {
      statusText.textContent = {
        live: "Live: progress updates as it happens.",
        reconnecting: "Connection lost: reconnecting…",
        closed: "Live updates stopped (signed out or not allowed): reload the page.",
      }[state];
    }
  };

  const queries = container.dataset.liveJob
    ? [`job=${encodeURIComponent(container.dataset.liveJob)}`]
    : (container.dataset.liveKb || "").split(/\s+/).filter(Boolean).map((slug) => `kb=${encodeURIComponent(slug)}`);
  for (const query of queries) {
    sockets.push(
      new ReconnectingSocket(`/ws/jobs/?${query}`, {
        onMessage: (message) => {
          if (message.type === "state") message.jobs.forEach((state) => apply(state, false));
          else if (message.type === "job") apply(message, true);
        },
        onStatus: (status) => {
          states.set(query, status);
          showStatus();
        },
      }),
    );
  }
  return sockets;
}

document.querySelectorAll("[data-live-job], [data-live-kb]").forEach((container) => {
  if (container.dataset.liveJob || container.dataset.liveKb) attach(container);
});

/** The stage in words; while OCR runs, the page it is on: "ocr: page 3 of 10 (scan.pdf)". */
function stageText(state) {
  const ocr = state.ocr;
  return state.stage === "ocr" && ocr ? `ocr: page ${ocr.page} of ${ocr.pages} (${ocr.document})` : state.stage;
}
