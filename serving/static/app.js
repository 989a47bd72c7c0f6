// metricx live page: plain JS, no build.  The token comes from #token=... or the form and
// stays in sessionStorage; the stream authenticates with an HttpOnly cookie minted by
// POST /stream/token (EventSource cannot send an Authorization header).
"use strict";
const $ = (id) => document.getElementById(id);
const KPIS = [["spend", "money"], ["revenue", "money"], ["roas", "ratio"], ["conversions", "num"], ["cpa", "money"],
              ["clicks", "int"], ["impressions", "int"], ["cpc", "money"], ["ctr", "pct"], ["cpm", "money"]];
const state = { token: null, ws: null, timeframe: "today", es: null, lastId: null, lastSeen: 0, refetch: null };

function claims(token) {
  try { return JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))); } catch { return {}; }
}
function fmt(v, kind, cur) {
  if (v === null || v === undefined) return "—";
  const n = Number(v);
  if (kind === "money") return n.toLocaleString(undefined, { style: "currency", currency: cur || "USD" });
  if (kind === "pct") return (n * 100).toFixed(2) + "%";
  if (kind === "ratio") return n.toFixed(2);
  if (kind === "int") return Math.round(n).toLocaleString();
  return n.toLocaleString(undefined, { maximumFractionDigits: 2 });
}
function setConn(s) { const el = $("conn"); el.dataset.state = s; el.textContent = s; }

async function api(path, opts = {}) {
  const r = await fetch(path, { ...opts, headers: { Authorization: "Bearer " + state.token, ...(opts.headers || {}) } });
  if (r.status === 401) { showLogin("token refused or expired"); throw new Error("401"); }
  if (!r.ok) throw new Error(path + ": " + r.status + " " + (await r.text()));
  return r.json();
}

async function loadDashboard() {
  const q = new URLSearchParams({ workspace_id: state.ws, timeframe: state.timeframe });
  const d = await api("/dashboard?" + q);
  $("workspace").textContent = d.workspace.name + " · " + d.workspace.timezone;
  $("currency").textContent = d.currency || "";
  $("kpis").innerHTML = KPIS.map(([name, kind]) => {
    const k = d.kpis[name] || {};
    const ch = k.change === null || k.change === undefined ? "" :
      `<span class="${Number(k.change) >= 0 ? "up" : "down"}">${(Number(k.change) * 100).toFixed(1)}%</span>`;
    return `<div class="kpi" data-kpi="${name}"><div class="name">${name}</div>` +
      `<div class="value">${fmt(k.value, kind, d.currency)}</div><div class="muted">prev ${fmt(k.previous, kind, d.currency)} ${ch}</div></div>`;
  }).join("");
  $("top").querySelector("tbody").innerHTML = d.top_campaigns.map((c) =>
    `<tr><td>${c.provider}</td><td>${c.campaign_id}</td><td>${fmt(c.spend, "money", d.currency)}</td>` +
    `<td>${fmt(c.revenue, "money", d.currency)}</td><td>${fmt(c.roas, "ratio")}</td><td>${fmt(c.conversions, "num")}</td>` +
    `<td>${fmt(c.cpa, "money", d.currency)}</td><td>${fmt(c.clicks, "int")}</td><td>${fmt(c.ctr, "pct")}</td></tr>`).join("");
  $("mix").innerHTML = d.spend_mix.map((m) =>
    `<div>${m.provider} ${fmt(m.spend, "money", d.currency)} (${fmt(m.share, "pct")})` +
    `<div class="bar" style="width:${Math.round(Number(m.share || 0) * 100)}%"></div></div>`).join("") || '<span class="muted">no spend</span>';
  drawPulse(d);
  renderAlerts(d.alerts || []);
}

