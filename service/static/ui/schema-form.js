// A form generated from an op's parameter schema (`GET /v1/images/ops`), as any
// frontend can build its pipeline editor: numbers, enums, booleans, lists of numbers,
// "a number or one per channel", and nullable fields. The service does the validating:
// what cannot be parsed here is sent as typed, and the problem it answers names the field.

import { h, uniqueId } from "./dom.js";

/** The kind of input a property needs, from its JSON schema. */
export function fieldKind(schema) {
  const members = schema.anyOf ?? [schema];
  const nullable = members.some((member) => member.type === "null");
  const concrete = members.filter((member) => member.type !== "null");
  const types = new Set(concrete.map((member) => member.type));
  let kind;
  if (concrete.length === 1 && concrete[0].enum) kind = "enum";
  else if (types.size === 1 && types.has("integer")) kind = "integer";
  else if (types.size === 1 && types.has("number")) kind = "number";
  else if (types.size === 1 && types.has("boolean")) kind = "boolean";
  else if (types.size === 1 && types.has("array")) kind = "list";
  else if (types.has("array") && (types.has("number") || types.has("integer"))) {
    kind = "number-or-list";
  } else kind = "text";
  const base = concrete.length === 1 ? concrete[0] : {};
  return { kind, nullable, base };
}

/**
 * Build the inputs of one op's parameters. Returns the fields (to append to a
 * fieldset) and `read()`, which gives the parameters that differ from their defaults.
 */
export function buildParamsForm(paramsSchema, values = {}) {
  const properties = paramsSchema.properties ?? {};
  const required = new Set(paramsSchema.required ?? []);
  const readers = [];
  const fields = [];
  for (const [name, schema] of Object.entries(properties)) {
    const { kind, nullable, base } = fieldKind(schema);
    const id = uniqueId(`param-${name}`);
    const hintId = `${id}-hint`;
    const label = h("label", { for: id }, schema.title ?? name);
    const hint = schema.description ? h("span", { class: "hint", id: hintId }, schema.description) : null;
    const hasDefault = "default" in schema;
    const initial = name in values ? values[name] : hasDefault ? schema.default : undefined;
    const common = { id, name, "aria-describedby": hint ? hintId : undefined };
    let input;
    if (kind === "enum") {
      input = h(
        "select",
        common,
        nullable ? h("option", { value: "" }, "none") : null,
        base.enum.map((option) => h("option", { value: option }, option)),
      );
      input.value = initial ?? "";
    } else if (kind === "boolean") {
      input = h("input", { ...common, type: "checkbox" });
      input.checked = Boolean(initial);
    } else if (kind === "integer" || kind === "number") {
      input = h("input", {
        ...common,
        type: "number",
        inputmode: kind === "integer" ? "numeric" : "decimal",
        step: kind === "integer" ? 1 : "any",
        min: base.minimum ?? base.exclusiveMinimum,
        max: base.maximum ?? base.exclusiveMaximum,
        required: required.has(name),
        placeholder: nullable ? "none" : undefined,
      });
      input.value = initial ?? (required.has(name) ? (base.minimum ?? 0) : "");
    } else {
      const example = kind === "text" ? undefined : "e.g. 255, 0, 0";
      input = h("input", { ...common, type: "text", placeholder: nullable ? "none" : example });
      input.value = Array.isArray(initial) ? initial.join(", ") : (initial ?? "");
    }
    const row = h("div", { class: `field field-${kind}` }, label, input, hint);
    fields.push(row);
    readers.push(() => {
      const value = readValue(input, kind);
      if (value === undefined) return undefined;
      if (value === null && !nullable && !required.has(name)) return undefined;
      if (hasDefault && JSON.stringify(value) === JSON.stringify(schema.default)) return undefined;
      return [name, value];
    });
  }
  const read = () => Object.fromEntries(readers.map((reader) => reader()).filter(Boolean));
  return { fields, read };
}

function readValue(input, kind) {
  if (kind === "boolean") return input.checked;
  const raw = input.value.trim();
  if (kind === "integer" || kind === "number") {
    // A number input that holds text the browser cannot read reports "" (badInput).
    if (input.validity.badInput) return "not a number";
    return raw === "" ? null : Number(raw);
  }
  if (raw === "") return null;
  if (kind === "enum" || kind === "text") return raw;
  const parts = raw.split(/[\s,]+/).filter(Boolean);
  const numbers = parts.map(Number);
  if (numbers.some((n) => !Number.isFinite(n))) return raw; // the service names the field
  if (kind === "number-or-list" && numbers.length === 1) return numbers[0];
  return numbers;
}
