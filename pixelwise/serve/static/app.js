// pixelwise serve: the page. Plain browser JavaScript, no libraries, nothing loaded from elsewhere.
// Flow: pick/drop an image -> POST /v1/segment -> decode the index PNG to class ids -> draw the image with a
// colour overlay (opacity slider, classes on/off) -> legend with each class's share -> downloads.
"use strict";

const $ = (id) => document.getElementById(id);
const view = { bitmap: null, labels: null, width: 0, height: 0, classes: [], enabled: [], overlay: null,
               maskData: "", name: "image" };

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
    $("model-info").textContent = `model ${info.name} · ${info.classes.length} classes`;
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

// --- drawing
function buildOverlay() {
  const { width, height, labels, classes, enabled } = view;
  const lut = new Uint32Array(65536);  // class id -> RGBA packed little-endian; 0 = transparent
  classes.forEach((cls, i) => {
    const [r, g, b] = cls.color;
    lut[cls.id] = enabled[i] ? ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0 : 0;
  });
  const canvas = view.overlay || document.createElement("canvas");
  canvas.width = width; canvas.height = height;
  const ctx = canvas.getContext("2d");
  const data = ctx.createImageData(width, height);
  const px = new Uint32Array(data.data.buffer);
  for (let i = 0; i < labels.length; i++) px[i] = lut[labels[i]];
  ctx.putImageData(data, 0, 0);
  view.overlay = canvas;
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
  // the canvas fills the viewer (CSS); small images are scaled up with crisp pixels
  canvas.classList.toggle("pixelated", Math.max(width, height) < 320);
}

function fillLegend() {
  const body = $("legend").querySelector("tbody");
  body.replaceChildren();
  const total = view.width * view.height || 1;
  const order = view.classes.map((c, i) => i).sort((i, j) => view.classes[j].pixels - view.classes[i].pixels);
  for (const i of order) {
    const cls = view.classes[i], share = (100 * cls.pixels) / total;
    const tr = document.createElement("tr");
    tr.className = cls.pixels ? "present" : "absent";
    tr.dataset.classId = cls.id;
    const box = document.createElement("input");
    box.type = "checkbox"; box.checked = view.enabled[i];
    box.setAttribute("aria-label", `show ${cls.name}`);
    box.addEventListener("change", () => { view.enabled[i] = box.checked; buildOverlay(); render(); });
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.backgroundColor = `rgb(${cls.color.join(",")})`;
    const name = document.createElement("span");
    name.className = "name"; name.textContent = cls.name;
    const label = document.createElement("label");
    label.append(swatch, name);
    const cells = [document.createElement("td"), document.createElement("td"), document.createElement("td")];
    cells[0].append(box); cells[1].append(label);
    cells[2].className = "num";
    cells[2].textContent = cls.pixels ? `${share < 0.1 ? share.toFixed(2) : share.toFixed(1)}%` : "—";
    label.addEventListener("click", (ev) => { ev.preventDefault(); box.click(); });
    tr.append(...cells);
    body.append(tr);
  }
}

function setAll(on) {
  view.enabled = view.classes.map(() => on);
  fillLegend(); buildOverlay(); render();
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
    const mask = await decodeIndexPng(body.mask.data);
    view.bitmap = await createImageBitmap(file, { imageOrientation: "from-image" }).catch(() => null);
    Object.assign(view, { labels: mask.labels, width: body.width, height: body.height, classes: body.classes,
                          enabled: body.classes.map(() => true), maskData: body.mask.data,
                          name: file.name.replace(/\.[^.]*$/, "") || "image" });
  } catch (err) {
    setState("error", `Could not read the server's answer (${err.message}).`, true);
    return;
  }
  buildOverlay(); render(); fillLegend();
  $("caption").textContent = `${file.name} · ${body.width}×${body.height}` +
    (view.bitmap ? "" : " · this browser cannot show the image itself; showing the mask only");
  $("timing").textContent = `${body.model}: ${body.ms.toFixed(0)} ms on the server, ` +
    `${roundTrip.toFixed(0)} ms round trip`;
  const dl = $("dl-mask");
  dl.href = `data:image/png;base64,${body.mask.data}`;
  dl.download = `${view.name}_mask.png`;
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
