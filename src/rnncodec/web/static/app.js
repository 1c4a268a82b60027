// The viewer page: send the form, then show any step of the cached result. No build step.
"use strict";

const $ = (id) => document.getElementById(id);
const CODECS = ["rnnc", "jpeg", "webp"];
const NAMES = { rnnc: "rnncodec", jpeg: "JPEG", webp: "WebP" };
const TARGETS = {  // input bounds and a sensible default per target kind
  iterations: { value: 8, min: 1, max: 16, step: 1 },
  bpp: { value: 0.5, min: 0.01, max: 8, step: "any" },
  ms_ssim: { value: 0.95, min: 0.5, max: 0.9999, step: "any" },
  psnr: { value: 30, min: 10, max: 60, step: "any" },
};
let result = null;             // the last /api/encode answer
let centre = { x: 0.5, y: 0.5 };  // where the crop looks, as a fraction of width and height
let player = null;             // interval of the play button
let busyTimer = null;          // interval of the "Compressing… n s" counter

const fmt = {
  bytes: (n) => `${n.toLocaleString("en-US")} B`,
  bpp: (x) => x.toFixed(3),
  psnr: (x) => (x === null ? "∞" : `${x.toFixed(2)} dB`),
  ssim: (x) => x.toFixed(4),
};

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

function setBusy(busy) {
  for (const b of document.querySelectorAll("form button")) b.disabled = busy;
  clearInterval(busyTimer);
  $("status").textContent = "";
  if (!busy) return;
  const start = Date.now();
  const tick = () => { $("status").textContent = `Compressing… ${Math.round((Date.now() - start) / 1000)} s`; };
  tick();
  busyTimer = setInterval(tick, 1000);
}

async function submit(event) {
  event.preventDefault();
  const data = new FormData(event.target, event.submitter);
  if (event.submitter?.name === "sample" || !$("file").files.length) data.delete("file");
  showError("");
  setBusy(true);
  try {
    const response = await fetch("api/encode", { method: "POST", body: data });
    if (!response.ok) throw new Error(await errorText(response));
    show(await response.json());
  } catch (e) {
    showError(e.message);
  } finally {
    setBusy(false);
  }
}

function url(step, kind, download = false) {
  return `api/results/${result.id}/steps/${step}/${kind}${download ? "?download=1" : ""}`;
}

function show(answer) {
  result = answer;
  const n = result.steps.length;
  $("step").max = n;
  $("step").value = n;
  $("img-original").src = `api/results/${result.id}/original`;
  $("cap-original").innerHTML = `<b>Original</b> · ${result.width}×${result.height} ${result.mode} · model ${result.model}`;
  fillTable();
  $("results").hidden = false;
  showStep();
}

function fillTable() {
  const cells = (c, first) => (c === null
    ? "<td>—</td><td>—</td><td>—</td>"
    : `<td>${first}</td><td>${fmt.psnr(c.psnr)}</td><td>${fmt.ssim(c.ms_ssim)}</td>`);
  $("steps").tBodies[0].innerHTML = result.steps.map((s) => `<tr data-step="${s.iteration}">
    <td>${s.iteration}</td><td>${fmt.bytes(s.rnnc.bytes)}</td><td>${fmt.bpp(s.rnnc.bpp)}</td>
    <td>${fmt.psnr(s.rnnc.psnr)}</td><td>${fmt.ssim(s.rnnc.ms_ssim)}</td>
    ${cells(s.jpeg, s.jpeg?.quality)}${cells(s.webp, s.webp?.quality)}</tr>`).join("");
}

function caption(kind, c, step) {
  if (c === null) return `<b>${NAMES[kind]}</b>: even quality 1 is larger than ${fmt.bytes(step.rnnc.bytes)}`;
  const setting = kind === "rnnc" ? `${step.iteration} iteration${step.iteration > 1 ? "s" : ""}` : `quality ${c.quality}`;
  return `<b>${NAMES[kind]}</b> · ${setting} · ${fmt.bytes(c.bytes)} · ${fmt.bpp(c.bpp)} bpp<br>`
    + `PSNR ${fmt.psnr(c.psnr)} · MS-SSIM ${fmt.ssim(c.ms_ssim)}`;
}

function showStep() {
  const k = Number($("step").value);
  const step = result.steps[k - 1];
  $("step-label").textContent = `${k} / ${result.steps.length}`;
  for (const kind of CODECS) {
    const img = $(`img-${kind}`);
    img.classList.toggle("missing", step[kind] === null);
    if (step[kind] !== null) img.src = url(k, kind === "rnnc" ? "png" : kind);
    $(`cap-${kind}`).innerHTML = caption(kind, step[kind], step);
  }
  $("download-rnnc").href = url(k, "rnnc");
  $("download-rnnc").textContent = `Download .rnnc (${fmt.bytes(step.rnnc.bytes)})`;
  $("download-png").href = url(k, "png", true);
  for (const row of $("steps").tBodies[0].rows) row.classList.toggle("current", row.dataset.step === String(k));
}

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

function togglePlay() {
  if (player) {
    clearInterval(player);
    player = null;
    $("play").textContent = "▶ Play";
    return;
  }
  const slider = $("step");
  if (slider.value === slider.max) slider.value = 1;
  showStep();
  $("play").textContent = "⏸ Pause";
  player = setInterval(() => {
    if (slider.value === slider.max) return togglePlay();
    slider.value = Number(slider.value) + 1;
    showStep();
  }, 600);
}

function setTargetBounds() {
  Object.assign($("value"), TARGETS[$("target").value]);
}

$("encode-form").addEventListener("submit", submit);
$("target").addEventListener("change", setTargetBounds);
$("step").addEventListener("input", showStep);
$("zoom").addEventListener("change", drawCrops);
$("play").addEventListener("click", togglePlay);
$("steps").addEventListener("click", (e) => {
  const row = e.target.closest("tr[data-step]");
  if (!row) return;
  $("step").value = row.dataset.step;
  showStep();
});
for (const img of document.querySelectorAll(".frame img")) {
  img.addEventListener("load", drawCrops);
  img.addEventListener("click", moveCrop);
  img.addEventListener("error", () => { if (result) showError(`could not load ${img.alt}; compress the image again`); });
}
