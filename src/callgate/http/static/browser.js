// callgate API browser: reads /openapi.json, lists the operations, and runs one with the
// parameters, body and bearer token filled in. No libraries, no network beyond this service.
//
// Deep links: /docs?op=<operationId>&<param>=<value>...&run=1#token=<token> selects an
// operation, fills its parameters, and executes it at once (the token stays in the fragment,
// which the browser never sends to a server).
"use strict";

const state = { spec: null, operations: [], current: null };
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function resolve(schema) {
  let seen = 0;
  while (schema && schema.$ref && seen++ < 20) {
    const path = schema.$ref.replace(/^#\//, "").split("/");
    schema = path.reduce((node, key) => (node ? node[key] : undefined), state.spec);
  }
  return schema || {};
}

function exampleOf(schema, depth = 0) {
  schema = resolve(schema);
  // JSON Schema 2020-12 (OpenAPI 3.1) writes "examples"; OpenAPI 3.0's "example" still works
  if (Array.isArray(schema.examples) && schema.examples.length) return schema.examples[0];
  if (schema.example !== undefined) return schema.example;
  if (depth > 6) return null;
  const choices = schema.oneOf || schema.anyOf;
  if (choices && choices.length) return exampleOf(choices[0], depth + 1);
  if (schema.default !== undefined) return schema.default;
  switch (schema.type) {
    case "object": {
      const out = {};
      for (const [name, sub] of Object.entries(schema.properties || {})) {
        out[name] = exampleOf(sub, depth + 1);
      }
      return out;
    }
    case "array": return [];
    case "boolean": return false;
    case "integer": case "number": return 0;
    default: return "";
  }
}

function collectOperations(spec) {
  const ops = [];
  for (const [path, item] of Object.entries(spec.paths || {})) {
    for (const [method, op] of Object.entries(item)) {
      if (!["get", "put", "post", "delete", "patch"].includes(method)) continue;
      ops.push({ path, method, op, id: op.operationId || `${method} ${path}` });
    }
  }
  return ops;
}

function renderNav() {
  const nav = $("operations");
  nav.replaceChildren();
  const byTag = new Map();
  for (const entry of state.operations) {
    const tag = (entry.op.tags && entry.op.tags[0]) || "other";
    if (!byTag.has(tag)) byTag.set(tag, []);
    byTag.get(tag).push(entry);
  }
  for (const [tag, entries] of byTag) {
    nav.append(el("h2", { text: tag }));
    for (const entry of entries) {
      const button = el(
        "button",
        { type: "button", "data-op": entry.id, title: entry.op.summary || "" },
        el("span", { class: `method ${entry.method}`, text: entry.method.toUpperCase() }),
        el("code", { text: entry.path }),
      );
      button.addEventListener("click", () => select(entry.id));
      nav.append(button);
    }
  }
}

function select(id, values = new URLSearchParams()) {
  const entry = state.operations.find((candidate) => candidate.id === id);
  if (!entry) throw new Error(`no operation ${id}`);
  state.current = entry;
  for (const button of document.querySelectorAll("nav button")) {
    button.classList.toggle("selected", button.dataset.op === id);
  }
  $("operation").hidden = false;
  $("result").hidden = true;
  $("op-method").textContent = entry.method.toUpperCase();
  $("op-method").className = `method ${entry.method}`;
  $("op-path").textContent = entry.path;
  $("op-summary").textContent = entry.op.summary || "";
  $("op-description").textContent = entry.op.description || "";
  const params = $("op-params");
  params.replaceChildren();
  for (const param of entry.op.parameters || []) {
    const schema = resolve(param.schema);
    let input;
    if (schema.enum) {
      input = el("select", { name: param.name, "data-in": param.in });
      if (!param.required) input.append(el("option", { value: "", text: "" }));
      for (const option of schema.enum) input.append(el("option", { value: option, text: option }));
    } else {
      input = el("input", { name: param.name, "data-in": param.in, type: "text" });
    }
    if (values.has(param.name)) input.value = values.get(param.name);
    const label = el("label", {},
      el("span", { class: param.required ? "required" : "", text: `${param.name} (${param.in})` }),
      input);
    if (param.description) label.append(el("span", { class: "muted", text: param.description }));
    params.append(label);
  }
  const body = entry.op.requestBody;
  $("op-body-label").hidden = !body;
  if (body) {
    const media = body.content && body.content["application/json"];
    const example = media ? exampleOf(media.schema) : {};
    $("op-body").value = values.has("body") ? values.get("body") : JSON.stringify(example, null, 2);
  }
}

async function execute() {
  const entry = state.current;
  let path = entry.path;
  const query = new URLSearchParams();
  const headers = {};
  for (const input of $("op-params").querySelectorAll("[data-in]")) {
    const value = input.value;
    if (value === "") continue;
    switch (input.dataset.in) {
      case "path": path = path.replace(`{${input.name}}`, encodeURIComponent(value)); break;
      case "query": query.append(input.name, value); break;
      case "header": headers[input.name] = value; break;
    }
  }
  const token = $("token").value.trim();
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method: entry.method.toUpperCase(), headers };
  if (entry.op.requestBody) {
    headers["Content-Type"] = "application/json";
    init.body = $("op-body").value;
  }
  const url = path + (query.toString() ? `?${query}` : "");
  $("result-request").textContent = `${init.method} ${url}`;
  $("result").hidden = false;
  $("result-status").textContent = "…";
  document.body.dataset.state = "running";
  try {
    const response = await fetch(url, init);
    const text = await response.text();
    $("result-status").textContent = `${response.status} ${response.statusText}`;
    $("result-status").className = response.ok ? "ok" : "fail";
    const shown = [];
    for (const name of ["content-type", "etag", "www-authenticate", "allow"]) {
      if (response.headers.has(name)) shown.push(`${name}: ${response.headers.get(name)}`);
    }
    $("result-headers").textContent = shown.join("\n");
    let pretty = text;
    try { pretty = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { /* not JSON */ }
    $("result-body").textContent = pretty;
    document.body.dataset.state = "done";
    document.body.dataset.status = String(response.status);
  } catch (error) {
    $("result-status").textContent = "request failed";
    $("result-status").className = "fail";
    $("result-body").textContent = String(error);
    document.body.dataset.state = "failed";
  }
}

async function main() {
  const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
  const stored = sessionStorage.getItem("callgate-token");
  $("token").value = fragment.get("token") || stored || "";
  $("token").addEventListener("change", () => {
    sessionStorage.setItem("callgate-token", $("token").value);
  });
  $("op-form").addEventListener("submit", (event) => {
    event.preventDefault();
    execute();
  });
  try {
    const response = await fetch("/openapi.json");
    state.spec = await response.json();
  } catch (error) {
    $("load-error").hidden = false;
    $("load-error").textContent = `Could not read /openapi.json: ${error}`;
    document.body.dataset.state = "failed";
    return;
  }
  $("api-description").textContent = (state.spec.info && state.spec.info.description) || "";
  state.operations = collectOperations(state.spec);
  renderNav();
  document.body.dataset.state = "ready";
  const params = new URLSearchParams(location.search);
  const wanted = params.get("op");
  if (wanted) {
    select(wanted, params);
    if (params.get("run") === "1") await execute();
  }
}

main();
