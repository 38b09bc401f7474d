// The studio page: paint a label map at the model's resolution and show what the model makes of it; with an
// editing run (SESAME), re-render the painted part of an uploaded photo.  All decoding of label files and every
// render happens on the server (/api/...); this page keeps the layout as an array of class ids.
"use strict";

const $ = (id) => document.getElementById(id);
const HISTORY = 50;               // undo steps kept
const DEBOUNCE_MS = 250;          // render this long after the last change while painting
const TOOLS = { b: "brush", r: "rect", f: "fill", e: "eraser", m: "mask" };

const state = {
  models: [], model: null, width: 0, height: 0,
  ids: null,            // Uint8Array(width*height): the layout
  editMask: null,       // Uint8Array: pixels painted since the photo was loaded (edit mode)
  resampleMask: null,   // Uint8Array: OASIS re-sampling region
  selected: 0, tool: "brush", brush: 6,
  undo: [], redo: [],
  photo: null,          // the uploaded photo (File) in edit mode
  styleImage: null, clusters: {},
  resampleSeed: null,
  seq: 0, renders: 0, client: "c-" + Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16).padStart(2, "0")).join(""),
  controller: null, timer: null, stroke: null,
};
window.studio = state;  // lets tests (and curious users) look at the page's state

function say(text, isError = false) {
  $("message").textContent = text;
  $("message").className = isError ? "error" : "";
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return response;
}

// ------------------------------------------------------------------------------------------ model and palette
function colourOf(id) {
  const m = state.model;
  if (m.void && id === m.void.id) return m.void.color;
  return id < m.classes.length ? m.classes[id].color : [0, 0, 0];
}

function voidId() { return state.model.void ? state.model.void.id : null; }

function buildPalette() {
  const palette = $("palette");
  palette.replaceChildren();
  state.model.classes.forEach((cls, index) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "swatch";
    button.dataset.id = cls.id;
    button.title = cls.name;
    const colour = document.createElement("span");
    colour.className = "colour";
    colour.style.background = `rgb(${cls.color.join(",")})`;
    const name = document.createElement("span");
    name.textContent = cls.name;
    button.append(colour, name);
    if (index < 10) {
      const key = document.createElement("span");
      key.className = "key";
      key.textContent = String((index + 1) % 10);
      button.append(key);
    }
    button.addEventListener("click", () => selectClass(cls.id));
    palette.append(button);
  });
  selectClass(Math.min(state.selected, state.model.classes.length - 1));
}

function selectClass(id) {
  state.selected = id;
  for (const button of document.querySelectorAll(".swatch")) {
    button.classList.toggle("selected", Number(button.dataset.id) === id);
  }
  if (state.tool === "eraser" || state.tool === "mask") setTool("brush");
}

function setTool(tool) {
  if (tool === "eraser" && voidId() === null) return;
  if (tool === "mask" && !state.model.options.resample) return;
  state.tool = tool;
  for (const button of document.querySelectorAll(".tool")) button.classList.toggle("active", button.dataset.tool === tool);
}

async function chooseModel(name) {
  const model = state.models.find((m) => m.name === name);
  state.model = model;
  [state.height, state.width] = model.size;
  const canvas = $("canvas");
  canvas.width = state.width;
  canvas.height = state.height;
  $("model-info").textContent = `${model.method} · ${model.label_set} · ${state.height}×${state.width}`;
  const options = model.options;
  $("k").max = options.max_k;
  $("k").value = Math.min(Number($("k").value) || 1, options.max_k);
  $("k-group").hidden = options.max_k <= 1;
  $("style-group").hidden = !options.style_image;  // any run whose method declares a style photo
  if (!options.style_image) clearStyle();  // a photo chosen for another run would be refused by this one
  $("resample-group").hidden = !options.resample;
  document.querySelector('.tool[data-tool="mask"]').hidden = !options.resample;
  document.querySelector('.tool[data-tool="eraser"]').disabled = model.void === null;
  $("extra-pane").hidden = !options.canvas;
  $("edit-group").hidden = !options.edits_photos;
  $("random").disabled = !model.random_layouts;
  buildClusters(options.clusters || 0);
  buildPalette();
  setTool("brush");
  stopEditing();
  state.resampleMask = new Uint8Array(state.width * state.height);
  state.resampleSeed = null;
  if (model.random_layouts) await randomLayout();
  else blank();
}