// The alert feed: names are merchants' data, so everything is escaped.
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const ALERT_NUMBERS = [["spend", "money"], ["conversions", "num"], ["roas", "ratio"], ["cpa", "money"]];
function renderAlerts(alerts) {
  $("alerts").innerHTML = alerts.length ? alerts.map((a) => {
    const nums = ALERT_NUMBERS.filter(([k]) => k in a.observed)
      .map(([k, kind]) => `${k} ${esc(fmt(a.observed[k], kind, a.currency))}`).join(" · ");
    const when = new Date(a.created_at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return `<li class="alert" data-kind="${esc(a.kind)}" data-fingerprint="${esc(a.fingerprint)}">` +
      `<span class="badge">${esc(a.kind)}</span> <b class="rule">${esc(a.rule_name || a.rule_id)}</b> ` +
      `<span class="entity">${esc(a.entity_name || a.entity_id)}</span> <time>${esc(when)}</time>` +
      `<div class="muted">${nums}</div></li>`;
  }).join("") : '<li class="muted">no alerts</li>';
}
// A channel disabled by a permanent delivery error (Slack 410, ...) stops alerts from
// reaching anyone: say so above the feed, with the platform's reason.
function renderChannels(channels) {
  const off = channels.filter((c) => c.status === "disabled");
  const el = $("channel-errors");
  el.hidden = !off.length;
  el.innerHTML = off.map((c) => `<li class="channel-error" data-channel="${esc(c.id)}">` +
    `${esc(c.kind)} channel <b>${esc(c.name)}</b> is disabled: ${esc(c.last_error || "delivery failed")}</li>`).join("");
}
async function loadAlerts() {
  const q = new URLSearchParams({ workspace_id: state.ws, limit: "10" });
  const [d, ch] = await Promise.all([api("/alerts?" + q), api("/channels?" + new URLSearchParams({ workspace_id: state.ws }))]);
  renderAlerts(d.alerts);
  renderChannels(ch.channels);
}
// Alerts arrive with the data that fired them: refetch on live events, at most every 5 s.
let alertsAt = 0, alertsTimer = null;
function scheduleAlerts() {
  if (alertsTimer) return;
  const wait = Math.max(0, alertsAt + 5000 - Date.now());
  alertsTimer = setTimeout(() => { alertsTimer = null; alertsAt = Date.now(); loadAlerts().catch(showError); }, wait);
}

function drawPulse(d) {
  const cv = $("pulse"), g = cv.getContext("2d");
  g.clearRect(0, 0, cv.width, cv.height);
  const byBucket = new Map();
  for (const s of d.series) for (const p of s.points) {
    const b = byBucket.get(p.bucket_start) || { spend: 0, revenue: 0 };
    b.spend += Number(p.spend); b.revenue += Number(p.revenue); byBucket.set(p.bucket_start, b);
  }
  const keys = [...byBucket.keys()].sort();
  let cs = 0, cr = 0;
  const pts = keys.map((k) => { cs += byBucket.get(k).spend; cr += byBucket.get(k).revenue; return [cs, cr]; });
  const max = Math.max(1, ...pts.map((p) => Math.max(p[0], p[1])));
  for (const [i, color] of [[0, "#e76f51"], [1, "#2a9d8f"]]) {
    g.beginPath(); g.strokeStyle = color; g.lineWidth = 2;
    pts.forEach((p, j) => {
      const x = pts.length < 2 ? 0 : (j / (pts.length - 1)) * (cv.width - 10) + 5;
      const y = cv.height - 5 - (p[i] / max) * (cv.height - 10);
      j ? g.lineTo(x, y) : g.moveTo(x, y);
    });
    g.stroke();
  }
  g.fillStyle = "#333"; g.fillText(`spend ${fmt(cs, "money", d.currency)} · revenue ${fmt(cr, "money", d.currency)}`, 8, 14);
}

function scheduleRefetch() {
  if (state.refetch) return;
  state.refetch = setTimeout(() => { state.refetch = null; loadDashboard().catch(showError); }, 500);
}

async function openStream() {
  if (state.es) state.es.close();
  await api("/stream/token?workspace_id=" + state.ws, { method: "POST" });  // sets the HttpOnly cookie
  const q = new URLSearchParams({ workspace_id: state.ws });
  if (state.lastId) q.set("last_event_id", state.lastId);
  const es = new EventSource("/stream?" + q);
  state.es = es;
  const seen = (e) => { state.lastSeen = Date.now(); if (e && e.lastEventId) state.lastId = e.lastEventId; setConn("live"); };
  es.addEventListener("ready", seen);
  es.addEventListener("heartbeat", () => { state.lastSeen = Date.now(); setConn("live"); });
  es.addEventListener("update", (e) => { seen(e); scheduleRefetch(); scheduleAlerts(); });
  es.addEventListener("reset", (e) => { seen(e); scheduleRefetch(); });
  es.addEventListener("dropped", () => { es.close(); setConn("reconnecting"); setTimeout(() => openStream().catch(showError), 1000); });
  // The stream ends at its token's expiry: a new token, resumed from the last event seen.
  es.addEventListener("expired", () => { es.close(); setConn("reconnecting"); openStream().catch(showError); });
  es.addEventListener("revoked", (e) => { es.close(); setConn("stale"); showError(JSON.parse(e.data).reason); });
  es.onerror = () => {
    setConn("reconnecting");
    if (es.readyState === EventSource.CLOSED) setTimeout(() => openStream().catch(showError), 2000);  // e.g. token expired
  };
}

function showError(e) { const el = $("error"); el.hidden = false; el.textContent = String(e); }
function showLogin(msg) { $("login").hidden = false; $("app").hidden = true; if (msg) showError(msg); }

async function start(token) {
  state.token = token; sessionStorage.setItem("metricx_token", token);
  state.ws = new URLSearchParams(location.search).get("workspace_id") || claims(token).workspace_id;
  if (!state.ws) return showLogin("the token has no workspace_id; add ?workspace_id=<uuid> to the address");
  $("login").hidden = true; $("app").hidden = false;
  await loadDashboard();
  loadAlerts().catch(showError);
  await openStream();
}

setInterval(() => { if (state.ws && !document.hidden) scheduleAlerts(); }, 30000);  // recoveries, deliveries
setInterval(() => {  // stale: no event or heartbeat for 3 heartbeat periods
  if (state.es && state.es.readyState === EventSource.OPEN && Date.now() - state.lastSeen > 45000) setConn("stale");
}, 5000);
$("timeframe").addEventListener("change", (e) => { state.timeframe = e.target.value; loadDashboard().catch(showError); });
$("go").addEventListener("click", () => start($("token").value.trim()).catch(showError));
const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
if (fromHash) history.replaceState(null, "", location.pathname + location.search);
const saved = fromHash || sessionStorage.getItem("metricx_token");
if (saved) start(saved).catch(showError); else showLogin();
