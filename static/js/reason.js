// The one-line reason a job or an answer shows (no build step: a plain ES module), used by jobs.js
// and ask.js; templates/dashboard/_reason.html renders the same text on the server.

/** Why it failed or was canceled, or what its previous attempt hit while it is retried; else "". */
export function reasonText(state) {
  if (state.reason) return state.reason;
  if (state.retry_reason) return `retrying after: ${state.retry_reason}`;
  return "";
}
