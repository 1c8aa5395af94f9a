// The omnibind review console. Every piece of data goes into the page through textContent
// or attributes set from our own values: no user string is ever parsed as HTML.
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]')?.content || "";
const PAGE = document.body.dataset.page;

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "text") node.textContent = value;
    else if (name === "class") node.className = value;
    else if (name.startsWith("data-")) node.setAttribute(name, value);
    else node[name] = value;
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function toast(message) {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.classList.add("show");
  setTimeout(() => box.classList.remove("show"), 2500);
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (options.method && options.method !== "GET") headers["X-CSRF-Token"] = CSRF;
  const reply = await fetch(path, Object.assign({}, options, { headers, credentials: "same-origin" }));
  if (reply.status === 401) { window.location = "/console/login"; throw new Error("signed out"); }
  const body = reply.headers.get("content-type")?.includes("json") ? await reply.json() : null;
  if (!reply.ok) throw new Error((body && (body.reason + ": " + body.message)) || ("HTTP " + reply.status));
  return body;
}

const enc = encodeURIComponent;
const uploadUrl = (id) => "/console/uploads/" + enc(id);

function mediaOf(item, size) {
  const id = item.upload_id;
  if (item.modality === "image" && item.object) {
    return el("img", { src: `/v1/uploads/${enc(id)}/thumbnail?size=${size}`, alt: "thumbnail of " + id, loading: "lazy", class: "thumb" });
  }
  if (item.modality === "audio" && item.object) {
    return el("audio", { src: `/v1/uploads/${enc(id)}/media`, controls: true, preload: "none" });
  }
  if (item.modality === "video" && item.object) {
    // The poster is a JPEG the server made from the middle frame; the player fetches the
    // video itself only when played. A video the server cannot decode gets a placeholder
    // (a poster that fails to load leaves a player with nothing to show).
    const poster = `/v1/uploads/${enc(id)}/thumbnail?size=${size}`;
    const player = el("video", { src: `/v1/uploads/${enc(id)}/media`, poster, controls: true, preload: "none", class: "thumb" });
    const probe = new Image();
    probe.onerror = () => player.replaceWith(el("p", { class: "meta no-preview", text: "(no preview: the video cannot be decoded)" }));
    probe.src = poster;
    return player;
  }
  if (item.modality !== "text") return el("p", { class: "meta", text: "(no preview)" });
  const excerpt = el("p", { class: "excerpt", text: item.object ? "…" : "(inline text: not stored)" });
  if (item.modality === "text" && item.object) {
    fetch(`/v1/uploads/${enc(id)}/media`, { credentials: "same-origin" })
      .then((r) => (r.ok ? r.text() : ""))
      .then((text) => { excerpt.textContent = text.length > 400 ? text.slice(0, 400) + "…" : text; });
  }
  return excerpt;
}

// "75.4" -> "1:15" (as the server quotes times)
function clock(seconds) {
  const whole = Math.floor(Number(seconds) || 0);
  const h = Math.floor(whole / 3600), m = Math.floor((whole % 3600) / 60), s = whole % 60;
  const mm = h ? String(m).padStart(2, "0") : String(m);
  return (h ? h + ":" : "") + mm + ":" + String(s).padStart(2, "0");
}

function transcriptOf(record) {
  return record && record.extra && typeof record.extra.transcript === "object" ? record.extra.transcript : null;
}

// What an audio or video upload says (the speech stage's transcript on its status record),
// cut to `chars`; null when it has none.
function transcriptExcerpt(record, chars) {
  const transcript = transcriptOf(record);
  if (!transcript) return null;
  if (transcript.error) return el("p", { class: "transcript none", text: "no transcript: " + transcript.error });
  const text = String(transcript.text || "").trim();
  if (!text) return el("p", { class: "transcript none", text: "no speech found" });
  return el("p", { class: "transcript", title: "what is said (transcript)", text: "said: " + (text.length > chars ? text.slice(0, chars) + "…" : text) });
}

function signalsOf(moderation) {
  const list = el("ul", { class: "signals" });
  if (!moderation) return list;
  const shown = (moderation.signals || []).filter((s) => s.band !== "allow");
  const rest = Object.entries(moderation.scores || {}).sort((a, b) => b[1] - a[1]).slice(0, 3);
  for (const s of shown) {
    list.append(el("li", { class: "band-" + s.band, text: `${s.category} ${s.band} · ${s.source}${s.name ? " " + s.name : ""} · score ${s.score.toFixed(3)} (review ${s.review}, block ${s.block})${s.detail ? " · " + s.detail : ""}` }));
  }
  for (const [category, score] of rest) {
    if (!shown.some((s) => s.category === category)) list.append(el("li", { class: "band-" + ((moderation.bands || {})[category] || "allow"), text: `${category} ${score.toFixed(3)}` }));
  }
  return list;
}

