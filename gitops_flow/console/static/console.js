// The console's only script: it asks before an operator's action, and keeps the page current by listening to the
// server's live feed (server-sent events) and fetching the page again when something changed, replacing only the
// parts marked data-live. Without it every page still works: it is plain HTML with forms.
(() => {
  "use strict";

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });

  const feed = document.body.dataset.feed;
  const status = document.getElementById("live-status");
  if (!feed || !("EventSource" in window) || !status) {
    return;
  }

  let busy = false;
  let again = false;
  async function refresh() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    try {
      const response = await fetch(window.location.href, { credentials: "same-origin", cache: "no-store" });
      const kind = response.headers.get("content-type") || "";
      if (response.ok && kind.startsWith("text/html")) {
        const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
        for (const part of document.querySelectorAll("[data-live]")) {
          const replacement = fresh.getElementById(part.id);
          if (replacement) {
            part.replaceWith(document.importNode(replacement, true));
          }
        }
        document.body.dataset.updates = String(Number(document.body.dataset.updates || "0") + 1);
      }
    } catch (error) {
      // the server is away for a moment: the feed reconnects and the next change fetches again
    }
    busy = false;
    if (again) {
      again = false;
      refresh();
    }
  }

  let away = null;
  function show(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }
  const source = new EventSource(feed);
  source.addEventListener("open", () => {
    window.clearTimeout(away);
    away = null;
    show("on", "live");
  });
  source.addEventListener("error", () => {
    // each stream ends after a while and the browser reconnects at once: only a longer silence is shown
    if (away === null) {
      away = window.setTimeout(() => show("off", "reconnecting…"), 3000);
    }
  });
  source.addEventListener("change", refresh);
})();
