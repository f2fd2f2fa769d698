// Switchyard's dashboard: reads /admin/stats once (five minutes of
// per-second points), then /admin/stats/stream (one snapshot a second) and
// appends each component's newest point. The admin token stays in this tab's
// sessionStorage and travels only in the Authorization header.
"use strict";

const TOKEN_KEY = "switchyard-admin-token";
const RING_SECONDS = 300;
const RETRY_MS = 2000;

const $ = (selector) => document.querySelector(selector);
const state = { token: sessionStorage.getItem(TOKEN_KEY), series: new Map(), charts: new Map(), deploys: [], abort: null };

function headers(extra = {}) {
  const h = { ...extra };
  if (state.token) h.Authorization = `Bearer ${state.token}`;
  return h;
}

function say(text) {
  $("#status").textContent = text;
}

// --- signing in --------------------------------------------------------------

async function fetchSnapshot() {
  const response = await fetch("/admin/stats", { headers: headers(), cache: "no-store" });
  if (response.status === 401) return { refused: true };
  if (!response.ok) throw new Error(`the host answered ${response.status}`);
  return { snapshot: await response.json() };
}

function showLogin(error) {
  $("#board").hidden = true;
  $("#login").hidden = false;
  $("#sign-out").hidden = true;
  $("#login-error").textContent = error || "";
  say("Not signed in");
  $("#token").focus();
}

async function start() {
  let result;
  try {
    result = await fetchSnapshot();
  } catch (err) {
    say(`Cannot reach the host: ${err.message}`);
    setTimeout(start, RETRY_MS);
    return;
  }
  if (result.refused) {
    const hadToken = Boolean(state.token);
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(hadToken ? "That token was refused." : "");
    return;
  }
  $("#login").hidden = true;
  $("#board").hidden = false;
  $("#sign-out").hidden = !state.token;
  load(result.snapshot);
  stream();
}

$("#login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  state.token = $("#token").value.trim();
  $("#token").value = "";
  const result = await fetchSnapshot().catch((err) => ({ error: err }));
  if (result.refused || !state.token) {
    state.token = null;
    $("#login-error").textContent = "That token was refused.";
    return;
  }
  if (result.error) {
    $("#login-error").textContent = `Cannot reach the host: ${result.error.message}`;
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, state.token);
  start();
});

$("#sign-out").addEventListener("click", () => {
  if (state.abort) state.abort.abort();
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin("");
});

// --- data --------------------------------------------------------------------

function load(snapshot) {
  state.series.clear();
  for (const component of snapshot.components) {
    state.series.set(component.name, component.series || []);
  }
  render(snapshot);
}

function append(snapshot) {
  for (const component of snapshot.components) {
    const points = state.series.get(component.name) || [];
    const last = component.last;
    if (last && (points.length === 0 || points[points.length - 1].t < last.t)) {
      points.push(last);
      if (points.length > RING_SECONDS) points.splice(0, points.length - RING_SECONDS);
    }
    state.series.set(component.name, points);
  }
  render(snapshot);
}

// Server-sent events read through fetch, so the token goes in a header
// (EventSource cannot send one) and never in the URL.
async function stream() {
  state.abort = new AbortController();
  try {
    const response = await fetch("/admin/stats/stream", { headers: headers(), signal: state.abort.signal });
    if (response.status === 401) return showLogin("That token was refused.");
    if (!response.ok || !response.body) throw new Error(`the host answered ${response.status}`);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
        if (data) append(JSON.parse(data));
      }
    }
    throw new Error("the stream ended");
  } catch (err) {
    if (err.name === "AbortError") return;
    say(`Reconnecting: ${err.message}`);
    setTimeout(start, RETRY_MS);
  }
}

// --- rendering ---------------------------------------------------------------

