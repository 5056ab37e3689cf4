// pixelwise serve: the page. Plain browser JavaScript, no libraries, nothing loaded from elsewhere.
// Flow: pick/drop an image -> POST /v1/segment (the model's own task) -> decode the answer's PNGs -> draw the
// image with a colour overlay (opacity slider, classes on/off) -> legend -> downloads. Per task:
//   semantic:   "mask" = index PNG of class ids; one colour per pixel.
//   panoptic:   "mask" as semantic (fill) + "segment_map" = index PNG of segment ids (0 = void): thing
//               instances get their own shade of the class colour, every segment an opaque outline.
//   multilabel: "mask" = "bits" PNG, bit c set where class c is present; a pixel's colour is the mean of
//               the colours of the shown classes present there (shares may sum past 100%).
"use strict";

const $ = (id) => document.getElementById(id);
const view = { bitmap: null, labels: null, width: 0, height: 0, task: "semantic", classes: [], enabled: [],
               overlay: null, outlines: null, segMap: null, seg: null, edges: null, segments: [], maskData: "",
               name: "image" };

function setState(state, message, isError = false) {
  document.body.dataset.state = state;
  const status = $("status");
  status.textContent = message || "";
  status.classList.toggle("error", isError);
}

async function loadModelInfo() {
  try {
    const res = await fetch("/v1/model");
    const info = await res.json();
    $("model-info").textContent = `model ${info.name} · task ${info.task} · ${info.classes.length} classes`;
    document.body.dataset.task = info.task;
    const mb = info.limits && info.limits.max_upload_mb;
    if (mb) $("limits").textContent = `PNG, JPEG, WebP, BMP, TIFF up to ${mb} MB. ` +
      "The image is sent only to this server.";
  } catch (err) {
    $("model-info").textContent = "model information unavailable";
  }
}

// --- PNG decoding: the mask is an index PNG (palette or greyscale, 1..16 bits); we need the raw ids,
// which a browser's own decoder would turn into colours.
function paeth(a, b, c) {
  const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

async function decodeIndexPng(base64) {
  const bytes = Uint8Array.from(atob(base64), (ch) => ch.charCodeAt(0));
  const dv = new DataView(bytes.buffer);
  let pos = 8, width = 0, height = 0, depth = 8, colorType = 3, interlace = 0;
  const idat = [];
  while (pos + 8 <= bytes.length) {
    const len = dv.getUint32(pos);
    const type = String.fromCharCode(...bytes.subarray(pos + 4, pos + 8));
    if (type === "IHDR") {
      width = dv.getUint32(pos + 8); height = dv.getUint32(pos + 12);
      depth = bytes[pos + 16]; colorType = bytes[pos + 17]; interlace = bytes[pos + 20];
    } else if (type === "IDAT") {
      idat.push(bytes.subarray(pos + 8, pos + 8 + len));
    } else if (type === "IEND") break;
    pos += 12 + len;
  }
  if (interlace || (colorType !== 0 && colorType !== 3)) throw new Error("unexpected mask PNG layout");
  const stream = new Blob(idat).stream().pipeThrough(new DecompressionStream("deflate"));
  const raw = new Uint8Array(await new Response(stream).arrayBuffer());
  const stride = Math.ceil((width * depth) / 8), bpp = Math.max(1, depth >> 3);
  const labels = new Uint16Array(width * height);
  let prev = new Uint8Array(stride), cur = new Uint8Array(stride);
  for (let y = 0; y < height; y++) {
    const start = y * (stride + 1), filter = raw[start];
    for (let i = 0; i < stride; i++) {
      const a = i >= bpp ? cur[i - bpp] : 0, b = prev[i], c = i >= bpp ? prev[i - bpp] : 0;
      let x = raw[start + 1 + i];
      if (filter === 1) x += a;
      else if (filter === 2) x += b;
      else if (filter === 3) x += (a + b) >> 1;
      else if (filter === 4) x += paeth(a, b, c);
      cur[i] = x & 255;
    }
    const row = y * width;
    if (depth === 8) labels.set(cur.subarray(0, width), row);
    else if (depth === 16) for (let x = 0; x < width; x++) labels[row + x] = (cur[2 * x] << 8) | cur[2 * x + 1];
    else {
      const perByte = 8 / depth, mask = (1 << depth) - 1;
      for (let x = 0; x < width; x++) {
        const shift = 8 - depth * (1 + (x % perByte));
        labels[row + x] = (cur[Math.floor(x / perByte)] >> shift) & mask;
      }
    }
    [prev, cur] = [cur, prev];
  }
  return { width, height, labels };
}

// --- colours
const pack = (r, g, b) => ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0;  // RGBA, little-endian
const darken = (color) => color.map((c) => Math.round(c * 0.45));

// Shades of a class colour for its instances: the first keeps the colour, the next ones are lighter or
// darker in turn, so that touching objects of one class stay apart.
const SHADES = [0, 0.4, -0.35, 0.65, -0.55, 0.25, -0.2, 0.8];
function shade(color, rank) {
  const t = SHADES[rank % SHADES.length];
  return color.map((c) => Math.round(t >= 0 ? c + (255 - c) * t : c * (1 + t)));
}

// --- panoptic: segment ids -> class, shade and outline colour; the outline pixels (computed once)
function prepareSegments(segMap, segments, width, height) {
  const segClass = new Int32Array(65536).fill(-1), rank = new Uint16Array(65536), perClass = new Map();
  for (const seg of segments) {
    if (seg.id <= 0 || seg.id > 65535) continue;
    segClass[seg.id] = seg.class;
    if (seg.isthing) {
      const k = perClass.get(seg.class) || 0;
      rank[seg.id] = k; perClass.set(seg.class, k + 1);
    }
  }
  // an outline pixel belongs to a segment (id > 0) and has a 4-neighbour with another id
  const edges = new Uint8Array(width * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x, s = segMap[i];
      if (!s) continue;
      if ((x > 0 && segMap[i - 1] !== s) || (x < width - 1 && segMap[i + 1] !== s) ||
          (y > 0 && segMap[i - width] !== s) || (y < height - 1 && segMap[i + width] !== s)) edges[i] = 1;
    }
  }
  return { segClass, rank, edges };
}

