// lensbox page: search by photo, browse the catalog, add or delete items.
// Plain JavaScript against the native API (/v1/...); no framework, no network but this box.
"use strict";

const KEY_STORE = "lensbox.apiKey";
const PAGE_SIZE = 24;
const state = {
  key: localStorage.getItem(KEY_STORE) || "",
  instance: "",
  writable: false,
  browseOffset: 0,
  browseTotal: 0,
  query: null, // {bitmap, width, height} of the last searched photo
  hits: [],
  selected: 0,
  thumbs: new Map(), // item id -> object URL (or "" when it has no picture)
};

const $ = (id) => document.getElementById(id);

// -- API ---------------------------------------------------------------------------------
class ApiFailure extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || "http_" + status;
  }
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (state.key) headers.set("Authorization", "Bearer " + state.key);
  let resp;
  try {
    resp = await fetch(path, { ...options, headers });
  } catch (exc) {
    throw new ApiFailure(0, { error: { code: "network", message: "the box did not answer (" + exc.message + ")" } });
  }
  if (resp.status === 401 || resp.status === 403) showKeyPanel(true);
  if (!resp.ok) {
    let body = null;
    try { body = await resp.json(); } catch (_) { /* not JSON */ }
    throw new ApiFailure(resp.status, body);
  }
  return resp;
}

function withInstance(path) {
  if (!state.instance) return path;
  return path + (path.includes("?") ? "&" : "?") + "instance=" + encodeURIComponent(state.instance);
}

const itemPath = (id) => "/v1/items/" + encodeURIComponent(id);

// -- API key -----------------------------------------------------------------------------
function showKeyPanel(needed) {
  $("key-panel").hidden = false;
  if (needed) {
    $("key-message").textContent = state.key
      ? "This key was refused. Enter a valid API key."
      : "This box needs an API key.";
    $("key-message").className = "error";
    $("api-key").focus();
  }
}

function setupKey() {
  $("api-key").value = state.key;
  $("key-toggle").addEventListener("click", () => {
    $("key-panel").hidden = !$("key-panel").hidden;
  });
  $("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.key = $("api-key").value.trim();
    if (state.key) localStorage.setItem(KEY_STORE, state.key);
    else localStorage.removeItem(KEY_STORE);
    $("key-message").textContent = "Key saved in this browser.";
    $("key-message").className = "muted";
    clearThumbs();
    loadBundles().then((ok) => { if (ok) $("key-panel").hidden = true; });
  });
  $("key-forget").addEventListener("click", () => {
    state.key = "";
    $("api-key").value = "";
    localStorage.removeItem(KEY_STORE);
    $("key-message").textContent = "Key forgotten.";
  });
}

// -- catalogs ----------------------------------------------------------------------------
async function loadBundles() {
  const select = $("instance");
  try {
    const body = await (await api("/v1/bundles")).json();
    const previous = state.instance;
    select.replaceChildren();
    for (const b of body.bundles) {
      const opt = document.createElement("option");
      opt.value = b.name;
      opt.textContent = b.name;
      opt.dataset.items = b.items;
      opt.dataset.writable = b.live && b.live.writable ? "1" : "";
      opt.dataset.why = (b.live && b.live.not_writable_because) || "";
      select.append(opt);
    }
    if (previous && body.bundles.some((b) => b.name === previous)) select.value = previous;
    selectInstance();
    return true;
  } catch (exc) {
    $("catalog-info").textContent = exc.message;
    return false;
  }
}

function selectInstance() {
  const opt = $("instance").selectedOptions[0];
  state.instance = opt ? opt.value : "";
  state.writable = !!(opt && opt.dataset.writable);
  $("catalog-info").textContent = opt ? `${opt.dataset.items} items` : "no catalog loaded";
  $("add-form").hidden = !state.writable;
  $("writes-note").hidden = state.writable;
  $("writes-note").textContent = opt && !state.writable
    ? `This catalog takes no changes here (${opt.dataset.why || "read-only"}).`
    : "";
  state.browseOffset = 0;
  if (!$("tab-catalog").hidden) browse();
}

