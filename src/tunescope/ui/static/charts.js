// tunescope dashboard: curves drawn with plotly.js (shipped inside the `plotly` Python package).
// Buckets come from the server (last value + min/max band per bucket, recomputed on zoom); this
// file only turns them into plotly traces: band, line, smoothing, spike / NaN / inf markers,
// findings and interventions.
"use strict";

const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b",
  "#e377c2", "#7f7f7f", "#bcbd22"];
const SEVERITY_COLOR = { critical: "#c0392b", warning: "#e67e22", info: "#2980b9" };
const TZ_SHIFT = new Date().getTimezoneOffset() * 60000; // plotly shows date numbers as UTC

TS.color = (i) => PALETTE[i % PALETTE.length];

function rgba(hex, a) {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${a})`;
}

// ---- settings shared by every chart of a page (kept across reloads) -------------------------
TS.settings = Object.assign(
  { smooth: true, strength: 0.6, log: false, xmode: "step" },
  JSON.parse(localStorage.getItem("tunescope.settings") || "{}")
);
TS.saveSettings = () => localStorage.setItem("tunescope.settings", JSON.stringify(TS.settings));

// Density-aware EMA. `strength` is the weight the average keeps per 1/1000 of the run's step
// span, so the decay depends on the step distance between points, not on how many there are:
// a line logged every step and one logged every 50 steps smooth alike. Debiased like
// TensorBoard's (divided by the accumulated weight) so the start is not pulled towards zero.
TS.ema = function (steps, ys, strength, span) {
  if (!(strength > 0)) return ys.slice();
  const ref = Math.max(span, 1) / 1000;
  const out = new Array(ys.length);
  let v = 0, w = 0, prev = null;
  for (let i = 0; i < ys.length; i++) {
    const y = ys[i];
    if (y === null || !Number.isFinite(y)) { out[i] = null; continue; }
    const dx = prev === null ? ref : Math.max(steps[i] - prev, 1e-9);
    const d = Math.pow(strength, dx / ref);
    v = d * v + (1 - d) * y;
    w = d * w + (1 - d);
    out[i] = v / w;
    prev = steps[i];
  }
  return out;
};

// Linear interpolation over sorted xs (used to place steps on a wall-time axis and back).
TS.interp = function (xs, ys, x) {
  if (!xs.length) return null;
  if (x <= xs[0]) return ys[0];
  if (x >= xs[xs.length - 1]) return ys[ys.length - 1];
  let lo = 0, hi = xs.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (xs[mid] <= x) lo = mid; else hi = mid;
  }
  const t = xs[hi] === xs[lo] ? 0 : (x - xs[lo]) / (xs[hi] - xs[lo]);
  return ys[lo] + t * (ys[hi] - ys[lo]);
};

// Maps between steps and the x axis of a chart, from the buckets it shows.
function axisMap(curves, xmode) {
  const pts = [];
  for (const c of curves) for (const s of c.curve.segments) for (const b of s.buckets) pts.push([b.step, b.wall]);
  pts.sort((a, b) => a[0] - b[0]);
  const steps = pts.map((p) => p[0]), walls = pts.map((p) => p[1] * 1000 - TZ_SHIFT);
  if (xmode !== "wall") return { x: (s) => s, step: (x) => x, wallOf: (b) => b.step };
  const bySteps = (s) => TS.interp(steps, walls, s);
  const wallsSorted = walls.slice().sort((a, b) => a - b);
  return {
    x: bySteps,
    step: (x) => TS.interp(wallsSorted, steps, x),
    wallOf: (b) => b.wall * 1000 - TZ_SHIFT,
  };
}

function bucketText(name, b) {
  const lines = [`<b>${TS.esc(name)}</b>`, `step ${b.step}: ${b.value === null ? b.nonfinite : TS.fmt(b.value)}`];
  if (b.n > 1) {
    lines.push(`${b.n} points; min ${TS.fmt(b.min)} @${b.min_step}, max ${TS.fmt(b.max)} @${b.max_step}`);
  }
  const bad = b.nan + b.posinf + b.neginf;
  if (bad) lines.push(`${bad} non-finite (NaN ${b.nan}, +inf ${b.posinf}, -inf ${b.neginf})`);
  return lines.join("<br>");
}

function partTraces(name, color, buckets, map, opts, faded, span) {
  const xs = buckets.map(map.wallOf);
  const steps = buckets.map((b) => b.step);
  const ys = buckets.map((b) => b.value);
  const op = faded ? 0.3 : 1;
  const traces = [];
  if (buckets.some((b) => b.n > 1)) {
    traces.push({ x: xs, y: buckets.map((b) => b.min), mode: "lines", line: { width: 0, color },
      hoverinfo: "skip", showlegend: false, opacity: op, meta: "band" });
    traces.push({ x: xs, y: buckets.map((b) => b.max), mode: "lines", line: { width: 0, color },
      fill: "tonexty", fillcolor: rgba(color, faded ? 0.07 : 0.18), hoverinfo: "skip",
      showlegend: false, opacity: op, meta: "band" });
  }
  const smooth = opts.smooth && opts.strength > 0 && buckets.length > 2;
  traces.push({
    x: xs, y: ys, mode: buckets.length < 3 ? "lines+markers" : "lines", name: TS.esc(name),
    line: { color, width: smooth ? 1 : 1.6 }, opacity: (smooth ? 0.4 : 1) * op,
    text: buckets.map((b) => bucketText(name, b)), hoverinfo: "text", showlegend: false,
    connectgaps: false, meta: faded ? "abandoned" : "line",
  });
  if (smooth) {
    traces.push({ x: xs, y: TS.ema(steps, ys, opts.strength, span), mode: "lines",
      name: TS.esc(name), line: { color, width: 2 }, opacity: op, hoverinfo: "skip",
      showlegend: false, meta: "smoothed" });
  }
  return traces;
}

function markerTraces(name, curve, map) {
  const spikes = [], bad = [];
  for (const seg of curve.segments) {
    for (const s of seg.spikes || []) spikes.push(s);
    for (const b of seg.buckets) if (b.nonfinite_step !== undefined) bad.push(b);
  }
  const traces = [];
  if (spikes.length) {
    traces.push({
      x: spikes.map((s) => map.x(s.step)), y: spikes.map((s) => s.value), mode: "markers",
      marker: { symbol: spikes.map((s) => (s.direction === "up" ? "triangle-up" : "triangle-down")),
        size: 9, color: "#c0392b", line: { width: 1, color: "#fff" } },
      text: spikes.map((s) => `<b>spike</b> in ${TS.esc(name)}<br>${TS.fmt(s.value)} at step ${s.step}` +
        `<br>curve around it: ${TS.fmt(s.baseline)}`),
      hoverinfo: "text", showlegend: false, meta: "spikes",
    });
  }
  if (bad.length) {
    traces.push({
      x: bad.map((b) => map.x(b.nonfinite_step)), y: bad.map(() => 0.04), yaxis: "y2",
      mode: "markers", marker: { symbol: "x-thin-open", size: 11, color: "#c0392b", line: { width: 2.5 } },
      text: bad.map((b) => `<b>${b.nonfinite_kind === "nan" ? "NaN" : b.nonfinite_kind}</b> in ${TS.esc(name)}` +
        ` at step ${b.nonfinite_step}${b.nonfinite_exact === false ? " (or later)" : ""}` +
        `<br>${b.nan + b.posinf + b.neginf} non-finite of ${b.n} points up to step ${b.step}`),
      hoverinfo: "text", showlegend: false, meta: "nonfinite",
    });
  }
  return traces;
}

// Findings as shaded spans (first..last step) with a marker at the top; interventions as
// dashed lines with a diamond. Messages appear on hover, escaped.
function eventOverlay(ev, map) {
  const shapes = [], traces = [];
  if (!ev) return { shapes, traces };
  const f = ev.findings || [], iv = ev.interventions || [];
  for (const x of f) {
    const c = SEVERITY_COLOR[x.severity] || SEVERITY_COLOR.info;
    shapes.push({ type: "rect", xref: "x", yref: "paper", x0: map.x(x.first_step), x1: map.x(x.last_step),
      y0: 0, y1: 1, fillcolor: rgba(c, 0.1), line: { width: x.first_step === x.last_step ? 1 : 0, color: rgba(c, 0.5) },
      layer: "below" });
  }
  for (const x of iv) {
    shapes.push({ type: "line", xref: "x", yref: "paper", x0: map.x(x.step), x1: map.x(x.step), y0: 0, y1: 1,
      line: { width: 1.5, dash: "dash", color: "#6c3483" } });
  }
  if (f.length) {
    traces.push({
      x: f.map((x) => map.x(x.raised_step)), y: f.map(() => 0.95), yaxis: "y2", mode: "markers",
      marker: { size: 11, color: f.map((x) => SEVERITY_COLOR[x.severity] || SEVERITY_COLOR.info),
        line: { width: 1, color: "#fff" } },
      text: f.map((x) => `<b>${TS.esc(x.kind)}</b> (${TS.esc(x.severity)}) steps ${x.first_step}–${x.last_step}` +
        `<br>${TS.esc(x.message)}` + (x.data && x.data.recommendation ?
        `<br><i>${TS.esc(typeof x.data.recommendation === "string" ? x.data.recommendation :
          x.data.recommendation.text || JSON.stringify(x.data.recommendation))}</i>` : "")),
      hoverinfo: "text", showlegend: false, meta: "findings",
    });
  }
  if (iv.length) {
    traces.push({
      x: iv.map((x) => map.x(x.step)), y: iv.map(() => 0.86), yaxis: "y2", mode: "markers",
      marker: { symbol: "diamond", size: 11, color: "#6c3483", line: { width: 1, color: "#fff" } },
      text: iv.map((x) => `<b>intervention: ${TS.esc(x.kind)}</b> at step ${x.step}<br>${TS.esc(x.message)}`),
      hoverinfo: "text", showlegend: false, meta: "interventions",
    });
  }
  return { shapes, traces };
}

// One chart: fetches its buckets for the chart's width and zoom window, redraws on demand.
TS.Chart = class {
  constructor(parent, opts) {
    this.opts = opts; // {title, key, load(zoom, points) -> [{name, color, curve}], overlay()}
    this.div = TS.el("div", { className: "chart", dataset: { key: opts.key || "" } });
    parent.appendChild(this.div);
    this.zoom = null; // [start, end] steps, or null for the whole run
    this.xrange = null; // the zoomed x range in axis units
    this.curves = [];
    this.bound = false;
    this.refresh = TS.throttle(() => this._refresh());
  }

  async _refresh() {
    const points = Math.max(50, Math.min(4000, Math.round(this.div.clientWidth || 800)));
    this.curves = await this.opts.load(this.zoom, points);
    await this.draw();
  }

  traces() {
    const s = TS.settings;
    const map = axisMap(this.curves, s.xmode);
    // Smoothing is scaled to the whole run's step span (not the zoom window), so zooming in
    // shows the same smoothed curve, only in more detail.
    let lo = Infinity, hi = -Infinity;
    for (const c of this.curves) {
      if (c.curve.first_step !== undefined) { lo = Math.min(lo, c.curve.first_step); hi = Math.max(hi, c.curve.last_step); }
    }
    const span = hi > lo ? hi - lo : 1;
    const traces = [];
    for (const c of this.curves) {
      for (const seg of c.curve.segments) {
        const cut = seg.abandoned_from;
        const live = cut === null ? seg.buckets : seg.buckets.filter((b) => b.step < cut);
        const gone = cut === null ? [] : seg.buckets.filter((b) => b.step >= cut);
        if (live.length) traces.push(...partTraces(c.name, c.color, live, map, s, false, span));
        if (gone.length) traces.push(...partTraces(c.name + " (abandoned)", c.color, gone, map, s, true, span));
      }
      traces.push(...markerTraces(c.name, c.curve, map));
    }
    const ov = eventOverlay(this.opts.overlay && this.opts.overlay(), map);
    traces.push(...ov.traces);
    if (this.curves.length > 1) {
      this.curves.forEach((c) => traces.push({ x: [null], y: [null], mode: "lines", name: TS.esc(c.name),
        line: { color: c.color, width: 2 }, showlegend: true, hoverinfo: "skip", meta: "legend" }));
    }
    return { traces, shapes: ov.shapes, map };
  }

  async draw() {
    const s = TS.settings;
    const { traces, shapes, map } = this.traces();
    const xaxis = { type: s.xmode === "wall" ? "date" : "linear", zeroline: false, automargin: true };
    if (this.xrange) { xaxis.range = this.xrange; xaxis.autorange = false; } else xaxis.autorange = true;
    const layout = {
      title: { text: TS.esc(this.opts.title), font: { size: 13 }, x: 0.01, xanchor: "left" },
      height: this.opts.height || 250, margin: { l: 55, r: 12, t: 30, b: 34 },
      xaxis, yaxis: { type: s.log ? "log" : "linear", automargin: true, exponentformat: "e" },
      yaxis2: { overlaying: "y", range: [0, 1], visible: false, fixedrange: true },
      hovermode: "closest", showlegend: this.curves.length > 1,
      legend: { orientation: "h", y: -0.18 }, shapes, paper_bgcolor: "#fff", plot_bgcolor: "#fff",
    };
    this.map = map;
    this.drawing = true;
    try {
      await Plotly.react(this.div, traces, layout, { displaylogo: false, responsive: true,
        modeBarButtonsToRemove: ["select2d", "lasso2d"] });
    } finally {
      this.drawing = false;
    }
    let n = 0;
    for (const c of this.curves) for (const seg of c.curve.segments) for (const b of seg.buckets) n += b.n;
    this.div.dataset.points = String(n);
    this.div.dataset.buckets = String(traces.filter((t) => t.meta === "line").reduce((a, t) => a + t.x.length, 0));
    if (!this.bound) { this.bound = true; this.div.on("plotly_relayout", (ev) => this.onRelayout(ev)); }
  }

  onRelayout(ev) {
    if (this.drawing) return;
    let r = ev["xaxis.range"];
    if (!r && ev["xaxis.range[0]"] !== undefined) r = [ev["xaxis.range[0]"], ev["xaxis.range[1]"]];
    if (r) {
      this.xrange = r;
      const toStep = (x) => {
        if (TS.settings.xmode !== "wall") return Number(x);
        const ms = typeof x === "number" ? x : Date.parse(String(x).replace(" ", "T") + "Z");
        return this.map.step(ms);
      };
      const a = toStep(r[0]), b = toStep(r[1]);
      this.zoom = [Math.max(0, Math.floor(Math.min(a, b))), Math.max(0, Math.ceil(Math.max(a, b)))];
      this.refresh();
    } else if (ev["xaxis.autorange"]) {
      this.zoom = null; this.xrange = null;
      this.refresh();
    }
  }

  zoomTo(start, end) {
    const pad = Math.max(1, Math.round((end - start) * 0.15));
    this.zoom = [Math.max(0, start - pad), end + pad];
    this.xrange = TS.settings.xmode === "wall" ? null : this.zoom.slice();
    return this.refresh();
  }

  resetZoom() { this.zoom = null; this.xrange = null; return this.refresh(); }
};

// The smoothing / log / x-axis controls; `onChange` redraws the page's charts.
TS.controls = function (container, onChange) {
  const s = TS.settings;
  const smooth = TS.el("input", { type: "checkbox", id: "smooth", checked: s.smooth });
  const strength = TS.el("input", { type: "range", id: "strength", min: 0, max: 0.99, step: 0.01, value: s.strength });
  const strengthOut = TS.el("span", { className: "mono" }, String(s.strength));
  const log = TS.el("input", { type: "checkbox", id: "log", checked: s.log });
  const xmode = TS.el("select", { id: "xmode" },
    TS.el("option", { value: "step", selected: s.xmode === "step" }, "step"),
    TS.el("option", { value: "wall", selected: s.xmode === "wall" }, "wall time"));
  const changed = (what) => () => {
    s.smooth = smooth.checked; s.strength = Number(strength.value); s.log = log.checked; s.xmode = xmode.value;
    strengthOut.textContent = String(s.strength);
    TS.saveSettings();
    onChange(what);
  };
  smooth.addEventListener("change", changed("style"));
  strength.addEventListener("input", changed("style"));
  log.addEventListener("change", changed("style"));
  xmode.addEventListener("change", changed("xmode"));
  container.append(
    TS.el("label", {}, smooth, " smoothing "), strength, " ", strengthOut,
    TS.el("label", {}, log, " log scale"),
    TS.el("label", {}, "x axis ", xmode)
  );
};
