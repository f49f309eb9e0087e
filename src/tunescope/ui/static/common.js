// tunescope dashboard: helpers shared by every page.
// Every string that came from the store reaches the DOM through textContent (el() below) or,
// inside plotly (which understands a little HTML), through esc(). Nothing uses innerHTML.
"use strict";

const TS = (window.TS = window.TS || {});

TS.el = function (tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "className") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
};

// Plotly renders a small HTML subset in names and hover text: escape what it would parse.
TS.esc = function (s) {
  return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
};

TS.fmt = function (x) {
  if (x === null || x === undefined) return "—";
  if (typeof x === "string") return x; // "nan", "inf", "-inf" markers from the API
  if (typeof x !== "number") return JSON.stringify(x);
  if (Number.isInteger(x) && Math.abs(x) < 1e15) return String(x);
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return x.toExponential(3);
  return String(Number(x.toPrecision(4)));
};

TS.duration = function (sec) {
  sec = Math.max(0, Math.round(sec || 0));
  const h = Math.floor(sec / 3600), m = Math.floor((sec % 3600) / 60), s = sec % 60;
  if (h) return `${h}h${String(m).padStart(2, "0")}m`;
  if (m) return `${m}m${String(s).padStart(2, "0")}s`;
  return `${s}s`;
};

TS.time = function (unix) {
  if (!unix) return "—";
  return new Date(unix * 1000).toLocaleString();
};

TS.runUrl = (id) => "/runs/" + encodeURIComponent(id);

TS.api = async function (path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== null && v !== undefined && v !== "") q.set(k, String(v));
  }
  const url = path + (q.toString() ? "?" + q.toString() : "");
  const res = await fetch(url, { credentials: "same-origin", headers: { accept: "application/json" } });
  let body = null;
  try {
    body = await res.json();
  } catch (e) {
    throw new Error(`${url}: HTTP ${res.status}`);
  }
  if (!res.ok) throw new Error(body && body.error ? body.error : `${url}: HTTP ${res.status}`);
  return body;
};

TS.showError = function (message) {
  const bar = document.getElementById("error");
  if (!bar) return;
  bar.textContent = String(message);
  bar.hidden = !message;
};

// Server-sent events; the browser reconnects by itself after a dropped connection.
TS.stream = function (params, handlers) {
  const q = new URLSearchParams(params || {});
  const src = new EventSource("/api/stream" + (q.toString() ? "?" + q : ""));
  for (const [name, fn] of Object.entries(handlers)) {
    src.addEventListener(name, (ev) => {
      try {
        fn(JSON.parse(ev.data));
      } catch (e) {
        TS.showError(e.message);
      }
    });
  }
  const dot = document.getElementById("live");
  src.onopen = () => dot && (dot.className = "live on");
  src.onerror = () => dot && (dot.className = "live off");
  return src;
};

// Coalesce bursts of calls: at most one `fn` running, one more queued.
TS.throttle = function (fn) {
  let running = null, again = false;
  const go = async () => {
    if (running) { again = true; return running; }
    running = (async () => {
      try { await fn(); } catch (e) { TS.showError(e.message); }
    })();
    await running;
    running = null;
    if (again) { again = false; return go(); }
  };
  return go;
};

TS.groupOf = function (key) {
  const head = key.split("/")[0];
  return ["train", "eval", "test", "retain", "probe", "sys"].includes(head) ? head : "other";
};

TS.sevClass = (s) => "sev sev-" + (["critical", "warning", "info"].includes(s) ? s : "info");
