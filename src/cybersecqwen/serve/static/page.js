"use strict";
// Every model-derived or user-derived string reaches the page through textContent, never innerHTML:
// a payload in a report or in a model answer is shown as text and never runs.
const $ = (id) => document.getElementById(id);
const routes = {
  cwe: ["/v1/cwe/classify", (t) => ({text: t})],
  cve: ["/v1/cve/map", (t) => ({cve_id: $("cve").value.trim(), description: t})],
  attack: ["/v1/attack/extract", (t) => ({text: t})],
  ask: ["/v1/cti/ask", (t) => ({question: t})],
  advisory: ["/v1/advisory/analyze", (t) => ({text: t, format: $("format").value})],
};
$("task").addEventListener("change", () => {
  $("cve-label").hidden = $("task").value !== "cve";
  $("format-label").hidden = $("task").value !== "advisory";
});

function cell(row, value, href) {
  const td = document.createElement("td");
  if (href && /^https:\/\/(cwe|capec|attack)\.mitre\.org\//.test(href)) {
    const a = document.createElement("a");
    a.href = href; a.textContent = value; a.target = "_blank"; a.rel = "noopener noreferrer";
    td.appendChild(a);
  } else {
    td.textContent = value === null || value === undefined ? "" : String(value);
  }
  row.appendChild(td);
  return td;
}

function table(headers, rows) {
  const t = document.createElement("table");
  const head = t.insertRow();
  headers.forEach((h) => { const th = document.createElement("th"); th.textContent = h; head.appendChild(th); });
  rows.forEach((r) => { const tr = t.insertRow(); r.forEach(([v, href]) => cell(tr, v, href)); });
  return t;
}

function pct(x) { return x === null || x === undefined ? "n/a" : (100 * x).toFixed(1) + "%"; }

function section(out, title, headers, rows) {
  const h = document.createElement("h2");
  h.textContent = `${title} (${rows.length})`;
  out.appendChild(h);
  if (rows.length) out.appendChild(table(headers, rows));
}

function renderAdvisory(out, data) {
  // Evidence is shown as the document's own characters (offsets into data.text); indicator URLs are never links.
  const span = (e) => (e ? data.text.slice(e[0], e[1]).slice(0, 200) : "");
  const p = document.createElement("p");
  p.id = "summary";
  p.textContent = "Summary (" + data.summary.method + "): " + data.summary.text;
  out.appendChild(p);
  section(out, "CVEs", ["CVE", "evidence"], data.cves.map((c) => [[c.cve_id], [span(c.evidence)]]));
  section(out, "Affected products", ["vendor", "product", "versions", "confidence", "evidence"],
    data.affected.map((a) => [[a.vendor], [a.product], [a.versions], [pct(a.confidence)], [span(a.evidence)]]));
  section(out, "Weaknesses", ["CWE", "name", "confidence", "CAPEC", "evidence"],
    data.weaknesses.map((w) => [[w.cwe_id, w.url], [w.name], [pct(w.confidence)], [w.capec.map((c) => c.capec_id).join(", ")], [span(w.evidence)]]));
  if (data.cvss) {
    const c = document.createElement("p");
    c.textContent = `CVSS ${data.cvss.vector} · base score ${data.cvss.base_score} · confidence ${pct(data.cvss.confidence)}`;
    out.appendChild(c);
  }
  section(out, "ATT&CK techniques", ["technique", "name", "tactics", "confidence", "evidence"],
    data.techniques.map((t) => [[t.technique_id, t.url], [t.name], [t.tactics.join(", ")], [pct(t.confidence)], [span(t.evidence)]]));
  section(out, "Threat actors", ["name", "source", "mentioned as", "confidence"],
    data.actors.map((a) => [[a.name], [a.external_id || a.source], [a.mentioned_as], [pct(a.confidence)]]));
  section(out, "Indicators", ["type", "value", "flags", "as written"],
    data.iocs.map((i) => [[i.type], [i.value], [i.flags.join(", ")], [span(i.evidence)]]));
}

function render(task, data) {
  const out = $("result");
  out.replaceChildren();
  const flag = document.createElement("p");
  flag.className = data.needs_review ? "review" : "";
  flag.textContent = task === "advisory" ? "Needs review: an analysis of a whole document is a draft for an analyst, never an action."
    : data.needs_review ? "Needs review: low confidence." : "Confidence above the review threshold.";
  out.appendChild(flag);
  if (task === "cwe" || task === "cve") {
    const list = task === "cwe" ? data.candidates : data.cwe;
    out.appendChild(table(["CWE", "name", "confidence", "justification"],
      list.map((c) => [[c.cwe_id, c.url], [c.name], [pct(c.confidence)], [c.justification]])));
    if (task === "cve") {
      const p = document.createElement("p");
      p.textContent = `CVSS ${data.cvss.vector} · base score ${data.cvss.base_score} · confidence ${pct(data.cvss.confidence)}`;
      out.appendChild(p);
    }
  } else if (task === "advisory") {
    renderAdvisory(out, data);
  } else if (task === "attack") {
    out.appendChild(table(["technique", "name", "tactics", "confidence", "evidence"],
      data.techniques.map((t) => [[t.technique_id, t.url], [t.name], [t.tactics.join(", ")], [pct(t.confidence)], [t.evidence]])));
  } else {
    const p = document.createElement("p");
    p.id = "answer";
    p.textContent = data.answer;
    out.appendChild(p);
    if (data.method) {
      const m = document.createElement("p");
      m.textContent = "Method: " + data.method;
      out.appendChild(m);
    }
    // Citations are the catalogs' own words, shown as text; only MITRE catalog pages become links.
    if (data.citations) section(out, "Sources", ["entry", "catalog", "field", "passage"],
      data.citations.map((c) => [[c.id, c.url], [c.source], [c.field], [c.text]]));
  }
}

$("run").addEventListener("click", async () => {
  const task = $("task").value;
  const [path, body] = routes[task];
  const headers = {"Content-Type": "application/json"};
  if ($("key").value) headers["Authorization"] = "Bearer " + $("key").value;
  $("status").textContent = "working…";
  $("status").className = "";
  try {
    const response = await fetch(path, {method: "POST", headers, body: JSON.stringify(body($("input").value))});
    const data = await response.json();
    if (!response.ok) throw new Error(data.error ? data.error.message : response.statusText);
    render(task, data);
    $("status").textContent = "done";
  } catch (err) {
    $("status").textContent = String(err.message || err);
    $("status").className = "error";
  }
});
