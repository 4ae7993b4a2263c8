// The one place the page talks to the service. Every call is described first as an
// ApiRequest (method, path, query, body), which can be sent, or printed as the exact
// curl command or fetch() call that sends the same thing.

/** The service root: the page lives at <root>/ui/, so the API is one level up. */
export const API_ROOT = new URL("../", document.baseURI);

export class ApiRequest {
  /**
   * @param {string} method
   * @param {string} path  relative to the service root, e.g. "v1/images/pipeline"
   * @param {{query?: Record<string, string|number|boolean|undefined>,
   *          json?: unknown, form?: Array<[string, string|File]>, accept?: string}} options
   */
  constructor(method, path, { query = {}, json, form, accept = "application/json" } = {}) {
    this.method = method;
    this.path = path;
    this.query = Object.fromEntries(
      Object.entries(query).filter(([, value]) => value !== undefined && value !== null),
    );
    this.json = json;
    this.form = form;
    this.accept = accept;
  }

  get url() {
    const url = new URL(this.path, API_ROOT);
    for (const [name, value] of Object.entries(this.query)) {
      url.searchParams.append(name, String(value));
    }
    return url.href;
  }

  init() {
    /** @type {RequestInit} */
    const init = { method: this.method, headers: { Accept: this.accept } };
    if (this.json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(this.json);
    } else if (this.form) {
      const body = new FormData();
      for (const [name, value] of this.form) body.append(name, value);
      init.body = body;
    }
    return init;
  }

  toCurl() {
    const lines = [`curl -s -X ${this.method} ${shellQuote(this.url)}`];
    lines.push(`-H ${shellQuote(`Accept: ${this.accept}`)}`);
    if (this.json !== undefined) {
      lines.push(`-H 'Content-Type: application/json'`);
      lines.push(`-d ${shellQuote(JSON.stringify(this.json))}`);
    }
    for (const [name, value] of this.form ?? []) {
      // curl reads `name=@path` as a file to upload.
      const field = value instanceof File ? `${name}=@${value.name}` : `${name}=${value}`;
      lines.push(`-F ${shellQuote(field)}`);
    }
    if (this.accept.startsWith("image/")) lines.push("-o result.png");
    return lines.join(" \\\n     ");
  }

  toFetch() {
    const lines = [];
    const options = [`method: ${JSON.stringify(this.method)}`];
    const headers = { Accept: this.accept };
    if (this.json !== undefined) {
      headers["Content-Type"] = "application/json";
      options.push(`headers: ${JSON.stringify(headers)}`);
      options.push(`body: JSON.stringify(${JSON.stringify(this.json, null, 2)})`);
    } else {
      options.push(`headers: ${JSON.stringify(headers)}`);
    }
    if (this.form) {
      lines.push("const form = new FormData();");
      for (const [name, value] of this.form) {
        if (value instanceof File) {
          lines.push(
            `form.append(${JSON.stringify(name)}, file); // ${value.name}: a File, e.g. input.files[0]`,
          );
        } else {
          lines.push(`form.append(${JSON.stringify(name)}, ${jsQuote(value)});`);
        }
      }
      options.push("body: form");
    }
    lines.push(
      `const response = await fetch(${JSON.stringify(this.url)}, {\n  ${options.join(",\n  ")},\n});`,
    );
    lines.push(
      this.accept.startsWith("image/")
        ? "const png = await response.blob();"
        : "const result = await response.json(); // on errors: a problem document (title, detail)",
    );
    return lines.join("\n");
  }
}

/** An error answered by the service (its RFC 9457 problem document), or no answer at all. */
export class ProblemError extends Error {
  /**
   * @param {{title: string, detail?: string, status?: number, [key: string]: unknown}} problem
   * @param {number|null} retryAfterS  from the Retry-After header of a 429 or 503
   */
  constructor(problem, retryAfterS = null) {
    super(`${problem.title}: ${problem.detail ?? ""}`);
    this.name = "ProblemError";
    this.problem = problem;
    this.retryAfterS = retryAfterS ?? numberOrNull(problem.retry_after_s);
  }
}

/** Send a request; resolve to the Response when it is 2xx, else throw a ProblemError. */
export async function send(request, { signal } = {}) {
  let response;
  try {
    response = await fetch(request.url, { ...request.init(), signal });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ProblemError({
      title: "No answer from the service",
      detail: `${request.method} ${request.path} failed before a response came back (${error.message}).`,
    });
  }
  if (response.ok) return response;
  throw await problemOf(response);
}

export async function sendJson(request, options) {
  const response = await send(request, options);
  return response.status === 204 ? null : response.json();
}

/** The problem document of a non-2xx response, whatever its body turned out to be. */
export async function problemOf(response) {
  const retryAfter = numberOrNull(response.headers.get("Retry-After"));
  const text = await response.text();
  let problem;
  try {
    problem = JSON.parse(text);
  } catch {
    problem = null;
  }
  if (!problem || typeof problem !== "object" || !problem.title) {
    problem = {
      title: response.statusText || `HTTP ${response.status}`,
      detail: text.slice(0, 500) || "(the response had no body)",
    };
  }
  problem.status ??= response.status;
  return new ProblemError(problem, retryAfter);
}

function numberOrNull(value) {
  if (value === null || value === undefined || value === "") return null;
  const number = Number(value);
  return Number.isFinite(number) ? number : null;
}

function shellQuote(text) {
  return `'${String(text).replaceAll("'", `'\\''`)}'`;
}

function jsQuote(text) {
  // A template literal reads best for JSON (no escaped double quotes).
  if (!/[`\\$]/.test(text)) return `\`${text}\``;
  return JSON.stringify(text);
}
