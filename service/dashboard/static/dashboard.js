/* Operator dashboard and run report: the same views, drawn by Plotly (served by the service
 * itself, or inlined in the report). No build step, no framework, no CDN.
 *
 * body[data-mode=dashboard]: a shell; the operator's key (sessionStorage, this tab only) goes
 *   as a bearer header on every JSON API call; the progress stream is read with fetch (an
 *   EventSource cannot send the header).
 * body[data-mode=report]: the data is embedded (<script type=application/json id=report-data>)
 *   by `cdmo report`; nothing is fetched.
 *
 * Every value from the API is put in the page as text (textContent), never as HTML.
 */
(function () {
  "use strict";

  const CDMO = {};
  const FINAL = new Set(["succeeded", "failed", "cancelled"]);
  const PLOT_CONFIG = { displaylogo: false, responsive: true };

  function layout(title, extra) {
    return Object.assign(
      {
        title: { text: title, font: { size: 15 } },
        margin: { l: 70, r: 20, t: 44, b: 80 },
        height: 340,
        paper_bgcolor: "#fff",
        plot_bgcolor: "#fff",
      },
      extra || {}
    );
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "text") node.textContent = value;
      else if (name === "class") node.className = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function fmt(value, digits) {
    if (value === null || value === undefined) return "-";
    if (typeof value === "number") {
      return value.toLocaleString("en-US", { maximumFractionDigits: digits === undefined ? 1 : digits });
    }
    return String(value);
  }

  function pct(value) {
    return value === null || value === undefined ? "-" : (100 * value).toFixed(2) + " %";
  }

  function emptyNote(text) {
    return {
      annotations: [{ text: text, showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5 }],
      xaxis: { visible: false },
      yaxis: { visible: false },
    };
  }

  // --- shaping the API's answers into chart data (pure) ------------------------------------

  /* Site x month utilisation: (reserved + used) / capacity, summed over processes. */
  CDMO.heatmapData = function (rows) {
    const cells = new Map();
    const sites = new Set();
    const months = new Set();
    for (const row of rows) {
      const key = row.site_id + "|" + row.month;
      const cell = cells.get(key) || { capacity: 0, load: 0 };
      cell.capacity += row.capacity_hours;
      cell.load += row.reserved_hours + row.used_hours;
      cells.set(key, cell);
      sites.add(row.site_id);
      months.add(row.month);
    }
    const siteList = Array.from(sites).sort();
    const monthList = Array.from(months).sort();
    const z = siteList.map((site) =>
      monthList.map((month) => {
        const cell = cells.get(site + "|" + month);
        return cell && cell.capacity > 0 ? Math.round((1000 * cell.load) / cell.capacity) / 1000 : null;
      })
    );
    return { sites: siteList, months: monthList, z: z };
  };

  // --- charts ------------------------------------------------------------------------------

  CDMO.plotHeatmap = function (div, rows) {
    const data = CDMO.heatmapData(rows);
    if (!data.sites.length) {
      return Plotly.newPlot(div, [], layout("Capacity utilisation", emptyNote("no capacity listed")), PLOT_CONFIG);
    }
    return Plotly.newPlot(
      div,
      [
        {
          type: "heatmap",
          x: data.months,
          y: data.sites,
          z: data.z,
          zmin: 0,
          zmax: 1,
          colorscale: "YlOrRd",
          reversescale: true, // plotly.js runs YlOrRd dark to light: full = dark red
          colorbar: { title: { text: "used" }, tickformat: ".0%" },
          hovertemplate: "%{y}<br>%{x}: %{z:.1%}<extra></extra>",
        },
      ],
      layout("Capacity utilisation (reserved + this run) by site and month", {
        height: Math.max(360, 120 + 16 * data.sites.length),
        margin: { l: 200, r: 20, t: 44, b: 70 },
        xaxis: { type: "category" },
        yaxis: { type: "category", automargin: true, autorange: "reversed" },
      }),
      PLOT_CONFIG
    );
  };

  CDMO.plotUnmet = function (div, bottlenecks) {
    const cat = bottlenecks.by_category || [];
    const mkt = bottlenecks.by_market || [];
    if (!cat.length && !mkt.length) {
      return Plotly.newPlot(div, [], layout("Unmet demand", emptyNote("every project in scope was placed")), PLOT_CONFIG);
    }
    const bar = (groups, axis, name, color) => ({
      type: "bar",
      name: name,
      x: groups.map((g) => g.key),
      y: groups.map((g) => g.hours),
      text: groups.map((g) => g.projects + " proj."),
      textposition: "auto",
      xaxis: "x" + axis,
      yaxis: "y" + axis,
      marker: { color: color },
      hovertemplate: "%{x}: %{y:,.0f} h (%{text})<extra>" + name + "</extra>",
    });
    return Plotly.newPlot(
      div,
      [bar(cat, "", "by category", "#d95f02"), bar(mkt, "2", "by market", "#7570b3")],
      layout(
        "Unmet demand: " + fmt(bottlenecks.unmet_hours, 0) + " h over " + bottlenecks.unplaced_projects + " projects",
        {
          grid: { rows: 1, columns: 2, pattern: "independent" },
          margin: { l: 70, r: 20, t: 44, b: 120 },
          yaxis: { title: { text: "hours" } },
          xaxis: { title: { text: "device category" }, type: "category", automargin: true },
          xaxis2: { title: { text: "market" }, type: "category", automargin: true },
          showlegend: false,
        }
      ),
      PLOT_CONFIG
    );
  };

  CDMO.plotCertifications = function (div, bottlenecks) {
    const groups = bottlenecks.certifications || [];
    if (!groups.length) {
      return Plotly.newPlot(div, [], layout("Bottleneck certifications", emptyNote("no certificate binds")), PLOT_CONFIG);
    }
    return Plotly.newPlot(
      div,
      [
        {
          type: "bar",
          orientation: "h",
          y: groups.map((g) => g.key),
          x: groups.map((g) => g.projects),
          text: groups.map((g) => fmt(g.hours, 0) + " h"),
          textposition: "auto",
          marker: { color: "#1b9e77" },
          hovertemplate: "%{y}: %{x} projects, %{text}<extra></extra>",
        },
      ],
      layout("Bottleneck certifications (projects they keep out)", {
        margin: { l: 200, r: 20, t: 44, b: 50 },
        xaxis: { title: { text: "projects" } },
        yaxis: { type: "category", automargin: true, autorange: "reversed" },
      }),
      PLOT_CONFIG
    );
  };

  /* items: /placements-by-cdmo (cdmo_id, primary, second_source), most placements first. */
  CDMO.plotPlacements = function (div, items) {
    if (!items.length) {
      return Plotly.newPlot(div, [], layout("Placements per CDMO", emptyNote("nothing placed")), PLOT_CONFIG);
    }
    const cdmos = items.map((i) => i.cdmo_id);
    return Plotly.newPlot(
      div,
      [
        { type: "bar", name: "primary", x: cdmos, y: items.map((i) => i.primary), marker: { color: "#1f77b4" } },
        {
          type: "bar",
          name: "second source",
          x: cdmos,
          y: items.map((i) => i.second_source),
          marker: { color: "#aec7e8" },
        },
      ],
      layout("Placements per CDMO", {
        barmode: "stack",
        xaxis: { type: "category", automargin: true },
        yaxis: { title: { text: "projects" } },
      }),
      PLOT_CONFIG
    );
  };

  /* Objective and bound against elapsed time; push() adds a progress event. */
  CDMO.convergence = function (div) {
    const seen = { objective: 0, bound: 0 };
    const ready = Plotly.newPlot(
      div,
      [
        { type: "scatter", mode: "lines+markers", name: "objective", x: [], y: [], line: { color: "#1f77b4" } },
        { type: "scatter", mode: "lines+markers", name: "bound", x: [], y: [], line: { color: "#d62728", dash: "dot" } },
      ],
      layout("Objective and bound", {
        xaxis: { title: { text: "elapsed (s)" } },
        yaxis: { title: { text: "value" } },
        legend: { orientation: "h", y: -0.25 },
      }),
      PLOT_CONFIG
    );
    const queue = [];
    let busy = false;
    function flush() {
      if (busy || !queue.length) return;
      busy = true;
      const batch = queue.splice(0, queue.length);
      const x = [[], []];
      const y = [[], []];
      for (const p of batch) {
        if (typeof p.objective === "number") {
          x[0].push(p.elapsed_s);
          y[0].push(p.objective);
          seen.objective += 1;
        }
        if (typeof p.bound === "number") {
          x[1].push(p.elapsed_s);
          y[1].push(p.bound);
          seen.bound += 1;
        }
      }
      Promise.resolve(ready)
        .then(() => Plotly.extendTraces(div, { x: x, y: y }, [0, 1]))
        .finally(() => {
          busy = false;
          flush();
        });
    }
    return {
      push: function (progress) {
        queue.push(progress);
        flush();
      },
      seen: seen,
    };
  };

  function runFacts(run) {
    const s = run.summary || {};
    const p = run.progress || {};
    const facts = [
      ["status", run.status],
      ["dry run", run.dry_run ? "yes" : "no"],
      ["time limit", fmt(run.params && run.params.time_limit_s) + " s"],
      ["objective", fmt(s.objective !== undefined ? s.objective : p.objective)],
      ["bound", fmt(s.bound !== undefined ? s.bound : p.bound)],
      ["gap", pct(s.gap !== undefined ? s.gap : p.gap)],
      ["placed", s.placed !== undefined ? s.placed + " of " + s.projects : fmt(p.placed)],
      ["created", run.created_at],
    ];
    if (run.error) facts.push(["error", typeof run.error === "string" ? run.error : JSON.stringify(run.error)]);
    return el(
      "div",
      { class: "facts", id: "run-facts" },
      ...facts.map(([k, v]) => el("span", {}, k + ": ", el("b", { text: v })))
    );
  }

  /* The finished run's views (dashboard and report alike). */
  CDMO.renderAnalytics = function (container, data) {
    container.replaceChildren();
    const charts = el("div", { class: "charts" });
    const div = (id, wide) => el("div", { id: id, class: wide ? "chart wide" : "chart" });
    const heat = div("chart-utilisation", true);
    const unmet = div("chart-unmet");
    const certs = div("chart-certifications");
    const places = div("chart-placements", true);
    charts.append(heat, unmet, certs, places);
    container.append(charts);
    return Promise.all([
      CDMO.plotHeatmap(heat, data.utilisation),
      CDMO.plotUnmet(unmet, data.bottlenecks),
      CDMO.plotCertifications(certs, data.bottlenecks),
      CDMO.plotPlacements(places, data.placements),
    ]);
  };

  // --- report mode -------------------------------------------------------------------------

  function report() {
    const data = JSON.parse(document.getElementById("report-data").textContent);
    const view = document.getElementById("run-view");
    view.append(el("h2", { text: "Run " + data.run.id }), runFacts(data.run));
    const live = el("div", { id: "chart-convergence", class: "chart wide" });
    view.append(live);
    const chart = CDMO.convergence(live);
    for (const p of data.events) chart.push(p);
    const analytics = el("div", { id: "analytics" });
    view.append(analytics);
    if (data.analytics_error) {
      analytics.append(el("p", { class: "error", text: data.analytics_error }));
      document.body.dataset.rendered = "true";
      return;
    }
    CDMO.renderAnalytics(analytics, data).then(() => {
      document.body.dataset.rendered = "true";
    });
  }

  // --- dashboard mode ----------------------------------------------------------------------

  const KEY = "cdmo.operatorKey";
  let current = null; // {runId, abort}
  let listTimer = null;

  function key() {
    return sessionStorage.getItem(KEY);
  }

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  async function api(path, options) {
    const response = await fetch(path, {
      ...(options || {}),
      headers: { Authorization: "Bearer " + key(), Accept: "application/json" },
      cache: "no-store",
    });
    if (response.status === 401) {
      signOut("This key was refused (unknown, revoked or expired).");
      throw new ApiError(401, "unauthorised");
    }
    if (!response.ok) {
      let detail = response.statusText;
      try {
        const problem = await response.json();
        detail = problem.detail || problem.title || detail;
      } catch (_) {
        /* not JSON */
      }
      throw new ApiError(response.status, detail);
    }
    return response.json();
  }

  async function allPages(path) {
    const items = [];
    let cursor = null;
    let body = null;
    do {
      const sep = path.includes("?") ? "&" : "?";
      const url = path + sep + "limit=200" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : "");
      body = await api(url);
      items.push(...body.items);
      cursor = body.next_cursor;
    } while (cursor);
    return items;
  }

  /* Server-sent events through fetch (the bearer header), resumed with Last-Event-ID. */
  async function followEvents(runId, onEvent, signal) {
    let lastId = null;
    for (;;) {
      const headers = { Authorization: "Bearer " + key(), Accept: "text/event-stream" };
      if (lastId) headers["Last-Event-ID"] = lastId;
      let finished = false;
      try {
        const response = await fetch("v1/match-runs/" + encodeURIComponent(runId) + "/events", {
          headers: headers,
          signal: signal,
          cache: "no-store",
        });
        if (!response.ok) throw new ApiError(response.status, "events: HTTP " + response.status);
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value.replace(/\r\n/g, "\n");
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            const event = { id: null, kind: "message", data: "" };
            for (const line of block.split("\n")) {
              if (line.startsWith("id:")) event.id = line.slice(3).trim();
              else if (line.startsWith("event:")) event.kind = line.slice(6).trim();
              else if (line.startsWith("data:")) event.data += line.slice(5).trim();
            }
            if (!event.data) continue; // comments, keep-alives, retry
            if (event.id && event.id !== "final") lastId = event.id;
            onEvent(event.kind, JSON.parse(event.data));
            if (event.kind === "final") finished = true;
          }
        }
      } catch (error) {
        if (signal.aborted) return;
        if (error instanceof ApiError && error.status !== 503) throw error;
      }
      if (finished || signal.aborted) return;
      await new Promise((resolve) => setTimeout(resolve, 2000)); // dropped: resume
    }
  }

  async function loadRuns() {
    const body = await api("v1/match-runs?limit=50");
    const tbody = document.querySelector("#runs tbody");
    tbody.replaceChildren();
    for (const run of body.items) {
      const s = run.summary || {};
      const p = run.progress || {};
      const row = el(
        "tr",
        { "data-run-id": run.id, class: current && current.runId === run.id ? "selected" : "" },
        el("td", { text: run.id }),
        el("td", { text: run.status, class: "status-" + run.status }),
        el("td", { text: run.created_at }),
        el("td", { text: fmt(run.params.time_limit_s) + " s" }),
        el("td", { text: fmt(s.objective !== undefined ? s.objective : p.objective) }),
        el("td", { text: fmt(s.bound !== undefined ? s.bound : p.bound) }),
        el("td", { text: pct(s.gap !== undefined ? s.gap : p.gap) }),
        el("td", { text: s.placed !== undefined ? s.placed + " / " + s.projects : fmt(p.placed) })
      );
      row.addEventListener("click", () => selectRun(run.id).catch(showError));
      tbody.append(row);
    }
    document.getElementById("runs").dataset.loaded = String(body.items.length);
    // While a run is queued or running, the list follows it (every 5 s; the selected run's
    // view follows its event stream).
    clearTimeout(listTimer);
    if (body.items.some((r) => !FINAL.has(r.status))) {
      listTimer = setTimeout(() => loadRuns().catch(() => {}), 5000);
    }
    return body.items;
  }

  async function selectRun(runId) {
    if (current) current.abort.abort();
    const abort = new AbortController();
    current = { runId: runId, abort: abort };
    history.replaceState(null, "", "#run=" + encodeURIComponent(runId));
    for (const row of document.querySelectorAll("#runs tbody tr")) {
      row.classList.toggle("selected", row.dataset.runId === runId);
    }
    const view = document.getElementById("run-view");
    view.replaceChildren();
    delete view.dataset.state;
    delete view.dataset.final;
    const run = await api("v1/match-runs/" + encodeURIComponent(runId));
    const title = el("h2", { text: "Run " + run.id + " " });
    const cancel = el("button", { type: "button", id: "cancel-run", text: "Cancel run" });
    cancel.hidden = FINAL.has(run.status);
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      try {
        await api("v1/match-runs/" + encodeURIComponent(runId) + "/cancel", { method: "POST" });
      } catch (error) {
        cancel.disabled = false;
        view.append(el("p", { class: "error", text: "cancel: " + error.message }));
      }
    });
    title.append(cancel);
    let facts = runFacts(run);
    const live = el("div", { id: "chart-convergence", class: "chart wide" });
    const analytics = el("div", { id: "analytics" });
    view.append(title, facts, live, analytics);
    view.dataset.state = run.status;
    const chart = CDMO.convergence(live);
    let final = null;
    await followEvents(
      runId,
      (kind, data) => {
        if (kind === "progress") {
          chart.push(data);
          run.progress = data; // the figures beside the chart follow the stream too
        }
        if (kind === "status" && data.status) {
          run.status = data.status;
          view.dataset.state = data.status;
        }
        if (kind === "final") final = data;
        if (kind !== "final") {
          const fresh = runFacts(run);
          facts.replaceWith(fresh);
          facts = fresh;
        }
      },
      abort.signal
    );
    if (abort.signal.aborted || !final) return;
    const fresh = runFacts(final);
    facts.replaceWith(fresh);
    facts = fresh;
    cancel.hidden = true;
    view.dataset.state = final.status;
    view.dataset.final = final.status;
    loadRuns().catch(() => {});
    await showAnalytics(runId, analytics, abort.signal);
  }

  async function showAnalytics(runId, container, signal) {
    const base = "v1/match-runs/" + encodeURIComponent(runId);
    container.replaceChildren(el("p", { class: "muted", text: "loading the run's answer..." }));
    try {
      const [utilisation, bottlenecks, placements] = await Promise.all([
        allPages(base + "/utilisation"),
        api(base + "/bottlenecks"),
        api(base + "/placements-by-cdmo"),
      ]);
      if (signal.aborted) return;
      await CDMO.renderAnalytics(container, {
        utilisation: utilisation,
        bottlenecks: bottlenecks,
        placements: placements.items,
      });
      container.dataset.rendered = "true";
    } catch (error) {
      if (signal.aborted) return;
      container.replaceChildren(el("p", { class: "error", text: "no analytics: " + error.message }));
      container.dataset.rendered = "error";
    }
  }

  function showError(error) {
    if (error instanceof ApiError && error.status === 401) return; // back at the login
    const view = document.getElementById("run-view");
    view.append(el("p", { class: "error", text: "The API did not answer: " + error.message }));
  }

  function signOut(message) {
    sessionStorage.removeItem(KEY);
    clearTimeout(listTimer);
    if (current) current.abort.abort();
    current = null;
    document.getElementById("app").hidden = true;
    document.querySelector("#runs tbody").replaceChildren();
    document.getElementById("run-view").replaceChildren();
    document.getElementById("signout").hidden = true;
    document.getElementById("who").textContent = "";
    document.getElementById("login").hidden = false;
    document.getElementById("login-error").textContent = message || "";
  }

  async function open() {
    try {
      const me = await api("v1/orgs/me");
      if (me.kind !== "operator") {
        signOut("This is not an operator's key: the dashboard is for operators.");
        return;
      }
      document.getElementById("who").textContent = me.name;
      document.getElementById("login").hidden = true;
      document.getElementById("app").hidden = false;
      document.getElementById("signout").hidden = false;
      const runs = await loadRuns();
      const wanted = new URLSearchParams(location.hash.slice(1)).get("run");
      const pick = runs.find((r) => r.id === wanted) || runs[0];
      if (pick) await selectRun(pick.id);
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 401)) {
        document.getElementById("login-error").textContent = "The API did not answer: " + error.message;
      }
    }
  }

  function dashboard() {
    document.getElementById("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = document.getElementById("key");
      sessionStorage.setItem(KEY, input.value.trim());
      input.value = "";
      open();
    });
    document.getElementById("signout").addEventListener("click", () => signOut(""));
    document.getElementById("refresh").addEventListener("click", () => loadRuns());
    if (key()) open();
  }

  CDMO.selectRun = (runId) => selectRun(runId);
  CDMO.loadRuns = () => loadRuns();
  window.CDMO = CDMO;

  function start() {
    if (document.body.dataset.mode === "report") report();
    else dashboard();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
