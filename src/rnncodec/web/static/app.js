// The viewer page: queue an upload, follow its events as each iteration is coded, compare any
// two pictures in a split view, and decode an .rnnc file as its bytes arrive. No build step.
"use strict";

const $ = (id) => document.getElementById(id);
const PEERS = ["jpeg", "webp", "avif", "jxl"];
const KINDS = ["original", "rnnc", ...PEERS];
const NAMES = { original: "Original", rnnc: "rnncodec", jpeg: "JPEG", webp: "WebP", avif: "AVIF", jxl: "JPEG XL" };
const TARGETS = {  // input bounds and a sensible default per target kind
  iterations: { value: 8, min: 1, max: 16, step: 1 },
  bpp: { value: 0.5, min: 0.01, max: 8, step: "any" },
  ms_ssim: { value: 0.95, min: 0.5, max: 0.9999, step: "any" },
  psnr: { value: 30, min: 10, max: 60, step: "any" },
};
const MAX_SCALE = 32;

let result = null;    // { id, width, height, mode, model, codecs, steps, state }
let following = true; // the slider moves to each new iteration until the user picks one
let stream = null;    // AbortController of the events stream being followed
let started = 0;      // when the upload was sent (for the status line)
let centre = { x: 0.5, y: 0.5 };  // where the crops look, as a fraction of width and height
let player = null;    // interval of the play button
const view = { scale: 1, x: 0, y: 0, split: 0.5, fit: true };  // the split view

const fmt = {
  bytes: (n) => `${n.toLocaleString("en-US")} B`,
  bpp: (x) => x.toFixed(3),
  psnr: (x) => (x === null ? "∞" : `${x.toFixed(2)} dB`),
  ssim: (x) => (x === null ? "…" : x.toFixed(4)),
  share: (step) => (adaptive(step) ? `${Math.round(step.rnnc.blocks_coded * 100)}%` : "all"),
};

