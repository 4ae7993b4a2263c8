// The images half: a source (sample or upload), a pipeline built from the op catalogue,
// and before/after with the notes' histogram and cumulative distribution of each.
//
// Requests (all public API):
//   GET  v1/samples, GET v1/images/ops                          the choices
//   POST v1/images/pipeline  steps=[...]                        the run (copyable)
//   POST v1/images/pipeline  steps=[..., histogram, cdf]        numbers for the charts
//   POST v1/images/contrast-report                              the notes' 2 x 4 figure

import { ApiRequest, send, sendJson } from "./api.js";
import { drawHistogram } from "./charts.js";
import { $, clearProblem, copyText, h, onThemeChange, showProblem } from "./dom.js";
import { buildParamsForm } from "./schema-form.js";

const ANALYSIS_STEPS = [{ op: "histogram" }, { op: "cumulative_distribution" }];
const FIRST_STEPS = [{ op: "equalize_adapthist", values: { clip_limit: 0.03 } }];
const UPLOAD = "__upload__";

const state = {
  ops: new Map(),
  /** @type {{sample?: string, file?: File}} */
  source: { sample: "camera" },
  /** @type {Array<{key: number, op: string, read: () => object, values: object}>} */
  steps: [],
  nextKey: 1,
  /** The before analysis of the current source, as a promise (one request per source). */
  before: null,
  result: null,
  charts: { before: null, after: null },
};

const el = {
  sample: $("#sample"),
  sampleDescription: $("#sample-description"),
  upload: $("#upload"),
  dropzone: $("#dropzone"),
  steps: $("#steps"),
  stepsEmpty: $("#steps-empty"),
  addOp: $("#add-op"),
  addOpSummary: $("#add-op-summary"),
  addStep: $("#add-step"),
  run: $("#run"),
  contrast: $("#contrast"),
  download: $("#download"),
  copyCurl: $("#images-copy-curl"),
  copyFetch: $("#images-copy-fetch"),
  status: $("#images-status"),
  error: $("#images-error"),
  snippet: $("#images-snippet-code"),
  before: $("#before"),
  after: $("#after"),
  stepTable: $("#step-table"),
  report: $("#report"),
};

export async function initImages() {
  wireControls();
  try {
    const [samples, ops] = await Promise.all([
      sendJson(new ApiRequest("GET", "v1/samples")),
      sendJson(new ApiRequest("GET", "v1/images/ops")),
    ]);
    fillSamples(samples);
    fillOps(ops);
  } catch (error) {
    showProblem(el.error, error, "Loading the samples and ops");
    setPlaceholder(el.before, "No catalogue: see the error.");
    return;
  }
  for (const step of FIRST_STEPS) addStep(step.op, step.values);
  loadBefore();
}

function wireControls() {
  el.sample.addEventListener("change", () => {
    if (el.sample.value === UPLOAD) return;
    setSource({ sample: el.sample.value });
  });
  el.upload.addEventListener("change", () => {
    if (el.upload.files?.length) setSource({ file: el.upload.files[0] });
  });
  for (const type of ["dragenter", "dragover"]) {
    el.dropzone.addEventListener(type, (event) => {
      event.preventDefault();
      el.dropzone.classList.add("dragging");
    });
  }
  el.dropzone.addEventListener("dragleave", () => el.dropzone.classList.remove("dragging"));
  el.dropzone.addEventListener("drop", (event) => {
    event.preventDefault();
    el.dropzone.classList.remove("dragging");
    const file = event.dataTransfer?.files?.[0];
    if (file) setSource({ file });
  });
  el.addOp.addEventListener("change", describeOpToAdd);
  el.addStep.addEventListener("click", () => {
    addStep(el.addOp.value);
    // Keyboard users land on the new step's first field (or its Remove button).
    const last = el.steps.lastElementChild;
    (last?.querySelector("input, select") ?? last?.querySelector("button"))?.focus();
  });
  el.run.addEventListener("click", run);
  el.contrast.addEventListener("click", contrastReport);
  el.download.addEventListener("click", download);
  el.copyCurl.addEventListener("click", () => copyRequest("curl"));
  el.copyFetch.addEventListener("click", () => copyRequest("fetch"));
  onThemeChange(redrawCharts);
  new ResizeObserver(redrawCharts).observe(el.before.querySelector("canvas"));
}

