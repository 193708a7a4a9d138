// Consortium dashboard: polls api/state and re-renders the parts of the page whose data changed.
// No framework and no network beyond this server; charts by the vendored uPlot.
"use strict";

const POLL_MS = 1000;
let version = null;
let state = null;
const charts = {};            // chart id -> {plot, key}
const open = new Set();       // rounds whose details are expanded
let recordsKind = null;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const fix = (v, n) => (v === null || v === undefined ? "–" : Number(v).toFixed(n));
const int = (v) => (v === null || v === undefined ? "–" : String(Math.round(v)));
const list = (xs) => (xs && xs.length ? xs.join(", ") : "–");
function si(v) {
  if (v === null || v === undefined) return "";
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toPrecision(3) + "G";
  if (a >= 1e6) return (v / 1e6).toPrecision(3) + "M";
  if (a >= 1e3) return (v / 1e3).toPrecision(3) + "k";
  return String(+v.toPrecision(3));
}
function shortHash(h) { return h ? h.slice(0, 12) + "…" : "–"; }
function blobLink(h) {
  if (!h) return el("span", {text: "–"});
  return el("a", {href: "api/blob/" + h, target: "_blank", class: "hash", title: h, "data-hash": h}, shortHash(h));
}

async function poll() {
  try {
    const res = await fetch("api/state" + (version ? "?since=" + encodeURIComponent(version) : ""),
                            {cache: "no-store"});
    const s = await res.json();
    if (!s.unchanged) {
      state = s; version = s.version;
      if (s.seconds_since_change !== null) lastChangeAt = Date.now() - 1000 * s.seconds_since_change;
      render(s);
    }
    if (state) renderLive(state);
  } catch (err) {
    document.getElementById("live").textContent = "dashboard server unreachable (" + err + "); retrying";
  }
  setTimeout(poll, POLL_MS);
}

function render(s) {
  renderHeader(s);
  renderProblems(s);
  renderSummary(s);
  renderRemovals(s);
  renderInProgress(s);
  renderCharts(s);
  renderRounds(s);
  if (recordsKind) loadRecords(recordsKind);
  document.body.dataset.version = s.version;
  document.body.dataset.rounds = String(s.rounds.length);
  // first full render: the frame after the charts and tables are in the page (bench/dashboard_load.py)
  if (!window.__renderStarted) {
    window.__renderStarted = true;
    requestAnimationFrame(() => setTimeout(() => { window.__firstRenderMs = performance.now(); }, 0));
  }
}

let lastChangeAt = null;  // when the run's files last changed, by this browser's clock

function renderLive(s) {
  const live = document.getElementById("live");
  let text = "live · checked " + new Date().toLocaleTimeString();
  if (s.run && s.run.status === "running" && lastChangeAt !== null) {
    // a run that says "running" but has been silent for long may have been killed
    text += ` · run files last changed ${Math.round((Date.now() - lastChangeAt) / 1000)} s ago`;
  }
  live.textContent = text;
}

function renderHeader(s) {
  const r = s.run;
  document.getElementById("title").textContent = r ? "Consortium · " + (r.name || "run") : "Consortium dashboard";
  const status = document.getElementById("status");
  const st = r ? r.status : (s.problems.length ? "error" : "waiting");
  status.textContent = st;
  status.className = "badge " + st;
  document.getElementById("progress").textContent =
    r ? `rounds ${r.rounds_completed} / ${r.rounds} · ${s.run_dir}` : s.run_dir;
}

function renderProblems(s) {
  const box = document.getElementById("problems");
  const lines = [...s.problems];
  if (s.run && s.run.error) lines.unshift("the run stopped: " + s.run.error);
  box.hidden = !lines.length;
  box.textContent = lines.join("\n");
}

function renderInProgress(s) {
  const box = document.getElementById("inprogress");
  const p = s.in_progress;
  box.hidden = !p;
  box.replaceChildren();
  if (!p) return;
  const head = p.round ? `Round ${p.round} in progress — ${p.phase}` : `In progress — ${p.phase}`;
  box.append(el("b", {id: "inprogress-title"}, head));
  if (p.detail) box.append(el("span", {class: "muted"}, " · " + p.detail));
  if (p.phases) box.append(phaseTable(p.phases));
  box.append(el("div", {class: "muted small"}, "shown as final only once the run writes the round into report.json"));
}

