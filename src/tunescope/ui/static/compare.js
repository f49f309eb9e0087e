// tunescope dashboard: one metric across chosen runs, overlaid, and their config diff.
"use strict";

(function () {
  const el = TS.el;
  const params = new URLSearchParams(location.search);
  const refs = params.get("runs") || "";
  let data = null, chart = null;

  function renderRuns() {
    document.getElementById("runs").replaceChildren(...data.runs.map((r, i) =>
      el("li", {}, el("span", { className: "swatch", style: `background:${TS.color(i)}` }),
        el("a", { href: TS.runUrl(r.id) }, r.name), " ",
        el("span", { className: `status status-${r.status}` }, r.status), " ",
        el("span", { className: "muted" }, r.project))));
  }

  function renderDiff() {
    const all = document.getElementById("all-keys").checked;
    const rows = data.config_diff.filter((r) => all || r.differs);
    document.getElementById("diff-head").replaceChildren(el("tr", {}, el("th", {}, "config key"),
      ...data.runs.map((r) => el("th", {}, r.name))));
    document.getElementById("diff").replaceChildren(...rows.map((r) => el("tr", { className: r.differs ? "differs" : "" },
      el("td", { className: "mono" }, r.key),
      ...r.values.map((v, i) => el("td", { className: "mono" + (r.missing[i] ? " muted" : "") }, r.missing[i] ? "(absent)" : JSON.stringify(v))))));
    document.getElementById("diff-empty").hidden = rows.length > 0;
  }

  function chooseKey() {
    const sel = document.getElementById("key");
    const wanted = params.get("key");
    const pick = (data.keys.includes(wanted) && wanted) || (data.keys.includes("train/loss") && "train/loss") ||
      (data.keys.includes("eval/loss") && "eval/loss") || data.keys[0] || "";
    sel.replaceChildren(...data.keys.map((k) => el("option", { value: k, selected: k === pick }, k)));
    return pick;
  }

  async function draw(key) {
    if (!key) { document.getElementById("chart-empty").hidden = false; return; }
    if (!chart) {
      chart = new TS.Chart(document.getElementById("chart"), {
        title: key, key, height: 420,
        load: async (zoom, points) => {
          const body = await TS.api("/api/compare", { runs: refs, key: chart.opts.key, points,
            start: zoom ? zoom[0] : null, end: zoom ? zoom[1] : null });
          return body.series.map((s, i) => ({ name: body.runs[i].name, color: TS.color(i), curve: s }));
        },
      });
    }
    chart.opts.key = key; chart.opts.title = key; chart.zoom = null; chart.xrange = null;
    await chart.refresh();
  }

  async function main() {
    TS.controls(document.getElementById("controls"), (what) => {
      if (!chart) return;
      if (what === "xmode") chart.resetZoom(); else chart.draw();
    });
    try {
      data = await TS.api("/api/compare", { runs: refs });
    } catch (e) {
      TS.showError(e.message);
      return;
    }
    renderRuns();
    renderDiff();
    document.getElementById("all-keys").addEventListener("change", renderDiff);
    const key = chooseKey();
    document.getElementById("key").addEventListener("change", (e) => {
      const u = new URL(location.href); u.searchParams.set("key", e.target.value); history.replaceState(null, "", u);
      draw(e.target.value).catch((err) => TS.showError(err.message));
    });
    await draw(key).catch((err) => TS.showError(err.message));
    document.body.dataset.ready = "1";
    TS.stream({}, { runs: () => chart && !chart.zoom && chart.refresh() });
  }

  main();
})();
