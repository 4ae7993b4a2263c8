// The training half, after TensorFlow Playground: a config, a live loss curve from the
// job's Server-Sent Events, the decision boundary (spiral) or the ensemble's fit with
// its band (regression) once it ends, predictions where the plane is clicked, models.
//
// Requests (all public API):
//   POST   v1/trainings                 start a job (copyable)
//   GET    v1/trainings/{id}/events     EventSource: `progress` events, then `end`
//   DELETE v1/trainings/{id}            cancel
//   POST   v1/models/{id}/predict       a grid (the plane), a line (the fit), one point
//   GET    v1/models/{id}/plots/{kind}  the service's own figure, with the training points
//   GET    v1/models, DELETE v1/models/{id}

import { API_ROOT, ApiRequest, ProblemError, send, sendJson } from "./api.js";
import { classColour, drawCurves } from "./charts.js";
import { $, clearProblem, copyText, fitCanvas, h, onThemeChange, palette, showProblem } from "./dom.js";

/** The spiral's points lie in the unit disk; the service's own plot adds a 10% margin. */
const SPIRAL_EXTENT = 1.2;
const GRID_STEPS = 80;
const FIT_STEPS = 200;
const MODELS_PAGE = 20;

const state = {
  job: null,
  events: null,
  points: [],
  /** The model on the plane: {id, task, config, classes} */
  model: null,
  /** What the plane shows: an offscreen grid (spiral) or the fit's arrays (regression). */
  plane: null,
  marker: null,
  drawQueued: false,
};

const el = {
  form: $("#train-form"),
  spiralData: $("#spiral-data"),
  regressionData: $("#regression-data"),
  train: $("#train"),
  cancel: $("#cancel"),
  copyCurl: $("#train-copy-curl"),
  copyFetch: $("#train-copy-fetch"),
  status: $("#train-status"),
  error: $("#train-error"),
  snippet: $("#train-snippet-code"),
  curves: $("#curves"),
  plane: $("#plane"),
  planeCaption: $("#plane-caption"),
  predictForm: $("#predict-form"),
  predictX: $("#predict-x"),
  predictY: $("#predict-y"),
  predictYField: $("#predict-y-field"),
  predict: $("#predict"),
  prediction: $("#prediction"),
  serverPlot: $("#server-plot"),
  modelsTable: $("#models-table"),
  modelsStatus: $("#models-status"),
  modelsError: $("#models-error"),
  refreshModels: $("#refresh-models"),
};

export function initTraining() {
  for (const radio of el.form.elements.task) radio.addEventListener("change", showTaskFields);
  el.form.addEventListener("submit", (event) => {
    event.preventDefault();
    train();
  });
  el.cancel.addEventListener("click", cancel);
  el.copyCurl.addEventListener("click", () => copyRequest("curl"));
  el.copyFetch.addEventListener("click", () => copyRequest("fetch"));
  el.predictForm.addEventListener("submit", (event) => {
    event.preventDefault();
    predictAt(Number(el.predictX.value), Number(el.predictY.value));
  });
  el.plane.addEventListener("click", onPlaneClick);
  el.plane.addEventListener("keydown", onPlaneKey);
  el.refreshModels.addEventListener("click", refreshModels);
  onThemeChange(redraw);
  new ResizeObserver(redraw).observe(el.curves);
  showTaskFields();
  redraw();
}

/** Called when the Training tab is first shown: the models list. */
export function showTraining() {
  refreshModels();
  redraw();
}

// Config ----------------------------------------------------------------------

function task() {
  return el.form.elements.task.value;
}

function showTaskFields() {
  const spiral = task() === "spiral";
  el.spiralData.hidden = !spiral;
  el.regressionData.hidden = spiral;
}

/** A number input's value; what the browser cannot read goes as typed, for the service to name. */
function number(id) {
  const input = document.getElementById(id);
  const raw = input.value.trim();
  if (input.validity.badInput || raw === "" || !Number.isFinite(Number(raw))) return raw;
  return Number(raw);
}

