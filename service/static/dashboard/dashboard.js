// The ContextForge dashboard: polls GET /admin/stats with the key kept in sessionStorage and
// draws each panel. Every text from the API goes in through textContent (names are data).
"use strict";
(function () {
  const KEY = "contextforge.dashboard.key";
  const REFRESH_MS = 5000;
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2",
                  "#db2777", "#65a30d", "#475569"];
  const $ = (id) => document.getElementById(id);
  const charts = {};
  let timer = null;
  let last = null;

  // --- formatting ------------------------------------------------------------------------
  const num = (x, d = 2) => (x === null || x === undefined ? "–" : Number(x).toFixed(d));
  const pct = (x) => (x === null || x === undefined ? "–" : (100 * x).toFixed(1) + "%");
  const usd = (x) => {
    if (x === null || x === undefined) return "–";
    if (x === 0) return "$0";
    const a = Math.abs(x);
    return "$" + (a >= 100 ? x.toFixed(0) : a >= 1 ? x.toFixed(2) : a >= 0.01 ? x.toFixed(4)
                  : x.toPrecision(2));
  };

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v; else node.setAttribute(k, v);
    }
    for (const c of children) {
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function bar(share, cls) {  // a share as a bar; its width set through the CSSOM (CSP-safe)
    const fill = el("span", { class: "fill " + (cls || "") });
    fill.style.width = Math.max(0, Math.min(1, share || 0)) * 100 + "%";
    return el("span", { class: "bar" }, fill);
  }

  function table(columns, rows) {
    const head = el("tr", {}, ...columns.map((c) => el("th", {}, c[0])));
    const body = rows.map((r) => el("tr", {}, ...columns.map((c) => {
      const v = c[1](r);
      return el("td", { class: v instanceof Node ? "" : c[2] || "" }, v);
    })));
    return el("table", {}, el("thead", {}, head), el("tbody", {}, ...body));
  }

  // --- panels ----------------------------------------------------------------------------
  function panel(id, hasData) {
    const p = $(id);
    p.dataset.state = hasData ? "data" : "empty";
    return p;
  }

  function setTable(id, columns, rows) {
    const p = panel(id, rows.length > 0);
    p.querySelector(".table").replaceChildren(rows.length ? table(columns, rows) : "");
  }

  function figures(id, items) {
    $(id).replaceChildren(...items.map(([label, value]) =>
      el("div", { class: "figure" }, el("span", { class: "value" }, value),
         el("span", { class: "label" }, label))));
  }

  function tickLabels(u, ticks) {  // enough decimals that neighbouring ticks differ
    const step = ticks.length > 1 ? Math.abs(ticks[1] - ticks[0]) : 1;
    const digits = step > 0 ? Math.min(8, Math.max(0, -Math.floor(Math.log10(step)))) : 0;
    return ticks.map((v) => v.toFixed(digits));
  }

  function nonZero(u, si) {  // a sparse series' points: only where something happened
    return u.data[si].flatMap((v, i) => (v !== null && v !== 0 ? [i] : []));
  }

  function lineChart(name, container, t, series) {
    // series: [{label, values}]; rebuilt when the set of series changes, else data updated.
    const width = Math.max(240, container.clientWidth - 4);
    // A series with only a few points (traffic in one bucket) draws them: a lone point has
    // no line to show.
    const sparse = series.map((s) => s.values.filter((v) => v !== null && v !== 0).length < 4);
    const sig = series.map((s, i) => s.label + (sparse[i] ? "*" : "")).join("|");
    const data = [t, ...series.map((s) => s.values)];
    const existing = charts[name];
    if (existing && existing.sig === sig && existing.container === container) {
      existing.plot.setData(data);
      if (Math.abs(existing.plot.width - width) > 2) existing.plot.setSize({ width, height: 180 });
      return;
    }
    if (existing) existing.plot.destroy();
    container.replaceChildren();
    const opts = {
      width, height: 180, legend: { show: true },
      scales: { x: { time: true } },
      series: [{}, ...series.map((s, i) => ({
        label: s.label, stroke: COLORS[i % COLORS.length], width: 1.5,
        points: { show: sparse[i], size: 7, filter: nonZero }, spanGaps: true, value: (u, v) => (v == null ? "–" : num(v, 4)),
      }))],
      axes: [{}, { size: 60, values: tickLabels }],
    };
    charts[name] = { plot: new uPlot(opts, data, container), sig, container };
  }

  function drawRequests(s) {
    const r = s.requests;
    const p = panel("panel-requests", !!r && r.total > 0);
    if (!r || !r.total) return;
    figures("requests-figures", [["requests", r.total], ["per second", num(r.per_s, 3)],
                                 ["errors", r.errors], ["window", (s.window_s / 60) + " min"]]);
    lineChart("requests", p.querySelector(".chart"), r.series.t, [
      { label: "requests/s", values: r.series.requests_per_s },
      { label: "errors/s", values: r.series.errors_per_s }]);
  }

  function drawCache(s) {
    const c = s.cache;
    const p = panel("panel-cache", !!c && c.lookups > 0);
    if (!c || !c.lookups) return;
    const tiers = Object.entries(c.hits_by_tier).map(([k, v]) => k + " " + v).join(", ");
    figures("cache-figures", [["hit rate", pct(c.hit_rate)], ["saved", usd(c.saved_usd)],
                              ["hits", c.hits + (tiers ? " (" + tiers + ")" : "")],
                              ["lookups", c.lookups]]);
    lineChart("cache", p.querySelector(".chart"), s.requests.series.t,
              [{ label: "hit rate", values: s.requests.series.cache_hit_rate }]);
  }

  function drawSpend(s) {
    const sp = s.spend;
    const p = panel("panel-spend", !!sp && sp.total_usd > 0);
    if (!sp || !(sp.total_usd > 0)) return;
    const by = $("spend-by").value;
    figures("spend-figures", [["spent in window", usd(sp.total_usd)],
                              ["tenants", sp.by_tenant.length], ["models", sp.by_model.length]]);
    const groups = sp.series[by] || {};
    lineChart("spend", p.querySelector(".chart"), sp.series.t,
              Object.entries(groups).map(([label, values]) => ({ label, values })));
    const rows = sp["by_" + by] || [];
    const top = rows.length ? rows[0].cost_usd : 0;
    p.querySelector(".table").replaceChildren(table([
      [by, (r) => r[by] ?? "none"], ["requests", (r) => r.requests, "num"],
      ["spend", (r) => usd(r.cost_usd), "num"],
      ["", (r) => bar(top ? r.cost_usd / top : 0)]], rows.slice(0, 8)));
  }

  function drawBudgets(s) {
    const b = s.budgets || [];
    const p = panel("panel-budgets", b.length > 0);
    if (!b.length) return;
    const shown = b.slice(0, 6);
    // One x axis: each budget's own period is aligned on the first budget's times.
    lineChart("budgets", p.querySelector(".chart"), shown[0].series.t, shown.map((x) => ({
      label: x.bucket + " left",
      values: shown[0].series.t.map((_, i) => x.series.remaining_usd[i] ?? null),
    })));
    p.querySelector(".table").replaceChildren(table([
      ["budget", (r) => r.bucket], ["period", (r) => r.period],
      ["spent", (r) => usd(r.spent_usd) + " / " + usd(r.limit_usd), "num"],
      ["used", (r) => bar(r.used_share, r.used_share >= 0.8 ? "hot" : "")],
      ["projected", (r) => usd(r.projected_usd), "num"]], b));
  }

  function drawAll(s) {
    last = s;
    drawRequests(s);
    setTable("panel-errors", [
      ["provider", (r) => r.provider], ["requests", (r) => r.requests, "num"],
      ["errors", (r) => r.errors, "num"], ["rate", (r) => pct(r.error_rate), "num"],
      ["", (r) => bar(r.error_rate, "hot")]], s.errors || []);
    setTable("panel-latency", [
      ["provider", (r) => r.provider], ["model", (r) => r.model],
      ["n", (r) => r.requests, "num"], ["p50", (r) => num(r.p50_ms, 1), "num"],
      ["p95", (r) => num(r.p95_ms, 1), "num"], ["p99", (r) => num(r.p99_ms, 1), "num"],
      ["TTFT p50", (r) => num(r.ttft_p50_ms, 1), "num"],
      ["TTFT p95", (r) => num(r.ttft_p95_ms, 1), "num"],
      ["TTFT p99", (r) => num(r.ttft_p99_ms, 1), "num"]], s.latency || []);
    setTable("panel-routing", [
      ["route", (r) => r.route], ["model", (r) => r.model],
      ["requests", (r) => r.requests, "num"], ["share", (r) => pct(r.share), "num"],
      ["", (r) => bar(r.share)]], s.routing || []);
    drawCache(s);
    drawSpend(s);
    drawBudgets(s);
    setTable("panel-deployments", [
      ["model", (r) => r.model], ["deployment", (r) => r.deployment],
      ["state", (r) => el("span", { class: "badge " + r.state }, r.state)],
      ["breaker", (r) => r.breaker], ["errors", (r) => pct(r.error_rate), "num"],
      ["latency", (r) => num(r.latency_ewma_ms, 1), "num"],
      ["in flight", (r) => r.inflight, "num"], ["calls", (r) => r.calls, "num"]],
    (s.deployments || []).filter((d) => d.calls > 0 || d.state !== "healthy")
      .concat((s.deployments || []).filter((d) => !(d.calls > 0 || d.state !== "healthy"))));
    setTable("panel-quality", [
      ["model", (r) => r.model], ["n", (r) => r.requests, "num"],
      ["predicted", (r) => num(r.predicted, 3), "num"], ["", (r) => bar(r.predicted)],
      ["scored (n)", (r) => (r.scored === null ? "not scored"
        : num(r.scored, 3) + " (" + r.scored_requests + ")"), "num"],
      ["", (r) => bar(r.scored, "alt")]],
    s.quality || []);
    setTable("panel-value", [
      ["route", (r) => r.route], ["n", (r) => r.requests, "num"],
      ["mean cost", (r) => usd(r.mean_cost_usd), "num"],
      ["quality", (r) => num(r.quality, 3), "num"],
      ["$ per quality", (r) => usd(r.usd_per_quality), "num"],
      ["scored", (r) => pct(r.scored_share), "num"]], s.value || []);
  }

  // --- fetching and signing in -----------------------------------------------------------
  function status(text, cls) {
    const st = $("status");
    st.textContent = text;
    st.className = cls || "";
  }

  function askKey(message) {
    clearTimeout(timer);
    $("login-error").textContent = message || "";
    $("logout").hidden = true;
    status("not signed in");
    if (!$("login").open) $("login").showModal();
    $("key").focus();
  }

  async function refresh() {
    clearTimeout(timer);
    const key = sessionStorage.getItem(KEY);
    if (!key) return askKey();
    const params = new URLSearchParams({ window_s: $("window").value });
    const tenant = $("tenant").value.trim();
    if (tenant) params.set("tenant", tenant);
    try {
      const resp = await fetch("/admin/stats?" + params, {
        headers: { authorization: "Bearer " + key }, cache: "no-store",
      });
      const body = await resp.json().catch(() => ({}));
      if (resp.status === 401 || resp.status === 403) {
        if (resp.status === 401) sessionStorage.removeItem(KEY);
        return askKey((body.error && body.error.message) || "This key may not read the stats.");
      }
      if (!resp.ok) throw new Error((body.error && body.error.message) || resp.statusText);
      drawAll(body);
      $("logout").hidden = false;
      status("updated " + new Date().toLocaleTimeString() +
             (body.tenant ? " · tenant " + body.tenant : ""), "ok");
    } catch (err) {
      status("refresh failed: " + err.message, "error");
    }
    // On the wall clock's 5 s marks: every open dashboard asks at about the same moment, and
    // the gateway computes the answer once for all of them.
    timer = setTimeout(refresh, REFRESH_MS - (Date.now() % REFRESH_MS) + 50);
  }

  $("login-form").addEventListener("submit", () => {
    sessionStorage.setItem(KEY, $("key").value.trim());
    $("key").value = "";
    refresh();
  });
  $("controls").addEventListener("submit", (e) => { e.preventDefault(); refresh(); });
  $("logout").addEventListener("click", () => { sessionStorage.removeItem(KEY); askKey(); });
  $("window").addEventListener("change", refresh);
  $("tenant").addEventListener("change", refresh);
  $("spend-by").addEventListener("change", () => last && drawSpend(last));
  window.addEventListener("resize", () => last && drawAll(last));
  refresh();
})();