function fact(label, value) { return el("div", {}, el("b", {}, label + ": "), value); }

function renderSummary(s) {
  const box = document.getElementById("summary");
  box.replaceChildren();
  const r = s.run;
  if (!r) return;
  const facts = el("div", {class: "facts"},
    fact("model", r.model), fact("protocol", r.protocol || "fedavg"), fact("aggregator", r.aggregator),
    fact("LoRA", r.lora_variant), fact("server lr", r.server_lr), fact("participants", r.participants),
    fact("global adapter", blobLink(r.global_adapter)),
    fact("upload per participant per round", r.bytes && r.bytes.upload_per_participant_per_round !== undefined
      ? si(r.bytes.upload_per_participant_per_round) + "B" : "–"));
  if (r.chain) facts.append(fact("chain", `${r.chain.backend} · contract ${r.chain.contract}`));
  if (r.head) facts.append(fact("chain head", `block ${r.head.block}`));
  if (r.privacy) facts.append(fact("DP", `${r.privacy.mode} · ε so far ${fix(r.privacy.epsilon, 3)} (δ ${r.privacy.delta})`));
  facts.append(fact("audit", auditVerdict(s.audit)));
  box.append(facts);
  const final = Object.entries(r.accuracy || {});
  if (final.length) {
    const domains = Object.keys(final[0][1]);
    const t = el("table", {id: "accuracy-table"},
      el("thead", {}, el("tr", {}, el("th", {}, "exact-match accuracy"), ...domains.map((d) => el("th", {}, d)))));
    const body = el("tbody");
    for (const [model, row] of final) {
      body.append(el("tr", {"data-model": model}, el("td", {}, model),
        ...domains.map((d) => el("td", {class: "num", "data-domain": d}, fix(row[d], 3)))));
    }
    t.append(body);
    box.append(t);
  }
  const last = s.rounds.length ? s.rounds[s.rounds.length - 1] : null;
  const pt = el("table", {id: "participants-table"}, el("thead", {}, el("tr", {},
    ...["participant", "strategy", "domains", "examples", "stake now (ETH)", "account"].map((h) => el("th", {}, h)))));
  const pb = el("tbody");
  for (const p of r.participants_detail) {
    const stake = last && last.stakes && p.name in last.stakes ? fix(last.stakes[p.name], 3) : "–";
    pb.append(el("tr", {"data-participant": p.name},
      el("td", {}, el("span", {class: "swatch", style: "background:" + p.colour}), p.name),
      el("td", {}, p.strategy), el("td", {}, list(p.domains)), el("td", {class: "num"}, p.examples ?? "–"),
      el("td", {class: "num", "data-field": "stake"}, stake), el("td", {class: "hash"}, p.account || "–")));
  }
  pt.append(pb);
  box.append(el("h2", {}, "Participants"), pt);
}

// recover's schedule as "(K k, T t[, W w][, estimate])": warm-up and estimate only where not the default
function scheduleText(sc) {
  if (!sc || sc.exact_rounds === undefined) return "";
  let out = ` (K ${sc.exact_rounds}, T ${sc.correct_every}`;
  if (sc.warmup_rounds) out += `, W ${sc.warmup_rounds}`;
  if (sc.estimate && sc.estimate !== "recorded") out += `, ${sc.estimate}`;
  return out + ")";
}