// --- drawing
function classLuts() {
  const fill = new Uint32Array(65536), edge = new Uint32Array(65536);  // class id -> RGBA; 0 = transparent
  view.classes.forEach((cls, i) => {
    if (!view.enabled[i]) return;
    fill[cls.id] = pack(...cls.color);
    edge[cls.id] = pack(...darken(cls.color));
  });
  return { fill, edge };
}

function canvasOf(existing) {
  const canvas = existing || document.createElement("canvas");
  canvas.width = view.width; canvas.height = view.height;
  const ctx = canvas.getContext("2d");
  const data = ctx.createImageData(view.width, view.height);
  return { canvas, ctx, data, px: new Uint32Array(data.data.buffer) };
}

function buildOverlay() {
  const { labels, classes, enabled } = view;
  const { fill, edge } = classLuts();
  const out = canvasOf(view.overlay), px = out.px;
  if (view.task === "multilabel") {
    // bits -> mean colour of the shown classes present; computed once per distinct bit pattern
    let shown = 0;
    classes.forEach((cls, i) => { if (enabled[i] && cls.id < 16) shown |= 1 << cls.id; });
    const lut = new Uint32Array(65536), done = new Uint8Array(65536);
    for (let i = 0; i < labels.length; i++) {
      const v = labels[i] & shown;
      if (!v) continue;
      if (!done[v]) {
        let r = 0, g = 0, b = 0, n = 0;
        for (const cls of classes) {
          if (cls.id < 16 && (v >> cls.id) & 1) { r += cls.color[0]; g += cls.color[1]; b += cls.color[2]; n++; }
        }
        lut[v] = pack(Math.round(r / n), Math.round(g / n), Math.round(b / n));
        done[v] = 1;
      }
      px[i] = lut[v];
    }
  } else if (view.segMap) {
    // panoptic: the class colour of the semantic map, in the instance's own shade where a thing segment
    // of that class covers the pixel; outlines on a canvas of their own (drawn fully opaque)
    const { segMap, edges } = view, { segClass, rank } = view.seg;
    const shaded = new Uint32Array(65536);
    for (const seg of view.segments) {
      const i = classes.findIndex((c) => c.id === seg.class);
      if (seg.isthing && i >= 0 && enabled[i] && seg.id > 0 && seg.id < 65536) {
        shaded[seg.id] = pack(...shade(classes[i].color, rank[seg.id]));
      }
    }
    const lines = canvasOf(view.outlines);
    for (let i = 0; i < labels.length; i++) {
      const c = labels[i], s = segMap[i];
      px[i] = s && segClass[s] === c && shaded[s] ? shaded[s] : fill[c];
      if (edges[i] && segClass[s] >= 0) lines.px[i] = edge[segClass[s]];
    }
    lines.ctx.putImageData(lines.data, 0, 0);
    view.outlines = lines.canvas;
  } else {
    for (let i = 0; i < labels.length; i++) px[i] = fill[labels[i]];
  }
  out.ctx.putImageData(out.data, 0, 0);
  view.overlay = out.canvas;
}

