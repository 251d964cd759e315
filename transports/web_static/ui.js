// The page of one immortal: a snapshot at load, then server-sent events; a form per @impulse.
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("ambrosia-token") || "";
let events = null;

(function takeTokenFromAddress() {
  const url = new URL(location.href);
  const given = url.searchParams.get("token");
  if (given) {
    token = given;
    sessionStorage.setItem("ambrosia-token", given);
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search);  // keep it out of the history
  }
})();

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (token) h.Authorization = "Bearer " + token;
  return h;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

const number = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en"));
const rate = (r) => (r < 10 ? r.toFixed(1) : Math.round(r).toLocaleString("en"));

// --- the overview ----------------------------------------------------------------------------

function showOverview(o) {
  document.title = o.name + " · ambrosia-edge";
  $("name").textContent = o.name;
  $("role").textContent = o.role;
  $("role").className = "badge " + o.role;
  $("class").textContent = o.class + (o.pid ? " · pid " + o.pid : "") +
    (o.listen ? " · listening on " + o.listen : "");
  $("epoch").textContent = number(o.epoch);
  $("pages").textContent = number(o.pages);
  $("chunk").textContent = number(o.chunk);
  $("log").textContent = o.log || "";
  $("checkpoints").textContent = o.checkpoints.length ? o.checkpoints.join(", ") : "none yet";
  $("calls").textContent = number(o.calls);
  $("impulses").textContent = number(o.impulses);
  $("calls-rate").textContent = rate(o.rates.calls);
  $("impulses-rate").textContent = rate(o.rates.impulses);
  const body = $("peers").tBodies[0];
  body.replaceChildren(...o.peers.map((p) => el("tr", {},
    el("td", { text: p.name }), el("td", { text: p.address }),
    el("td", { class: p.out ? "yes" : "no", text: p.out ? "up" : "down" }),
    el("td", { class: p.in ? "yes" : "no", text: p.in ? "up" : "down" }),
    el("td", { text: number(p.sent) }), el("td", { text: number(p.acknowledged) }),
    el("td", { text: number(p.waiting) }), el("td", { text: number(p.received) }))));
  $("peers").hidden = o.peers.length === 0;
  $("no-peers").hidden = o.peers.length !== 0;
}

function showRecent(records) {
  $("recent").replaceChildren(...records.slice().reverse().map((r) => el("li",
    { class: r.level }, new Date(r.time * 1000).toLocaleTimeString() + " " + r.level + ": " +
    r.message)));
  $("no-recent").hidden = records.length !== 0;
}

// --- the state, as a tree that keeps what was opened --------------------------------------

function leaf(value) {
  if (typeof value === "string") return el("span", { class: "str", text: JSON.stringify(value) });
  if (typeof value === "number") return el("span", { class: "num", text: String(value) });
  return el("span", { class: "lit", text: String(value) });
}

function branch(key, value, path, open) {
  const label = key === null ? [] : [el("span", { class: "key", text: key }), ": "];
  if (value === null || typeof value !== "object") {
    return el("div", { class: "leaf" }, ...label, leaf(value));
  }
  const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v]) : Object.entries(value);
  const size = Array.isArray(value) ? "[" + value.length + "]" : "{" + entries.length + "}";
  const node = el("details", { "data-path": path }, el("summary", {}, ...label,
    el("span", { class: "muted", text: size })));
  if (open.has(path)) node.open = true;
  for (const [k, v] of entries) node.append(branch(k, v, path + "/" + k, open));
  return node;
}

function showState(state) {
  const box = $("state");
  const open = new Set([...box.querySelectorAll("details[open]")].map((d) => d.dataset.path));
  const entries = Object.entries(state);
  box.replaceChildren(...(entries.length
    ? entries.map(([k, v]) => branch(k, v, "/" + k, open))
    : [el("span", { class: "muted", text: "no attributes" })]));
  if (!box.dataset.touched) {  // until someone opens or closes one, the top level is open
    for (const top of box.querySelectorAll(":scope > details")) top.open = true;
  }
}

// --- forms, one per @impulse ---------------------------------------------------------------