// -- thumbnails --------------------------------------------------------------------------
function clearThumbs() {
  for (const url of state.thumbs.values()) if (url) URL.revokeObjectURL(url);
  state.thumbs.clear();
}

function placeholder(id) {
  const span = document.createElement("span");
  span.className = "thumb placeholder";
  span.textContent = (id || "?").replace(/[^A-Za-z0-9]/g, "").slice(0, 2).toUpperCase() || "?";
  span.title = "no picture stored for this item";
  return span;
}

async function thumbnail(id, source) {
  // A hit from the cloud carries its own image URL; catalog items come from the box.
  if (source && source !== "local") return placeholder(id);
  const key = state.instance + "\u0000" + id;
  if (!state.thumbs.has(key)) {
    let url = "";
    try {
      const resp = await api(withInstance(itemPath(id) + "/image"));
      url = URL.createObjectURL(await resp.blob());
    } catch (_) { /* 404: no thumbnail in this bundle */ }
    state.thumbs.set(key, url);
  }
  const url = state.thumbs.get(key);
  if (!url) return placeholder(id);
  const img = document.createElement("img");
  img.className = "thumb";
  img.alt = id;
  img.src = url;
  return img;
}

// -- search ------------------------------------------------------------------------------
async function onPhoto() {
  const file = $("photo").files[0];
  if (!file) return;
  $("photo-name").textContent = file.name || "";
  $("status").textContent = "Searching…";
  delete $("status").dataset.state;
  $("status").className = "muted";
  $("hits").replaceChildren();
  state.hits = [];
  state.query = null;
  try {
    state.query = { bitmap: await createImageBitmap(file) };
  } catch (_) {
    state.query = null; // the browser cannot show it (e.g. TIFF); the box may still read it
  }
  drawQuery();
  const form = new FormData();
  form.append("image", file, file.name || "photo.jpg");
  $("photo").value = ""; // the same photo can be picked again
  form.append("top_k", $("top-k").value);
  if (state.instance) form.append("instance", state.instance);
  const started = performance.now();
  try {
    const body = await (await api("/v1/search", { method: "POST", body: form })).json();
    const ms = Math.round(performance.now() - started);
    state.hits = body.hits || [];
    state.selected = 0;
    if (state.query && body.query && body.query.image) {
      state.query.width = body.query.image.width;
      state.query.height = body.query.image.height;
    }
    state.queryRegion = body.query ? body.query.region : null;
    const looks = ((body.query && body.query.concepts) || []).slice(0, 3).map((c) => c.name);
    $("status").textContent = state.hits.length
      ? `${state.hits.length} of ${body.total} hits in ${ms} ms` + (looks.length ? ` · looks like ${looks.join(", ")}` : "")
      : "No hits.";
    await renderHits();
    drawQuery();
    $("status").dataset.state = "done"; // only once every hit is on the page
  } catch (exc) {
    $("status").textContent = "Search failed: " + exc.message;
    $("status").className = "error";
    $("status").dataset.state = "error";
  }
}

function verdictBadge(verdict) {
  const span = document.createElement("span");
  span.className = "badge verdict-" + String(verdict).replace(/[^a-z]/g, "");
  span.textContent = verdict;
  return span;
}

