// Poiesis dashboard: the live parts of a page and the cancel button. Pages work without it.
"use strict";

// An element with data-refresh is replaced by the HTML the server answers at that URL, every
// data-every milliseconds (the server's LIVE_MS), until an answer comes without data-refresh:
// then everything on it has ended.
const LIVE_MS = 2000; // only if an element does not say

function schedule(element) {
  const every = Number(element.dataset.every || LIVE_MS);
  window.setTimeout(() => refresh(element), every);
}

async function refresh(element) {
  if (!element.isConnected) return;
  try {
    const response = await fetch(element.dataset.refresh, {
      credentials: "same-origin",
      headers: { Accept: "text/html" },
      cache: "no-store",
    });
    if (response.ok) {
      const template = document.createElement("template");
      template.innerHTML = await response.text();
      const next = template.content.firstElementChild;
      if (next && next.id === element.id) {
        keepOpenDetails(element, next);
        element.replaceWith(next);
        if (next.dataset.refresh) schedule(next);
        return;
      }
    }
  } catch (error) {
    // The server restarting or the network gone: try again later.
  }
  schedule(element);
}

// A log the user folded stays folded across refreshes.
function keepOpenDetails(from, to) {
  const closed = Array.from(from.querySelectorAll("details")).map((d) => d.open);
  to.querySelectorAll("details").forEach((d, i) => {
    if (i < closed.length) d.open = closed[i];
  });
}

async function cancel(button) {
  if (!window.confirm("Cancel this task?")) return;
  const status = document.getElementById("cancel-status");
  button.disabled = true;
  try {
    const response = await fetch(button.dataset.cancel, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: "{}",
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(body.msg || response.statusText);
    }
    if (status) status.textContent = "cancel requested";
    const live = button.closest("[data-refresh]");
    if (live) refresh(live);
  } catch (error) {
    button.disabled = false;
    if (status) status.textContent = "cancel failed: " + error.message;
  }
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-cancel]");
  if (button) cancel(button);
});

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-refresh]").forEach(schedule);
});