// --- errors and status ------------------------------------------------------------------------

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function errorText(response) {
  try {
    return (await response.json()).detail || response.statusText;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

function setStatus(text) {
  $("status").textContent = text;
}

function seconds() {
  return `${((Date.now() - started) / 1000).toFixed(1)} s`;
}

// --- uploading and following ------------------------------------------------------------------

function clearResult() {  // a new upload (or a failed one) leaves nothing of the last behind
  if (stream) stream.abort();
  if (result && result.state !== "done" && result.state !== "failed") {
    fetch(`api/results/${result.id}`, { method: "DELETE" }).catch(() => {});
  }
  stream = null;
  result = null;
  stopPlaying();
  $("results").hidden = true;
  $("steps").tHead.innerHTML = "";
  $("steps").tBodies[0].innerHTML = "";
  for (const img of document.querySelectorAll("#results img")) img.removeAttribute("src");
}

let uploads = 0;  // counts uploads, so that a replaced one's ending touches nothing

async function upload(data) {
  clearResult();
  showError("");
  const mine = ++uploads;
  started = Date.now();
  setStatus("Uploading…");
  try {
    const response = await fetch("api/encode", { method: "POST", body: data });
    if (!response.ok) throw new Error(await errorText(response));
    const { id } = await response.json();
    if (mine === uploads) await follow(id);
  } catch (e) {
    if (mine !== uploads || e.name === "AbortError") return;
    showError(e.message);
    setStatus("");
    if (!result || !result.steps.length) clearResult();
  }
}

async function* jsonLines(body) {  // parse a stream of JSON lines as the bytes come in
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buffer += value;
    const lines = buffer.split("\n");
    buffer = lines.pop();
    for (const line of lines) if (line) yield JSON.parse(line);
  }
}

async function follow(id) {
  stream = new AbortController();
  const response = await fetch(`api/results/${id}/events`, { signal: stream.signal });
  if (!response.ok) throw new Error(await errorText(response));
  for await (const event of jsonLines(response.body)) {
    if (event.event === "failed") throw new Error(event.detail);
    HANDLERS[event.event]?.(id, event);
  }
}

const HANDLERS = {
  info(id, e) {
    result = { id, ...e, steps: [], state: "queued" };
    following = true;
    buildTable();
    buildSources();
    $("img-original").src = `api/results/${id}/original`;
    $("cap-original").innerHTML = `<b>Original</b> · ${e.width}×${e.height} ${e.mode} · model ${e.model}`;
    $("step").max = 1;
    $("step").value = 1;
    $("step-label").textContent = "– / –";
    $("results").hidden = false;
    fitView();
    showStep();
  },
  queued(_, e) {
    setStatus(`Waiting for a free worker: number ${e.position} in line…`);
  },
  running() {
    result.state = "running";
    setStatus("Compressing: iteration 1…");
  },
  step(_, e) {
    result.steps.push(e.step);
    addRow(e.step);
    const n = result.steps.length;
    $("step").max = n;
    if (following) $("step").value = n;
    buildStepChoices();
    showStep();
    setStatus(`Compressing: ${n} iteration${n > 1 ? "s" : ""} in ${seconds()}; coding the next…`);
  },
  peers(_, e) {
    const { event, iteration, ...coded } = e;
    Object.assign(result.steps[iteration - 1], coded);
    updateRow(result.steps[iteration - 1]);
    if (Number($("step").value) === iteration) showStep();
    else showSplit();
    setStatus(`Matching the other codecs' sizes: ${iteration} of ${result.steps.length}…`);
  },
  done(_, e) {
    result.state = "done";
    setStatus(`Done: ${e.steps} iteration${e.steps > 1 ? "s" : ""} in ${seconds()}`);
  },
};

async function submit(event) {
  event.preventDefault();
  const data = new FormData(event.target, event.submitter);
  if (event.submitter?.name === "sample" || !$("file").files.length) data.delete("file");
  else if (await isRnnc($("file").files[0])) return watchFile($("file").files[0]);
  await upload(data);
}

async function takeFile(file) {  // a dropped or pasted file
  if (await isRnnc(file)) return watchFile(file);
  const transfer = new DataTransfer();
  transfer.items.add(file);
  $("file").files = transfer.files;  // the form shows what is being compressed
  const data = new FormData($("encode-form"));
  data.delete("sample");
  await upload(data);
}

async function isRnnc(file) {
  const magic = new Uint8Array(await file.slice(0, 4).arrayBuffer());
  return String.fromCharCode(...magic) === "RNNC";
}

// --- one step: panels, captions, table ------------------------------------------------------

function url(step, kind, download = false) {
  if (kind === "original") return `api/results/${result.id}/original`;
  const png = kind !== "rnnc" && result.codecs[kind].shown_as_png && !download;
  const query = download ? "?download=1" : png ? "?png=1" : "";
  return `api/results/${result.id}/steps/${step}/${kind === "rnnc" ? "png" : kind}${query}`;
}

function unavailable(kind) {  // why a peer has no picture at a step, or null when it has one
  const codec = result.codecs[kind];
  return !codec.available ? `not available on this server: ${codec.reason}` : null;
}

function peerState(step, kind) {  // "ready", "pending", "too-small" or "unavailable"
  if (kind === "original" || kind === "rnnc") return "ready";
  if (unavailable(kind)) return "unavailable";
  if (!(kind in step)) return "pending";
  return step[kind] === null ? "too-small" : "ready";
}

function caption(kind, step) {
  const name = `<b>${NAMES[kind]}</b>`;
  const state = peerState(step, kind);
  if (state === "unavailable") return `${name} is ${unavailable(kind)}`;
  if (state === "pending") return `${name}: matching the size of ${fmt.bytes(step.rnnc.bytes)}…`;
  if (state === "too-small") return `${name}: even its lowest quality is larger than ${fmt.bytes(step.rnnc.bytes)}`;
  const c = step[kind];
  const setting = kind === "rnnc" ? `${step.iteration} iteration${step.iteration > 1 ? "s" : ""}` : `quality ${c.quality}`;
  const blocks = kind === "rnnc" && adaptive(step) ? ` · ${fmt.share(step)} of blocks coded` : "";
  return `${name} · ${setting} · ${fmt.bytes(c.bytes)} · ${fmt.bpp(c.bpp)} bpp${blocks}<br>`
    + `PSNR ${fmt.psnr(c.psnr)} · MS-SSIM ${fmt.ssim(c.ms_ssim)}`;
}

function adaptive(step) {  // whether the file's blocks stop (its steps carry the share coded)
  return typeof step.rnnc.blocks_coded === "number";
}

function showBlocks(step) {  // the shade over the blocks this iteration left uncoded
  const shade = $("blocks-rnnc");
  $("blocks-toggle").hidden = !(step && adaptive(step));
  shade.hidden = $("blocks-toggle").hidden || !$("show-blocks").checked;
  if (!shade.hidden) setSrc(shade, `api/results/${result.id}/steps/${step.iteration}/blocks`);
}

function currentStep() {
  return result.steps[Number($("step").value) - 1];
}

function showStep() {
  const step = currentStep();
  const n = result.steps.length;
  for (const kind of KINDS.slice(1)) {
    const img = $(`img-${kind}`);
    const ready = step && peerState(step, kind) === "ready";
    img.classList.toggle("missing", !ready);
    if (ready) setSrc(img, url(step.iteration, kind));
    $(`cap-${kind}`).innerHTML = step ? caption(kind, step)
      : `<b>${NAMES[kind]}</b>: ${kind === "rnnc" ? "coding iteration 1…" : "waiting for rnncodec"}`;
  }
  if (step) {
    $("step-label").textContent = `${step.iteration} / ${n}`;
    $("download-rnnc").href = `api/results/${result.id}/steps/${step.iteration}/rnnc`;
    $("download-rnnc").textContent = `Download .rnnc (${fmt.bytes(step.rnnc.bytes)})`;
    $("download-png").href = url(step.iteration, "rnnc", true);
    for (const row of $("steps").tBodies[0].rows) row.classList.toggle("current", row.dataset.step === String(step.iteration));
  }
  for (const b of ["watch", "play"]) $(b).disabled = !step;
  showBlocks(step);
  showSplit();
}

function setSrc(img, src) {  // only when it changes: a reload would flicker
  if (img.getAttribute("src") !== src) img.src = src;
}

function peerColumns() {
  return PEERS.filter((k) => result.codecs[k].available);
}

function buildTable() {
  const peers = peerColumns();
  $("steps").tHead.innerHTML = `<tr><th rowspan="2">iteration</th><th colspan="5">rnncodec</th>
    ${peers.map((k) => `<th colspan="3">${NAMES[k]}</th>`).join("")}</tr>
    <tr><th>bytes</th><th>bpp</th><th>blocks coded</th><th>PSNR</th><th>MS-SSIM</th>
    ${peers.map(() => "<th>quality</th><th>PSNR</th><th>MS-SSIM</th>").join("")}</tr>`;
}

function rowCells(s) {
  const cells = (kind) => {
    const state = peerState(s, kind);
    if (state === "pending") return "<td>…</td><td>…</td><td>…</td>";
    if (state !== "ready") return "<td>—</td><td>—</td><td>—</td>";
    const c = s[kind];
    return `<td>${c.quality}</td><td>${fmt.psnr(c.psnr)}</td><td>${fmt.ssim(c.ms_ssim)}</td>`;
  };
  return `<td>${s.iteration}</td><td>${fmt.bytes(s.rnnc.bytes)}</td><td>${fmt.bpp(s.rnnc.bpp)}</td>
    <td>${fmt.share(s)}</td><td>${fmt.psnr(s.rnnc.psnr)}</td><td>${fmt.ssim(s.rnnc.ms_ssim)}</td>${peerColumns().map(cells).join("")}`;
}

function addRow(s) {
  const row = $("steps").tBodies[0].insertRow();
  row.dataset.step = s.iteration;
  row.innerHTML = rowCells(s);
}

function updateRow(s) {
  $("steps").tBodies[0].rows[s.iteration - 1].innerHTML = rowCells(s);
}

// --- the split view ---------------------------------------------------------------------------

function buildSources() {
  const options = KINDS.map((k) => `<option value="${k}"${k !== "original" && k !== "rnnc" && !result.codecs[k].available ? " disabled" : ""}>${NAMES[k]}</option>`).join("");
  $("left-source").innerHTML = options;
  $("right-source").innerHTML = options;
  $("left-source").value = "original";
  $("right-source").value = "rnnc";
  buildStepChoices();
}

function buildStepChoices() {  // "current" follows the slider; a number pins an iteration
  for (const side of ["left", "right"]) {
    const select = $(`${side}-step`);
    const chosen = select.value || "current";
    select.innerHTML = `<option value="current">the slider's</option>`
      + result.steps.map((s) => `<option value="${s.iteration}">${s.iteration}</option>`).join("");
    select.value = [...select.options].some((o) => o.value === chosen) ? chosen : "current";
  }
}

function sideStep(side) {
  const chosen = $(`${side}-step`).value;
  return chosen === "current" || !chosen ? currentStep() : result.steps[Number(chosen) - 1];
}

function showSplit() {
  if (!result) return;
  for (const side of ["left", "right"]) {
    const kind = $(`${side}-source`).value;
    const step = sideStep(side);
    const img = $(`split-${side}`);
    $(`${side}-step`).disabled = kind === "original";
    const ready = kind === "original" || (step && peerState(step, kind) === "ready");
    img.classList.toggle("missing", !ready);
    if (ready) setSrc(img, url(step?.iteration, kind));
    const what = kind === "original" ? "Original" : !step ? `${NAMES[kind]}: coding…`
      : ready ? `${NAMES[kind]} · ${kind === "rnnc" ? `${step.iteration} it` : `q ${step[kind].quality}`} · ${fmt.bytes(step[kind].bytes)}`
        : caption(kind, step).replace(/<[^>]+>/g, "");
    $(`tag-${side}`).textContent = what;
  }
  applyView();
}

function bounds() {
  return $("split").getBoundingClientRect();
}

function fitScale() {
  const box = bounds();
  return Math.min(box.width / result.width, box.height / result.height);
}

function fitView() {
  if (!result) return;
  $("split").style.aspectRatio = `${result.width} / ${result.height}`;
  view.fit = true;
  view.scale = fitScale();
  centreImage();
  applyView();
}

function centreImage() {
  const box = bounds();
  view.x = (box.width - result.width * view.scale) / 2;
  view.y = (box.height - result.height * view.scale) / 2;
}

function clampPan() {  // no empty margin where the image is larger than the view
  const box = bounds();
  const w = result.width * view.scale;
  const h = result.height * view.scale;
  view.x = w <= box.width ? (box.width - w) / 2 : Math.min(0, Math.max(box.width - w, view.x));
  view.y = h <= box.height ? (box.height - h) / 2 : Math.min(0, Math.max(box.height - h, view.y));
}

function zoomAt(scale, cx, cy) {  // keep the image point under (cx, cy) where it is
  const s = Math.min(MAX_SCALE, Math.max(Math.min(fitScale(), 1 / devicePixelRatio) / 2, scale));
  view.x = cx - ((cx - view.x) * s) / view.scale;
  view.y = cy - ((cy - view.y) * s) / view.scale;
  view.scale = s;
  view.fit = false;
  clampPan();
  applyView();
}

function zoomCentre(scale) {
  const box = bounds();
  zoomAt(scale, box.width / 2, box.height / 2);
}

function applyView() {
  if (!result) return;
  const transform = `translate(${view.x}px, ${view.y}px) scale(${view.scale})`;
  for (const side of ["left", "right"]) {
    const img = $(`split-${side}`);
    Object.assign(img.style, { width: `${result.width}px`, height: `${result.height}px`, transform });
    img.classList.toggle("magnified", view.scale * devicePixelRatio >= 1);
  }
  const percent = 100 * view.split;
  $("layer-right").style.clipPath = `inset(0 0 0 ${percent}%)`;
  $("divider").style.left = `${percent}%`;
  $("divider").setAttribute("aria-valuenow", Math.round(percent));
  $("zoom-label").textContent = `${Math.round(view.scale * devicePixelRatio * 100)}%`;
}

function setSplit(clientX) {
  const box = bounds();
  view.split = Math.min(1, Math.max(0, (clientX - box.left) / box.width));
  applyView();
}

function dragDivider(event) {
  event.preventDefault();
  event.stopPropagation();
  const divider = $("divider");
  divider.setPointerCapture(event.pointerId);
  const move = (e) => setSplit(e.clientX);
  divider.addEventListener("pointermove", move);
  divider.addEventListener("pointerup", () => divider.removeEventListener("pointermove", move), { once: true });
}

function pan(event) {
  if (event.button !== 0 || !result) return;
  const split = $("split");
  split.setPointerCapture(event.pointerId);
  split.classList.add("panning");
  let last = { x: event.clientX, y: event.clientY };
  const move = (e) => {
    view.x += e.clientX - last.x;
    view.y += e.clientY - last.y;
    view.fit = false;
    last = { x: e.clientX, y: e.clientY };
    clampPan();
    applyView();
  };
  split.addEventListener("pointermove", move);
  split.addEventListener("pointerup", () => {
    split.removeEventListener("pointermove", move);
    split.classList.remove("panning");
  }, { once: true });
}

function wheelZoom(event) {
  if (!result) return;
  event.preventDefault();
  const box = bounds();
  zoomAt(view.scale * Math.exp(-event.deltaY * 0.002), event.clientX - box.left, event.clientY - box.top);
}

function oneToOne(event) {  // one image pixel per screen pixel, around the point clicked
  const box = bounds();
  const at = event?.clientX !== undefined ? [event.clientX - box.left, event.clientY - box.top] : [box.width / 2, box.height / 2];
  zoomAt(1 / devicePixelRatio, ...at);
}

function dividerKeys(event) {
  const moves = { ArrowLeft: -0.05, ArrowRight: 0.05, Home: -1, End: 1 };
  if (!(event.key in moves)) return;
  event.preventDefault();
  view.split = Math.min(1, Math.max(0, view.split + moves[event.key]));
  applyView();
}

// --- crops ------------------------------------------------------------------------------------

function drawCrops() {
  const canvases = document.querySelectorAll(".crops canvas");
  const side = canvases[0].width / Number($("zoom").value);  // image pixels shown across a crop
  for (const canvas of canvases) {
    const img = $(canvas.dataset.source);
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (!img.naturalWidth || img.classList.contains("missing")) continue;
    const x = Math.round(centre.x * img.naturalWidth - side / 2);
    const y = Math.round(centre.y * img.naturalHeight - side / 2);
    ctx.drawImage(img, x, y, side, side, 0, 0, canvas.width, canvas.height);
  }
  placeLenses(side);
}

function placeLenses(side) {  // outline the cropped region on every picture
  if (!result) return;
  const w = (100 * side) / result.width;
  const h = (100 * side) / result.height;
  for (const lens of document.querySelectorAll(".lens")) {
    Object.assign(lens.style, { width: `${w}%`, height: `${h}%`,
      left: `${100 * centre.x - w / 2}%`, top: `${100 * centre.y - h / 2}%` });
  }
}

function moveCrop(event) {
  const box = event.target.getBoundingClientRect();
  centre = { x: (event.clientX - box.left) / box.width, y: (event.clientY - box.top) / box.height };
  drawCrops();
}

// --- playing ----------------------------------------------------------------------------------

function stopPlaying() {
  clearInterval(player);
  player = null;
  $("play").textContent = "▶ Play";
}

function togglePlay() {
  if (player) return stopPlaying();
  const slider = $("step");
  if (slider.value === slider.max) slider.value = 1;
  following = false;
  showStep();
  $("play").textContent = "⏸ Pause";
  player = setInterval(() => {
    if (slider.value === slider.max) return stopPlaying();
    slider.value = Number(slider.value) + 1;
    showStep();
  }, 600);
}

// --- download as it arrives -------------------------------------------------------------------

// Where the whole iterations of a partly received .rnnc end (docs/format.md): a 16-byte fixed
// header, the model name, a 16-byte weights hash, a tile side from version 2, a CRC; then per
// iteration a 4-byte length, the payload and a CRC. A length with its top bit set is the filter
// chunk, which ends the file. Returns { end, iterations } of the longest whole-iteration cut.
function wholeIterations(bytes, received) {
  if (received < 16) return { end: 0, iterations: 0 };
  if (String.fromCharCode(...bytes.subarray(0, 4)) !== "RNNC") throw new Error("this is not an .rnnc file (bad magic bytes)");
  const data = new DataView(bytes.buffer, 0, received);
  let pos = 16 + bytes[15] + 16 + (bytes[4] > 1 ? 2 : 0) + 4;
  let cut = { end: 0, iterations: 0 };
  while (pos + 4 <= received) {
    const length = data.getUint32(pos);
    const filter = length >= 0x80000000;
    const next = pos + 8 + (filter ? length - 0x80000000 : length);
    if (next > received) break;
    cut = { end: next, iterations: cut.iterations + (filter ? 0 : 1) };
    if (filter) break;
    pos = next;
  }
  return cut;
}

class Arrival {  // one file being received: decode the newest whole-iteration cut, one at a time
  constructor(total) {
    this.bytes = new Uint8Array(total || 1 << 16);
    this.received = 0;
    this.total = total;
    this.shown = 0;       // iterations in the picture shown
    this.cutEnd = 0;      // where the newest whole-iteration cut ends
    this.busy = null;     // the decode in flight
    this.wanted = null;   // the newest cut not yet sent
    this.error = null;    // why a decode failed
    this.objectUrl = null;
  }

  add(chunk) {
    if (this.received + chunk.length > this.bytes.length) {  // no Content-Length: grow
      const bigger = new Uint8Array(Math.max(2 * this.bytes.length, this.received + chunk.length));
      bigger.set(this.bytes.subarray(0, this.received));
      this.bytes = bigger;
    }
    this.bytes.set(chunk, this.received);
    this.received += chunk.length;
    this.progress();
    const cut = wholeIterations(this.bytes, this.received);
    if (cut.end > this.cutEnd) {  // a chunk has completed: an iteration, or the filter
      this.cutEnd = cut.end;
      this.wanted = cut;
      this.pump();
    }
  }

  pump() {
    if (this.busy || !this.wanted) return;
    const cut = this.wanted;
    this.wanted = null;
    this.busy = this.decode(cut).catch((e) => { this.error = e; }).finally(() => {
      this.busy = null;
      if (!this.error) this.pump();
    });
  }

  async decode(cut) {
    const response = await fetch("api/decode", { method: "POST", body: this.bytes.slice(0, cut.end) });
    if (!response.ok) throw new Error(await errorText(response));
    const blob = await response.blob();
    const img = $("arrival-img");
    if (this.objectUrl) URL.revokeObjectURL(this.objectUrl);
    this.objectUrl = URL.createObjectURL(blob);
    await new Promise((resolve) => { img.onload = resolve; img.onerror = resolve; img.src = this.objectUrl; });
    this.shown = Number(response.headers.get("X-Iterations"));
    Object.assign(img.dataset, { iterations: this.shown, received: cut.end, total: this.total || "" });
    this.progress();
  }

  progress() {
    const of = this.total ? ` of ${fmt.bytes(this.total)}` : "";
    $("arrival-progress").max = this.total || this.received || 1;
    $("arrival-progress").value = this.received;
    $("arrival-cap").textContent = `Received ${fmt.bytes(this.received)}${of}; showing `
      + (this.shown ? `${this.shown} iteration${this.shown > 1 ? "s" : ""}` : "nothing yet (the first iteration is not complete)");
  }

  async finish() {  // once every byte is in: wait for the last decode
    while ((this.busy || this.wanted) && !this.error) {
      this.pump();
      await this.busy;
    }
    if (this.error) throw this.error;
    if (!this.shown) throw new Error("the file ended before its first whole iteration");
    $("arrival-img").dataset.complete = "true";
  }
}

async function watch(stream, total) {
  showError("");
  $("arrival").hidden = false;
  $("arrival-img").removeAttribute("src");
  for (const key of ["iterations", "received", "total", "complete"]) delete $("arrival-img").dataset[key];
  const arrival = new Arrival(total);
  arrival.progress();
  const reader = stream.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      arrival.add(value);
      if (arrival.error) throw arrival.error;
    }
    await arrival.finish();
  } catch (e) {
    reader.cancel().catch(() => {});
    showError(e.message);
  }
}