function clearStyle() {
  state.styleImage = null;
  $("style-file").value = "";
  $("clear-style").hidden = true;
}

function buildClusters(count) {
  $("cluster-group").hidden = count === 0;
  const table = $("clusters");
  table.replaceChildren();
  state.clusters = {};
  if (!count) return;
  for (const cls of state.model.classes) {
    const label = document.createElement("label");
    label.textContent = cls.name + " ";
    const select = document.createElement("select");
    select.append(new Option("random", ""));
    for (let c = 0; c < count; c++) select.append(new Option(`cluster ${c}`, String(c)));
    select.addEventListener("change", () => {
      if (select.value === "") delete state.clusters[cls.id]; else state.clusters[cls.id] = Number(select.value);
      scheduleRender(0);
    });
    label.append(select);
    table.append(label);
  }
}

// ------------------------------------------------------------------------------------------ the layout
function draw() {
  const canvas = $("canvas");
  const context = canvas.getContext("2d");
  const image = context.createImageData(state.width, state.height);
  const lookup = new Map();
  for (let i = 0; i < state.ids.length; i++) {
    const id = state.ids[i];
    let colour = lookup.get(id);
    if (!colour) { colour = colourOf(id); lookup.set(id, colour); }
    let [r, g, b] = colour;
    if (state.resampleMask && state.resampleMask[i]) { r = (r + 255) >> 1; g = (g + 255) >> 1; b = (b + 255) >> 1; }
    image.data.set([r, g, b, 255], 4 * i);
  }
  context.putImageData(image, 0, 0);
  if (state.stroke && state.stroke.tool === "rect" && state.stroke.end) {
    const [x0, y0, x1, y1] = rectOf(state.stroke);
    context.strokeStyle = "#fff";
    context.lineWidth = 1;
    context.strokeRect(x0 + 0.5, y0 + 0.5, x1 - x0, y1 - y0);
  }
}

function setLayout(ids, keepHistory = false) {
  if (keepHistory) remember();
  else { state.undo = []; state.redo = []; }
  state.ids = ids;
  draw();
  scheduleRender(0);
}

function blank() {
  setLayout(new Uint8Array(state.width * state.height).fill(state.selected), true);
}

function decodeIds(data) {
  const raw = atob(data.ids);
  const ids = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) ids[i] = raw.charCodeAt(i);
  return ids;
}

async function randomLayout() {
  try {
    const response = await api(`/api/layout?model=${encodeURIComponent(state.model.name)}`);
    setLayout(decodeIds(await response.json()), state.ids !== null);
    say("");
  } catch (error) {
    say(`No random layout: ${error.message}`, true);
    if (!state.ids) blank();
  }
}

async function uploadLabel(file) {
  const form = new FormData();
  form.append("model", state.model.name);
  form.append("label", file);
  form.append("format", "json");
  try {
    const response = await api("/api/label", { method: "POST", body: form });
    setLayout(decodeIds(await response.json()), true);
    say(`Loaded ${file.name}.`);
  } catch (error) {
    say(`Could not use ${file.name}: ${error.message}`, true);
  }
}

