// tunescope dashboard: the runs list — search, filter, sort, select runs to compare.
"use strict";

(function () {
  const el = TS.el;
  let runs = [];
  const selected = new Set();
  let sortKey = "created", sortDir = -1;

  const COLUMNS = [
    ["", null], ["name", "name"], ["project", "project"], ["status", "status"], ["steps", "steps"],
    ["best eval", "best"], ["test", null], ["findings", "findings"], ["duration", "duration"], ["started", "created"],
  ];

  function sortValue(r, key) {
    if (key === "best") return r.best ? r.best.value : -Infinity;
    if (key === "findings") return r.findings.critical * 1e6 + r.findings.warning * 1e3 + r.findings.info;
    const v = r[key];
    return v === null || v === undefined ? -Infinity : v;
  }

  function findingsCell(f) {
    const parts = ["critical", "warning", "info"].filter((s) => f[s]).map((s) =>
      el("span", { className: TS.sevClass(s), title: `${f[s]} ${s} findings` }, String(f[s])));
    if (f.interventions) parts.push(el("span", { className: "sev sev-intervention", title: `${f.interventions} interventions` }, `${f.interventions}⚙`));
    return parts.length ? parts : [el("span", { className: "muted" }, "—")];
  }

  function row(r) {
    const box = el("input", { type: "checkbox", checked: selected.has(r.id), "aria-label": "select for comparison",
      onchange: (e) => { if (e.target.checked) selected.add(r.id); else selected.delete(r.id); updateCompare(); } });
    const tests = Object.entries(r.test || {}).sort().map(([k, v]) => `${k.replace(/^test\//, "")} ${TS.fmt(v)}`).join("  ");
    return el("tr", { dataset: { id: r.id } },
      el("td", {}, box),
      el("td", { className: "name" }, el("a", { href: TS.runUrl(r.id) }, r.name)),
      el("td", {}, r.project),
      el("td", {}, el("span", { className: `status status-${r.status}` }, r.status)),
      el("td", { className: "num" }, TS.fmt(r.steps)),
      el("td", { className: "num", title: r.best ? r.best.key : "" }, r.best ? `${r.best.key.replace(/^eval\//, "")} ${TS.fmt(r.best.value)}` : "—"),
      el("td", { className: "small" }, tests || "—"),
      el("td", {}, ...findingsCell(r.findings)),
      el("td", { className: "num" }, TS.duration(r.duration)),
      el("td", { className: "small" }, TS.time(r.created)));
  }

  function matches(r, q, status, project) {
    if (status && r.status !== status) return false;
    if (project && r.project !== project) return false;
    if (!q) return true;
    return [r.name, r.project, r.id, r.status].some((s) => String(s).toLowerCase().includes(q));
  }

  function render() {
    const q = document.getElementById("search").value.trim().toLowerCase();
    const status = document.getElementById("status").value;
    const project = document.getElementById("project").value;
    const shown = runs.filter((r) => matches(r, q, status, project));
    shown.sort((a, b) => {
      const x = sortValue(a, sortKey), y = sortValue(b, sortKey);
      return (x < y ? -1 : x > y ? 1 : 0) * sortDir;
    });
    document.getElementById("rows").replaceChildren(...shown.map(row));
    document.getElementById("count").textContent = `${shown.length} of ${runs.length} runs`;
    document.getElementById("empty").hidden = runs.length > 0;
  }

  function renderHead() {
    document.getElementById("head").replaceChildren(el("tr", {}, ...COLUMNS.map(([label, key]) =>
      el("th", key ? { className: "sortable" + (key === sortKey ? (sortDir > 0 ? " asc" : " desc") : ""),
        onclick: () => { sortDir = key === sortKey ? -sortDir : (key === "name" || key === "project" ? 1 : -1); sortKey = key; renderHead(); render(); } } : {}, label))));
  }

  function fillSelect(id, values) {
    const sel = document.getElementById(id);
    const cur = sel.value;
    sel.replaceChildren(el("option", { value: "" }, "all"), ...values.map((v) => el("option", { value: v, selected: v === cur }, v)));
  }

  function updateCompare() {
    const btn = document.getElementById("compare");
    btn.disabled = selected.size < 1;
    btn.textContent = `compare ${selected.size} selected`;
  }

  const load = TS.throttle(async () => {
    const body = await TS.api("/api/runs");
    runs = body.runs;
    for (const id of [...selected]) if (!runs.some((r) => r.id === id)) selected.delete(id);
    fillSelect("project", [...new Set(runs.map((r) => r.project))].sort());
    render();
    updateCompare();
    TS.showError("");
  });

  document.getElementById("search").addEventListener("input", render);
  document.getElementById("status").addEventListener("change", render);
  document.getElementById("project").addEventListener("change", render);
  document.getElementById("compare").addEventListener("click", () => {
    location.href = "/compare?runs=" + encodeURIComponent([...selected].join(","));
  });
  renderHead();
  load().then(() => {
    document.body.dataset.ready = "1";
    TS.stream({}, { runs: () => load() });
  });
})();