async function renderHits() {
  const list = $("hits");
  list.replaceChildren();
  for (const [rank, hit] of state.hits.entries()) {
    const li = document.createElement("li");
    li.className = "hit" + (rank === state.selected ? " selected" : "");
    li.dataset.id = hit.id;
    li.dataset.rank = String(rank + 1);
    li.tabIndex = 0;
    const meta = hit.metadata || {};
    li.append(await thumbnail(hit.id, hit.source));
    const text = document.createElement("div");
    text.className = "hit-text";
    const title = document.createElement("div");
    title.className = "hit-title";
    title.textContent = meta.title ? `${meta.title}` : hit.id;
    const line = document.createElement("div");
    line.className = "hit-line";
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = Number(hit.score).toFixed(3);
    line.append(`${rank + 1}. `, score);
    if (hit.verdict) line.append(" ", verdictBadge(hit.verdict));
    if (Number.isInteger(hit.inliers)) line.append(` · ${hit.inliers} inliers`);
    if (hit.source && hit.source !== "local") line.append(` · ${hit.source}`);
    const id = document.createElement("div");
    id.className = "muted hit-id";
    id.textContent = hit.id;
    text.append(title, line);
    if (meta.title && meta.title !== hit.id) text.append(id);
    if (meta.page_url && /^https?:\/\//.test(meta.page_url)) {
      const a = document.createElement("a");
      a.href = meta.page_url;
      a.textContent = "page";
      a.rel = "noopener noreferrer";
      a.target = "_blank";
      text.append(a);
    }
    li.append(text);
    const choose = () => {
      state.selected = rank;
      for (const el of list.children) el.classList.toggle("selected", el === li);
      drawQuery();
    };
    li.addEventListener("click", choose);
    li.addEventListener("keydown", (ev) => { if (ev.key === "Enter") choose(); });
    list.append(li);
  }
}

// A hit's region, in query-image pixels: a polygon [[x,y],...] or [{x,y},...], a box
// {x,y,width,height} or [x1,y1,x2,y2], or {points|polygon|box: ...}. Null when unknown.
function regionPoints(region) {
  if (!region) return null;
  if (!Array.isArray(region)) {
    if (region.points || region.polygon || region.box) {
      return regionPoints(region.points || region.polygon || region.box);
    }
    const { x, y, width, height } = region;
    if ([x, y, width, height].every(Number.isFinite)) {
      return [[x, y], [x + width, y], [x + width, y + height], [x, y + height]];
    }
    return null;
  }
  if (region.length === 4 && region.every(Number.isFinite)) {
    const [x1, y1, x2, y2] = region;
    return [[x1, y1], [x2, y1], [x2, y2], [x1, y2]];
  }
  const pts = region.map((p) => (Array.isArray(p) ? p : [p && p.x, p && p.y]));
  return pts.length >= 3 && pts.every((p) => Number.isFinite(p[0]) && Number.isFinite(p[1])) ? pts : null;
}

function drawQuery() {
  const fig = $("query-figure");
  const q = state.query;
  if (!q) { fig.hidden = true; return; }
  fig.hidden = false;
  const canvas = $("query-canvas");
  const maxSide = 640;
  const scale = Math.min(1, maxSide / Math.max(q.bitmap.width, q.bitmap.height));
  canvas.width = Math.round(q.bitmap.width * scale);
  canvas.height = Math.round(q.bitmap.height * scale);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(q.bitmap, 0, 0, canvas.width, canvas.height);
  // Regions are in the pixels the box decoded (EXIF-upright, like the browser shows it).
  const sx = canvas.width / (q.width || q.bitmap.width);
  const sy = canvas.height / (q.height || q.bitmap.height);
  const outline = (pts, color, dash) => {
    ctx.save();
    ctx.setLineDash(dash);
    ctx.lineWidth = 3;
    ctx.strokeStyle = color;
    ctx.beginPath();
    pts.forEach(([x, y], i) => (i ? ctx.lineTo(x * sx, y * sy) : ctx.moveTo(x * sx, y * sy)));
    ctx.closePath();
    ctx.stroke();
    ctx.restore();
  };
  const searched = regionPoints(state.queryRegion);
  if (searched) outline(searched, "#f5b700", [6, 4]);
  const hit = state.hits[state.selected];
  const pts = hit ? regionPoints(hit.region) : null;
  if (pts) outline(pts, "#10b981", []);
  canvas.dataset.region = pts ? "drawn" : "none";
  $("query-caption").textContent = !hit
    ? ""
    : pts
      ? `Where ${hit.id} was found in your photo.`
      : `${hit.id}: the box gave no region for this hit.`;
}