// -- review queue ------------------------------------------------------------------------

const queue = { items: [], cursor: null, current: 0, selected: new Set() };

function queueParams() {
  const form = new FormData(document.getElementById("filters"));
  const params = new URLSearchParams();
  for (const [name, value] of form.entries()) if (value) params.set(name, name === "since" ? value + "T00:00:00Z" : value);
  params.set("limit", "24");
  return params;
}

async function loadQueue(more) {
  const params = queueParams();
  if (more && queue.cursor) params.set("cursor", queue.cursor);
  const page = await api("/v1/review?" + params);
  if (!more) { queue.items = []; queue.current = 0; queue.selected.clear(); document.getElementById("queue").replaceChildren(); }
  queue.cursor = page.next_cursor;
  document.getElementById("more").hidden = !page.next_cursor;
  for (const item of page.items) addCard(item);
  if (!queue.items.length) document.getElementById("queue").append(el("p", { class: "empty", text: "Nothing to review." }));
  highlight();
}

function addCard(item) {
  const card = el("article", { class: "card", "data-id": item.upload_id, tabIndex: -1 });
  const check = el("input", { type: "checkbox", class: "select", title: "select (x)" });
  check.addEventListener("change", () => { toggleSelect(item.upload_id, check.checked); });
  const title = el("a", { href: uploadUrl(item.upload_id), text: item.upload_id, class: "title" });
  const meta = el("p", { class: "meta", text: `${item.modality || "?"} · ${item.source || "?"} · ${item.band || "-"} · ${item.review_state}${item.tenant ? " · " + item.tenant : ""} · ${item.submitted_at || ""}` });
  const cats = el("p", { class: "cats", text: (item.categories || []).join(", ") || "no category" });
  const signals = el("ul", { class: "signals" });
  const actions = el("div", { class: "actions" },
    el("button", { "data-act": "approve", text: "Approve (a)" }),
    el("button", { "data-act": "block", text: "Block (b)" }),
    el("button", { "data-act": "escalate", text: "Escalate (e)" }));
  actions.addEventListener("click", (event) => {
    const action = event.target.dataset?.act;
    if (action) decide([item.upload_id], action);
  });
  card.append(...[el("header", {}, check, title), mediaOf(item, 256), transcriptExcerpt(item, 280), meta, cats, signals, actions].filter(Boolean));
  card.addEventListener("click", (event) => { if (event.target === card) { queue.current = queue.items.indexOf(item.upload_id); highlight(); } });
  document.getElementById("queue").append(card);
  queue.items.push(item.upload_id);
  api(`/v1/uploads/${enc(item.upload_id)}/explain?history=1`).then((explained) => {
    signals.replaceWith(signalsOf(explained.moderation));
  }).catch(() => {});
}

function cardOf(id) { return document.querySelector(`article.card[data-id="${CSS.escape(id)}"]`); }

function highlight() {
  document.querySelectorAll("article.card.current").forEach((c) => c.classList.remove("current"));
  const id = queue.items[queue.current];
  const card = id && cardOf(id);
  if (card) { card.classList.add("current"); card.scrollIntoView({ block: "nearest" }); }
}

function toggleSelect(id, on) {
  if (on) queue.selected.add(id); else queue.selected.delete(id);
  const card = cardOf(id);
  if (card) { card.classList.toggle("selected", on); card.querySelector("input.select").checked = on; }
  document.getElementById("selected-count").textContent = `${queue.selected.size} selected`;
}