function renderRemovals(s) {
  const removals = s.removals || [];
  document.getElementById("removals").hidden = !removals.length;
  const body = document.querySelector("#removals-table tbody");
  body.replaceChildren();
  for (const m of removals) {
    const approvals = m.approvers == null ? "–"
      : `${list(m.approvers)} · ${fix(m.approve_eth, 3)} of ${fix(m.others_eth, 3)} ETH `
        + (m.supported ? "(over two thirds)" : "(two thirds not reached)");
    const status = m.status === "pending" ? `pending (lapses after round ${m.deadline_round})`
      : m.status === "executed" ? `executed after round ${m.after_round}` : m.status;
    const cost = m.local_steps == null ? "–"
      : `${m.local_steps} local steps (${fix(100 * m.fraction_of_full_retrain, 0)}% of a full retrain), ${int(m.seconds)} s`;
    const after = el("span", {}, blobLink(m.global_adapter));
    if (m.source_global_adapter) after.append(el("span", {class: "muted"}, " (was "), blobLink(m.source_global_adapter), el("span", {class: "muted"}, ")"));
    body.append(el("tr", {"data-removal": m.id ?? "run", "data-status": m.status},
      el("td", {}, m.id === null ? "this run" : "#" + m.id),
      el("td", {"data-field": "removed"}, list(m.participants)),
      el("td", {class: "num"}, m.from_round),
      el("td", {}, m.method + scheduleText(m.schedule)),
      el("td", {"data-field": "status"}, status),
      el("td", {"data-field": "approvals"}, approvals),
      el("td", {"data-field": "undone"}, list(m.rounds_undone.map(String))),
      el("td", {}, after),
      el("td", {}, cost)));
  }
}

function auditVerdict(a) {
  if (!a) return el("span", {class: "muted"}, "none recorded (`consortium audit RUN_DIR`, or the dashboard with --audit)");
  if (a.state && a.state !== "done") {
    return el("span", {class: a.state === "error" ? "verdict-bad" : "muted", id: "audit-verdict"},
      a.state === "error" ? "could not run: " + a.error : a.state === "running" ? "auditing…" : a.state);
  }
  const ok = a.ok === true || (Array.isArray(a.problems) && a.problems.length === 0);
  const n = Array.isArray(a.problems) ? a.problems.length : 0;
  return el("span", {class: ok ? "verdict-ok" : "verdict-bad", id: "audit-verdict"},
    ok ? "passed" : `FAILED: ${n} mismatch(es)` + (n ? " — " + a.problems[0] : ""));
}

function yRange(c, lo, hi) {
  if (c.y_range) return c.y_range;
  if (lo === null || hi === null) return [0, 1];
  const from = c.y_from_zero ? 0 : lo;
  const pad = (hi - from) * 0.08 || Math.abs(hi) * 0.05 || 1;
  return [c.y_from_zero ? 0 : from - pad, hi + pad];
}

function chartKey(c) { return JSON.stringify([c.series.map((s) => s.label), c.bars]); }

function renderCharts(s) {
  const box = document.getElementById("charts");
  const seen = new Set();
  for (const c of s.charts) {
    seen.add(c.id);
    let holder = document.getElementById("chart-" + c.id);
    if (!holder) {
      holder = el("div", {class: "chart", id: "chart-" + c.id, "data-chart": c.id});
      box.append(holder);
    }
    const data = [c.x, ...c.series.map((x) => x.values)];
    const key = chartKey(c);
    const have = charts[c.id];
    if (have && have.key === key) { have.plot.setData(data); continue; }
    if (have) have.plot.destroy();
    holder.replaceChildren();
    const width = Math.max(holder.clientWidth - 10, 300);
    const fmt = c.id === "bytes" || c.id === "gas" ? (u, ticks) => ticks.map(si) : undefined;
    const opts = {
      title: c.title, width, height: 240,
      scales: {
        x: {time: false, range: c.bars ? (u, lo, hi) => [lo - 0.5, hi + 0.5] : undefined},
        y: {range: (u, lo, hi) => yRange(c, lo, hi)},
      },
      axes: [{label: c.x_label, incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]},
             {label: c.y_label, size: 60, values: fmt}],
      series: [{label: c.x_label}, ...c.series.map((x) => ({
        label: x.label, stroke: x.colour, width: 2, dash: x.dash ? [6, 4] : undefined,
        fill: c.bars ? x.colour + "88" : undefined,
        paths: c.bars ? uPlot.paths.bars({size: [0.6, 40]}) : undefined,
        points: {show: !c.bars && c.x.length <= 30},
      }))],
    };
    charts[c.id] = {plot: new uPlot(opts, data, holder), key};
  }
  for (const id of Object.keys(charts)) {
    if (!seen.has(id)) { charts[id].plot.destroy(); delete charts[id]; document.getElementById("chart-" + id)?.remove(); }
  }
}