function hiddenLayers() {
  const raw = document.getElementById("hidden").value.trim();
  if (raw === "") return [];
  return raw.split(/[\s,]+/).map((part) => (Number.isFinite(Number(part)) ? Number(part) : part));
}

function readConfig() {
  const spiral = task() === "spiral";
  const config = {
    task: task(),
    data: spiral
      ? {
          points_per_class: number("points-per-class"),
          classes: number("classes"),
          noise: number("spiral-noise"),
          seed: number("spiral-seed"),
        }
      : { n_points: number("n-points"), noise: number("regression-noise"), seed: number("regression-seed") },
    model: { hidden: hiddenLayers(), activation: document.getElementById("activation").value },
    optimizer: { name: document.getElementById("optimizer").value, lr: number("lr") },
    epochs: number("epochs"),
    report_every: number("report-every"),
  };
  if (!spiral) config.model.ensemble_size = number("ensemble-size");
  return config;
}

function trainingRequest() {
  return new ApiRequest("POST", "v1/trainings", { json: readConfig() });
}

async function copyRequest(kind) {
  const request = trainingRequest();
  const text = kind === "curl" ? request.toCurl() : request.toFetch();
  setStatus(await copyText(text, el.snippet));
}

// A job -------------------------------------------------------------------------

async function train() {
  clearProblem(el.error);
  stopWatching();
  el.train.disabled = true;
  setStatus("Submitting…");
  try {
    const job = await sendJson(trainingRequest());
    watch(job);
  } catch (error) {
    showProblem(el.error, error, "The training");
    setStatus("");
    el.train.disabled = false;
  }
}

function watch(job) {
  state.job = job;
  state.points = [];
  el.cancel.disabled = false;
  clearPlane();
  setStatus(`Job ${job.id.slice(0, 8)} ${job.status}…`);
  const url = new URL(`v1/trainings/${job.id}/events`, API_ROOT);
  const events = new EventSource(url);
  state.events = events;
  events.addEventListener("progress", (event) => {
    const progress = JSON.parse(event.data);
    state.points.push(progress);
    const accuracy = progress.accuracy === null ? "" : `, accuracy ${progress.accuracy.toFixed(3)}`;
    setStatus(
      `Job ${job.id.slice(0, 8)} running: epoch ${progress.epoch}, loss ${progress.loss.toFixed(4)}${accuracy}`,
    );
    scheduleDraw();
  });
  events.addEventListener("end", (event) => {
    stopWatching();
    finished(JSON.parse(event.data));
  });
  events.addEventListener("error", async () => {
    // The browser reconnects by itself (with Last-Event-ID) unless the stream was refused.
    if (events.readyState !== EventSource.CLOSED || state.events !== events) return;
    stopWatching();
    try {
      const latest = await sendJson(new ApiRequest("GET", `v1/trainings/${job.id}`));
      if (latest.finished_at) finished(latest);
      else {
        const detail = "The event stream closed before the job ended; reload to watch it again.";
        throw new ProblemError({ title: "Lost the event stream", detail });
      }
    } catch (error) {
      showProblem(el.error, error, "Watching the training");
      el.train.disabled = false;
      el.cancel.disabled = true;
    }
  });
}

function stopWatching() {
  state.events?.close();
  state.events = null;
}

function finished(job) {
  state.job = job;
  el.train.disabled = false;
  el.cancel.disabled = true;
  scheduleDraw();
  const id = job.id.slice(0, 8);
  if (job.status === "succeeded") {
    const m = job.metrics ?? {};
    const accuracy = m.accuracy === null || m.accuracy === undefined ? "" : `, accuracy ${m.accuracy.toFixed(3)}`;
    setStatus(`Job ${id} succeeded: loss ${Number(m.loss).toFixed(4)}${accuracy}.`);
    showModel(job.model_id, job.config);
    refreshModels();
  } else if (job.status === "cancelled") {
    setStatus(`Job ${id} cancelled${job.progress ? ` at epoch ${job.progress.epoch}` : ""}.`);
  } else {
    setStatus(`Job ${id} ${job.status}.`);
    const problem = { title: `Training ${job.status}`, detail: job.reason ?? "no reason given" };
    showProblem(el.error, new ProblemError(problem), `Job ${id}`);
  }
}