async function decide(ids, action, category) {
  for (const id of ids) {
    const body = { action };
    if (category) body.category = category;
    try {
      await api(`/v1/uploads/${enc(id)}/decision`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      const card = cardOf(id);
      if (card) {
        card.classList.add("decided", "decided-" + action);
        card.querySelector(".meta").textContent += ` · ${action}d`;
      }
      toggleSelect(id, false);
      toast(`${action}: ${id}`);
    } catch (error) {
      toast(`${id}: ${error.message}`);
    }
  }
}

function setupReview() {
  document.getElementById("filters").addEventListener("submit", (event) => { event.preventDefault(); loadQueue(false).catch((e) => toast(e.message)); });
  document.getElementById("more").addEventListener("click", () => loadQueue(true).catch((e) => toast(e.message)));
  document.querySelectorAll("[data-bulk]").forEach((button) => button.addEventListener("click", () => decide([...queue.selected], button.dataset.bulk)));
  document.addEventListener("keydown", (event) => {
    if (event.target.matches("input, select, textarea") || event.ctrlKey || event.metaKey || event.altKey) return;
    const id = queue.items[queue.current];
    if (event.key === "j") { queue.current = Math.min(queue.current + 1, queue.items.length - 1); highlight(); }
    else if (event.key === "k") { queue.current = Math.max(queue.current - 1, 0); highlight(); }
    else if (id && event.key === "x") toggleSelect(id, !queue.selected.has(id));
    else if (id && "abe".includes(event.key)) {
      const action = { a: "approve", b: "block", e: "escalate" }[event.key];
      decide(queue.selected.size ? [...queue.selected] : [id], action).then(() => {
        queue.current = Math.min(queue.current + 1, queue.items.length - 1); highlight();
      });
    } else return;
    event.preventDefault();
  });
  loadQueue(false).catch((e) => toast(e.message));
  loadAccuracy().catch(() => {});
}

const pct = (value) => (value === null || value === undefined ? "–" : (100 * value).toFixed(0) + "%");

async function loadAccuracy() {
  const result = await api("/v1/review/accuracy");
  const table = document.getElementById("accuracy");
  table.replaceChildren(el("tr", {}, ...["category", "modality", "blocked", "other", "review at", "precision", "recall", "block at", "precision", "recall"].map((h) => el("th", { text: h }))));
  for (const row of result.categories) {
    table.append(el("tr", { "data-category": row.category }, ...[row.category, row.modality, row.positives, row.negatives,
      row.review.threshold, pct(row.review.precision), pct(row.review.recall),
      row.block.threshold, pct(row.block.precision), pct(row.block.recall)].map((v) => el("td", { text: String(v) }))));
  }
  if (!result.categories.length) table.append(el("tr", {}, el("td", { text: `No blocked uploads among ${result.reviewed} reviewed yet.` })));
}

// -- search ------------------------------------------------------------------------------

function showHits(result) {
  const grid = document.getElementById("results");
  grid.replaceChildren();
  if (!result.hits.length) grid.append(el("p", { class: "empty", text: "No results." }));
  for (const hit of result.hits) {
    const tile = el("a", { href: uploadUrl(hit.upload_id), class: "tile" + (hit.flagged ? " flagged" : ""), "data-id": hit.upload_id },
      mediaOf(hit, 192),
      el("span", { class: "score", text: hit.score.toFixed(3) }),
      el("span", { class: "meta", text: `${hit.modality}${hit.flagged ? " · flagged: " + hit.categories.join(", ") : ""}` }),
      hit.detail ? el("span", { class: "detail", text: hit.detail }) : null,
      el("span", { class: "id", text: hit.upload_id }));
    grid.append(tile);
  }
}

function searchOptions() {
  const form = new FormData(document.getElementById("search-form"));
  const options = { k: 24 };
  if (form.get("modality")) options.modality = form.get("modality");
  if (form.get("flagged")) options.flagged = form.get("flagged") === "true";
  return options;
}

async function searchFile(file) {
  const body = new FormData();
  body.append("file", file, file.name);
  for (const [name, value] of Object.entries(searchOptions())) body.append(name, String(value));
  showHits(await api("/v1/search", { method: "POST", body }));
}

function setupSearch() {
  document.getElementById("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = document.getElementById("search-text").value.trim();
    if (!text) return;
    api("/v1/search", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(Object.assign({ text }, searchOptions())) })
      .then(showHits).catch((e) => toast(e.message));
  });
  const drop = document.getElementById("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault(); drop.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) searchFile(file).catch((e) => toast(e.message));
  });
  document.getElementById("search-file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) searchFile(file).catch((e) => toast(e.message));
  });
}

// -- one upload --------------------------------------------------------------------------