function render() {
  const canvas = $("view"), ctx = canvas.getContext("2d");
  const { width, height } = view;
  canvas.width = width; canvas.height = height;
  if (view.bitmap) ctx.drawImage(view.bitmap, 0, 0, width, height);
  else { ctx.fillStyle = "#777"; ctx.fillRect(0, 0, width, height); }
  const opacity = Number($("opacity").value) / 100;
  $("opacity-value").textContent = `${Math.round(opacity * 100)}%`;
  ctx.globalAlpha = opacity;
  ctx.drawImage(view.overlay, 0, 0);
  ctx.globalAlpha = 1;
  if (view.segMap && view.outlines) ctx.drawImage(view.outlines, 0, 0);
  // the canvas fills the viewer (CSS); small images are scaled up with crisp pixels
  canvas.classList.toggle("pixelated", Math.max(width, height) < 320);
}

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

function amount(cls, total) {
  // panoptic / instance: thing classes count their instances (stuff rows have instances null)
  if (cls.instances !== undefined && cls.instances !== null && view.task !== "semantic") {
    return cls.instances || cls.pixels ? plural(cls.instances, "instance") : "—";
  }
  const share = (100 * cls.pixels) / total;
  return cls.pixels ? `${share < 0.1 ? share.toFixed(2) : share.toFixed(1)}%` : "—";
}

function fillLegend() {
  const body = $("legend").querySelector("tbody");
  body.replaceChildren();
  const total = view.width * view.height || 1;
  const order = view.classes.map((c, i) => i).sort((i, j) => view.classes[j].pixels - view.classes[i].pixels);
  for (const i of order) {
    const cls = view.classes[i];
    const tr = document.createElement("tr");
    tr.className = cls.pixels || cls.instances ? "present" : "absent";
    tr.dataset.classId = cls.id;
    const box = document.createElement("input");
    box.type = "checkbox"; box.checked = view.enabled[i];
    box.setAttribute("aria-label", `show ${cls.name}`);
    box.addEventListener("change", () => { view.enabled[i] = box.checked; buildOverlay(); render(); });
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.backgroundColor = `rgb(${cls.color.join(",")})`;
    if (view.segMap) swatch.style.borderColor = `rgb(${darken(cls.color).join(",")})`;
    const name = document.createElement("span");
    name.className = "name"; name.textContent = cls.name;
    const label = document.createElement("label");
    label.append(swatch, name);
    const cells = [document.createElement("td"), document.createElement("td"), document.createElement("td")];
    cells[0].append(box); cells[1].append(label);
    cells[2].className = "num";
    cells[2].textContent = amount(cls, total);
    label.addEventListener("click", (ev) => { ev.preventDefault(); box.click(); });
    tr.append(...cells);
    body.append(tr);
  }
}

function setAll(on) {
  view.enabled = view.classes.map(() => on);
  fillLegend(); buildOverlay(); render();
}

// --- one answer -> what the page draws; throws with a line for the user where it cannot
async function readAnswer(body) {
  const task = body.task || "semantic", mask = body.mask;
  if (!mask || mask.format !== "png") {
    throw new Error(`the ${task} answer has no PNG mask` +
      (mask && mask.format ? ` (it came as ${mask.format}; this page draws PNG masks only)` : ""));
  }
  const labels = (await decodeIndexPng(mask.data)).labels;
  const out = { task, labels, segMap: null, seg: null, edges: null, segments: body.segments || [] };
  if (task === "panoptic" && body.segment_map) {
    out.segMap = (await decodeIndexPng(body.segment_map.data)).labels;
    const prepared = prepareSegments(out.segMap, out.segments, body.width, body.height);
    out.seg = prepared; out.edges = prepared.edges;
  }
  return out;
}

