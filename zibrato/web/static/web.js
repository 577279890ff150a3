// Zibrato web view: the series table and live SVG charts, in plain JavaScript.
//
// Every name, source and tag comes from the wire: it reaches the page only as
// textContent or as an attribute value set with setAttribute, never as HTML.
// The page follows the server's flushes by server-sent events (/api/events),
// or, where EventSource is missing, by polling /api/summary every 2 s.
// The server sends the first table page already rendered (so the page shows
// data without script); its paging comes as data- attributes of #series, and
// the first update replaces those rows in place.
// window.zibratoWeb exposes the state (the last table and chart JSON) for tests.
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const POLL_MS = 2000;
  const SEARCH_DELAY_MS = 200;
  const W = 520, H = 220, M = { left: 64, right: 12, top: 10, bottom: 24 };

  const state = {
    query: "", type: "", offset: 0, limit: 100,
    selected: null,      // series id whose charts are shown
    autoSelected: false, // a series was chosen for a first visit (once: closing the charts keeps them closed)
    table: null,         // last /api/series answer
    shown: null,         // the query, type and offset of the table shown
    chart: null,         // last /api/chart answer
    version: -1,         // last flush seen
    transport: null,     // "events" or "polling"
    renders: 0,          // table and chart renders so far
    served: null,        // the paging of the rows the server rendered into the page (data- attributes)
  };
  window.zibratoWeb = state;
  let tableRequest = 0, chartRequest = 0;

  const $ = (id) => document.getElementById(id);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svgEl(tag, attributes, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attributes || {})) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  async function getJSON(path, params) {
    const url = new URL(path, window.location.href);
    for (const [key, value] of Object.entries(params || {})) url.searchParams.set(key, value);
    const response = await fetch(url, { cache: "no-store" });
    if (response.status === 404) return null;
    if (!response.ok) throw new Error(path + ": HTTP " + response.status);
    return response.json();
  }

  // --- numbers --------------------------------------------------------------

  const SECOND_UNITS = [[3600, "h"], [60, "min"], [1, "s"], [1e-3, "ms"], [1e-6, "µs"], [1e-9, "ns"]];

  function plain(value) {
    const rounded = Number(value.toPrecision(3));
    return Math.abs(rounded) >= 1000 ? rounded.toFixed(0) : String(rounded);
  }

  function humanSeconds(seconds) {
    if (seconds === 0) return "0s";
    let value = seconds, unit = "ns";
    for (const [scale, name] of SECOND_UNITS) {
      value = Number((seconds / scale).toPrecision(3));
      unit = name;
      if (Math.abs(value) >= 1) break;
    }
    return plain(value) + unit;
  }

  function format(value, unit) {
    if (value === null || value === undefined) return "–";
    if (unit === "s") return humanSeconds(value);
    return plain(value) + (unit ? " " + unit : "");
  }

  function statUnit(row, key) {
    return key === "count" || row.type === "counter" || row.type === "gauge" || row.type === "set" ? null : row.unit;
  }

  function clock(time) {
    const d = new Date(time * 1000);
    return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, "0")).join(":");
  }

  // --- the table ---------------------------------------------------------------

  async function loadTable() {
    const request = ++tableRequest;
    const data = await getJSON("/api/series", { q: state.query, type: state.type, offset: state.offset, limit: state.limit });
    if (request !== tableRequest || data === null) return;  // a newer request is on its way
    if (data.offset > 0 && data.offset >= data.matched) {  // the page emptied: back to the last one
      state.offset = Math.max(0, Math.floor((data.matched - 1) / state.limit) * state.limit);
      return loadTable();
    }
    state.table = data;
    state.shown = { query: data.query, type: data.type, offset: data.offset };
    renderTable(data);
    if (!state.selected && !state.autoSelected && data.rows.length) {
      // charts at once on a first visit: a timer with outcomes if there is one
      state.autoSelected = true;
      const timers = data.rows.filter((r) => r.type === "timer" || r.type === "histogram");
      select((timers.find((r) => r.outcome === "ok") || timers[0] || data.rows[0]).id);
    }
  }

  function tagList(tags) {
    const cell = el("td", "tags");
    for (const tag of tags) {
      const outcome = tag === "outcome:ok" ? " outcome-ok" : tag === "outcome:error" ? " outcome-error" : "";
      cell.append(el("span", "tag" + outcome, tag));
    }
    return cell;
  }

  function statistics(row) {
    const cell = el("td", "stats");
    for (const [key, value] of Object.entries(row.stats)) {
      const stat = el("span", "stat");
      stat.append(el("span", "key", key + "="), el("span", "value", format(value, statUnit(row, key))));
      cell.append(stat);
    }
    return cell;
  }

  function tableRow(row) {
    const tr = document.createElement("tr");
    tr.dataset.id = row.id;
    if (row.outcome) tr.classList.add("outcome-" + row.outcome);
    if (row.id === state.selected) tr.classList.add("selected");
    tr.append(el("td", "type", row.type), el("td", "name", row.name), el("td", "source", row.source || "–"),
      tagList(row.tags), statistics(row));
    return tr;  // clicks: one listener on the tbody (wireControls), for the server's rows too
  }

  function renderTable(data) {
    $("series").tBodies[0].replaceChildren(...data.rows.map(tableRow));
    $("empty").hidden = data.rows.length > 0;
    const first = data.matched ? data.offset + 1 : 0, last = data.offset + data.rows.length;
    const filtered = data.matched !== data.total ? " (filtered from " + data.total.toLocaleString("en") + ")" : "";
    $("page-info").textContent = first.toLocaleString("en") + "–" + last.toLocaleString("en") + " of " +
      data.matched.toLocaleString("en") + filtered;
    $("prev").disabled = data.offset === 0;
    $("next").disabled = last >= data.matched;
    state.renders++;
  }

  // --- the charts --------------------------------------------------------------

  function select(id) {
    state.selected = id;
    window.history.replaceState(null, "", id ? "#series=" + encodeURIComponent(id) : "#");
    for (const tr of $("series").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.id === id);
    if (!id) {
      state.chart = null;
      $("chart-panel").hidden = true;
      return;
    }
    loadChart().catch(report);
  }

  async function loadChart() {
    if (!state.selected) return;
    const request = ++chartRequest, id = state.selected;
    const data = await getJSON("/api/chart", { id: id });
    if (request !== chartRequest || id !== state.selected) return;
    state.chart = data;
    if (data === null) {
      $("chart-panel").hidden = false;
      $("chart-title").textContent = "This series is no longer held";
      $("chart-meta").textContent = "";
      $("variants").replaceChildren();
      return;
    }
    renderChart(data);
  }

  function renderChart(data) {
    $("chart-panel").hidden = false;
    $("chart-title").textContent = data.name + ": " + describe(data);
    const source = data.source ? "source " + data.source + " · " : "";
    const unit = data.unit ? " (" + (data.unit === "s" ? "seconds" : data.unit) + ")" : "";
    $("chart-meta").textContent = data.type + unit + " · " + source + data.fields.join(", ") +
      " over the last " + data.times.length + " intervals";
    const values = [];
    for (const series of data.series) {
      for (const point of series.points) {
        for (const field of data.fields) if (point[field] !== null) values.push(point[field]);
      }
    }
    // one scale for every outcome, so that failed calls compare at a glance
    const scale = { low: Math.min(0, ...values), high: Math.max(...values, 0) };
    if (scale.high === scale.low) scale.high = scale.low + 1;
    const times = data.times.length ? data.times : [Date.now() / 1000];
    scale.start = times[0];
    scale.end = times.length > 1 ? times[times.length - 1] : times[0] + 1;
    $("variants").replaceChildren(...data.series.map((series) => variant(series, data, scale)));
    state.renders++;
  }

  // what a chart shows, in words (the panel's title)
  function describe(data) {
    if (data.type === "counter") return "per second, in each interval";
    if (data.type === "gauge") return "last value of each interval";
    if (data.type === "set") return "unique members in each interval";
    const fields = data.fields.join(", ").replace(/, ([^,]*)$/, " and $1");
    const unit = data.unit ? " (" + (data.unit === "s" ? "seconds" : data.unit) + ")" : "";
    return fields + " of each interval" + unit;
  }

  function variant(series, data, scale) {
    const box = el("figure", "variant" + (series.outcome ? " outcome-" + series.outcome : ""));
    box.dataset.id = series.id;
    const title = series.outcome ? "outcome: " + series.outcome : "all calls";
    const caption = el("figcaption");
    caption.append(el("div", "variant-title", title));
    if (series.tags.length) caption.append(el("div", "legend", series.tags.join(", ")));
    const legend = el("div", "legend");
    data.fields.forEach((field, i) => {
      const entry = el("span");
      const label = field === "value" && data.type === "set" ? "unique" : field === "rate" ? "per second" : field;
      entry.append(el("span", "swatch f" + i), document.createTextNode(label));
      legend.append(entry);
    });
    caption.append(legend);
    box.append(caption, chart(series, data, scale));
    return box;
  }

  function chart(series, data, scale) {
    const svg = svgEl("svg", { class: "chart", width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img" });
    svg.append(svgEl("title", {}, data.name + (series.outcome ? " (" + series.outcome + ")" : "")));
    const x = (t) => M.left + (t - scale.start) / (scale.end - scale.start) * (W - M.left - M.right);
    const y = (v) => H - M.bottom - (v - scale.low) / (scale.high - scale.low) * (H - M.top - M.bottom);
    for (const v of [scale.low, (scale.low + scale.high) / 2, scale.high]) {
      svg.append(svgEl("line", { class: "axis", x1: M.left, x2: W - M.right, y1: y(v), y2: y(v) }));
      svg.append(svgEl("text", { x: M.left - 6, y: y(v) + 4, "text-anchor": "end" }, format(v, data.unit)));
    }
    svg.append(svgEl("text", { x: M.left, y: H - 6 }, clock(scale.start)));
    svg.append(svgEl("text", { x: W - M.right, y: H - 6, "text-anchor": "end" }, clock(scale.end)));
    // the last field (max) first, so that a p99 equal to the max is drawn over it and stays visible
    data.fields.map((field, i) => [field, i]).reverse().forEach(([field, i]) => {
      let d = "", joined = false;
      const dots = [];
      for (const point of series.points) {
        const value = point[field];
        if (value === null) { joined = false; continue; }
        d += (joined ? "L" : "M") + x(point.time).toFixed(1) + "," + y(value).toFixed(1);
        joined = true;
        const dot = svgEl("circle", { class: "point f" + i, cx: x(point.time), cy: y(value), r: 2.5,
          "data-field": field, "data-time": point.time, "data-value": value });
        dot.append(svgEl("title", {}, field + " " + format(value, data.unit) + " at " + clock(point.time)));
        dots.push(dot);
      }
      if (d) svg.append(svgEl("path", { class: "line f" + i, d: d, "data-field": field }));
      svg.append(...dots);
    });
    return svg;
  }

  // --- following the flushes ------------------------------------------------------

  function onFlush(summary) {
    state.version = summary.version;
    const time = summary.time === null ? "no flush yet" : "last flush " + clock(summary.time);
    const interval = summary.interval ? " · " + plain(summary.interval) + " s interval" : "";
    $("status").textContent = time + interval + " · " + summary.series.toLocaleString("en") + " series · " +
      summary.intervals + " of " + summary.history + " intervals held · live (" + state.transport + ")";
    refresh();
  }

  function refresh() {
    loadTable().catch(report);
    loadChart().catch(report);
  }

  function follow() {
    if (window.EventSource) {
      state.transport = "events";
      const events = new EventSource("/api/events");
      events.addEventListener("flush", (event) => onFlush(JSON.parse(event.data)));
      events.addEventListener("error", () => { $("status").textContent = "reconnecting…"; });
      return;
    }
    state.transport = "polling";
    const poll = async () => {
      try {
        const summary = await getJSON("/api/summary");
        if (summary.version !== state.version) onFlush(summary);
      } catch (error) {
        report(error);
      }
      window.setTimeout(poll, POLL_MS);
    };
    poll();
  }

  function report(error) {
    $("status").textContent = "cannot reach the worker: " + error.message;
  }

  function wireControls() {
    let timer = null;
    $("search").addEventListener("input", () => {
      window.clearTimeout(timer);
      timer = window.setTimeout(() => {
        state.query = $("search").value;
        state.offset = 0;
        loadTable().catch(report);
      }, SEARCH_DELAY_MS);
    });
    $("type").addEventListener("change", () => {
      state.type = $("type").value;
      state.offset = 0;
      loadTable().catch(report);
    });
    $("prev").addEventListener("click", () => {
      state.offset = Math.max(0, state.offset - state.limit);
      loadTable().catch(report);
    });
    $("next").addEventListener("click", () => {
      state.offset += state.limit;
      loadTable().catch(report);
    });
    $("chart-close").addEventListener("click", () => select(null));
    $("series").tBodies[0].addEventListener("click", (event) => {
      const tr = event.target.closest("tr[data-id]");
      if (tr) select(tr.dataset.id);
    });
  }

  // the first page the server rendered: its paging, so that the pager and state agree with it
  function adoptServedRows() {
    const data = $("series").dataset;
    if (data.limit === undefined) return;
    state.served = { version: Number(data.version), offset: Number(data.offset), limit: Number(data.limit),
      matched: Number(data.matched), total: Number(data.total) };
    state.limit = state.served.limit;
    state.shown = { query: "", type: "", offset: state.served.offset };
  }

  function selectFromHash() {
    const match = /^#series=([0-9a-f]+)$/.exec(window.location.hash);
    if (match && match[1] !== state.selected) {
      state.autoSelected = true;
      select(match[1]);
    }
  }

  function start() {
    adoptServedRows();
    wireControls();
    selectFromHash();
    window.addEventListener("hashchange", selectFromHash);
    follow();
  }

  start();
})();