const fmt = {
  ms: (v) => (v >= 100 ? v.toFixed(0) : v.toFixed(2)) + " ms",
  int: (v) => Math.round(v).toLocaleString("en"),
  age: (ms) => (ms == null ? "—" : ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`),
  time: (t) => new Date(t).toLocaleTimeString("en-GB"),
};

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function errorsText(last) {
  if (!last || last.calls + last.rejected === 0) return "—";
  const failed = Object.entries(last.outcomes).filter(([name]) => name !== "ok" && name !== "rejected");
  const share = last.calls ? (100 * last.errors) / last.calls : 0;
  const parts = failed.map(([name, n]) => `${name} ${n}`);
  if (last.rejected) parts.push(`rejected ${last.rejected}`);
  return `${share.toFixed(1)} %` + (parts.length ? ` (${parts.join(", ")})` : "");
}

function render(snapshot) {
  state.deploys = snapshot.deploys || [];
  const problems = snapshot.problems && snapshot.problems.length ? ` · ${snapshot.problems.join("; ")}` : "";
  say(`Live · updated ${fmt.time(snapshot.at)}${problems}`);

  // Rows are kept and their cells updated, and a row's buttons are rebuilt
  // only when what they can do changes: keyboard focus on a button
  // survives the once-a-second update.
  const body = $("#components tbody");
  for (const c of snapshot.components) {
    const last = c.last;
    const row = componentRow(body, c.name);
    const cells = row.children;
    const update = (index, text, className = "") => {
      cells[index].textContent = text;
      cells[index].className = className;
      return cells[index];
    };
    update(1, c.world);
    const version = update(2, c.version, "version");
    if (c.canary) {
      const canary = document.createElement("span");
      canary.className = "canary";
      canary.textContent = ` + ${c.canary.version} (${c.canary.weight} %, step ${c.rollout ? c.rollout.step : "?"})`;
      version.appendChild(canary);
    } else if (c.rollout && c.rollout.state === "watching") {
      const watch = document.createElement("span");
      watch.className = "canary";
      watch.textContent = " (watched)";
      version.appendChild(watch);
    }
    update(3, last ? fmt.int(last.calls) : "—", "num calls");
    update(4, errorsText(last), last && last.errors ? "errors-some" : "");
    update(5, last && last.calls ? fmt.ms(last.p50_ms) : "—", "num");
    update(6, last && last.calls ? fmt.ms(last.p99_ms) : "—", "num");
    update(7, last && last.calls ? fmt.int(last.fuel_per_call) : "—", "num");
    const breaker = c.breaker ? `${c.breaker.state.replace("_", "-")} · ${c.breaker.trips} trips` : "—";
    update(8, breaker, c.breaker ? `state-${c.breaker.state}` : "");
    update(9, c.admission ? `${c.admission.running} running · ${c.admission.queued} queued` : "—");
    actions(cells[10], c);
    chart(c);
  }

  const outbox = $("#outbox tbody");
  outbox.replaceChildren();
  if (!snapshot.outbox || snapshot.outbox.length === 0) {
    const row = document.createElement("tr");
    cell(row, snapshot.outbox ? "No connectors configured" : "Not available").colSpan = 5;
    outbox.appendChild(row);
  }
  for (const o of snapshot.outbox || []) {
    const row = document.createElement("tr");
    cell(row, o.connector);
    cell(row, fmt.int(o.pending), "num");
    cell(row, fmt.int(o.dead), o.dead ? "num errors-some" : "num");
    cell(row, o.delivered_per_s.toFixed(0), "num");
    cell(row, fmt.age(o.oldest_pending_age_ms), "num");
    outbox.appendChild(row);
  }

  const history = $("#history tbody");
  history.replaceChildren();
  for (const d of state.deploys) {
    const row = document.createElement("tr");
    cell(row, fmt.time(d.at));
    cell(row, d.component || "—");
    cell(row, d.action);
    cell(row, d.result);
    cell(row, d.version || "—", "version");
    cell(row, d.actor);
    cell(row, d.reason || "", "reason");
    history.appendChild(row);
  }
}

// The component's row, made with its name and empty cells the first time.
function componentRow(body, name) {
  const existing = [...body.rows].find((r) => r.dataset.component === name);
  if (existing) return existing;
  const row = document.createElement("tr");
  row.dataset.component = name;
  const th = document.createElement("th");
  th.scope = "row";
  th.textContent = name;
  row.appendChild(th);
  for (let i = 1; i <= 10; i++) cell(row, "");
  body.appendChild(row);
  return row;
}

function actions(td, component) {
  const running = component.rollout && ["canary", "watching"].includes(component.rollout.state);
  const key = running ? `${component.rollout.state} ${component.rollout.version}` : "";
  td.className = "actions";
  if (td.dataset.key === key && td.childElementCount > 0) return;
  td.dataset.key = key;
  td.replaceChildren();
  const add = (label, what, path, danger) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = label;
    button.setAttribute("aria-label", `${label} ${component.name}`);
    if (danger) button.className = "danger";
    button.addEventListener("click", () => act(component.name, what, path));
    td.appendChild(button);
  };
  if (running) {
    add("Promote", `promote the ${component.rollout.state} version ${component.rollout.version} of ${component.name}`, "rollout/promote");
    add("Abort", `abort the rollout of ${component.name}`, "rollout/abort", true);
  }
  add("Roll back", `roll ${component.name} back to its previous version`, "rollback", true);
}

function confirmAction(text) {
  const dialog = $("#confirm");
  $("#confirm-text").textContent = `This will ${text}.`;
  return new Promise((resolve) => {
    const done = (answer) => {
      $("#confirm-ok").onclick = null;
      $("#confirm-cancel").onclick = null;
      dialog.close();
      resolve(answer);
    };
    $("#confirm-ok").onclick = () => done(true);
    $("#confirm-cancel").onclick = () => done(false);
    dialog.oncancel = () => done(false);
    dialog.showModal();
  });
}

async function act(name, what, path) {
  if (!(await confirmAction(what))) return;
  const response = await fetch(`/admin/components/${encodeURIComponent(name)}/${path}`, {
    method: "POST",
    headers: headers({ "x-switchyard-actor": "dashboard" }),
  }).catch((err) => ({ ok: false, status: 0, text: async () => err.message }));
  const body = await response.text();
  let message = body;
  try {
    const json = JSON.parse(body);
    message = json.error || (json.version ? `now serving ${json.version}` : json.rollout ? `rollout ${json.rollout.state}` : body);
  } catch (_) {
    // not JSON: show the text
  }
  say(response.ok ? `${name}: ${message}` : `${name}: refused (${response.status}): ${message}`);
}

// --- charts ------------------------------------------------------------------

function chart(component) {
  const points = state.series.get(component.name) || [];
  const data = [
    points.map((p) => p.t / 1000),
    points.map((p) => p.calls),
    points.map((p) => p.errors + p.rejected),
    points.map((p) => p.p99_ms),
  ];
  let entry = state.charts.get(component.name);
  if (!entry) {
    const figure = document.createElement("figure");
    figure.setAttribute("role", "img");
    figure.setAttribute("aria-label", `${component.name}: calls, errors and p99 latency per second over five minutes`);
    const caption = document.createElement("figcaption");
    caption.textContent = component.name;
    figure.appendChild(caption);
    $("#charts").appendChild(figure);
    const plot = new uPlot(
      {
        width: 440,
        height: 200,
        series: [
          {},
          { label: "calls/s", stroke: "#0b5cad", scale: "n" },
          { label: "errors/s", stroke: "#a40e26", scale: "n" },
          { label: "p99 ms", stroke: "#7a4d00", scale: "ms" },
        ],
        axes: [{}, { scale: "n" }, { scale: "ms", side: 1, grid: { show: false } }],
        hooks: { draw: [(u) => marks(u, component.name)] },
      },
      data,
      figure,
    );
    entry = { plot };
    state.charts.set(component.name, entry);
  } else {
    entry.plot.setData(data);
  }
}

// Deploys, rollbacks and rollout decisions of the component, as vertical
// lines on its chart.
function marks(u, name) {
  const ctx = u.ctx;
  const [min, max] = [u.scales.x.min, u.scales.x.max];
  ctx.save();
  for (const d of state.deploys) {
    const t = d.at / 1000;
    if (d.component !== name || t < min || t > max) continue;
    const x = Math.round(u.valToPos(t, "x", true));
    ctx.strokeStyle = d.action === "rollback" || d.result === "rollback" ? "#a40e26" : "#116329";
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.moveTo(x, u.bbox.top);
    ctx.lineTo(x, u.bbox.top + u.bbox.height);
    ctx.stroke();
  }
  ctx.restore();
}

start();