// Source ----------------------------------------------------------------------

function fillSamples(samples) {
  el.sample.replaceChildren(
    ...samples.map((sample) =>
      h(
        "option",
        { value: sample.name, "data-description": sample.description },
        `${sample.name} (${sample.shape.join("×")} ${sample.dtype})`,
      ),
    ),
  );
  el.sample.value = state.source.sample;
  describeSample();
}

function describeSample() {
  const option = el.sample.selectedOptions[0];
  el.sampleDescription.textContent = option?.dataset.description ?? "";
}

function setSource(source) {
  state.source = source;
  state.before = null;
  $(`option[value="${UPLOAD}"]`, el.sample)?.remove();
  if (source.file) {
    const label = `Upload: ${source.file.name} (${formatBytes(source.file.size)})`;
    el.sample.prepend(h("option", { value: UPLOAD }, label));
    el.sample.value = UPLOAD;
    el.sampleDescription.textContent = "Your file, decoded by the service.";
  } else {
    el.upload.value = "";
    describeSample();
  }
  clearResult();
  loadBefore();
}

function sourceQuery() {
  return state.source.file ? {} : { sample: state.source.sample };
}

function sourceForm() {
  return state.source.file ? [["image", state.source.file]] : [];
}

function sourceName() {
  return state.source.file ? state.source.file.name : state.source.sample;
}

// Pipeline editor -------------------------------------------------------------

function fillOps(ops) {
  for (const op of ops) state.ops.set(op.name, op);
  el.addOp.replaceChildren(...ops.map((op) => h("option", { value: op.name }, op.name)));
  el.addOp.value = "canny";
  describeOpToAdd();
}

function describeOpToAdd() {
  el.addOpSummary.textContent = state.ops.get(el.addOp.value)?.summary ?? "";
}

function addStep(opName, values = {}) {
  if (!state.ops.has(opName)) return;
  state.steps.push({ key: state.nextKey++, op: opName, values, read: () => values });
  renderSteps();
}

/** Rebuild the list (after add, remove or move), keeping what was typed in each step. */
function renderSteps(focus) {
  for (const step of state.steps) step.values = step.read();
  const count = state.steps.length;
  el.steps.replaceChildren(
    ...state.steps.map((step, index) => {
      const op = state.ops.get(step.op);
      const form = buildParamsForm(op.params, step.values);
      step.read = form.read;
      const name = `step ${index + 1} (${step.op})`;
      const button = (action, text, label, disabled) =>
        h(
          "button",
          {
            type: "button",
            "data-action": action,
            "aria-label": label,
            disabled,
            onclick: () => moveStep(step.key, action),
          },
          text,
        );
      return h(
        "li",
        { class: "step", "data-op": step.op, "data-key": step.key },
        h(
          "fieldset",
          {},
          h("legend", {}, `${index + 1}. ${step.op}`),
          h("p", { class: "hint" }, op.summary),
          form.fields.length ? h("div", { class: "params" }, form.fields) : null,
          h(
            "div",
            { class: "step-buttons" },
            button("up", "↑ Up", `Move ${name} up`, index === 0),
            button("down", "↓ Down", `Move ${name} down`, index === count - 1),
            button("remove", "Remove", `Remove ${name}`, false),
          ),
        ),
      );
    }),
  );
  el.stepsEmpty.hidden = count > 0;
  if (focus) {
    const item = el.steps.querySelector(`[data-key="${focus.key}"]`);
    const target = item?.querySelector(`[data-action="${focus.action}"]:not([disabled])`);
    (target ?? item?.querySelector("button:not([disabled])") ?? el.addOp).focus();
  }
}

