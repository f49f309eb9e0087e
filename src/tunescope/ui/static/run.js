// tunescope dashboard: one run — charts per metric group, live over server-sent events,
// findings and interventions on the curves and as a timeline, test metrics, config.
"use strict";

(function () {
  const el = TS.el;
  const ref = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
  const GROUPS = ["train", "eval", "test", "retain", "probe", "sys", "other"];
  const charts = new Map(); // key -> TS.Chart
  const sections = new Map(); // group -> element holding its charts
  let info = null, events = null, lastEventId = null, lastStatus = null;

  function flatten(obj, prefix, out) {
    for (const [k, v] of Object.entries(obj || {})) {
      const key = prefix ? `${prefix}.${k}` : k;
      if (v && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length) flatten(v, key, out);
      else out.push([key, v]);
    }
    return out;
  }

  function fact(label, ...value) {
    return el("div", { className: "fact" }, el("span", { className: "label" }, label), el("span", {}, ...value));
  }

  function findingBadges(f) {
    return ["critical", "warning", "info"].filter((s) => f[s]).map((s) =>
      el("span", { className: TS.sevClass(s), title: `${f[s]} ${s} findings` }, `${f[s]} ${s}`))
      .concat(f.interventions ? [el("span", { className: "sev sev-intervention" }, `${f.interventions} interventions`)] : []);
  }

  function renderSummary() {
    document.title = `${info.name} · tunescope`;
    document.getElementById("title").textContent = info.name;
    const best = info.best;
    const box = document.getElementById("summary");
    box.replaceChildren(
      fact("project", info.project),
      fact("status", el("span", { className: `status status-${info.status}` }, info.status)),
      fact("steps", TS.fmt(info.steps)),
      fact("segments", String(info.segments)),
      fact("duration", TS.duration(info.duration)),
      fact("started", TS.time(info.created)),
      fact("best eval", best ? `${best.key} ${TS.fmt(best.value)} @${best.step}` : "—"),
      fact("findings", ...(findingBadges(info.findings).length ? findingBadges(info.findings) : ["none"])),
      fact("id", el("span", { className: "mono" }, info.id))
    );
  }

  function renderTests() {
    const rows = Object.entries(info.test || {}).sort();
    const table = document.getElementById("tests");
    table.replaceChildren(...rows.map(([k, v]) => el("tr", {}, el("td", { className: "mono" }, k), el("td", { className: "num" }, TS.fmt(v)))));
    document.getElementById("tests-empty").hidden = rows.length > 0 || !!info.confusion;
    const box = document.getElementById("confusion");
    const cm = info.confusion;
    if (!cm) { box.hidden = true; return; }
    box.hidden = false;
    const n = cm.matrix.length;
    const labels = (cm.labels || cm.matrix.map((_, i) => String(i))).map(TS.esc);
    Plotly.react(box, [{
      type: "heatmap", z: cm.matrix, x: labels, y: labels, colorscale: "Blues", reversescale: true, showscale: false,
      texttemplate: "%{z}", hovertemplate: "true %{y}<br>predicted %{x}<br>%{z}<extra></extra>",
    }], {
      title: { text: "confusion matrix (rows: true, columns: predicted)", font: { size: 13 } },
      height: Math.max(260, 60 + n * 38), width: Math.max(320, 140 + n * 60),
      margin: { l: 110, r: 10, t: 40, b: 90 }, yaxis: { autorange: "reversed" },
    }, { displaylogo: false });
  }

  function renderConfig() {
    const rows = flatten(info.config, "", []);
    document.getElementById("config").replaceChildren(
      ...rows.map(([k, v]) => el("tr", {}, el("td", { className: "mono" }, k), el("td", { className: "mono" }, JSON.stringify(v))))
    );
    document.getElementById("config-empty").hidden = rows.length > 0;
  }

  function renderTimeline() {
    const list = document.getElementById("timeline");
    const items = [
      ...(events.findings || []).map((f) => ({ step: f.first_step, f })),
      ...(events.interventions || []).map((i) => ({ step: i.step, i })),
    ].sort((a, b) => a.step - b.step);
    list.replaceChildren(...items.map(({ f, i }) => {
      if (f) {
        const rec = f.data && f.data.recommendation;
        return el("li", { className: `finding finding-${f.severity}`, dataset: { ref: f.ref || "" } },
          el("button", { className: "zoom", title: "zoom the charts to this finding", onclick: () => zoomAll(f.first_step, f.last_step) }, `steps ${f.first_step}–${f.last_step}`),
          el("span", { className: TS.sevClass(f.severity) }, f.severity), " ",
          el("b", {}, f.kind), f.data && f.data.state ? el("span", { className: "muted" }, ` (${f.data.state})`) : null,
          el("div", { className: "message" }, f.message),
          rec ? el("div", { className: "muted" }, "recommendation: ", typeof rec === "string" ? rec : (rec.text || JSON.stringify(rec))) : null);
      }
      const d = i.data || {};
      return el("li", { className: "intervention" },
        el("button", { className: "zoom", onclick: () => zoomAll(i.step, i.step) }, `step ${i.step}`),
        el("span", { className: "sev sev-intervention" }, "intervention"), " ", el("b", {}, i.kind),
        el("div", { className: "message" }, i.message),
        d.before !== undefined || d.after !== undefined ? el("div", { className: "muted mono" }, `before ${JSON.stringify(d.before)} → after ${JSON.stringify(d.after)}`) : null);
    }));
    document.getElementById("timeline-empty").hidden = items.length > 0;
  }

  function zoomAll(a, b) {
    for (const c of charts.values()) c.zoomTo(a, b);
  }

  function section(group) {
    if (!sections.has(group)) {
      const grid = el("div", { className: "grid" });
      const sec = el("section", { className: "group", dataset: { group } }, el("h2", {}, group), grid);
      const all = document.getElementById("charts");
      const after = GROUPS.slice(GROUPS.indexOf(group) + 1).map((g) => sections.get(g)).find(Boolean);
      all.insertBefore(sec, after ? after.parentElement : null);
      sections.set(group, grid);
    }
    return sections.get(group);
  }

  function ensureCharts(keys) {
    const added = [];
    for (const k of keys) {
      if (charts.has(k.key) || (k.group === "test" && k.n <= 1)) continue;
      const key = k.key;
      const chart = new TS.Chart(section(k.group), {
        title: key, key,
        load: async (zoom, points) => [{
          name: key, color: TS.color(0),
          curve: await TS.api(`/api/runs/${encodeURIComponent(info.id)}/series`, {
            key, points, start: zoom ? zoom[0] : null, end: zoom ? zoom[1] : null }),
        }],
        overlay: () => events,
      });
      charts.set(key, chart);
      added.push(chart);
    }
    document.getElementById("charts-empty").hidden = charts.size > 0;
    return added;
  }

  async function loadInfo() {
    info = await TS.api(`/api/runs/${encodeURIComponent(ref)}`);
    renderSummary(); renderTests(); renderConfig();
    return ensureCharts(info.keys);
  }

  async function loadEvents() {
    // By the reference in the address until the run's id is known: runs with `loadInfo`.
    events = await TS.api(`/api/runs/${encodeURIComponent(info ? info.id : ref)}/events`);
    renderTimeline();
  }

  const reloadInfo = TS.throttle(async () => {
    const added = await loadInfo();
    await Promise.all(added.map((c) => c.refresh()));
  });
  const reloadEvents = TS.throttle(async () => {
    await loadEvents();
    await Promise.all([...charts.values()].filter((c) => c.curves.length).map((c) => c.draw()));
  });

  async function main() {
    TS.controls(document.getElementById("controls"), (what) => {
      for (const c of charts.values()) {
        if (what === "xmode") { c.zoom = null; c.xrange = null; c.refresh(); } else if (c.curves.length) c.draw();
      }
    });
    try {
      await Promise.all([loadInfo(), loadEvents()]);
      await Promise.all([...charts.values()].map((c) => c.refresh()));
    } catch (e) {
      TS.showError(e.message);
      return;
    }
    performance.mark("tunescope:charts-drawn");
    document.body.dataset.drawnMs = String(performance.now());
    document.body.dataset.ready = "1";
    lastStatus = info.status;
    TS.stream({ run: info.id }, {
      hello: (d) => { lastEventId = d.run ? d.run.events : null; },
      run: (d) => {
        if (d.changed.length || d.status !== lastStatus) reloadInfo();
        lastStatus = d.status;
        for (const k of d.changed) {
          const c = charts.get(k);
          if (c && !c.zoom) c.refresh();
        }
        if (d.events !== lastEventId) { lastEventId = d.events; reloadEvents(); }
      },
    });
  }

  main();
})();
