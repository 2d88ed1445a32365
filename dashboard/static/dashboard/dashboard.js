// The pipeline dashboard: draws a snapshot (dashboard/selectors.py), then keeps it live over
// ws/dashboard/ (a snapshot after events, and each event as it comes); polls if the socket drops.
(function () {
  "use strict";
  const root = document.getElementById("dashboard");
  const STAGE_COLOURS = {changed: "#1565c0", parsed: "#6a1b9a", chunked: "#00838f", embedded: "#ef6c00",
                         indexed: "#2e7d32", failed: "#c62828"};
  const charts = {};

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }
  function rows(tableId, items, cells) {
    const body = document.querySelector(`#${tableId} tbody`);
    body.replaceChildren(...items.map((item) => {
      const tr = el("tr");
      cells(item).forEach((cell) => tr.append(cell instanceof Node ? cell : el("td", cell)));
      return tr;
    }));
  }
  function seconds(value) {
    if (value === null || value === undefined) return "–";
    return value < 1 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(value < 10 ? 2 : 0)} s`;
  }
  function clock(iso) { return iso ? new Date(iso).toLocaleTimeString() : ""; }
  function width(node) { return Math.max(240, node.clientWidth - 4); }

  function chart(id, series, data, height) {
    const node = document.getElementById(id);
    if (charts[id]) { charts[id].setData(data); return; }
    charts[id] = new uPlot({width: width(node), height, series: [{}, ...series], axes: [{}, {size: 50}],
                            legend: {live: false}}, data, node);
  }

  function draw(snapshot) {
    const docs = snapshot.documents;
    const total = Object.values(docs.totals).reduce((a, b) => a + b, 0);
    document.getElementById("tile-documents").textContent = total;
    document.getElementById("tile-documents-sub").textContent =
      Object.entries(docs.totals).map(([status, n]) => `${n} ${status}`).join(" · ");
    const fresh = snapshot.freshness;
    document.getElementById("tile-freshness").textContent = `p50 ${seconds(fresh.p50)}`;
    document.getElementById("tile-freshness-sub").textContent =
      `p95 ${seconds(fresh.p95)} over ${fresh.count} indexed version${fresh.count === 1 ? "" : "s"}`;
    document.getElementById("tile-failures").textContent = snapshot.failures.count;
    const depths = Object.entries(snapshot.queues);
    const waiting = depths.some(([, n]) => n === null) ? "?" : depths.reduce((a, [, n]) => a + n, 0);
    document.getElementById("tile-queued").textContent = waiting;

    rows("queues", depths, ([queue, n]) => [queue, n === null ? "broker down" : n]);
    rows("sources", docs.by_source, (s) => {
      const name = el("td"); const link = el("a", s.name);
      link.href = `/admin/ingestion/document/?source__id__exact=${s.id}`; name.append(link);
      return [name, s.kind, s.counts.pending, s.counts.processing, el("td", s.counts.indexed, "status-indexed"),
              el("td", s.counts.failed, s.counts.failed ? "status-failed" : "")];
    });
    rows("failures", snapshot.failures.newest, (f) => {
      const doc = el("td");
      if (f.document_id) { const a = el("a", `#${f.document_id}`); a.href = `/admin/ingestion/document/${f.document_id}/change/`; doc.append(a); }
      return [clock(f.time), doc, f.stage, el("td", f.reason, "reason")];
    });
    rows("syncs", snapshot.sync_runs.newest, (r) => [clock(r.started_at), r.source, r.trigger,
      el("td", r.status, r.status === "failed" ? "status-failed" : ""),
      `${r.seen} / ${r.new} / ${r.changed} / ${r.deleted} / ${r.failed}`]);
    const deliveries = document.getElementById("deliveries");
    if (snapshot.deliveries === null) {
      deliveries.replaceChildren(el("p", "No sinks in this version.", "sub"));
    } else {
      const list = el("ul");
      Object.entries(snapshot.deliveries.by_status).forEach(([status, n]) => list.append(el("li", `${status}: ${n}`)));
      deliveries.replaceChildren(el("p", `${snapshot.deliveries.total} deliveries`), list);
    }
    const stages = Object.keys(snapshot.rates.stages);
    chart("chart-rates", stages.map((s) => ({label: s, stroke: STAGE_COLOURS[s] || "#555", width: 2})),
          [snapshot.rates.minutes, ...stages.map((s) => snapshot.rates.stages[s])], 220);
    chart("chart-feedback", [{label: "up", stroke: "#2e7d32", width: 2}, {label: "down", stroke: "#c62828", width: 2}],
          [snapshot.feedback.hours, snapshot.feedback.up, snapshot.feedback.down], 160);
    document.getElementById("feedback-total").textContent = `${snapshot.feedback.total} votes in all`;
    document.getElementById("updated").textContent = `updated ${clock(snapshot.time)}`;
    root.dataset.indexed = docs.totals.indexed || 0;
    root.dataset.updated = snapshot.time;
  }

  function events(list) {
    const ol = document.getElementById("live-events");
    list.forEach((event) => {
      const item = el("li", `${clock(event.time)} ${event.type.replace("freshet.", "")} ${event.subject}`);
      item.dataset.type = event.type;
      item.title = event.reason || event.id;
      ol.prepend(item);
    });
    while (ol.children.length > 200) ol.lastChild.remove();
  }

  let poller = null;
  function poll() {
    fetch(root.dataset.dataUrl, {credentials: "same-origin"}).then((r) => r.ok ? r.json() : null)
      .then((s) => s && draw(s)).catch(() => {});
  }
  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}${root.dataset.wsPath}`);
    const live = document.getElementById("live");
    socket.onopen = () => {
      live.dataset.connected = "true"; live.textContent = "live";
      if (poller) { clearInterval(poller); poller = null; }
    };
    socket.onmessage = (message) => {
      const payload = JSON.parse(message.data);
      if (payload.type === "snapshot") draw(payload.snapshot);
      else if (payload.type === "events") events(payload.events);
    };
    socket.onclose = () => {
      live.dataset.connected = "false"; live.textContent = "reconnecting… (polling)";
      if (!poller) poller = setInterval(poll, 5000);
      setTimeout(connect, 3000);
    };
  }

  draw(JSON.parse(document.getElementById("dashboard-snapshot").textContent));
  window.addEventListener("resize", () => Object.entries(charts).forEach(([id, c]) => {
    const node = document.getElementById(id); c.setSize({width: width(node), height: c.height});
  }));
  connect();
})();
