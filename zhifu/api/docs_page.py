"""A self-contained API reference page for ``/docs``.

FastAPI's Swagger UI and ReDoc pages load their code from a CDN, and the
platform must work with no network at all (a bank's internal network, an
air-gapped test bench). This page has its script and style inline, fetches the
OpenAPI document from this server, and lists every operation with its
summary, parameters, request body and responses, plus the schemas.

The script builds the page with ``textContent`` only, never ``innerHTML``, so
text from the OpenAPI document cannot inject markup. The Content-Security-
Policy allows exactly this script and this style (by hash) and requests to
this origin only.
"""

from __future__ import annotations

import base64
import hashlib
import html
from typing import Final

_STYLE: Final = """
:root { color-scheme: light dark; --muted: #6b7280; --line: #d1d5db; --code: #f3f4f6; }
@media (prefers-color-scheme: dark) {
  :root { --muted: #9ca3af; --line: #374151; --code: #1f2937; }
}
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", "PingFang SC", sans-serif;
       margin: 0 auto; max-width: 72rem; padding: 1rem 1.5rem 4rem; }
h1 { margin-bottom: 0.2rem; }
h1 small { color: var(--muted); font-weight: normal; font-size: 1rem; }
h2 { border-bottom: 1px solid var(--line); padding-bottom: 0.2rem; margin-top: 2rem; }
h4 { margin: 0.8rem 0 0.3rem; }
code { font-family: ui-monospace, "SF Mono", Menlo, Consolas, monospace; font-size: 0.9em; }
code.type { background: var(--code); padding: 0 0.3em; border-radius: 3px; }
input.filter { width: 100%; box-sizing: border-box; padding: 0.5rem; font-size: 1rem;
               border: 1px solid var(--line); border-radius: 4px; margin: 1rem 0; }
details.op { border: 1px solid var(--line); border-radius: 6px; margin: 0.4rem 0; }
details.op > summary { cursor: pointer; padding: 0.45rem 0.6rem; list-style: none; }
details.op > summary::-webkit-details-marker { display: none; }
details.op[open] > summary { border-bottom: 1px solid var(--line); }
.body { padding: 0.3rem 0.9rem 0.8rem; }
.method { display: inline-block; min-width: 4.5rem; text-align: center; font-weight: 600;
          border-radius: 4px; padding: 0 0.4rem; margin-right: 0.6rem;
          color: #fff; background: #6b7280; }
.m-get { background: #2563eb; } .m-post { background: #16a34a; } .m-put { background: #d97706; }
.m-patch { background: #0d9488; } .m-delete { background: #dc2626; }
.summary { color: var(--muted); margin-left: 0.8rem; }
.deprecated { text-decoration: line-through; }
.desc { white-space: pre-wrap; margin: 0.3rem 0; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; border-top: 1px solid var(--line);
         padding: 0.3rem 0.5rem; }
td.name { font-family: ui-monospace, Menlo, Consolas, monospace; white-space: nowrap; }
.required { color: #dc2626; }
.status { font-weight: 600; margin-right: 0.6rem; }
.media { color: var(--muted); font-size: 0.9em; margin-left: 0.6rem; }
.schema { margin: 0.2rem 0 0.4rem 0; } .schema .schema { margin-left: 1rem; }
.muted { color: var(--muted); } .error { color: #dc2626; font-weight: 600; }
.hidden { display: none; }
"""