// colour PNG of the layout (the server decodes it with the run's palette)
function layoutBlob() {
  const canvas = document.createElement("canvas");
  canvas.width = state.width;
  canvas.height = state.height;
  const context = canvas.getContext("2d");
  const image = context.createImageData(state.width, state.height);
  for (let i = 0; i < state.ids.length; i++) image.data.set([...colourOf(state.ids[i]), 255], 4 * i);
  context.putImageData(image, 0, 0);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

function maskBlob(mask) {
  const canvas = document.createElement("canvas");
  canvas.width = state.width;
  canvas.height = state.height;
  const context = canvas.getContext("2d");
  const image = context.createImageData(state.width, state.height);
  for (let i = 0; i < mask.length; i++) {
    const v = mask[i] ? 255 : 0;
    image.data.set([v, v, v, 255], 4 * i);
  }
  context.putImageData(image, 0, 0);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

// ------------------------------------------------------------------------------------------ history
function snapshot() {
  return { ids: state.ids.slice(), editMask: state.editMask ? state.editMask.slice() : null,
           resampleMask: state.resampleMask ? state.resampleMask.slice() : null };
}

function remember() {
  if (!state.ids) return;
  state.undo.push(snapshot());
  if (state.undo.length > HISTORY) state.undo.shift();
  state.redo = [];
}

function restore(from, to) {
  if (!from.length) return;
  to.push(snapshot());
  const previous = from.pop();
  state.ids = previous.ids;
  if (state.editMask && previous.editMask) state.editMask = previous.editMask;
  if (previous.resampleMask) state.resampleMask = previous.resampleMask;
  draw();
  scheduleRender(0);
}

// ------------------------------------------------------------------------------------------ painting
function pixelAt(event) {
  const rect = $("canvas").getBoundingClientRect();
  const x = Math.floor((event.clientX - rect.left) / rect.width * state.width);
  const y = Math.floor((event.clientY - rect.top) / rect.height * state.height);
  return [Math.max(0, Math.min(state.width - 1, x)), Math.max(0, Math.min(state.height - 1, y))];
}

function paintValue() { return state.tool === "eraser" ? voidId() : state.selected; }

function setPixel(i, value) {
  if (state.tool === "mask") { state.resampleMask[i] = 1; return; }
  state.ids[i] = value;
  if (state.editMask) state.editMask[i] = 1;
}

function disc(cx, cy) {
  const r = (state.brush - 1) / 2;
  const value = paintValue();
  for (let y = Math.floor(cy - r); y <= Math.ceil(cy + r); y++) {
    if (y < 0 || y >= state.height) continue;
    for (let x = Math.floor(cx - r); x <= Math.ceil(cx + r); x++) {
      if (x < 0 || x >= state.width) continue;
      if ((x - cx) ** 2 + (y - cy) ** 2 <= r * r + 0.5) setPixel(y * state.width + x, value);
    }
  }
}

function line(x0, y0, x1, y1) {
  const steps = Math.max(Math.abs(x1 - x0), Math.abs(y1 - y0), 1);
  for (let s = 0; s <= steps; s++) disc(x0 + (x1 - x0) * s / steps, y0 + (y1 - y0) * s / steps);
}

function rectOf(stroke) {
  const [xa, ya] = stroke.start, [xb, yb] = stroke.end;
  return [Math.min(xa, xb), Math.min(ya, yb), Math.max(xa, xb), Math.max(ya, yb)];
}

function fillRect(stroke) {
  const [x0, y0, x1, y1] = rectOf(stroke);
  const value = paintValue();
  for (let y = y0; y <= y1; y++) for (let x = x0; x <= x1; x++) setPixel(y * state.width + x, value);
}

function floodFill(x, y) {
  const start = y * state.width + x;
  const target = state.ids[start], value = state.selected;
  if (target === value && !state.editMask) return;
  const seen = new Uint8Array(state.ids.length);
  const stack = [start];
  seen[start] = 1;
  while (stack.length) {
    const i = stack.pop();
    setPixel(i, value);
    const px = i % state.width, py = (i - px) / state.width;
    for (const [nx, ny] of [[px - 1, py], [px + 1, py], [px, py - 1], [px, py + 1]]) {
      if (nx < 0 || ny < 0 || nx >= state.width || ny >= state.height) continue;
      const j = ny * state.width + nx;
      if (!seen[j] && state.ids[j] === target) { seen[j] = 1; stack.push(j); }
    }
  }
}

function onPointerDown(event) {
  if (!state.ids || event.button !== 0) return;
  $("canvas").setPointerCapture(event.pointerId);
  const [x, y] = pixelAt(event);
  remember();
  state.stroke = { tool: state.tool, start: [x, y], last: [x, y], end: null };
  if (state.tool === "fill") { floodFill(x, y); state.stroke = null; draw(); scheduleRender(0); return; }
  if (state.tool !== "rect") { disc(x, y); draw(); scheduleRender(); }
}

function onPointerMove(event) {
  if (!state.stroke) return;
  const [x, y] = pixelAt(event);
  if (state.stroke.tool === "rect") { state.stroke.end = [x, y]; draw(); return; }
  line(...state.stroke.last, x, y);
  state.stroke.last = [x, y];
  draw();
  if (state.stroke.tool !== "mask") scheduleRender();
}

function onPointerUp(event) {
  if (!state.stroke) return;
  const stroke = state.stroke;
  if (stroke.tool === "rect") { stroke.end = pixelAt(event); fillRect(stroke); }
  state.stroke = null;
  draw();
  if (stroke.tool !== "mask") scheduleRender(0);
}

// ------------------------------------------------------------------------------------------ rendering
// body[data-idle]: "1" when the output shown is the render of the current layout and nothing is pending
function setIdle(idle) { document.body.dataset.idle = idle ? "1" : "0"; }

function scheduleRender(delay = DEBOUNCE_MS) {
  setIdle(false);
  clearTimeout(state.timer);
  state.timer = setTimeout(() => { state.timer = null; render().catch((error) => say(error.message, true)); }, delay);
}

async function render() {
  if (!state.ids || !state.model) return;
  if (state.controller) state.controller.abort();  // a newer layout makes the running request outdated
  const controller = new AbortController();
  state.controller = controller;
  const seq = ++state.seq;
  const model = state.model;
  const form = new FormData();
  form.append("model", model.name);
  form.append("client", state.client);
  form.append("seq", String(seq));
  form.append("label", await layoutBlob(), "layout.png");
  let path = "/api/synthesize";
  if (state.photo) {
    path = "/api/edit";
    form.append("photo", state.photo);
    form.append("mask", await maskBlob(state.editMask), "mask.png");
    form.append("grow", "1");
  } else {
    form.append("format", "json");
    form.append("k", $("k").value || "1");
    form.append("seed", $("seed").value || "0");
    if (state.styleImage) form.append("style_image", state.styleImage);
    if (Object.keys(state.clusters).length) form.append("styles", JSON.stringify(state.clusters));
    if (state.resampleSeed !== null && state.resampleMask.some((v) => v)) {  // the re-rolled region stays
      form.append("resample_mask", await maskBlob(state.resampleMask), "mask.png");
      form.append("resample_seed", String(state.resampleSeed));
    }
  }
  $("busy").hidden = false;
  let response;
  try {
    response = await api(path, { method: "POST", body: form, signal: controller.signal });
  } catch (error) {
    if (error.name === "AbortError" || error.status === 409) return;  // superseded by a newer render
    if (seq === state.seq) { $("busy").hidden = true; say(`Render failed: ${error.message}`, true); setIdle(true); }
    return;
  }
  const images = state.photo ? [await response.blob()] : (await response.json());
  if (seq !== state.seq) return;  // a newer render is on its way
  $("busy").hidden = true;
  showOutputs(images);
  state.renders += 1;
  document.body.dataset.renders = String(state.renders);
  say("");
  if (state.timer === null) setIdle(true);
}

function showOutputs(result) {
  const outputs = $("outputs");
  outputs.replaceChildren();
  const sources = result instanceof Array ? result.map((blob) => URL.createObjectURL(blob))
    : result.images.map((b64) => `data:image/png;base64,${b64}`);
  for (const src of sources) {
    const img = document.createElement("img");
    img.className = "output";
    img.alt = "output";
    img.src = src;
    outputs.append(img);
  }
  const link = $("download-image");
  link.href = sources[0];
  link.setAttribute("aria-disabled", "false");
  if (!(result instanceof Array) && result.extras && result.extras.canvas) {
    $("extra").src = `data:image/png;base64,${result.extras.canvas}`;
  }
}

// ------------------------------------------------------------------------------------------ editing a photo
// The shown output stops being current as soon as a photo is chosen: a render on its way (of the layout before the
// photo) is dropped, and the page is not idle until the photo's own layout has been rendered.
function supersedeRenders() {
  setIdle(false);
  clearTimeout(state.timer);
  state.timer = null;
  if (state.controller) state.controller.abort();
  state.seq += 1;
}

async function startEditing(file) {
  const model = state.model;
  supersedeRenders();
  state.photo = file;
  $("photo").src = URL.createObjectURL(file);
  $("photo-pane").hidden = false;
  $("clear-edit").hidden = false;
  if (!model.segmenter) {
    state.editMask = new Uint8Array(state.width * state.height);
    $("edit-note").textContent = "No segmenter for this label set: load the photo's label map (Start from → label map…), then paint.";
    scheduleRender(0);
    return;
  }
  const form = new FormData();
  form.append("model", model.name);
  form.append("photo", file);
  form.append("format", "json");
  try {
    const response = await api("/api/segment", { method: "POST", body: form });
    state.editMask = new Uint8Array(state.width * state.height);
    setLayout(decodeIds(await response.json()), true);
    $("edit-note").textContent = "The layout is the segmenter's reading of the photo: paint the change.";
  } catch (error) {
    say(`Could not read the photo's layout: ${error.message}`, true);
    stopEditing();
    scheduleRender(0);  // the layout before the photo, whose render was dropped
  }
}

function stopEditing() {
  state.photo = null;
  state.editMask = null;
  $("photo-pane").hidden = true;
  $("clear-edit").hidden = true;
  $("edit-note").textContent = "";
  $("photo-file").value = "";
}

// ------------------------------------------------------------------------------------------ downloads
async function downloadLayout() {
  const form = new FormData();
  form.append("model", state.model.name);
  form.append("label", await layoutBlob(), "layout.png");
  form.append("format", "png");
  try {
    const blob = await (await api("/api/label", { method: "POST", body: form })).blob();
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "layout.png";
    document.body.append(link);
    link.click();
    link.remove();
  } catch (error) {
    say(`Could not download the layout: ${error.message}`, true);
  }
}

// ------------------------------------------------------------------------------------------ wiring
function onKey(event) {
  if (event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement) return;
  const key = event.key.toLowerCase();
  if ((event.ctrlKey || event.metaKey) && key === "z") {
    event.preventDefault();
    if (event.shiftKey) restore(state.redo, state.undo); else restore(state.undo, state.redo);
    return;
  }
  if ((event.ctrlKey || event.metaKey) && key === "y") { event.preventDefault(); restore(state.redo, state.undo); return; }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (/^[0-9]$/.test(key)) {
    const index = (Number(key) + 9) % 10;
    if (index < state.model.classes.length) selectClass(state.model.classes[index].id);
  } else if (TOOLS[key]) setTool(TOOLS[key]);
  else if (key === "[" || key === "]") {
    const size = $("brush-size");
    size.value = String(Number(size.value) + (key === "]" ? 1 : -1));
    size.dispatchEvent(new Event("input"));
  }
}

async function start() {
  const canvas = $("canvas");
  canvas.addEventListener("pointerdown", onPointerDown);
  canvas.addEventListener("pointermove", onPointerMove);
  canvas.addEventListener("pointerup", onPointerUp);
  canvas.addEventListener("pointercancel", onPointerUp);
  document.addEventListener("keydown", onKey);
  for (const button of document.querySelectorAll(".tool")) button.addEventListener("click", () => setTool(button.dataset.tool));
  $("brush-size").addEventListener("input", () => {
    state.brush = Number($("brush-size").value);
    $("brush-size-value").textContent = String(state.brush);
  });
  $("undo").addEventListener("click", () => restore(state.undo, state.redo));
  $("redo").addEventListener("click", () => restore(state.redo, state.undo));
  $("blank").addEventListener("click", blank);
  $("random").addEventListener("click", randomLayout);
  $("label-file").addEventListener("change", () => { const f = $("label-file").files[0]; if (f) uploadLabel(f); $("label-file").value = ""; });
  $("model").addEventListener("change", () => chooseModel($("model").value));
  $("k").addEventListener("change", () => scheduleRender(0));
  $("seed").addEventListener("change", () => scheduleRender(0));
  $("new-seed").addEventListener("click", () => { $("seed").value = String(Math.floor(Math.random() * 1e9)); scheduleRender(0); });
  $("style-file").addEventListener("change", () => { state.styleImage = $("style-file").files[0] || null; $("clear-style").hidden = !state.styleImage; scheduleRender(0); });
  $("clear-style").addEventListener("click", () => { clearStyle(); scheduleRender(0); });
  $("reroll").addEventListener("click", () => { state.resampleSeed = Math.floor(Math.random() * 1e9); scheduleRender(0); });
  $("clear-mask").addEventListener("click", () => { remember(); state.resampleMask.fill(0); state.resampleSeed = null; draw(); scheduleRender(0); });
  $("photo-file").addEventListener("change", () => { const f = $("photo-file").files[0]; if (f) startEditing(f); });
  $("clear-edit").addEventListener("click", () => { stopEditing(); scheduleRender(0); });
  $("download-layout").addEventListener("click", downloadLayout);
  try {
    const data = await (await api("/api/models")).json();
    state.models = data.models;
    for (const model of data.models) $("model").append(new Option(`${model.name} (${model.method})`, model.name));
    await chooseModel(data.models[0].name);
    document.body.dataset.ready = "1";
  } catch (error) {
    say(`Could not load the models: ${error.message}`, true);
  }
}

start();
