// Small DOM helpers shared by both halves of the page, and how a problem is shown.

import { ProblemError } from "./api.js";

/** Build an element: h("p", {class: "hint"}, "text", child, ...). */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, String(value));
  }
  element.append(...children.flat().filter((child) => child !== null && child !== undefined));
  return element;
}

export const $ = (selector, root = document) => root.querySelector(selector);

let nextId = 0;
export const uniqueId = (prefix) => `${prefix}-${++nextId}`;

/**
 * Show an error in `box` (a role="alert" element): the problem's title and detail, its
 * status and request id, and when to retry after a 429. Never leaves the box blank.
 */
export function showProblem(box, error, context = "") {
  const problem =
    error instanceof ProblemError
      ? error.problem
      : { title: "Something went wrong in the page", detail: String(error?.message ?? error) };
  const heading = problem.status ? `${problem.title} (${problem.status})` : problem.title;
  const lines = [h("strong", { class: "problem-title" }, context ? `${context}: ${heading}` : heading)];
  lines.push(h("p", { class: "problem-detail" }, problem.detail || "(no detail given)"));
  const retry = error instanceof ProblemError ? error.retryAfterS : null;
  if (problem.status === 429 || retry !== null) {
    const when = retry !== null ? `in ${retry} s` : "in a moment";
    lines.push(h("p", { class: "problem-retry" }, `The service is busy: try again ${when}.`));
  }
  const facts = [];
  if (problem.parameter) facts.push(`parameter: ${problem.parameter}`);
  if (problem.type) facts.push(`type: ${problem.type}`);
  if (problem.request_id) facts.push(`request id: ${problem.request_id}`);
  if (facts.length) lines.push(h("p", { class: "problem-facts" }, facts.join(" · ")));
  box.replaceChildren(...lines);
  box.hidden = false;
}

export function clearProblem(box) {
  box.replaceChildren();
  box.hidden = true;
}

/** Put `text` on the clipboard; where the page is not a secure context, select it instead. */
export async function copyText(text, pre) {
  pre.textContent = text;
  pre.closest("details")?.setAttribute("open", "");
  try {
    await navigator.clipboard.writeText(text);
    return "Copied to the clipboard.";
  } catch {
    const range = document.createRange();
    range.selectNodeContents(pre);
    getSelection()?.removeAllRanges();
    getSelection()?.addRange(range);
    return "The clipboard is not available here: the text below is selected, copy it with Ctrl+C.";
  }
}

/** A canvas sized to its CSS box at the screen's pixel density; returns its 2-D context. */
export function fitCanvas(canvas, cssHeight) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(1, canvas.clientWidth);
  const height = cssHeight ?? Math.max(1, canvas.clientHeight);
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  return { context, width, height };
}

/** The page's colours (CSS custom properties), read at draw time so themes apply. */
export function palette() {
  const style = getComputedStyle(document.documentElement);
  const read = (name) => style.getPropertyValue(name).trim();
  return {
    fg: read("--fg"),
    muted: read("--muted"),
    grid: read("--grid"),
    accent: read("--accent"),
    cdf: read("--cdf"),
    bg: read("--bg"),
    panel: read("--panel"),
  };
}

/** Redraw on a theme change (the system switching between light and dark). */
export function onThemeChange(callback) {
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", callback);
}