async function cancel() {
  if (!state.job?.id) return;
  el.cancel.disabled = true;
  try {
    const job = await sendJson(new ApiRequest("DELETE", `v1/trainings/${state.job.id}`));
    setStatus(`Job ${job.id.slice(0, 8)}: cancelling (it stops at its next report)…`);
  } catch (error) {
    showProblem(el.error, error, "Cancelling");
  }
}

// Drawing -----------------------------------------------------------------------

function scheduleDraw() {
  if (state.drawQueued) return;
  state.drawQueued = true;
  requestAnimationFrame(() => {
    state.drawQueued = false;
    drawCurvesNow();
  });
}

function redraw() {
  drawCurvesNow();
  drawPlane();
}

function drawCurvesNow() {
  const epochs = state.job?.config?.epochs;
  drawCurves(el.curves, state.points, { epochs });
  const last = state.points.at(-1);
  el.curves.dataset.points = String(state.points.length);
  el.curves.setAttribute(
    "aria-label",
    last
      ? `Loss and accuracy: ${state.points.length} reports, last at epoch ${last.epoch}, loss ${last.loss.toFixed(4)}` +
          (last.accuracy === null ? "" : `, accuracy ${last.accuracy.toFixed(3)}`)
      : "Loss and accuracy: no training yet",
  );
}

function clearPlane() {
  state.model = null;
  state.plane = null;
  state.marker = null;
  el.predict.disabled = true;
  el.prediction.textContent = "";
  el.serverPlot.hidden = true;
  el.plane.dataset.state = "empty";
  el.plane.setAttribute("aria-label", "The trained model's plane: no model yet");
  drawPlane();
}

/** Put a model on the plane: predict a grid (spiral) or a line (regression) and paint it. */
async function showModel(modelId, config) {
  clearPlane();
  state.model = { id: modelId, task: config.task, config };
  const spiral = config.task === "spiral";
  el.planeCaption.textContent = spiral
    ? `Decision boundary of model ${modelId.slice(0, 8)}`
    : `Fit of model ${modelId.slice(0, 8)}: mean and ensemble band (±1σ, ±2σ)`;
  el.predictYField.hidden = !spiral;
  el.plane.dataset.state = "loading";
  try {
    if (spiral) await paintBoundary(modelId, config);
    else await paintFit(modelId, config);
  } catch (error) {
    el.plane.dataset.state = "error";
    showProblem(el.error, error, `Model ${modelId.slice(0, 8)}`);
    return;
  }
  el.predict.disabled = false;
  el.plane.dataset.state = "painted";
  el.plane.setAttribute(
    "aria-label",
    spiral
      ? `Decision boundary of model ${modelId.slice(0, 8)} over x and y from -${SPIRAL_EXTENT} to ${SPIRAL_EXTENT}`
      : `Fit of model ${modelId.slice(0, 8)} with its ensemble band`,
  );
  drawPlane();
  showServerPlot(modelId, spiral ? "decision-boundary" : "fit");
}

async function paintBoundary(modelId, config) {
  const inputs = [];
  for (let row = 0; row < GRID_STEPS; row++) {
    const y = SPIRAL_EXTENT - ((row + 0.5) / GRID_STEPS) * 2 * SPIRAL_EXTENT;
    for (let col = 0; col < GRID_STEPS; col++) {
      inputs.push([-SPIRAL_EXTENT + ((col + 0.5) / GRID_STEPS) * 2 * SPIRAL_EXTENT, y]);
    }
  }
  const prediction = await sendJson(predictRequest(modelId, inputs));
  const classes = config.data.classes;
  const grid = document.createElement("canvas");
  grid.width = grid.height = GRID_STEPS;
  const context = grid.getContext("2d");
  const image = context.createImageData(GRID_STEPS, GRID_STEPS);
  prediction.classes.forEach((cls, i) => {
    const [r, g, b] = classColour(cls, classes);
    const confidence = Math.max(...prediction.probabilities[i]);
    // Sure regions strong, the boundary pale: (p - 1/C) / (1 - 1/C) from 0 to 1.
    const sure = (confidence - 1 / classes) / (1 - 1 / classes);
    image.data.set([r, g, b, Math.round(255 * (0.25 + 0.6 * sure))], i * 4);
  });
  context.putImageData(image, 0, 0);
  state.plane = { kind: "spiral", grid, classes };
}