function moveStep(key, action) {
  for (const step of state.steps) step.values = step.read();
  const index = state.steps.findIndex((step) => step.key === key);
  if (action === "remove") {
    state.steps.splice(index, 1);
    const next = state.steps[Math.min(index, state.steps.length - 1)];
    renderSteps(next ? { key: next.key, action: "remove" } : { key: -1 });
    return;
  }
  const target = action === "up" ? index - 1 : index + 1;
  if (target < 0 || target >= state.steps.length) return;
  [state.steps[index], state.steps[target]] = [state.steps[target], state.steps[index]];
  renderSteps({ key, action });
}

function pipelineSteps() {
  return state.steps.map((step) => ({ op: step.op, ...step.read() }));
}

function pipelineRequest(steps, { includeImage = true } = {}) {
  return new ApiRequest("POST", "v1/images/pipeline", {
    query: { ...sourceQuery(), include_image: includeImage ? undefined : false },
    form: [["steps", JSON.stringify(steps)], ...sourceForm()],
  });
}

// Running ---------------------------------------------------------------------

/** The source decoded by the service, with its histogram and cdf: one request per source. */
function loadBefore() {
  const source = state.source;
  setPlaceholder(el.before, "Loading…");
  state.before = sendJson(pipelineRequest(ANALYSIS_STEPS));
  state.before.then(
    (result) => {
      if (state.source !== source) return;
      showImage(el.before, result, `The original: ${sourceName()}`);
      state.charts.before = analysisOf(result);
      redrawCharts();
    },
    (error) => {
      if (state.source !== source) return;
      setPlaceholder(el.before, `No image: ${error.problem?.title ?? error.message}`);
      showProblem(el.error, error, `The image ${sourceName()}`);
    },
  );
  // Handled above; callers that await it again handle it themselves.
  state.before.catch(() => {});
}

async function run() {
  clearProblem(el.error);
  const steps = pipelineSteps();
  const source = state.source;
  setBusy(el.run, true, `Running ${steps.length} step(s) on ${sourceName()}…`);
  setPlaceholder(el.after, "Running…");
  try {
    const [result, analysis] = await Promise.allSettled([
      sendJson(pipelineRequest(steps)),
      sendJson(pipelineRequest([...steps, ...ANALYSIS_STEPS], { includeImage: false })),
    ]);
    if (state.source !== source) return;
    if (result.status === "rejected") {
      setPlaceholder(el.after, `No result: ${result.reason.problem?.title ?? result.reason.message}`);
      showProblem(el.error, result.reason, "The pipeline");
      setStatus("");
      return;
    }
    state.result = result.value;
    showImage(el.after, result.value, `The result of ${steps.map((s) => s.op).join(", ") || "no steps"}`);
    showStepTable(result.value);
    el.download.disabled = false;
    state.charts.after = analysis.status === "fulfilled" ? analysisOf(analysis.value) : null;
    redrawCharts();
    const t = result.value.timings_ms;
    setStatus(
      `Done: decode ${t.decode} ms, ops ${t.ops} ms, encode ${t.encode} ms, total ${t.total} ms.`,
    );
  } finally {
    setBusy(el.run, false);
  }
}

async function contrastReport() {
  clearProblem(el.error);
  setBusy(el.contrast, true, `Computing the contrast report of ${sourceName()}…`);
  try {
    const request = new ApiRequest("POST", "v1/images/contrast-report", {
      query: sourceQuery(),
      form: sourceForm().length ? sourceForm() : undefined,
      accept: "image/png",
    });
    const blob = await (await send(request)).blob();
    const img = el.report.querySelector("img");
    if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
    img.src = URL.createObjectURL(blob);
    img.alt = `Contrast report of ${sourceName()}: each version over its histogram and cumulative distribution`;
    el.report.hidden = false;
    setStatus("Contrast report ready (below the histograms).");
    el.report.scrollIntoView({ block: "nearest" });
  } catch (error) {
    showProblem(el.error, error, "The contrast report");
    setStatus("");
  } finally {
    setBusy(el.contrast, false);
  }
}