function input(field) {
  const title = field.annotation ? `${field.name}: ${field.annotation}` : field.name;
  const hint = field.required ? "" : field.default !== null ? ` (default ${JSON.stringify(field.default)})` : " (optional)";
  if (field.kind === "bool") {
    const box = el("input", { type: "checkbox", name: field.name });
    if (field.default === true) box.checked = true;
    return el("label", { class: "check" }, box, title + hint);
  }
  let control;
  if (field.kind === "json") {
    control = el("textarea", { name: field.name, rows: "1", placeholder: "JSON, e.g. [1, 2] or {\"a\": 1}" });
  } else {
    control = el("input", { type: "text", name: field.name, autocomplete: "off",
      inputmode: field.kind === "int" ? "numeric" : field.kind === "float" ? "decimal" : "text" });
  }
  if (field.required) control.required = true;
  if (field.default !== null && field.kind !== "json") control.placeholder = String(field.default);
  return el("label", {}, title + hint, control);
}

let formsShown = "";

function buildForms(forms) {
  const box = $("forms");
  const described = JSON.stringify(forms);
  if (described === formsShown) return;  // the same methods: keep what was typed
  formsShown = described;
  if (!forms.length) {
    box.replaceChildren(el("p", { class: "muted", text: "this immortal has no @impulse method" }));
    return;
  }
  box.replaceChildren(...forms.map((f) => {
    const sig = f.fields.map((x) => x.name).join(", ");
    const form = el("form", { class: "impulse", id: "form-" + f.method, "data-method": f.method },
      el("h3", { text: `${f.method}(${sig})` }));
    if (f.doc) form.append(el("p", { class: "muted", text: f.doc }));
    for (const field of f.fields) form.append(input(field));
    form.append(el("button", { type: "submit", text: "send" }), el("div", { class: "result" }));
    form.addEventListener("submit", (e) => { e.preventDefault(); send(form, f); });
    return form;
  }));
}

async function send(form, f) {
  const result = form.querySelector(".result");
  const button = form.querySelector("button");
  const args = {};
  for (const field of f.fields) {
    const control = form.elements[field.name];
    args[field.name] = field.kind === "bool" ? control.checked : control.value;
  }
  button.disabled = true;
  result.className = "result";
  result.textContent = "sending…";
  try {
    const response = await fetch("api/impulse/" + encodeURIComponent(f.method), {
      method: "POST", headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify({ args }),
    });
    const answer = await response.json().catch(() => ({ error: response.statusText }));
    if (response.ok) {
      result.className = "result ok";
      result.textContent = `logged as impulse #${answer.impulse}: it runs exactly once`;
    } else {
      result.className = "result bad";
      result.textContent = answer.error || `refused (${response.status})`;
      if (response.status === 401) askForToken();
    }
  } catch (err) {
    result.className = "result bad";
    result.textContent = "the immortal did not answer (" + err.message + "); it may be restarting";
  } finally {
    button.disabled = false;
  }
}

// --- loading, the token, live updates --------------------------------------------------------

function askForToken() {
  $("token-box").hidden = false;
  $("token").focus();
}

$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem("ambrosia-token", token);
  $("token-box").hidden = true;
  load();
});

function setLink(up, text) {
  $("link").className = "link " + (up ? "up" : "down");
  $("link").textContent = text;
}

async function load() {
  let response;
  try {
    response = await fetch("api/snapshot", { headers: headers() });
  } catch (err) {
    setLink(false, "cannot reach the immortal; retrying");
    setTimeout(load, 2000);
    return;
  }
  if (response.status === 401) {
    setLink(false, "a token is needed");
    askForToken();
    return;
  }
  const snap = await response.json();
  showOverview(snap.overview);
  showState(snap.state);
  showRecent(snap.recent);
  buildForms(snap.forms);
  listen();
}

function listen() {
  if (events) events.close();
  let lost = false;
  events = new EventSource("api/events" + (token ? "?token=" + encodeURIComponent(token) : ""));
  events.onopen = () => {
    setLink(true, "live");
    if (lost) load();  // back after a restart: its class (and so its forms) may be new
  };
  events.onerror = () => {
    lost = true;
    setLink(false, "connection lost; reconnecting…");
  };
  events.addEventListener("overview", (e) => showOverview(JSON.parse(e.data)));
  events.addEventListener("state", (e) => showState(JSON.parse(e.data)));
  events.addEventListener("recent", (e) => showRecent(JSON.parse(e.data)));
}

$("state").addEventListener("click", (e) => {
  if (e.target.closest("summary")) $("state").dataset.touched = "1";
});
load();