async function setupUpload() {
  const id = document.body.dataset.uploadId;
  document.getElementById("upload-title").textContent = id;
  let record;
  try { record = await api(`/v1/uploads/${enc(id)}`); } catch (error) { document.getElementById("upload-title").textContent = `${id}: ${error.message}`; return; }
  document.getElementById("media").append(mediaOf(record, 512));
  showTranscript(record);
  const timeline = document.getElementById("timeline");
  for (const [status, at] of Object.entries(record.timestamps || {})) timeline.append(el("li", { class: "status-" + status, text: `${status} · ${at}` }));
  if (record.status === "failed") {
    const failure = document.getElementById("failure");
    failure.hidden = false;
    failure.append(el("p", { class: "error", text: `failed at ${record.failed_stage}: ${record.error_reason}: ${record.error || ""}` }));
    const letters = await api("/v1/dead-letters?limit=200").catch(() => ({ items: [] }));
    const letter = letters.items.find((l) => l.upload_id === record.upload_id);
    if (letter) {
      const retry = el("button", { id: "retry", text: "Retry" });
      retry.addEventListener("click", () => api(`/v1/dead-letters/${enc(letter.entry_id)}/retry`, { method: "POST" })
        .then((r) => { toast(`retry: ${r.outcome}`); setTimeout(() => window.location.reload(), 800); }).catch((e) => toast(e.message)));
      failure.append(retry);
    }
  }
  document.getElementById("actions").hidden = record.status !== "indexed";  // only indexed uploads are decided
  document.getElementById("actions").addEventListener("click", (event) => {
    const action = event.target.dataset?.action;
    if (!action) return;
    const category = document.getElementById("block-category").value.trim() || undefined;
    decide([record.upload_id], action, category).then(() => setTimeout(() => window.location.reload(), 600));
  });
  const explained = await api(`/v1/uploads/${enc(id)}/explain?history=20`).catch(() => null);
  const decision = document.getElementById("decision");
  if (explained && explained.moderation) {
    const m = explained.moderation;
    decision.append(el("p", { text: `${m.flagged ? "FLAGGED" : "not flagged"} · action ${m.action} · policy ${m.policy_name || "?"} ${m.policy_version || ""} · model ${m.model || "?"}` }));
    if (explained.review) decision.append(el("p", { class: "review", text: `human review: ${explained.review.action} by ${explained.review.by} at ${explained.review.at}${explained.review.category ? " · " + explained.review.category : ""}${explained.review.note ? " · " + explained.review.note : ""}` }));
    const table = el("table", { class: "signals-table" }, el("tr", {}, ...["category", "source", "score", "review", "block", "band", "margin"].map((h) => el("th", { text: h }))));
    for (const s of m.signals || []) {
      table.append(el("tr", { class: "band-" + s.band }, ...[s.category, s.source + (s.name ? " " + s.name : ""), s.score.toFixed(3), s.review, s.block, s.band, s.margin.toFixed(3)].map((v) => el("td", { text: String(v) }))));
    }
    decision.append(table);
    for (const note of m.notes || []) decision.append(el("p", { class: "note", text: note }));
    for (const entry of explained.history || []) {
      document.getElementById("history").append(el("li", { text: `${entry.decision.decided_at || "?"} · ${entry.source}${entry.reviewer ? " (" + entry.reviewer + ")" : ""} · ${entry.decision.action} · ${(entry.decision.categories || []).join(", ") || "-"}` }));
    }
  } else {
    decision.append(el("p", { text: "No moderation decision (not indexed)." }));
  }
  if (record.status === "indexed") similar(record).catch(() => {});
}

function showTranscript(record) {
  const transcript = transcriptOf(record);
  if (!transcript) return;
  document.getElementById("transcript").hidden = false;
  const facts = [transcript.language, transcript.model, transcript.confidence != null ? "confidence " + Number(transcript.confidence).toFixed(2) : null, ...(transcript.notes || [])];
  document.getElementById("transcript-meta").textContent = facts.filter(Boolean).join(" · ");
  const list = document.getElementById("segments");
  if (transcript.error) list.append(el("li", { class: "none", text: "no transcript: " + transcript.error }));
  else if (!(transcript.segments || []).length) list.append(el("li", { class: "none", text: "no speech found" }));
  for (const segment of transcript.segments || []) {
    list.append(el("li", {}, el("span", { class: "at", text: `${clock(segment.start_s)}–${clock(segment.end_s)}` }), el("span", { class: "said", text: String(segment.text || "") })));
  }
  if (transcript.segments_left_out) list.append(el("li", { class: "none", text: `… and ${transcript.segments_left_out} more segments` }));
}

async function similar(record) {
  let result;
  if (record.object) {
    const blob = await (await fetch(`/v1/uploads/${enc(record.upload_id)}/media`, { credentials: "same-origin" })).blob();
    if (record.modality === "text") {
      result = await api("/v1/search", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ text: (await blob.text()).slice(0, 2000), k: 9 }) });
    } else {
      const body = new FormData();
      body.append("file", blob, "query");
      body.append("k", "9");
      result = await api("/v1/search", { method: "POST", body });
    }
  } else return;
  const grid = document.getElementById("similar");
  for (const hit of result.hits.filter((h) => h.upload_id !== record.upload_id)) {
    grid.append(el("a", { href: uploadUrl(hit.upload_id), class: "tile" }, mediaOf(hit, 192), el("span", { class: "score", text: hit.score.toFixed(3) }), el("span", { class: "id", text: hit.upload_id })));
  }
}

if (PAGE === "review") setupReview();
else if (PAGE === "search") setupSearch();
else if (PAGE === "upload") setupUpload();