function download() {
  if (!state.result?.png_base64) return;
  const bytes = Uint8Array.from(atob(state.result.png_base64), (c) => c.charCodeAt(0));
  const url = URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
  const link = h("a", { href: url, download: `${sourceName().replace(/\.\w+$/, "")}-result.png` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

async function copyRequest(kind) {
  const request = pipelineRequest(pipelineSteps());
  const text = kind === "curl" ? request.toCurl() : request.toFetch();
  setStatus(await copyText(text, el.snippet));
}

// Showing ---------------------------------------------------------------------

function analysisOf(result) {
  const [histogram, cdf] = result.steps.slice(-2).map((step) => step.values);
  return { histogram, cdf, result };
}

function showImage(figure, result, alt) {
  const img = figure.querySelector("img");
  img.src = `data:image/png;base64,${result.png_base64}`;
  img.alt = alt;
  img.hidden = false;
  figure.querySelector(".placeholder").hidden = true;
  figure.querySelector(".stats").textContent =
    `${result.shape.join("×")} ${result.dtype} · min ${fmt(result.min)} · max ${fmt(result.max)} · mean ${fmt(result.mean)}`;
  figure.dataset.state = "shown";
}

function setPlaceholder(figure, text) {
  const img = figure.querySelector("img");
  img.hidden = true;
  img.removeAttribute("src");
  const placeholder = figure.querySelector(".placeholder");
  placeholder.textContent = text;
  placeholder.hidden = false;
  figure.querySelector(".stats").textContent = "";
  figure.dataset.state = "empty";
  const canvas = figure.querySelector("canvas");
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
}

function clearResult() {
  state.result = null;
  state.charts.after = null;
  el.download.disabled = true;
  el.stepTable.hidden = true;
  el.report.hidden = true;
  clearProblem(el.error);
  setPlaceholder(el.after, "Run the pipeline to see the result.");
}

function redrawCharts() {
  for (const [name, figure] of [
    ["before", el.before],
    ["after", el.after],
  ]) {
    const chart = state.charts[name];
    if (chart && figure.dataset.state === "shown") {
      drawHistogram(figure.querySelector("canvas"), chart.histogram, chart.cdf);
    }
  }
}

function showStepTable(result) {
  const rows = result.steps.map((step) =>
    h(
      "tr",
      {},
      h("td", {}, step.op),
      h("td", { class: "number" }, fmt(step.ms)),
      h("td", { class: "values" }, summarize(step.values)),
    ),
  );
  el.stepTable.tBodies[0].replaceChildren(...rows);
  el.stepTable.hidden = rows.length === 0;
}

function summarize(values) {
  if (!values || Object.keys(values).length === 0) return "";
  const short = (value) => {
    if (Array.isArray(value)) {
      return value.length > 6 ? `[${value.length} values]` : `[${value.map(short).join(", ")}]`;
    }
    return typeof value === "number" ? fmt(value) : String(value);
  };
  return Object.entries(values)
    .map(([name, value]) => `${name}: ${short(value)}`)
    .join(" · ");
}

function setBusy(button, busy, message) {
  button.disabled = busy;
  button.setAttribute("aria-busy", String(busy));
  if (message !== undefined) setStatus(message);
}

function setStatus(text) {
  el.status.textContent = text;
}

function fmt(value) {
  if (typeof value !== "number") return String(value);
  return Number.isInteger(value) ? String(value) : value.toPrecision(4);
}

function formatBytes(bytes) {
  return bytes < 1e6 ? `${(bytes / 1e3).toFixed(1)} kB` : `${(bytes / 1e6).toFixed(1)} MB`;
}
