// Draws window.DASHBOARD (query.py's answers for each panel of a Grafana
// dashboard) the way Grafana would, roughly: panels placed by gridPos,
// timeseries with uPlot (Grafana's own charting library), stat panels with
// their threshold colours and sparklines, units, legends, threshold lines.
// A preview for the docs, not Grafana: only the options the Tektite
// dashboards use are understood.
(function () {
  "use strict";
  const D = window.DASHBOARD;
  const UNIT = 30, GAP = 8, PAD = 16;

  const NAMED = {
    green: "#73BF69", red: "#F2495C", orange: "#FF9830", yellow: "#FADE2A", blue: "#5794F2",
    purple: "#B877D9", "dark-red": "#C4162A", "dark-green": "#37872D", text: "#ccccdc",
    transparent: "rgba(0,0,0,0)",
  };
  // Grafana's classic palette.
  const PALETTE = ["#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A9",
    "#705DA0", "#508642", "#CCA300", "#447EBC", "#C15C17", "#890F02", "#0A437C", "#6D1F62",
    "#584477", "#B7DBAB", "#F4D598", "#70DBED", "#F9BA8F", "#F29191", "#82B5D8", "#E5A8E2", "#AEA2E0"];
  const color = (c) => NAMED[c] || c;
  const alpha = (hex, a) => {
    const c = color(hex);
    if (!c.startsWith("#")) return c;
    const n = parseInt(c.slice(1), 16);
    return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${a})`;
  };

  // --- Units -----------------------------------------------------------------

  function fixed(v, decimals) {
    if (decimals != null) return v.toFixed(decimals);
    const a = Math.abs(v);
    const d = a === 0 ? 0 : a < 1 ? 3 : a < 10 ? 2 : a < 100 ? 1 : 0;
    return String(parseFloat(v.toFixed(d)));
  }

  function scaled(v, steps, decimals) {
    // steps: [[size, suffix], ...] from the smallest.
    let pick = steps[0];
    for (const s of steps) if (Math.abs(v) >= s[0]) pick = s;
    return fixed(v / pick[0], decimals) + pick[1];
  }

  function seconds(v, decimals) {
    const a = Math.abs(v);
    if (a === 0) return "0 s";
    if (a < 1) return fixed(v * 1000, decimals) + " ms";
    if (a < 60) return fixed(v, decimals) + " s";
    if (a < 3600) return fixed(v / 60, decimals) + " min";
    if (a < 86400) return fixed(v / 3600, decimals) + " hour";
    if (a < 604800) return fixed(v / 86400, decimals) + " day";
    return fixed(v / 604800, decimals) + " week";
  }

  function format(unit, v, decimals) {
    if (v == null || Number.isNaN(v)) return "–";
    unit = unit || "short";
    if (unit.startsWith("suffix:")) return fixed(v, decimals) + unit.slice(7);
    switch (unit) {
      case "percentunit": return fixed(v * 100, decimals) + "%";
      case "percent": return fixed(v, decimals) + "%";
      case "s": return seconds(v, decimals);
      case "ms": return Math.abs(v) < 1000 ? fixed(v, decimals) + " ms" : seconds(v / 1000, decimals);
      case "Bps": return scaled(v, [[1, " B/s"], [1e3, " kB/s"], [1e6, " MB/s"], [1e9, " GB/s"]], decimals);
      case "bytes": return scaled(v, [[1, " B"], [1024, " KiB"], [1048576, " MiB"], [1073741824, " GiB"]], decimals);
      case "ops": return scaled(v, [[1, " ops/s"], [1e3, "K ops/s"], [1e6, "M ops/s"]], decimals);
      case "none": return fixed(v, decimals);
      default: return scaled(v, [[1, ""], [1e3, " K"], [1e6, " Mil"], [1e9, " Bil"]], decimals);
    }
  }

  // --- Field config -----------------------------------------------------------

  function set(obj, path, value) {
    const keys = path.split(".");
    let o = obj;
    for (const k of keys.slice(0, -1)) o = o[k] = Object.assign({}, o[k]);
    o[keys[keys.length - 1]] = value;
  }

  /** The field config of each series: defaults, then matching overrides. */
  function fields(panel) {
    const fc = panel.fieldConfig || {};
    return panel.series.map((s, i) => {
      const f = JSON.parse(JSON.stringify(fc.defaults || {}));
      f.custom = f.custom || {};
      for (const o of fc.overrides || []) {
        const m = o.matcher || {};
        const hit = (m.id === "byName" && m.options === s.name) ||
          (m.id === "byFrameRefID" && m.options === s.refId) ||
          (m.id === "byRegexp" && new RegExp(m.options).test(s.name));
        if (!hit) continue;
        for (const p of o.properties) {
          if (p.id === "color") f.color = p.value;
          else set(f, p.id, p.value);
        }
      }
      f.seriesColor = f.color && f.color.mode === "fixed" ? color(f.color.fixedColor) : PALETTE[i % PALETTE.length];
      return f;
    });
  }

  function thresholdColor(thresholds, v) {
    let c = "green";
    for (const s of (thresholds && thresholds.steps) || []) {
      if (s.value == null || v >= s.value) c = s.color;
    }
    return color(c);
  }

  function lastNotNull(values) {
    for (let i = values.length - 1; i >= 0; i--) if (values[i] != null) return values[i];
    return null;
  }

  const CALCS = {
    mean: ["Mean", (v) => { const x = v.filter((a) => a != null); return x.length ? x.reduce((a, b) => a + b, 0) / x.length : null; }],
    max: ["Max", (v) => { const x = v.filter((a) => a != null); return x.length ? Math.max(...x) : null; }],
    min: ["Min", (v) => { const x = v.filter((a) => a != null); return x.length ? Math.min(...x) : null; }],
    sum: ["Total", (v) => v.reduce((a, b) => a + (b || 0), 0)],
    lastNotNull: ["Last *", lastNotNull],
  };

  // --- Layout -----------------------------------------------------------------

  const page = document.getElementById("page");
  const colWidth = (D.width - 2 * PAD - 23 * GAP) / 24;
  const px = (g) => ({
    left: g.x * (colWidth + GAP),
    top: g.y * (UNIT + GAP),
    width: g.w * colWidth + (g.w - 1) * GAP,
    height: g.h * UNIT + (g.h - 1) * GAP,
  });

  function el(tag, cls, parent, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }

  function header() {
    const top = el("div", "topbar", page);
    el("div", "logo", top);
    const crumb = el("div", "crumb", top);
    crumb.innerHTML = `Home &nbsp;›&nbsp; Dashboards &nbsp;›&nbsp; <b></b>`;
    crumb.querySelector("b").textContent = D.title;
    el("div", "spacer", top);
    el("div", "note", top,
      "Preview rendered by hack/render-dashboards.sh from synthetic data — not a Grafana screenshot");
    const bar = el("div", "controls", page);
    for (const v of D.variables) {
      const box = el("div", "var", bar);
      el("div", "label", box, v.label);
      el("div", "value", box, v.value);
    }
    el("div", "spacer", bar);
    const utc = (t) => new Date(t * 1000).toISOString().slice(0, 16).replace("T", " ");
    const range = D.time.from.replace("now-", "");
    const words = { "24h": "Last 24 hours", "30d": "Last 30 days", "7d": "Last 7 days" };
    const btn = el("div", "btn", bar);
    el("span", "clock", btn);
    btn.appendChild(document.createTextNode(words[range] || `Last ${range}`));
    el("div", "btn", bar, `${utc(D.from)} to ${utc(D.to)} UTC`);
    el("div", "btn", bar, "↻");
  }

  function frame(p, grid) {
    const box = px(p.gridPos);
    if (p.type === "row") {
      const row = el("div", "row", grid);
      Object.assign(row.style, { left: box.left + "px", top: box.top + "px", width: box.width + "px",
        height: box.height + "px" });
      el("span", "chevron", row);
      el("span", "", row, p.title);
      return null;
    }
    const panel = el("div", "panel", grid);
    Object.assign(panel.style, { left: box.left + "px", top: box.top + "px", width: box.width + "px",
      height: box.height + "px" });
    const head = el("div", "head", panel);
    el("div", "title", head, p.title);
    if (p.description) el("div", "info", head, "i");
    const body = el("div", "body", panel);
    return { body, width: box.width - 16, height: box.height - 40 };
  }

  // --- Timeseries ---------------------------------------------------------------

  // Tick steps a person would pick, per unit.
  const SECONDS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120,
    300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800, 1209600];
  const INCRS = { s: SECONDS, ms: SECONDS.map((x) => x * 1000) };
  const LOG_TICKS = [0.001, 0.01, 0.1, 1, 10, 60, 600, 3600, 21600, 86400, 604800, 2419200];

  function logSplits(unit, min, max, height) {
    const k = unit === "ms" ? 1000 : 1;
    let ticks = LOG_TICKS.map((x) => x * k).filter((x) => x >= min * 0.999 && x <= max * 1.001);
    const room = Math.max(2, Math.floor(height / 28));
    while (ticks.length > room) ticks = ticks.filter((_, i) => i % 2 === 0);
    return ticks;
  }

  /** A legend's sample of a series: a bar in its colour, dashed if it is. */
  function swatch(parent, f) {
    const sw = el("span", "swatch", parent);
    const dash = f.custom.lineStyle && f.custom.lineStyle.fill === "dash";
    sw.style.background = dash
      ? `repeating-linear-gradient(90deg, ${f.seriesColor} 0 4px, transparent 4px 7px)`
      : f.seriesColor;
  }

  function legend(p, fs, body) {
    const opts = (p.options && p.options.legend) || {};
    if (opts.showLegend === false) return 0;
    const calcs = (opts.calcs || []).filter((c) => CALCS[c]);
    const unit = (p.fieldConfig.defaults || {}).unit;
    const shown = p.series.map((s, i) => [s, fs[i]]).filter(([, f]) => !(f.custom.hideFrom || {}).legend);
    const box = el("div", "legend " + (opts.displayMode === "table" ? "table" : "list"), body);
    if (opts.displayMode === "table") {
      const t = el("table", "", box);
      const h = el("tr", "", t);
      el("th", "", h, "Name");
      for (const c of calcs) el("th", "", h, CALCS[c][0]);
      for (const [s, f] of shown) {
        const r = el("tr", "", t);
        const name = el("td", "", r);
        const item = el("div", "item", name);
        swatch(item, f);
        el("span", "", item, s.name);
        for (const c of calcs) el("td", "", r, format(f.unit || unit, CALCS[c][1](s.values), f.decimals));
      }
    } else {
      for (const [s, f] of shown) {
        const item = el("div", "item", box);
        swatch(item, f);
        el("span", "", item, s.name);
        for (const c of calcs) {
          const v = el("span", "calc", item, CALCS[c][0] + ": ");
          el("b", "", v, format(f.unit || unit, CALCS[c][1](s.values), f.decimals));
        }
      }
    }
    return box;
  }

  function timeseries(p, slot) {
    const fs = fields(p);
    const d = p.fieldConfig.defaults || {};
    const custom = d.custom || {};
    const box = legend(p, fs, slot.body);
    const right = box && ((p.options || {}).legend || {}).placement === "right";
    let legendHeight = 0, legendWidth = 0;
    if (right) {
      box.classList.add("right");
      legendWidth = Math.min(box.scrollWidth + 8, Math.floor(slot.width * 0.45));
      box.style.width = legendWidth + "px";
    } else if (box) {
      legendHeight = box.offsetHeight;
      const cap = Math.floor(slot.height * 0.45);
      if (legendHeight > cap) {
        legendHeight = cap;
        box.style.height = cap + "px";
      }
    }
    const chartHeight = slot.height - legendHeight;
    const chartWidth = slot.width - legendWidth;
    if (!p.series.length) {
      const nd = el("div", "nodata", slot.body, "No data");
      nd.style.bottom = legendHeight + "px";
      nd.style.right = legendWidth + "px";
      return;
    }

    // Aligned data: every series on the union of their timestamps.
    const times = [...new Set(p.series.flatMap((s) => s.times))].sort((a, b) => a - b);
    const index = new Map(times.map((t, i) => [t, i]));
    let columns = p.series.map((s) => {
      const col = new Array(times.length).fill(null);
      s.times.forEach((t, i) => { col[index.get(t)] = s.values[i]; });
      return col;
    });
    // Stacking (normal): each series drawn on top of the ones before it.
    const stacked = fs.map((f) => ((f.custom.stacking || {}).mode || "none") === "normal");
    if (stacked.some(Boolean)) {
      const acc = new Array(times.length).fill(0);
      columns = columns.map((col, i) => {
        if (!stacked[i]) return col;
        return col.map((v, j) => (v == null ? null : (acc[j] += v)));
      });
    }

    const log = (custom.scaleDistribution || {}).type === "log";
    const unit = d.unit;
    const scales = {
      x: { time: true, range: [p.start, p.end] },
      y: {
        distr: log ? 3 : 1,
        log: log ? (custom.scaleDistribution.log || 10) : undefined,
        range: (u, min, max) => {
          let lo = d.min != null ? d.min : Math.min(min, 0);
          let hi = d.max != null ? d.max : max;
          if (log) {
            // From the nice tick below the lowest value to the one above the highest.
            const k = unit === "ms" ? 1000 : 1;
            const nice = LOG_TICKS.map((x) => x * k);
            lo = d.min != null ? d.min : [...nice].reverse().find((x) => x <= (min || 1)) || nice[0];
            hi = nice.find((x) => x >= hi) || hi;
            return [lo, Math.max(hi, lo * 10)];
          }
          // Threshold lines are kept in view, as Grafana does.
          const style = (custom.thresholdsStyle || {}).mode || "off";
          if (style !== "off" && d.max == null) {
            for (const s of (d.thresholds || {}).steps || []) if (s.value != null) hi = Math.max(hi, s.value);
          }
          if (hi == null || hi <= lo) hi = lo + 1;
          return uPlot.rangeNum(lo, hi, 0.1, true);
        },
      },
    };
    const series = [{}];
    const hiddenScales = {};
    fs.forEach((f, i) => {
      const c = f.custom;
      let scale = "y";
      if (c.axisPlacement === "hidden") {
        scale = "h" + i;
        hiddenScales[scale] = { range: [f.min != null ? f.min : 0, f.max != null ? f.max : 1] };
      }
      const draw = c.drawStyle || "line";
      const fill = (c.fillOpacity != null ? c.fillOpacity : 0) / 100;
      const width = c.lineWidth != null ? c.lineWidth : 1;
      let paths;
      if (draw === "bars") {
        const align = c.barAlignment || 0;
        paths = uPlot.paths.bars({ size: [align ? 0.4 : 0.7, 40], gap: 1, align });
      }
      else if (c.lineInterpolation === "stepAfter") paths = uPlot.paths.stepped({ align: 1 });
      else if (c.lineInterpolation === "smooth") paths = uPlot.paths.spline();
      else paths = uPlot.paths.linear();
      series.push({
        label: p.series[i].name,
        scale,
        stroke: width > 0 ? f.seriesColor : "rgba(0,0,0,0)",
        width: draw === "bars" ? 1 : width,
        fill: fill > 0 ? alpha(f.seriesColor, fill) : undefined,
        dash: c.lineStyle && c.lineStyle.fill === "dash" ? c.lineStyle.dash : undefined,
        paths,
        points: { show: false },
        spanGaps: !!c.spanNulls,
      });
    });
    Object.assign(scales, hiddenScales);

    // Stacked series are drawn from the top one down, so that each lower
    // one covers the part of the one above it that is its own.
    const order = fs.map((_, i) => i);
    if (stacked.some(Boolean)) order.reverse();
    const data = [times, ...order.map((i) => columns[i])];
    const drawSeries = [series[0], ...order.map((i) => series[i + 1])];

    const axisStyle = {
      stroke: "rgba(204,204,220,0.65)",
      font: "12px Inter, 'Liberation Sans', sans-serif",
      grid: { stroke: "rgba(204,204,220,0.07)", width: 1 },
      ticks: { show: false },
    };
    const thresholds = ((d.thresholds || {}).steps || []);
    const style = (custom.thresholdsStyle || {}).mode || "off";
    const opts = {
      width: chartWidth,
      height: chartHeight,
      legend: { show: false },
      cursor: { show: false },
      scales,
      series: drawSeries,
      axes: [
        Object.assign({}, axisStyle, {
          space: 60,
          values: [
            [86400 * 28, "{MM}/{DD}", null, null, null, null, null, null, 1],
            [86400, "{MM}/{DD}", null, null, null, null, null, null, 1],
            [3600, "{HH}:{mm}", null, null, null, null, null, null, 1],
            [60, "{HH}:{mm}", null, null, null, null, null, null, 1],
          ],
        }),
        Object.assign({}, axisStyle, {
          scale: "y",
          size: 64,
          space: 28,
          incrs: INCRS[unit],
          splits: log ? (u, ax, min, max) => logSplits(unit, min, max, chartHeight) : undefined,
          // uPlot keeps only powers of ten on a log axis unless told otherwise.
          filter: log ? (u, splits) => splits : undefined,
          values: (u, ticks) => ticks.map((t) => (t == null ? "" : format(unit, t))),
        }),
      ],
      hooks: {
        drawClear: [(u) => {
          if (!style.includes("area")) return;
          const ctx = u.ctx;
          const { left, top, width, height } = u.bbox;
          for (let k = 0; k < thresholds.length; k++) {
            const lo = thresholds[k].value == null ? u.scales.y.min : thresholds[k].value;
            const hi = k + 1 < thresholds.length ? thresholds[k + 1].value : u.scales.y.max;
            const y0 = Math.max(top, Math.min(top + height, u.valToPos(hi, "y", true)));
            const y1 = Math.max(top, Math.min(top + height, u.valToPos(lo, "y", true)));
            ctx.fillStyle = alpha(thresholds[k].color, 0.15);
            ctx.fillRect(left, y0, width, y1 - y0);
          }
        }],
        draw: [(u) => {
          if (!(style.includes("line") || style.includes("dashed"))) return;
          const ctx = u.ctx;
          const { left, width } = u.bbox;
          ctx.save();
          ctx.lineWidth = 2 * devicePixelRatio;
          if (style.includes("dashed")) ctx.setLineDash([10 * devicePixelRatio, 10 * devicePixelRatio]);
          for (const s of thresholds) {
            if (s.value == null || s.value < u.scales.y.min || s.value > u.scales.y.max) continue;
            const y = Math.round(u.valToPos(s.value, "y", true));
            ctx.strokeStyle = color(s.color);
            ctx.beginPath();
            ctx.moveTo(left, y);
            ctx.lineTo(left + width, y);
            ctx.stroke();
          }
          ctx.restore();
        }],
      },
    };
    // The legend above shows each series' own values, not the stacked sums.
    const holder = el("div", "", slot.body);
    new uPlot(opts, data, holder);
  }

  // --- Table ----------------------------------------------------------------------

  /** Rows of a table panel: its instant queries merged on their labels
   * (Grafana's "merge" transformation), then "organize"d. */
  function tableRows(p) {
    const rows = new Map();
    const columns = [];
    for (const s of p.series) {
      const labels = s.labels || {};
      const key = JSON.stringify(Object.keys(labels).sort().map((k) => [k, labels[k]]));
      if (!rows.has(key)) rows.set(key, Object.assign({}, labels));
      const value = "Value #" + s.refId;
      rows.get(key)[value] = lastNotNull(s.values);
      for (const k of [...Object.keys(labels), value]) if (!columns.includes(k)) columns.push(k);
    }
    let cols = columns.map((c) => ({ key: c, name: c }));
    for (const t of p.transformations || []) {
      if (t.id !== "organize") continue;
      const o = t.options || {};
      cols = cols.filter((c) => !(o.excludeByName || {})[c.key]);
      const index = o.indexByName || {};
      cols.sort((a, b) => (index[a.key] ?? 1e9) - (index[b.key] ?? 1e9));
      for (const c of cols) c.name = (o.renameByName || {})[c.key] || c.key;
    }
    return { rows: [...rows.values()], cols };
  }

  function table(p, slot) {
    const { rows, cols } = tableRows(p);
    if (!rows.length) {
      el("div", "nodata", slot.body, "No data");
      return;
    }
    // Each column's field config: defaults, then overrides by display name.
    const fc = p.fieldConfig || {};
    const conf = cols.map((c) => {
      const f = JSON.parse(JSON.stringify(fc.defaults || {}));
      f.custom = f.custom || {};
      for (const o of fc.overrides || []) {
        if (!(o.matcher && o.matcher.id === "byName" && o.matcher.options === c.name)) continue;
        for (const q of o.properties) set(f, q.id, q.value);
      }
      return f;
    });
    const sort = ((p.options || {}).sortBy || [])[0];
    if (sort) {
      const i = cols.findIndex((c) => c.name === sort.displayName);
      if (i >= 0) {
        const k = cols[i].key;
        rows.sort((a, b) => ((b[k] ?? -Infinity) - (a[k] ?? -Infinity)) * (sort.desc ? 1 : -1));
      }
    }
    const maxOf = cols.map((c) => Math.max(...rows.map((r) => (typeof r[c.key] === "number" ? r[c.key] : 0))));
    const t = el("table", "grid-table", slot.body);
    const head = el("tr", "", t);
    cols.forEach((c, i) => {
      const th = el("th", "", head, c.name);
      if (sort && sort.displayName === c.name) th.textContent += sort.desc ? " ↓" : " ↑";
      th.style.textAlign = i && typeof rows[0][c.key] === "number" ? "right" : "left";
    });
    for (const r of rows) {
      const tr = el("tr", "", t);
      cols.forEach((c, i) => {
        const v = r[c.key];
        const f = conf[i];
        const td = el("td", "", tr);
        if (typeof v !== "number" && v != null) {
          td.textContent = v;
          return;
        }
        td.style.textAlign = "right";
        const text = format(f.unit, v, f.decimals);
        const cell = (f.custom.cellOptions || {}).type || "auto";
        const tint = v == null ? "#8e8e9a" : thresholdColor(f.thresholds, v);
        if (cell === "gauge") {
          const g = el("div", "gauge", td);
          const bar = el("div", "bar", g);
          bar.style.width = (v == null || !maxOf[i] ? 0 : (v / maxOf[i]) * 100) + "%";
          bar.style.background = tint;
          el("div", "text", g, text).style.color = tint;
        } else {
          td.textContent = text;
          if (cell === "color-text") td.style.color = tint;
        }
      });
    }
  }

  // --- Stat ----------------------------------------------------------------------

  function stat(p, slot) {
    const d = p.fieldConfig.defaults || {};
    const o = p.options || {};
    const wrap = el("div", "stat", slot.body);
    if (!p.series.length) {
      el("div", "nodata", wrap, "No data");
      return;
    }
    const horizontal = slot.width >= slot.height;
    wrap.style.flexDirection = horizontal ? "row" : "column";
    const n = p.series.length;
    const cellW = horizontal ? (slot.width - 8 * (n - 1)) / n : slot.width;
    const cellH = horizontal ? slot.height : (slot.height - 8 * (n - 1)) / n;
    const texts = p.series.map((s) => {
      const v = lastNotNull(s.values);
      return v == null ? "No data" : format(d.unit, v, d.decimals);
    });
    const longest = Math.max(3, ...texts.map((t) => t.length));
    const size = Math.max(12, Math.min(cellH * (n > 1 ? 0.36 : 0.42), (cellW - 16) / (0.6 * longest)));
    p.series.forEach((s) => {
      const v = lastNotNull(s.values);
      const c = v == null ? "#8e8e9a" : thresholdColor(d.thresholds, v);
      const cell = el("div", "cell", wrap);
      const background = o.colorMode === "background";
      if (background) {
        cell.style.background = `linear-gradient(120deg, ${alpha(c, 1)}, ${alpha(c, 0.75)})`;
      }
      const text = v == null ? "No data" : format(d.unit, v, d.decimals);
      const nameSize = n > 1 ? 13 : 0;
      if (n > 1) {
        const name = el("div", "name", cell, s.name);
        name.style.color = background ? "#ffffff" : "#ccccdc";
      }
      const value = el("div", "value", cell, text);
      Object.assign(value.style, {
        fontSize: size + "px",
        color: background ? "#ffffff" : c,
        top: (nameSize ? nameSize + 8 : 0) + Math.max(0, (cellH - nameSize - size * 1.2) / 2 - cellH * 0.08) + "px",
        textAlign: horizontal && n > 1 ? "left" : "center",
      });
      if (o.graphMode === "area" && s.values.filter((x) => x != null).length > 1) {
        spark(cell, s, cellW, cellH * 0.45, background ? "#ffffff" : c, background);
      }
    });
  }

  function spark(cell, s, w, h, c, onColor) {
    const canvas = el("canvas", "", cell);
    canvas.width = w * devicePixelRatio;
    canvas.height = h * devicePixelRatio;
    canvas.style.width = w + "px";
    canvas.style.height = h + "px";
    const ctx = canvas.getContext("2d");
    ctx.scale(devicePixelRatio, devicePixelRatio);
    const pts = s.times.map((t, i) => [t, s.values[i]]).filter(([, v]) => v != null);
    const t0 = pts[0][0], t1 = pts[pts.length - 1][0];
    let lo = Math.min(...pts.map((q) => q[1])), hi = Math.max(...pts.map((q) => q[1]));
    lo = Math.min(lo, 0);
    if (hi === lo) hi = lo + 1;
    const x = (t) => ((t - t0) / (t1 - t0 || 1)) * w;
    const y = (v) => h - ((v - lo) / (hi - lo)) * (h - 4);
    ctx.beginPath();
    pts.forEach(([t, v], i) => (i ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
    ctx.strokeStyle = onColor ? "rgba(255,255,255,0.55)" : c;
    ctx.lineWidth = 1;
    ctx.stroke();
    ctx.lineTo(x(t1), h);
    ctx.lineTo(x(t0), h);
    ctx.closePath();
    ctx.fillStyle = onColor ? "rgba(255,255,255,0.18)" : alpha(c, 0.18);
    ctx.fill();
  }

  // --- The page ---------------------------------------------------------------------

  document.body.style.width = D.width + "px";
  header();
  const grid = el("div", "grid", page);
  const rows = Math.max(...D.panels.map((p) => p.gridPos.y + p.gridPos.h));
  grid.style.height = rows * (UNIT + GAP) + "px";
  for (const p of D.panels) {
    const slot = frame(p, grid);
    if (!slot) continue;
    if (p.type === "timeseries") timeseries(p, slot);
    else if (p.type === "stat") stat(p, slot);
    else if (p.type === "table") table(p, slot);
    else el("div", "nodata", slot.body, `(${p.type} panels are not previewed)`);
  }
})();
