// Sluice's status page: reads /admin/status and draws it. Every text goes in through
// textContent (names come from policies and requests); no framework, no other origin.
"use strict";

const REFRESH_MS = Number(document.body.dataset.refreshMs) || 2000;
let last = null;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function put(id, text) {
  document.getElementById(id).textContent = String(text);
}

function fill(id, ...rows) {
  document.getElementById(id).replaceChildren(...rows);
}

function ms(v) {
  if (v === null || v === undefined) return "-";
  return v < 1 ? (v * 1000).toFixed(0) + " µs" : v.toFixed(2) + " ms";
}

function failuresOf(f) {
  const k = f.failures || {};
  return (k.traps || 0) + (k.deadlines || 0) + (k.memory || 0);
}

function drawGenerations(s) {
  const rows = [el("tr", { "data-generation": s.generation },
    el("th", {}, "serving"), el("td", { class: "num" }, s.generation),
    el("td", {}, el("code", {}, (s.hash || "").slice(0, 12))), el("td", {}, s.policy))];
  for (const g of s.swaps.rollback_generations || []) {
    rows.push(el("tr", { "data-generation": g },
      el("th", {}, "kept for rollback"), el("td", { class: "num" }, g), el("td", {}), el("td", {})));
  }
  rows.push(el("tr", {}, el("th", {}, "swaps"),
    el("td", { class: "num", id: "swaps-ok" }, s.swaps.successes),
    el("td", {}, "failed " + s.swaps.failures),
    el("td", {}, s.swaps.last_error ? "last error: " + s.swaps.last_error : "")));
  fill("generations-body", ...rows);
  const back = s.swaps.rollback_generations || [];
  const button = document.getElementById("rollback");
  button.disabled = back.length === 0;
  button.textContent = back.length ? "Roll back to generation " + back[0] : "Roll back";
}

function drawRoutes(s) {
  const filters = new Map((s.filters || []).map((f) => [f.name, f]));
  const routes = (s.routes || []).map((r) => {
    const chain = el("div", { class: "chain" });
    chain.append(el("span", { class: "arrow" }, "request →"));
    for (const name of r.filters) {
      const f = filters.get(name) || { name };
      const phases = el("table", {}, el("thead", {}, el("tr", {},
        el("th", {}, "phase"), el("th", { class: "num" }, "calls"),
        el("th", { class: "num" }, "p99"), el("th", { class: "num" }, "mean"))));
      const body = el("tbody");
      // Phases the filter has not run in (no callbacks yet) are left out.
      for (const [phase, p] of Object.entries(f.phases || {}).filter(([, p]) => p.calls > 0)) {
        body.append(el("tr", { "data-filter": name, "data-phase": phase },
          el("td", {}, phase), el("td", { class: "num calls" }, p.calls),
          el("td", { class: "num" }, ms(p.p99_ms)), el("td", { class: "num" }, ms(p.mean_ms))));
      }
      phases.append(body);
      const failed = failuresOf(f);
      chain.append(el("div", { class: failed ? "filter failing" : "filter", "data-filter": name },
        el("div", { class: "name" }, name),
        el("div", { class: "failures" }, "failures: ",
          el("span", { class: "n", "data-failures": name }, failed)),
        phases));
      chain.append(el("span", { class: "arrow" }, "→"));
    }
    for (const name of r.components || []) {
      chain.append(el("div", { class: "filter", "data-component": name },
        el("div", { class: "name" }, name + " (component)")));
      chain.append(el("span", { class: "arrow" }, "→"));
    }
    chain.append(el("span", { class: "arrow" },
      r.function ? "function " + r.function : "pool " + r.pool));
    const where = (r.host || "*") + r.path_prefix;
    return el("div", { class: "route", "data-route": r.name },
      el("h3", {}, r.name + " ", el("code", {}, where)), chain);
  });
  fill("routes-body", ...routes);
}

function drawWaf(s) {
  const w = s.waf || { blocked: 0, flagged: 0, top_rules: [] };
  put("waf-blocked", w.blocked);
  put("waf-flagged", w.flagged);
  const recent = s.recent || [];
  const seconds = recent.reduce((a, r) => a + r.seconds, 0);
  put("waf-recent-blocked", recent.reduce((a, r) => a + r.blocked, 0));
  put("waf-recent-minutes", Math.max(1, Math.round(seconds / 60)));
  const max = Math.max(1, ...recent.map((r) => r.blocked));
  fill("waf-chart", ...recent.map((r) => {
    const bar = el("div", { class: "bar", title: r.blocked + " blocked in " + Math.round(r.seconds) + " s" });
    // CSSOM, not a style attribute: the page's CSP allows no inline style.
    bar.style.height = Math.round((100 * r.blocked) / max) + "%";
    return bar;
  }));
  fill("waf-rules", ...w.top_rules.map((r) => el("tr", { "data-rule": r.id },
    el("td", {}, r.id), el("td", { class: "num" }, r.matches))));
}

function drawPools(s) {
  const rows = [];
  for (const p of s.pools || []) {
    for (const peer of p.peers) {
      rows.push(el("tr", { "data-pool": p.name, "data-peer": peer.peer },
        el("td", {}, p.name), el("td", {}, peer.peer),
        el("td", { class: peer.healthy ? "up" : "down" }, peer.healthy ? "healthy" : "down"),
        el("td", { class: "num" }, peer.errors), el("td", { class: "num" }, peer.ejections)));
    }
  }
  fill("pools-body", ...rows);
}

function drawImages(s) {
  const i = s.images || {};
  put("image-hits", i.hits || 0);
  put("image-misses", i.misses || 0);
  put("image-hit-rate", i.hit_rate === null || i.hit_rate === undefined
    ? "-" : (100 * i.hit_rate).toFixed(1) + " %");
}

function draw(s) {
  last = s;
  put("generation", s.generation);
  put("hash", (s.hash || "").slice(0, 12));
  drawGenerations(s);
  drawRoutes(s);
  drawWaf(s);
  drawPools(s);
  drawImages(s);
  put("requests-total", s.requests_total);
  put("updated", new Date().toLocaleTimeString());
  document.body.dataset.generation = s.generation;
  document.body.dataset.state = "ready";
}

async function refresh() {
  try {
    const r = await fetch("/admin/status", { cache: "no-store", credentials: "same-origin" });
    if (!r.ok) throw new Error("status " + r.status + ": " + (await r.text()).trim());
    draw(await r.json());
  } catch (e) {
    put("message", "cannot read /admin/status: " + e.message);
    document.body.dataset.state = "error";
  }
}

async function act(what) {
  put("message", what + "…");
  try {
    const r = await fetch("/admin/" + what, { method: "POST", credentials: "same-origin" });
    const body = await r.json().catch(() => ({}));
    put("message", r.ok ? what + ": now generation " + body.generation
      : what + " refused: " + (body.errors || [r.status]).join("; "));
  } catch (e) {
    put("message", what + " failed: " + e.message);
  }
  await refresh();
}

document.getElementById("rollback").addEventListener("click", () => {
  const to = last && (last.swaps.rollback_generations || [])[0];
  if (to !== undefined) act("rollback");
});
document.getElementById("reload").addEventListener("click", () => act("reload"));
refresh();
setInterval(refresh, REFRESH_MS);