async function paintFit(modelId, config) {
  const { eval_x_min: xMin, eval_x_max: xMax } = config.data;
  const xs = Array.from({ length: FIT_STEPS }, (_, i) => xMin + (i / (FIT_STEPS - 1)) * (xMax - xMin));
  const prediction = await sendJson(predictRequest(modelId, xs.map((x) => [x])));
  const std = prediction.std ?? xs.map(() => 0);
  const cubic = (x) => x ** 3 + config.data.noise / 2;
  const dataXs = xs.filter((x) => x >= config.data.x_min && x <= config.data.x_max);
  const ys = [
    ...prediction.mean.flatMap((m, i) => [m - 2 * std[i], m + 2 * std[i]]),
    ...dataXs.map(cubic),
  ];
  const yMin = Math.min(...ys);
  const yMax = Math.max(...ys);
  const pad = Math.max((yMax - yMin) * 0.08, 1e-3);
  state.plane = {
    kind: "regression",
    xs,
    mean: prediction.mean,
    std,
    dataXs,
    cubic,
    extent: { xMin, xMax, yMin: yMin - pad, yMax: yMax + pad },
  };
}

function predictRequest(modelId, inputs) {
  return new ApiRequest("POST", `v1/models/${modelId}/predict`, { json: { inputs } });
}

function planeExtent() {
  if (state.plane?.kind === "regression") return state.plane.extent;
  return { xMin: -SPIRAL_EXTENT, xMax: SPIRAL_EXTENT, yMin: -SPIRAL_EXTENT, yMax: SPIRAL_EXTENT };
}

function drawPlane() {
  const square = state.plane?.kind !== "regression";
  const cssWidth = el.plane.clientWidth || 300;
  const { context: ctx, width, height } = fitCanvas(el.plane, square ? Math.min(cssWidth, 420) : 260);
  const colours = palette();
  ctx.clearRect(0, 0, width, height);
  ctx.strokeStyle = colours.grid;
  ctx.strokeRect(0.5, 0.5, width - 1, height - 1);
  const extent = planeExtent();
  const px = (x) => ((x - extent.xMin) / (extent.xMax - extent.xMin)) * width;
  const py = (y) => height - ((y - extent.yMin) / (extent.yMax - extent.yMin)) * height;
  ctx.font = "11px system-ui, sans-serif";
  if (!state.plane) {
    ctx.fillStyle = colours.muted;
    ctx.textAlign = "center";
    ctx.fillText("the model appears here when a training succeeds", width / 2, height / 2);
    return;
  }
  if (state.plane.kind === "spiral") {
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(state.plane.grid, 0, 0, width, height);
  } else {
    const { xs, mean, std, dataXs, cubic } = state.plane;
    const band = (k, alpha) => {
      ctx.fillStyle = withAlpha(colours.accent, alpha);
      ctx.beginPath();
      xs.forEach((x, i) => ctx.lineTo(px(x), py(mean[i] + k * std[i])));
      for (let i = xs.length - 1; i >= 0; i--) ctx.lineTo(px(xs[i]), py(mean[i] - k * std[i]));
      ctx.closePath();
      ctx.fill();
    };
    band(2, 0.15);
    band(1, 0.3);
    ctx.strokeStyle = colours.accent;
    ctx.lineWidth = 2;
    ctx.beginPath();
    xs.forEach((x, i) => ctx.lineTo(px(x), py(mean[i])));
    ctx.stroke();
    ctx.strokeStyle = colours.fg;
    ctx.lineWidth = 1;
    ctx.setLineDash([4, 3]);
    ctx.beginPath();
    dataXs.forEach((x) => ctx.lineTo(px(x), py(cubic(x))));
    ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = colours.muted;
    ctx.textAlign = "left";
    ctx.fillText("dashed: the data's mean, x³ + noise/2", 6, 14);
  }
  // Axes through the origin, and the extent at the corners.
  ctx.strokeStyle = withAlpha(colours.fg, 0.35);
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(px(0), 0);
  ctx.lineTo(px(0), height);
  ctx.moveTo(0, py(0));
  ctx.lineTo(width, py(0));
  ctx.stroke();
  ctx.fillStyle = colours.fg;
  ctx.textAlign = "left";
  ctx.fillText(fmt(extent.xMin), 4, height - 4);
  ctx.textAlign = "right";
  ctx.fillText(fmt(extent.xMax), width - 4, height - 4);
  if (state.marker) {
    const { x, y } = state.marker;
    const mx = px(x);
    const my = state.plane.kind === "spiral" ? py(y) : py(state.marker.mean ?? 0);
    ctx.strokeStyle = colours.fg;
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.arc(mx, my, 6, 0, 2 * Math.PI);
    ctx.moveTo(mx - 10, my);
    ctx.lineTo(mx + 10, my);
    ctx.moveTo(mx, my - 10);
    ctx.lineTo(mx, my + 10);
    ctx.stroke();
  }
}

