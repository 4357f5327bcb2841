// The explorer page: plain JavaScript over the JSON API of src/explorer/app.py. Nothing is loaded
// from the network; every picture arrives as a PNG in the API's answers.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { page: 0, image: null, analysis: null, classes: [], ticket: 0 };
const PX = 192;  // the input is drawn 32×32 → 192×192

function showError(msg) { const e = $("error"); e.textContent = msg; e.hidden = !msg; }

// `ticket`: the choice of image a call belongs to. Once another image is chosen its answers neither
// show nor clear the error: a late Grad-CAM of the old image must not hide why the new one was refused.
async function call(url, opts = {}, ticket = null) {
  const res = await fetch(url, opts);
  const current = ticket === null || ticket === state.ticket;
  let body;
  try { body = await res.json(); } catch { body = { error: `the server answered ${res.status}` }; }
  if (!res.ok || body.error) {
    if (current) showError(body.error || `the server answered ${res.status}`);
    throw new Error(body.error);
  }
  if (current) showError("");
  return body;
}
const post = (url, data, ticket = null) => call(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(data) }, ticket);
const img = (b64) => `data:image/png;base64,${b64}`;
function el(tag, attrs = {}, ...kids) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) { if (k === "class") n.className = v; else if (k.startsWith("on")) n[k] = v; else n.setAttribute(k, v); }
  for (const k of kids) n.append(k);
  return n;
}
function thumb(item, caption) {
  return el("figure", { class: item.pred === undefined ? "" : (item.label === undefined || item.pred === item.label ? "right" : "wrong"),
    "data-index": item.index, onclick: () => choose({ index: item.index }).catch(() => {}),
    title: `test #${item.index}` + (item.label === undefined ? "" : `: true class ${item.label}`) + (item.pred === undefined ? "" : `, predicted ${item.pred}`) },
    el("img", { src: img(item.png), alt: `test #${item.index}` }), el("figcaption", {}, caption));
}

// ------------------------------------------------------------------ picking
async function loadThumbs() {
  const q = new URLSearchParams({ cls: $("f-class").value, which: $("f-which").value, order: $("f-order").value, page: state.page });
  const r = await call(`/api/images?${q}`);
  state.page = r.page;
  $("prev").disabled = r.page === 0;
  $("next").disabled = r.page >= r.pages - 1;  // the API refuses a page past either end
  $("page-info").textContent = `page ${r.page + 1} of ${r.pages} (${r.total} images)`;
  $("thumbs").replaceChildren(...r.items.map((it) => thumb(it, `${it.pred} ${(100 * it.conf).toFixed(0)}%`)));
}

// A refused image must not leave the previous analysis on screen, where it reads as the refused one's.
function clearView() {
  state.image = null; state.analysis = null;
  $("view").hidden = true;
  $("view-title").textContent = ""; $("truth").replaceChildren(); $("truth").className = "";
  for (const id of ["image", "cam"]) $(id).removeAttribute("src");
  for (const id of ["probs", "layers", "conv-sum"]) $(id).replaceChildren();
  clearField();
}

async function choose(source) {  // {index} or {file} or {image}
  const ticket = ++state.ticket;  // the latest choice wins over answers still on their way
  let a;
  try {
    if (source.file) {
      const form = new FormData(); form.append("file", source.file);
      a = await call("/api/analyse", { method: "POST", body: form }, ticket);
    } else {
      a = await post("/api/analyse", source, ticket);
    }
  } catch (err) {
    if (ticket === state.ticket) clearView();
    throw err;
  }
  if (ticket !== state.ticket) return;
  state.image = a.index !== null ? { index: a.index } : { image: a.image };
  state.analysis = a;
  $("view").hidden = false;
  $("view-title").textContent = a.index !== null ? `Test image #${a.index}` : "Your upload";
  $("image").src = img(a.image);
  drawTruth(a);
  drawProbs(a);
  $("cam-class").replaceChildren(...state.classes.map((c) => el("option", { value: c }, c)));
  $("cam-class").value = a.pred;
  await drawCam(ticket);
  if (ticket !== state.ticket) return;
  $("layers").replaceChildren(...a.layers.map((l) => el("div", { class: "layer", "data-layer": l.name },
    el("h4", {}, `${l.name} — ${l.shape.join("×")} (${l.shape[0]} channels in a ${l.rows}×${l.cols} grid)`),
    el("img", { src: img(l.mosaic), alt: l.name, style: `width:${Math.min(900, l.cols * (l.shape[2] + 1) * 3)}px` }))));
  const fc = a.first_conv;
  $("conv-name").textContent = `${fc.name} (output ${fc.shape.join("×")})`;
  $("conv-channel").max = fc.shape[0] - 1;
  drawFmap();
  clearField(); $("conv-sum").replaceChildren();
}

