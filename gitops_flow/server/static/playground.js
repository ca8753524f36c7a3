// A flow's playground: a form made from the flow's input schema, invoke and stream, and the version that answered.
// Served at /flows/<name>/playground/ (or under /c/<config hash>/), so "../invoke" is the flow's own endpoint.
// Everything shown is set as text (textContent), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const flowName = decodeURIComponent(location.pathname.split("/")[2] || "");
let schema = {};
let fields = [];

function resolve(node) {
  let seen = 0;
  while (node && node.$ref && seen++ < 20) {
    const name = node.$ref.split("/").pop();
    node = (schema.$defs || schema.definitions || {})[name] || {};
  }
  return node || {};
}

function kindOf(node) {
  node = resolve(node);
  if (node.type === "string") return "string";
  if (node.type === "integer" || node.type === "number") return "number";
  if (node.type === "boolean") return "boolean";
  if (Array.isArray(node.anyOf) && node.anyOf.some((n) => resolve(n).type === "string")) return "string";
  return "json";
}

function field(name, node, required) {
  const wrap = document.createElement("div");
  const label = document.createElement("label");
  label.textContent = name === null ? "input" : name;
  const hint = document.createElement("span");
  hint.className = "hint";
  const description = resolve(node).description || node.description || "";
  hint.textContent = [required ? "required" : "", description].filter(Boolean).join(" · ");
  label.appendChild(hint);
  const kind = kindOf(node);
  let input;
  if (kind === "boolean") {
    input = document.createElement("input");
    input.type = "checkbox";
  } else if (kind === "number") {
    input = document.createElement("input");
    input.type = "number";
    input.step = "any";
  } else {
    input = document.createElement("textarea");
    input.spellcheck = false;
    if (kind === "json") input.placeholder = "JSON";
  }
  const id = "field-" + fields.length;
  input.id = id;
  label.htmlFor = id;
  wrap.appendChild(label);
  wrap.appendChild(input);
  $("fields").appendChild(wrap);
  fields.push({ name, kind, input, required });
}

function value(f) {
  if (f.kind === "boolean") return f.input.checked;
  const text = f.input.value;
  if (f.kind === "number") return text === "" ? undefined : Number(text);
  if (f.kind === "json") return text.trim() === "" ? undefined : JSON.parse(text);
  return text;
}

function currentInput() {
  if ($("raw").checked) return JSON.parse($("rawInput").value || "null");
  if (fields.length === 1 && fields[0].name === null) return value(fields[0]);
  const input = {};
  for (const f of fields) {
    const v = value(f);
    if (v !== undefined && (v !== "" || f.required)) input[f.name] = v;
  }
  return input;
}

function buildForm() {
  const root = resolve(schema);
  $("fields").replaceChildren();
  fields = [];
  if (root.type === "object" && root.properties) {
    const required = new Set(root.required || []);
    for (const [name, node] of Object.entries(root.properties)) field(name, node, required.has(name));
  } else {
    field(null, root, true);
  }
}

function config() {
  const configurable = {};
  if ($("session").value) configurable.session_id = $("session").value;
  if ($("user").value) configurable.user_id = $("user").value;
  if ($("pin").value) configurable.flow_version = $("pin").value;
  return { configurable };
}

function show(text, isError) {
  $("output").textContent = text;
  $("output").className = isError ? "error" : "";
}

function showMeta(version, ref, runId) {
  const parts = [];
  if (version) parts.push("version " + version.slice(0, 12));
  if (ref) parts.push("ref " + ref);
  if (runId) parts.push("run " + runId);
  $("meta").textContent = parts.join(" · ");
}

function render(output) {
  return typeof output === "string" ? output : JSON.stringify(output, null, 2);
}

function body() {
  try {
    return JSON.stringify({ input: currentInput(), config: config(), kwargs: {} });
  } catch (err) {
    show("the input is not valid JSON: " + err.message, true);
    return null;
  }
}

function busy(on) {
  $("invoke").disabled = on;
  $("stream").disabled = on;
}

async function invoke() {
  const payload = body();
  if (payload === null) return;
  busy(true);
  show("…");
  $("stepsSection").hidden = true;
  try {
    const response = await fetch("../invoke", {
      method: "POST", headers: { "content-type": "application/json" }, body: payload,
    });
    const answer = await response.json();
    if (!response.ok) {
      show(answer.error ? answer.error.code + ": " + answer.error.message : response.statusText, true);
      return;
    }
    showMeta(answer.metadata.flow_version, answer.metadata.ref, answer.metadata.run_id);
    show(render(answer.output));
  } catch (err) {
    show(String(err), true);
  } finally {
    busy(false);
  }
}

async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\r\n\r\n")) >= 0) {
      const frame = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 4);
      let event = "message";
      let data = "";
      for (const line of frame.split("\r\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      yield { event, data: data ? JSON.parse(data) : null };
    }
  }
}

function step(text) {
  const item = document.createElement("li");
  item.textContent = text;
  $("steps").appendChild(item);
}

async function stream() {
  const payload = body();
  if (payload === null) return;
  const steps = $("showSteps").checked;
  busy(true);
  show("");
  $("steps").replaceChildren();
  $("stepsSection").hidden = !steps;
  let text = "";
  let last;
  try {
    const response = await fetch(steps ? "../stream_events" : "../stream", {
      method: "POST", headers: { "content-type": "application/json" }, body: payload,
    });
    if (!response.ok) {
      const answer = await response.json();
      show(answer.error ? answer.error.code + ": " + answer.error.message : response.statusText, true);
      return;
    }
    showMeta(response.headers.get("x-flow-version"), "", "");
    for await (const { event, data } of events(response)) {
      if (event === "metadata") showMeta(data.flow_version, data.ref, data.run_id);
      else if (event === "error") { show(text + "\n" + data.message, true); return; }
      else if (event === "data") {
        let chunk = data;
        if (steps) {
          step(data.event + "  " + data.name);
          const root = data.parent_ids && data.parent_ids.length === 0;
          if (!(root && data.event === "on_chain_stream")) continue;
          chunk = data.data.chunk;
        }
        if (typeof chunk === "string") text += chunk; else last = chunk;
        show(last === undefined ? text : render(last));
      }
    }
  } catch (err) {
    show(String(err), true);
  } finally {
    busy(false);
  }
}

async function start() {
  document.title = flowName + " · playground";
  $("title").textContent = flowName;
  $("raw").addEventListener("change", () => {
    const raw = $("raw").checked;
    $("rawInput").hidden = !raw;
    $("fields").hidden = raw;
    if (raw) {
      try { $("rawInput").value = JSON.stringify(currentInput(), null, 2); } catch (err) { $("rawInput").value = ""; }
    }
  });
  $("invoke").addEventListener("click", invoke);
  $("stream").addEventListener("click", stream);
  const response = await fetch("../input_schema");
  if (!response.ok) {
    $("served").textContent = "this flow is not served here";
    return;
  }
  schema = await response.json();
  const version = response.headers.get("x-flow-version") || "";
  $("served").textContent = "input schema of version " + version.slice(0, 12);
  buildForm();
}

start();