async function showServerPlot(modelId, kind) {
  try {
    const response = await send(
      new ApiRequest("GET", `v1/models/${modelId}/plots/${kind}`, { accept: "image/png" }),
    );
    const blob = await response.blob();
    if (state.model?.id !== modelId) return;
    const img = el.serverPlot.querySelector("img");
    if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
    img.src = URL.createObjectURL(blob);
    img.alt = `The service's ${kind} figure of model ${modelId.slice(0, 8)}, with the training points`;
    el.serverPlot.hidden = false;
  } catch (error) {
    showProblem(el.error, error, `The ${kind} figure`);
  }
}

// Predictions -----------------------------------------------------------------

function onPlaneClick(event) {
  if (!state.plane) return;
  const box = el.plane.getBoundingClientRect();
  const extent = planeExtent();
  const x = extent.xMin + ((event.clientX - box.left) / box.width) * (extent.xMax - extent.xMin);
  const y = extent.yMax - ((event.clientY - box.top) / box.height) * (extent.yMax - extent.yMin);
  predictAt(round(x), round(y));
}

function onPlaneKey(event) {
  if (!state.plane) return;
  const extent = planeExtent();
  const step = (extent.xMax - extent.xMin) / 40;
  const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] };
  const current = state.marker ?? { x: 0, y: 0 };
  if (event.key in moves) {
    event.preventDefault();
    const [dx, dy] = moves[event.key];
    state.marker = { x: round(current.x + dx), y: round(current.y + dy) };
    el.predictX.value = String(state.marker.x);
    el.predictY.value = String(state.marker.y);
    drawPlane();
  } else if (event.key === "Enter" || event.key === " ") {
    event.preventDefault();
    predictAt(current.x, current.y);
  }
}