async function watchDownload() {
  const step = result.steps.length;
  const rate = $("arrival-rate").value;
  const response = await fetch(`api/results/${result.id}/steps/${step}/rnnc${rate ? `?rate=${rate}` : ""}`);
  if (!response.ok) return showError(await errorText(response));
  await watch(response.body, Number(response.headers.get("Content-Length")) || 0);
}

function watchFile(file) {
  return watch(file.stream(), file.size);
}

// --- wiring -----------------------------------------------------------------------------------

function setTargetBounds() {
  Object.assign($("value"), TARGETS[$("target").value]);
}

function dragHasFiles(event) {
  return [...(event.dataTransfer?.types || [])].includes("Files");
}

$("encode-form").addEventListener("submit", submit);
$("target").addEventListener("change", setTargetBounds);
$("step").addEventListener("input", () => {
  following = $("step").value === $("step").max;
  showStep();
});
$("zoom").addEventListener("change", drawCrops);
$("show-blocks").addEventListener("change", () => showBlocks(currentStep()));
$("play").addEventListener("click", togglePlay);
$("watch").addEventListener("click", watchDownload);
$("steps").addEventListener("click", (e) => {
  const row = e.target.closest("tr[data-step]");
  if (!row) return;
  $("step").value = row.dataset.step;
  following = $("step").value === $("step").max;
  showStep();
});
for (const id of ["left-source", "left-step", "right-source", "right-step"]) $(id).addEventListener("change", showSplit);
$("divider").addEventListener("pointerdown", dragDivider);
$("divider").addEventListener("keydown", dividerKeys);
$("split").addEventListener("pointerdown", pan);
$("split").addEventListener("wheel", wheelZoom, { passive: false });
$("split").addEventListener("dblclick", (e) => (view.scale * devicePixelRatio === 1 ? fitView() : oneToOne(e)));
$("zoom-fit").addEventListener("click", fitView);
$("zoom-1").addEventListener("click", () => oneToOne());
$("zoom-in").addEventListener("click", () => zoomCentre(view.scale * 2));
$("zoom-out").addEventListener("click", () => zoomCentre(view.scale / 2));
window.addEventListener("resize", () => (view.fit ? fitView() : (clampPan(), applyView())));
for (const img of document.querySelectorAll(".frame img")) {
  img.addEventListener("load", drawCrops);
  img.addEventListener("click", moveCrop);
}
document.addEventListener("dragover", (e) => {
  if (!dragHasFiles(e)) return;
  e.preventDefault();
  $("drop-overlay").hidden = false;
});
document.addEventListener("dragleave", (e) => { if (!e.relatedTarget) $("drop-overlay").hidden = true; });
document.addEventListener("drop", (e) => {
  $("drop-overlay").hidden = true;
  const file = e.dataTransfer?.files[0];
  if (!file) return;
  e.preventDefault();
  takeFile(file);
});
document.addEventListener("paste", (e) => {
  const file = [...(e.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
  if (!file) return;
  e.preventDefault();
  takeFile(file);
});
