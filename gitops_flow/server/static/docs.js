// The API docs page: renders /openapi.json (the live flows' real schemas) as a list of operations per flow, each with
// its parameters, request body and responses, and a link to each flow's playground. Set as text only, never HTML.
"use strict";

const el = (tag, props, ...children) => {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const child of children) node.append(child);
  return node;
};

let doc = {};

function resolve(node, depth) {
  if (node && node.$ref && depth < 20) {
    const parts = node.$ref.replace(/^#\//, "").split("/");
    let found = doc;
    for (const part of parts) found = (found || {})[part];
    return resolve(found || {}, depth + 1);
  }
  return node;
}

// a schema with its references written out (as far as 6 levels), for reading
function expand(node, depth) {
  if (depth > 6) return node;
  node = resolve(node, 0);
  if (Array.isArray(node)) return node.map((item) => expand(item, depth + 1));
  if (node && typeof node === "object") {
    const out = {};
    for (const [key, value] of Object.entries(node)) out[key] = expand(value, depth + 1);
    return out;
  }
  return node;
}

function block(title, value) {
  return el("div", {}, el("h3", { textContent: title }), el("pre", { textContent: JSON.stringify(value, null, 2) }));
}

function operation(path, method, op) {
  const summary = el(
    "summary", {},
    el("span", { className: "method " + method, textContent: method.toUpperCase() }),
    el("span", { className: "path", textContent: path }),
    el("span", { className: "note", textContent: op.summary || "" }),
  );
  const body = el("div");
  if (op.parameters && op.parameters.length) {
    const params = op.parameters.map((p) => resolve(p, 0)).map((p) => ({ name: p.name, in: p.in, description: p.description }));
    body.append(block("Parameters", params));
  }
  if (op.requestBody) {
    for (const [type, media] of Object.entries(op.requestBody.content || {})) {
      body.append(block("Request body (" + type + ")", expand(media.schema || {}, 0)));
    }
  }
  for (const [status, response] of Object.entries(op.responses || {})) {
    const content = Object.entries(response.content || {});
    const shown = content.length ? expand(content[0][1].schema || {}, 0) : {};
    body.append(block(status + " " + (response.description || ""), shown));
  }
  return el("details", { className: "op" }, summary, body);
}

async function start() {
  const response = await fetch("openapi.json");
  doc = await response.json();
  document.title = doc.info.title + " API";
  const flows = (doc.tags || []).filter((tag) => tag.name !== "server");
  document.getElementById("summary").textContent =
    flows.length + " flow" + (flows.length === 1 ? "" : "s") + " served · version " + doc.info.version;
  const byTag = new Map();
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const tag = (op.tags || ["other"])[0];
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push(operation(path, method, op));
    }
  }
  const main = document.getElementById("operations");
  for (const tag of doc.tags || []) {
    const section = el("section", {}, el("h2", { className: "tag", textContent: tag.name }));
    if (tag.description) section.append(el("p", { className: "meta", textContent: tag.description }));
    if (tag.name !== "server") {
      section.append(el("p", {}, el("a", { href: "flows/" + encodeURIComponent(tag.name) + "/playground/", textContent: "playground" })));
    }
    for (const op of byTag.get(tag.name) || []) section.append(op);
    main.append(section);
  }
}

start();