// -- catalog -----------------------------------------------------------------------------
async function browse() {
  const q = $("browse-q").value.trim();
  const params = new URLSearchParams({ offset: state.browseOffset, limit: PAGE_SIZE });
  if (q) params.set("q", q);
  const list = $("items");
  try {
    const body = await (await api(withInstance("/v1/items?" + params))).json();
    state.browseTotal = body.total;
    list.replaceChildren();
    for (const item of body.items) list.append(await itemCard(item));
    const last = Math.min(body.offset + body.items.length, body.total);
    $("browse-info").textContent = body.total
      ? `${body.offset + 1}–${last} of ${body.total}`
      : "no items";
    $("browse-prev").disabled = body.offset <= 0;
    $("browse-next").disabled = last >= body.total;
  } catch (exc) {
    $("browse-info").textContent = exc.message;
  }
}

async function itemCard(item) {
  const li = document.createElement("li");
  li.className = "item";
  li.dataset.id = item.id;
  li.append(await thumbnail(item.id, "local"));
  const title = document.createElement("div");
  title.className = "hit-title";
  title.textContent = item.metadata.title || item.id;
  const id = document.createElement("div");
  id.className = "muted hit-id";
  id.textContent = item.id;
  li.append(title);
  if (item.metadata.title && item.metadata.title !== item.id) li.append(id);
  if (state.writable) {
    const del = document.createElement("button");
    del.type = "button";
    del.className = "danger";
    del.textContent = "Delete";
    del.addEventListener("click", async () => {
      if (!confirm(`Delete ${item.id} from ${state.instance}?`)) return;
      try {
        await api(withInstance(itemPath(item.id)), { method: "DELETE" });
        state.thumbs.delete(state.instance + "\u0000" + item.id);
        await loadBundles();
        await browse();
      } catch (exc) {
        alert("Delete failed: " + exc.message);
      }
    });
    li.append(del);
  }
  return li;
}

async function addItem(ev) {
  ev.preventDefault();
  const id = $("add-id").value.trim();
  const file = $("add-photo").files[0];
  if (!id || !file) return;
  const fields = {};
  if ($("add-title").value.trim()) fields.title = $("add-title").value.trim();
  const form = new FormData();
  form.append("image", file, file.name || "photo.jpg");
  form.append("fields", JSON.stringify(fields));
  if (state.instance) form.append("instance", state.instance);
  $("add-status").textContent = "Saving…";
  try {
    const body = await (await api(itemPath(id), { method: "PUT", body: form })).json();
    $("add-status").textContent = `${body.created ? "Added" : "Replaced"} ${body.id} (change ${body.seq}).`;
    $("add-status").className = "muted";
    state.thumbs.delete(state.instance + "\u0000" + id);
    $("add-form").reset();
    await loadBundles();
    await browse();
  } catch (exc) {
    $("add-status").textContent = "Not saved: " + exc.message;
    $("add-status").className = "error";
  }
}

// -- tabs and start ----------------------------------------------------------------------
function showTab(name) {
  for (const btn of document.querySelectorAll("nav.tabs button")) {
    btn.classList.toggle("active", btn.dataset.tab === name);
  }
  $("tab-search").hidden = name !== "search";
  $("tab-catalog").hidden = name !== "catalog";
  if (name === "catalog") browse();
}

function start() {
  setupKey();
  for (const btn of document.querySelectorAll("nav.tabs button")) {
    btn.addEventListener("click", () => showTab(btn.dataset.tab));
  }
  $("instance").addEventListener("change", selectInstance);
  $("photo").addEventListener("change", onPhoto);
  $("browse-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.browseOffset = 0;
    browse();
  });
  $("browse-prev").addEventListener("click", () => {
    state.browseOffset = Math.max(0, state.browseOffset - PAGE_SIZE);
    browse();
  });
  $("browse-next").addEventListener("click", () => {
    state.browseOffset += PAGE_SIZE;
    browse();
  });
  $("add-form").addEventListener("submit", addItem);
  document.body.dataset.ready = "1";
  loadBundles();
}

document.addEventListener("DOMContentLoaded", start);