function drawTruth(a) {  // in words: a test image's true class and the verdict; an upload has none
  const t = $("truth");
  if (a.true_class === null) {
    t.className = "upload";
    t.replaceChildren(`uploaded image: no true class — predicted ${a.pred}`);
  } else {
    t.className = a.correct ? "right" : "wrong";
    t.replaceChildren(`true class: ${a.true_class} — predicted ${a.pred} `, el("b", { class: "verdict" }, a.correct ? "(right)" : "(wrong)"));
    if (a.stage_pred !== a.pred) {  // the lists go by the evaluate stage's prediction, which averages more views
      t.append(` — the evaluate stage, with test-time augmentation, predicted ${a.stage_pred} ` +
        `(${a.stage_pred === a.true_class ? "right" : "wrong"}): the lists go by that`);
    }
  }
}

function drawProbs(a) {  // the predicted and the true class each get a text tag, not a colour alone
  const tag = (on, cls, text) => (on ? [el("span", { class: `tag ${cls}` }, text)] : []);
  $("probs").replaceChildren(...a.probs.map((p) => {
    const isPred = p.class === a.pred, isTrue = p.class === a.true_class;
    const cls = "prob" + (isPred ? " pred" : "") + (isTrue ? " truth" : "") + (a.correct === false ? " miss" : "");
    return el("div", { class: cls, "data-class": p.class, "data-p": p.p },
      el("span", { class: "name" }, p.class, ...tag(isPred, "pred", "predicted"), ...tag(isTrue, "truth", "true class")),
      el("div", { class: "bar" }, el("div", { style: `width:${(100 * p.p).toFixed(1)}%` })),
      el("span", { class: "value" }, p.p.toFixed(3)));
  }));
}

async function drawCam(ticket = null) {
  const r = await post("/api/gradcam", { ...state.image, cls: $("cam-class").value }, ticket);
  if (ticket === null || ticket === state.ticket) $("cam").src = img(r.png);
}

// ------------------------------------------------------------------ the first conv layer, by hand
function drawFmap() {
  const fc = state.analysis.first_conv, ch = Math.min(+$("conv-channel").value || 0, fc.shape[0] - 1);
  const m = fc.maps[ch], h = m.length, w = m[0].length, cv = $("fmap"), g = cv.getContext("2d");
  const flat = m.flat(), lo = Math.min(...flat), hi = Math.max(...flat);
  cv.width = w; cv.height = h;
  const data = g.createImageData(w, h);
  for (let i = 0; i < h; i++) for (let j = 0; j < w; j++) {
    const t = hi > lo ? (m[i][j] - lo) / (hi - lo) : 0, k = 4 * (i * w + j);
    data.data[k] = 68 + 185 * t; data.data[k + 1] = 1 + 230 * t; data.data[k + 2] = 84 + 50 * (1 - t); data.data[k + 3] = 255;
  }
  g.putImageData(data, 0, 0);
  $("fmap-shape").textContent = `channel ${ch}: ${h}×${w}, click a position`;
}

function clearField() { const c = $("field"); c.getContext("2d").clearRect(0, 0, c.width, c.height); }

async function clickFmap(ev) {
  const fc = state.analysis.first_conv, rect = $("fmap").getBoundingClientRect();
  const i = Math.floor((ev.clientY - rect.top) / rect.height * fc.shape[1]);
  const j = Math.floor((ev.clientX - rect.left) / rect.width * fc.shape[2]);
  await explainPosition(+$("conv-channel").value || 0, i, j);
}