_SCRIPT: Final = r"""
(function () {
  "use strict";
  var METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
  var DEPTH_MAX = 3;
  var root = document.getElementById("app");
  var specUrl = document.documentElement.getAttribute("data-openapi-url");
  var spec = null;

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  // Descriptions use Markdown's `code` spans; render those (as text nodes, never as HTML).
  function prose(text) {
    var node = el("div", "desc");
    String(text).split("`").forEach(function (part, i) {
      if (i % 2) { node.appendChild(el("code", null, part)); }
      else if (part) { node.appendChild(document.createTextNode(part)); }
    });
    return node;
  }
  function deref(node) {
    var hops = 0;
    while (node && typeof node.$ref === "string" && node.$ref.indexOf("#/") === 0 && hops < 32) {
      var target = spec;
      node.$ref.slice(2).split("/").forEach(function (part) {
        part = part.replace(/~1/g, "/").replace(/~0/g, "~");
        target = target ? target[part] : undefined;
      });
      node = target;
      hops += 1;
    }
    return node || {};
  }
  function refName(schema) {
    return schema && typeof schema.$ref === "string" ? schema.$ref.split("/").pop() : null;
  }
  function typeText(schema) {
    if (!schema) { return "any"; }
    var name = refName(schema);
    if (name) { return name; }
    var alternatives = schema.anyOf || schema.oneOf;
    if (alternatives) { return alternatives.map(typeText).join(" | "); }
    if (schema.allOf) { return schema.allOf.map(typeText).join(" & "); }
    if (schema.enum) {
      return schema.enum.map(function (v) { return JSON.stringify(v); }).join(" | ");
    }
    if (schema.const !== undefined) { return JSON.stringify(schema.const); }
    if (schema.type === "array") { return "array of " + typeText(schema.items); }
    if (schema.type === "object" && schema.additionalProperties &&
        typeof schema.additionalProperties === "object") {
      return "map of " + typeText(schema.additionalProperties);
    }
    var text = Array.isArray(schema.type) ? schema.type.join(" | ") : (schema.type || "any");
    if (schema.format) { text += " (" + schema.format + ")"; }
    return text;
  }
  function limitsText(schema) {
    var s = deref(schema), parts = [];
    [["minimum", "min"], ["maximum", "max"], ["exclusiveMinimum", "more than"],
     ["exclusiveMaximum", "less than"], ["minLength", "min length"], ["maxLength", "max length"],
     ["minItems", "min items"], ["maxItems", "max items"], ["pattern", "pattern"],
     ["default", "default"]].forEach(function (pair) {
      if (s[pair[0]] !== undefined) { parts.push(pair[1] + " " + JSON.stringify(s[pair[0]])); }
    });
    return parts.join(", ");
  }
  function describe(cell, schema, description) {
    cell.appendChild(el("code", "type", typeText(schema)));
    var limits = limitsText(schema);
    if (limits) { cell.appendChild(el("span", "muted", "  " + limits)); }
    var text = description || deref(schema).description;
    if (text) { cell.appendChild(prose(text)); }
  }
  function schemaBlock(schema, depth) {
    var box = el("div", "schema");
    if (depth === 0) { box.appendChild(el("code", "type", typeText(schema))); }
    var target = deref(schema);
    if (target.type === "array" && target.items) { target = deref(target.items); }
    if (!target.properties || depth >= DEPTH_MAX) { return box; }
    var required = target.required || [];
    var table = el("table");
    Object.keys(target.properties).forEach(function (name) {
      var property = target.properties[name];
      var row = el("tr");
      var nameCell = el("td", "name", name);
      if (required.indexOf(name) >= 0) { nameCell.appendChild(el("span", "required", " *")); }
      var cell = el("td");
      describe(cell, property, property.description);
      var inner = deref(property);
      if (inner.type === "array" && inner.items) { inner = deref(inner.items); }
      if (inner.properties) { cell.appendChild(schemaBlock(property, depth + 1)); }
      row.appendChild(nameCell);
      row.appendChild(cell);
      table.appendChild(row);
    });
    box.appendChild(table);
    return box;
  }
  function contentBlock(parent, content) {
    Object.keys(content || {}).forEach(function (media) {
      parent.appendChild(el("div", "media", media));
      if (content[media].schema) { parent.appendChild(schemaBlock(content[media].schema, 0)); }
    });
  }
  function parametersBlock(body, parameters) {
    if (!parameters.length) { return; }
    body.appendChild(el("h4", null, "Parameters"));
    var table = el("table");
    var head = el("tr");
    ["Name", "In", "Type and description"].forEach(function (h) {
      head.appendChild(el("th", null, h));
    });
    table.appendChild(head);
    parameters.map(deref).forEach(function (p) {
      var row = el("tr");
      var nameCell = el("td", "name", p.name);
      if (p.required) { nameCell.appendChild(el("span", "required", " *")); }
      row.appendChild(nameCell);
      row.appendChild(el("td", null, p["in"]));
      var cell = el("td");
      describe(cell, p.schema, p.description);
      row.appendChild(cell);
      table.appendChild(row);
    });
    body.appendChild(table);
  }
  function operationBlock(path, method, op, pathParameters) {
    var box = el("details", "op");
    var summary = el("summary");
    summary.appendChild(el("span", "method m-" + method, method.toUpperCase()));
    summary.appendChild(el("code", op.deprecated ? "deprecated" : null, path));
    if (op.summary) { summary.appendChild(el("span", "summary", op.summary)); }
    box.appendChild(summary);
    var body = el("div", "body");
    if (op.description) { body.appendChild(prose(op.description)); }
    if (op.operationId) { body.appendChild(el("div", "muted", "operationId: " + op.operationId)); }
    parametersBlock(body, pathParameters.concat(op.parameters || []));
    if (op.requestBody) {
      var requestBody = deref(op.requestBody);
      var requiredText = requestBody.required ? " (required)" : "";
      body.appendChild(el("h4", null, "Request body" + requiredText));
      if (requestBody.description) { body.appendChild(prose(requestBody.description)); }
      contentBlock(body, requestBody.content);
    }
    body.appendChild(el("h4", null, "Responses"));
    Object.keys(op.responses || {}).forEach(function (status) {
      var response = deref(op.responses[status]);
      var line = el("div");
      line.appendChild(el("span", "status", status));
      line.appendChild(el("span", null, response.description || ""));
      body.appendChild(line);
      contentBlock(body, response.content);
    });
    box.appendChild(body);
    box.setAttribute("data-search",
      [method, path, op.summary || "", op.operationId || "", (op.tags || []).join(" ")]
        .join(" ").toLowerCase());
    return box;
  }
  function render() {
    var info = spec.info || {};
    root.textContent = "";
    var title = el("h1", null, info.title || "API");
    title.appendChild(el("small", null, "  version " + (info.version || "?") +
                                        "  ·  OpenAPI " + (spec.openapi || "?")));
    root.appendChild(title);
    if (info.description) { root.appendChild(prose(info.description)); }
    var specLink = el("a", null, "OpenAPI document (JSON)");
    specLink.setAttribute("href", specUrl);
    root.appendChild(specLink);
    var filter = el("input", "filter");
    filter.setAttribute("type", "search");
    filter.setAttribute("placeholder", "Filter operations by path, method, summary or tag");
    root.appendChild(filter);

    var groups = {}, order = [];
    (spec.tags || []).forEach(function (t) { groups[t.name] = []; order.push(t.name); });
    Object.keys(spec.paths || {}).forEach(function (path) {
      var item = spec.paths[path];
      METHODS.forEach(function (method) {
        if (!item[method]) { return; }
        var tags = item[method].tags && item[method].tags.length ? item[method].tags : ["default"];
        tags.forEach(function (tag) {
          if (!groups[tag]) { groups[tag] = []; order.push(tag); }
          groups[tag].push(operationBlock(path, method, item[method], item.parameters || []));
        });
      });
    });
    var sections = [];
    order.forEach(function (tag) {
      if (!groups[tag].length) { return; }
      var section = el("section");
      section.appendChild(el("h2", null, tag));
      var meta = (spec.tags || []).filter(function (t) { return t.name === tag; })[0];
      if (meta && meta.description) { section.appendChild(prose(meta.description)); }
      groups[tag].forEach(function (box) { section.appendChild(box); });
      root.appendChild(section);
      sections.push(section);
    });

    var schemas = (spec.components && spec.components.schemas) || {};
    if (Object.keys(schemas).length) {
      var schemaSection = el("section");
      schemaSection.appendChild(el("h2", null, "Schemas"));
      Object.keys(schemas).sort().forEach(function (name) {
        var box = el("details", "op");
        box.appendChild(el("summary", null, name));
        var body = el("div", "body");
        if (schemas[name].description) {
          body.appendChild(prose(schemas[name].description));
        }
        body.appendChild(schemaBlock({ $ref: "#/components/schemas/" + name }, 0));
        box.appendChild(body);
        schemaSection.appendChild(box);
      });
      root.appendChild(schemaSection);
    }

    filter.addEventListener("input", function () {
      var query = filter.value.trim().toLowerCase();
      sections.forEach(function (section) {
        var shown = 0;
        section.querySelectorAll("details.op").forEach(function (box) {
          var match = !query || box.getAttribute("data-search").indexOf(query) >= 0;
          box.classList.toggle("hidden", !match);
          if (match) { shown += 1; }
        });
        section.classList.toggle("hidden", shown === 0);
      });
    });
  }
  fetch(specUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" })
    .then(function (response) {
      if (!response.ok) { throw new Error("status " + response.status); }
      return response.json();
    })
    .then(function (loaded) { spec = loaded; render(); })
    .catch(function (error) {
      root.textContent = "";
      root.appendChild(el("p", "error",
        "Could not load the API description from " + specUrl + ": " + error.message));
    });
})();
"""


def _csp_hash(source: str) -> str:
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


CONTENT_SECURITY_POLICY: Final = "; ".join(
    (
        "default-src 'none'",
        f"script-src {_csp_hash(_SCRIPT)}",
        f"style-src {_csp_hash(_STYLE)}",
        "connect-src 'self'",
        "img-src data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)

_PAGE: Final = """<!doctype html>
<html lang="en" data-openapi-url="{openapi_url}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} API reference</title>
<link rel="icon" href="data:,">
<style>{style}</style>
</head>
<body>
<main id="app"><p>Loading the API description from <code>{openapi_url}</code>…</p>
<noscript><p>This page needs JavaScript. The API description itself is at
<a href="{openapi_url}">{openapi_url}</a>.</p></noscript></main>
<script>{script}</script>
</body>
</html>
"""


def docs_html(title: str, openapi_url: str) -> str:
    """The reference page for the OpenAPI document at ``openapi_url`` (same origin)."""
    return _PAGE.format(
        title=html.escape(title),
        openapi_url=html.escape(openapi_url, quote=True),
        style=_STYLE,
        script=_SCRIPT,
    )