function votesText(r) {
  const parts = Object.entries(r.votes || {}).map(([v, x]) => {
    const flags = x.flags && x.flags.length ? " flags " + x.flags.join("+") : "";
    return `${v}→${x.choice === 0 ? "reject" : "cand " + x.choice}${flags}`;
  });
  return parts.length ? parts.join("; ") : "–";
}

function renderRounds(s) {
  const body = document.querySelector("#rounds-table tbody");
  body.replaceChildren();
  for (const r of s.rounds) {
    const slashed = r.slashes.map((x) => `${x.who} ${fix(x.eth, 3)} (${x.reason})`);
    const rewarded = Object.entries(r.rewards).map(([n, v]) => `${n} ${fix(v, 3)}`);
    const marks = [r.flagged.length ? "flagged " + r.flagged.join(", ") : null,
                   r.excluded.length ? "excluded " + r.excluded.join(", ") : null,
                   r.unavailable.length ? "unavailable " + r.unavailable.join(", ") : null].filter(Boolean);
    const undone = r.undone_by === null || r.undone_by === undefined ? "" : ` · undone by removal #${r.undone_by}`;
    const row = el("tr", {class: "round-row outcome-" + r.outcome + (undone ? " undone" : ""), "data-round": r.round},
      el("td", {class: "num", "data-field": "round"}, r.round),
      el("td", {"data-field": "outcome"}, r.outcome + undone),
      el("td", {"data-field": "finished"}, r.finished_at ? `${r.finished_at} (${r.seconds ?? "–"})` : "–"),
      el("td", {"data-field": "proposers"}, list(r.proposers)),
      el("td", {"data-field": "voters"}, list(r.voters)),
      el("td", {"data-field": "votes"}, votesText(r)),
      el("td", {"data-field": "marks"}, marks.length ? marks.join("; ") : "–"),
      el("td", {"data-field": "slashes"}, slashed.length ? slashed.join("; ") : "–"),
      el("td", {"data-field": "rewards"}, rewarded.length ? rewarded.join("; ") : "–"),
      el("td", {class: "num", "data-field": "gas"}, int(r.gas_total)),
      el("td", {class: "num", "data-field": "bytes_up"}, int(r.bytes_up)),
      el("td", {class: "num", "data-field": "mean_accuracy"}, fix(r.mean_accuracy, 3)),
      el("td", {class: "num", "data-field": "epsilon"}, fix(r.epsilon, 3)));
    row.addEventListener("click", () => { open.has(r.round) ? open.delete(r.round) : open.add(r.round); renderRounds(state); });
    body.append(row);
    if (open.has(r.round)) body.append(el("tr", {class: "details", "data-details": r.round}, el("td", {colspan: 13}, roundDetails(r))));
  }
  const p = s.in_progress;
  if (p && p.round) {
    body.append(el("tr", {class: "pending", id: "pending-row", "data-round": p.round},
      el("td", {class: "num"}, p.round), el("td", {}, "in progress"), el("td", {colspan: 11}, p.phase + (p.detail ? " · " + p.detail : ""))));
  }
}

function phaseTable(phases) {
  const t = el("table", {class: "phases"}, el("thead", {}, el("tr", {},
    ...["phase", "blocks", "transactions", "reverted", "from"].map((h) => el("th", {}, h)))));
  const b = el("tbody");
  for (const [name, p] of Object.entries(phases)) {
    const blocks = p.first_block === p.last_block ? String(p.first_block) : `${p.first_block}–${p.last_block}`;
    b.append(el("tr", {}, el("td", {}, name), el("td", {class: "num"}, blocks), el("td", {class: "num"}, p.txs),
      el("td", {class: "num"}, p.reverted), el("td", {}, list(p.from))));
  }
  t.append(b);
  return t;
}

