// NixFleet security panel: redraws the server-rendered panel when a security event arrives.
// The fragment comes from our own origin and is escaped by the server's templates; there
// are no inline scripts, styles or handlers in it (the CSP would refuse them anyway).
"use strict";

const conn = document.querySelector("#conn");
let pending = null;

async function refresh() {
  pending = null;
  const res = await fetch("/security/panel", { credentials: "same-origin", cache: "no-store" });
  if (res.status === 401) { window.location.assign("/login"); return; }
  if (!res.ok) return;
  document.querySelector("#panel").innerHTML = await res.text();
  document.body.dataset.refreshed = String(Date.now());
}

function soon() {
  // A burst of events becomes one redraw a quarter second later.
  if (pending === null) pending = setTimeout(() => { refresh().catch(() => {}); }, 250);
}

function connect() {
  const source = new EventSource("/api/events");
  source.addEventListener("security", soon);
  source.addEventListener("resync", soon);
  source.addEventListener("snapshot", () => { document.body.dataset.live = "yes"; });
  source.addEventListener("session_ended", () => { source.close(); window.location.assign("/login"); });
  source.onopen = () => { conn.textContent = "live"; conn.className = "conn live"; };
  source.onerror = () => {
    conn.className = "conn down";
    if (source.readyState === EventSource.CLOSED) NF.whenStreamStops(connect, (text) => { conn.textContent = text; });
    else conn.textContent = "reconnecting…";
  };
}

connect();