async function explainPosition(channel, i, j) {
  const r = await post("/api/conv", { ...state.image, channel, i, j });
  const [top, left, bottom, right] = r.box, s = PX / 32, g = $("field").getContext("2d");
  clearField(); g.strokeStyle = "#ff2d2d"; g.lineWidth = 3;
  g.strokeRect(left * s, top * s, (right - left) * s, (bottom - top) * s);
  const terms = r.terms.map((t) => `(${t.w.toFixed(4)})·(${t.x.toFixed(4)})`).join(" + ");
  $("conv-sum").replaceChildren(
    el("div", {}, `${r.layer}[${channel}, ${i}, ${j}]: a ${r.kernel}×${r.kernel} kernel over ${r.terms.length / (r.kernel * r.kernel)} input channels, ` +
      `stride ${r.stride}, padding ${r.padding}; receptive field rows ${top}…${bottom - 1}, columns ${left}…${right - 1}` +
      (top < 0 || left < 0 || bottom > 32 || right > 32 ? " (partly padding: zeros)" : "")),
    el("div", {}, `Σ w·x + b = ${terms} + (${r.bias.toFixed(4)})`),
    el("div", { class: "eq", "data-sum": r.sum, "data-torch": r.torch },
      `= ${r.sum} (the sum, from scratch: src.teach.ops.conv2d)   PyTorch: ${r.torch}`));
}

// ------------------------------------------------------------------ a class; what excites the channels
async function loadClass() {
  const r = await call(`/api/class/${encodeURIComponent($("c-class").value)}`);
  const head = el("tr", {}, el("th", {}, "predicted →"), ...Object.keys(r.row).map((c) => el("th", {}, c)));
  const row = el("tr", {}, el("th", {}, r.class), ...Object.values(r.row).map((n) => el("td", {}, String(n))));
  $("class-view").replaceChildren(
    el("p", {}, `${r.images} test images of ${r.class}, ${(100 * r.accuracy).toFixed(1)} % recognised. Its row of the confusion matrix:`),
    el("table", { class: "confusion" }, head, row),
    el("p", {}, r.mistakes.length ? "Its most confident mistakes (click one to look inside):" : "No mistakes."),
    el("div", { id: "mistakes", class: "patches" }, ...r.mistakes.map((m) => thumb({ ...m, label: r.class }, `${m.pred} ${(100 * m.conf).toFixed(0)}%`))));
}

async function loadFilters() {
  $("load-filters").disabled = true;
  const layers = await call("/api/filters");
  $("filter-view").replaceChildren(...layers.map((l) => el("div", { class: "layer", "data-layer": l.layer },
    el("h4", {}, `${l.layer}: receptive field ${l.field}×${l.field}` + (l.learned ? "" : " — not learned (frozen, set from the data)")),
    ...l.rows.map((r) => el("div", { class: "patches" }, el("span", { class: "ch" }, `channel ${r.channel}`),
      ...r.patches.map((p) => el("figure", { onclick: () => choose({ index: p.index }).catch(() => {}) },
        el("img", { src: img(p.png), alt: `test #${p.index}` }), el("figcaption", {}, p.value.toFixed(2)))))))));
}

// ------------------------------------------------------------------ start
async function start() {
  let info;
  try { info = await call("/api/info"); } catch { $("model-info").textContent = ""; return; }
  state.classes = info.classes;
  $("model-info").textContent = `${info.model} on ${info.classes.length} classes, test accuracy ${(100 * info.test_acc).toFixed(2)} % (${info.test_images} test images)`;
  for (const c of info.classes) { $("f-class").append(el("option", { value: c }, c)); $("c-class").append(el("option", { value: c }, c)); }
  for (const id of ["f-class", "f-which", "f-order"]) $(id).onchange = () => { state.page = 0; loadThumbs(); };
  $("prev").onclick = () => { state.page -= 1; loadThumbs(); };
  $("next").onclick = () => { state.page += 1; loadThumbs(); };
  $("upload").onchange = () => { if ($("upload").files[0]) choose({ file: $("upload").files[0] }).catch(() => {}); };
  $("cam-class").onchange = () => drawCam();
  $("conv-channel").onchange = () => { drawFmap(); clearField(); };
  $("fmap").onclick = (ev) => clickFmap(ev).catch(() => {});
  $("c-class").onchange = () => loadClass();
  $("load-filters").onclick = () => loadFilters().catch(() => { $("load-filters").disabled = false; });
  await loadThumbs();
  await loadClass();
}
window.addEventListener("unhandledrejection", (ev) => ev.preventDefault());  // already shown in #error
start();