async function predictAt(x, y) {
  if (!state.model) return;
  const model = state.model;
  const spiral = model.task === "spiral";
  el.predictX.value = String(x);
  el.predictY.value = String(y);
  state.marker = { x, y };
  drawPlane();
  try {
    const inputs = spiral ? [[x, y]] : [[x]];
    const prediction = await sendJson(predictRequest(model.id, inputs));
    if (state.model !== model) return;
    if (spiral) {
      const cls = prediction.classes[0];
      const probabilities = prediction.probabilities[0];
      el.prediction.replaceChildren(
        h("strong", {}, `(${x}, ${y}) → class ${cls}`),
        ` with p = ${probabilities[cls].toFixed(3)}. Probabilities: `,
        probabilities.map((p, i) => `${i}: ${p.toFixed(3)}`).join(", "),
      );
    } else {
      const mean = prediction.mean[0];
      const std = prediction.std?.[0];
      state.marker = { x, y, mean };
      drawPlane();
      el.prediction.replaceChildren(
        h("strong", {}, `x = ${x} → y = ${mean.toFixed(4)}`),
        std === undefined ? "" : ` ± ${std.toFixed(4)} (ensemble std)`,
      );
    }
  } catch (error) {
    showProblem(el.error, error, "The prediction");
  }
}

// Models ------------------------------------------------------------------------

async function refreshModels() {
  clearProblem(el.modelsError);
  try {
    const page = await sendJson(new ApiRequest("GET", "v1/models", { query: { limit: MODELS_PAGE } }));
    const rows = page.items.map(modelRow);
    el.modelsTable.tBodies[0].replaceChildren(...rows);
    el.modelsStatus.textContent = page.total
      ? `${page.items.length} of ${page.total} model(s), newest first.`
      : "No models yet: train one above.";
  } catch (error) {
    showProblem(el.modelsError, error, "Listing the models");
  }
}

function modelRow(model) {
  const metrics = model.final_metrics ?? {};
  const result = !model.valid
    ? `damaged: ${model.reason ?? "checksum mismatch"}`
    : metrics.accuracy !== null && metrics.accuracy !== undefined
      ? `accuracy ${Number(metrics.accuracy).toFixed(3)}`
      : metrics.loss !== undefined
        ? `loss ${Number(metrics.loss).toFixed(4)}`
        : "";
  const short = model.id.slice(0, 8);
  return h(
    "tr",
    { "data-model": model.id },
    h("td", {}, h("code", { title: model.id }, short)),
    h("td", {}, model.task ?? "?"),
    h("td", {}, model.created_at ? new Date(model.created_at).toLocaleString() : ""),
    h("td", {}, result),
    h("td", { class: "number" }, model.parameter_count ?? ""),
    h(
      "td",
      { class: "row-actions" },
      h(
        "button",
        {
          type: "button",
          "aria-label": `Show model ${short}`,
          disabled: !model.valid,
          onclick: () => loadModel(model),
        },
        "Show",
      ),
      h(
        "button",
        { type: "button", "aria-label": `Delete model ${short}`, onclick: () => deleteModel(model) },
        "Delete",
      ),
    ),
  );
}

function loadModel(model) {
  const config = model.metadata?.config;
  if (!config) return;
  clearProblem(el.error);
  // While a job runs, its live curves stay; otherwise show the model's own.
  if (!state.events) {
    state.job = { config };
    state.points = model.metadata.history ?? [];
    scheduleDraw();
    setStatus(`Model ${model.id.slice(0, 8)}: its training curves and plane.`);
  }
  showModel(model.id, config);
}

async function deleteModel(model) {
  clearProblem(el.modelsError);
  try {
    await sendJson(new ApiRequest("DELETE", `v1/models/${model.id}`));
    if (state.model?.id === model.id) clearPlane();
    el.modelsStatus.textContent = `Deleted model ${model.id.slice(0, 8)}.`;
    await refreshModels();
    el.refreshModels.focus();
  } catch (error) {
    showProblem(el.modelsError, error, `Deleting model ${model.id.slice(0, 8)}`);
  }
}

// -----------------------------------------------------------------------------

function setStatus(text) {
  el.status.textContent = text;
}

function round(value) {
  return Math.round(value * 1000) / 1000;
}

function fmt(value) {
  return Number.isInteger(value) ? String(value) : value.toFixed(2);
}

function withAlpha(colour, alpha) {
  // The palette's colours are #rrggbb.
  const match = /^#([0-9a-f]{6})$/i.exec(colour);
  if (!match) return colour;
  const n = Number.parseInt(match[1], 16);
  return `rgba(${n >> 16}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}