// one line above the legend: what was found (panoptic, instance) or how to read the shares (multi-label)
function describe(body) {
  if (body.task === "multilabel") return "Classes may overlap: a pixel shows the mean colour of those present, " +
    "and the shares can sum past 100%.";
  if (body.task !== "panoptic" && body.task !== "instance") return "";
  const segments = body.segments || [], things = segments.filter((s) => s.isthing).length;
  return `${plural(segments.length, "segment")}, ${things} of them counted objects (outlined)`;
}

// --- one image
async function segment(file) {
  if (!file) return;
  setState("busy", `Segmenting ${file.name} (${(file.size / 1024).toFixed(0)} KB)…`);
  const form = new FormData();
  form.append("image", file, file.name);
  const t0 = performance.now();
  let res, body;
  try {
    res = await fetch("/v1/segment", { method: "POST", body: form });
    body = await res.json();
  } catch (err) {
    setState("error", `The server did not answer (${err.message}).`, true);
    return;
  }
  const roundTrip = performance.now() - t0;
  if (!res.ok) {
    const retry = res.headers.get("Retry-After");
    setState("error", `${body.error || res.statusText} (HTTP ${res.status}` +
      (retry ? `; try again in ${retry} s)` : ")"), true);
    return;
  }
  try {
    const answer = await readAnswer(body);
    // a multi-band model answers with the upload's RGB composite: browsers cannot draw a multi-band TIFF
    view.bitmap = body.image && body.image.data
      ? await createImageBitmap(new Blob([Uint8Array.from(atob(body.image.data), (c) => c.charCodeAt(0))],
                                         { type: "image/png" }))
      : await createImageBitmap(file, { imageOrientation: "from-image" }).catch(() => null);
    Object.assign(view, answer, { width: body.width, height: body.height, classes: body.classes,
                                  enabled: body.classes.map(() => true), maskData: body.mask.data,
                                  name: file.name.replace(/\.[^.]*$/, "") || "image" });
  } catch (err) {
    setState("error", `Could not read the server's answer (${err.message}).`, true);
    return;
  }
  document.body.dataset.task = view.task;
  buildOverlay(); render(); fillLegend();
  $("caption").textContent = `${file.name} · ${body.width}×${body.height} · task ${view.task}` +
    (view.bitmap ? "" : " · this browser cannot show the image itself; showing the mask only");
  $("summary").textContent = describe(body);
  $("legend-num").textContent = view.task === "panoptic" || view.task === "instance" ? "share / count" : "share";
  $("timing").textContent = `${body.model}: ${body.ms.toFixed(0)} ms on the server, ` +
    `${roundTrip.toFixed(0)} ms round trip`;
  const dl = $("dl-mask");
  dl.href = `data:image/png;base64,${body.mask.data}`;
  dl.download = `${view.name}_mask.png`;
  dl.title = view.task === "multilabel" ? "bits PNG: bit c of a pixel's value is set where class c is present"
    : "index PNG: each pixel holds its class id";
  const segs = $("dl-segments");
  segs.hidden = !(body.segment_map && body.segment_map.data);
  if (!segs.hidden) {
    segs.href = `data:image/png;base64,${body.segment_map.data}`;
    segs.download = `${view.name}_segments.png`;
  }
  $("result").hidden = false;
  setState("done", "");
}

function downloadOverlay() {
  $("view").toBlob((blob) => {
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `${view.name}_overlay.png`;
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }, "image/png");
}

function init() {
  const drop = $("drop"), input = $("file");
  input.addEventListener("change", () => segment(input.files[0]));
  for (const ev of ["dragenter", "dragover"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const ev of ["dragleave", "drop"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (e) => segment(e.dataTransfer.files[0]));
  // a file dropped outside the drop zone must not make the browser navigate away from the page
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => { e.preventDefault(); segment(e.dataTransfer.files[0]); });
  $("opacity").addEventListener("input", () => { if (view.overlay) render(); });
  $("all-on").addEventListener("click", () => setAll(true));
  $("all-off").addEventListener("click", () => setAll(false));
  $("dl-overlay").addEventListener("click", downloadOverlay);
  loadModelInfo();
}

document.addEventListener("DOMContentLoaded", init);