function roundDetails(r) {
  const box = el("div", {});
  box.append(el("div", {}, el("b", {}, "global in "), blobLink(r.global_in), el("b", {}, " → out "), blobLink(r.global_out),
    r.candidate ? el("span", {}, el("b", {}, " · pipeline candidate "), blobLink(r.candidate)) : null,
    r.original_global_out ? el("span", {}, el("b", {}, " · the original run's global after this round "), blobLink(r.original_global_out)) : null));
  if (Object.keys(r.phases).length) box.append(el("div", {}, el("b", {}, "timeline (chain blocks)")), phaseTable(r.phases));
  const ct = el("table", {}, el("thead", {}, el("tr", {}, ...["update of", "blob", "examples", "weight"].map((h) => el("th", {}, h)))));
  const cb = el("tbody");
  for (const c of r.commitments) {
    cb.append(el("tr", {}, el("td", {}, c.participant), el("td", {}, blobLink(c.blob)), el("td", {class: "num"}, c.n_examples ?? "–"),
      el("td", {class: "num"}, fix(r.weights[c.participant], 3))));
  }
  ct.append(cb);
  box.append(el("div", {}, el("b", {}, "updates")), ct);
  if (r.candidates.length) {
    const t = el("table", {}, el("thead", {}, el("tr", {}, ...["candidate", "posted by", "hash", "flagged", "excluded"].map((h) => el("th", {}, h)))));
    const b = el("tbody");
    for (const c of r.candidates) b.append(el("tr", {}, el("td", {}, c.number), el("td", {}, c.poster), el("td", {}, blobLink(c.hash)), el("td", {}, list(c.flagged)), el("td", {}, list(c.excluded))));
    t.append(b);
    box.append(el("div", {}, el("b", {}, "candidates")), t);
  }
  const js = Object.entries(r.judgements);
  if (js.length) {
    const t = el("table", {}, el("thead", {}, el("tr", {}, ...["voter", "accepts", "loss of global", "loss of candidate", "reasons"].map((h) => el("th", {}, h)))));
    const b = el("tbody");
    for (const [v, j] of js) b.append(el("tr", {}, el("td", {}, v), el("td", {}, j.accept ? "yes" : "no"), el("td", {class: "num"}, fix(j.loss_global, 4)), el("td", {class: "num"}, fix(j.loss_candidate, 4)), el("td", {}, JSON.stringify(j.reasons || {}))));
    t.append(b);
    box.append(el("div", {}, el("b", {}, "voters' judgements")), t);
  }
  return box;
}

async function loadRecords(kind) {
  recordsKind = kind;
  for (const b of document.querySelectorAll(".tabs button")) b.classList.toggle("active", b.dataset.kind === kind);
  const res = await fetch(`api/records/${kind}?limit=5000`, {cache: "no-store"});
  const data = await res.json();
  const box = document.getElementById("records");
  const note = document.getElementById("records-note");
  note.textContent = `${data.total} record(s)` + (data.total > data.rows.length ? `, first ${data.rows.length} shown` : "");
  const removalDir = state && (state.removals || []).some((m) => m.id === null);  // written by `consortium remove`
  const file = {rounds: removalDir ? "removal.json" : "report.json", txlog: "chain/txlog.jsonl", log: "run.log"}[kind];
  if (state && state.run_dir && !state.run_dir.startsWith("live network")) {
    note.append(" · ", el("a", {href: "files/" + file, target: "_blank"}, "whole file"));
  }
  const rows = data.rows || [];
  const cols = [];
  for (const row of rows) for (const k of Object.keys(row)) if (!cols.includes(k)) cols.push(k);
  const t = el("table", {id: "records-table"}, el("thead", {}, el("tr", {}, ...cols.map((c) => el("th", {}, c)))));
  const b = el("tbody");
  for (const row of rows) {
    b.append(el("tr", {}, ...cols.map((c) => {
      const v = row[c];
      const text = v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v);
      return el("td", {title: text.length > 80 ? text.slice(0, 2000) : null}, text.length > 80 ? text.slice(0, 77) + "…" : text);
    })));
  }
  t.append(b);
  box.replaceChildren(t);
}

for (const b of document.querySelectorAll(".tabs button")) b.addEventListener("click", () => loadRecords(b.dataset.kind));
window.addEventListener("resize", () => {
  for (const [id, c] of Object.entries(charts)) {
    const holder = document.getElementById("chart-" + id);
    if (holder) c.plot.setSize({width: Math.max(holder.clientWidth - 10, 300), height: 240});
  }
});
poll();
