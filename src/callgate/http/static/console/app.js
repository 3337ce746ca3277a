// The operator console: sign in, then one view at a time, each from the public API routes.
// Every allow/deny shown comes from the server's decision engine; this file only draws it.
import { ApiError, call, clientPath, saveSession, session, stream } from "/console/api.js";
import { diffLines, pretty, renderDiff } from "/console/diff.js";

const ACTIONS = {
  pickup: { label: "Directed pickup", short: "P" },
  group_pickup: { label: "Group pickup reach", short: "G" },
  eavesdrop: { label: "Listen", short: "L" },
  whisper: { label: "Whisper", short: "W" },
  replace: { label: "Replace (policy; PIN aside)", short: "R" },
};
const REASONS = {
  self_target: "an extension never targets itself",
  allow_all: "allow_all is on: everything is allowed",
  pickup_all: "pickup_all is on: any extension may pick up any other",
  pickup_share_group: "they share a pickup share group",
  no_pickup_group: "no pickup share group reaches it",
  pickup_not_permitted: "no pickup share group in common",
  eavesdrop_group: "an eavesdrop grant covers the target's group",
  whisper_group: "a whisper grant covers the target's group",
  eavesdrop_not_permitted: "no eavesdrop or whisper grant covers it",
  whisper_not_permitted: "no whisper grant covers it",
  phone_replace_group: "they share a phone replace group",
  replace_not_permitted: "no phone replace group in common",
  invalid_request: "not a valid request",
  protected: "the target is a protected extension: nobody may listen or whisper to it, not with allow_all, not with a grant",
  temporary_grant: "only a temporary grant allows it: it ends at the grant's until",
};
// Reasons a cell is marked by, beyond allowed/denied: the rules beside the document.
const MARKS = { protected: "protected", temporary_grant: "grant" };
const VIEWS = ["picture", "editor", "history", "live", "audit"];
const $ = (selector, root = document) => root.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function say(message, kind = "info") {
  const status = $("#status");
  status.textContent = message;
  status.dataset.kind = kind;
}

function explainError(error) {
  if (!(error instanceof ApiError)) return String(error.message || error);
  if (error.status === 401) return "The token was refused (401): sign in again.";
  return `${error.message} (${error.status} ${error.code})`;
}

function confirmDialog(title, body) {
  const dialog = $("#confirm");
  $("#confirm-title").textContent = title;
  const holder = $("#confirm-body");
  holder.textContent = "";
  holder.append(...(Array.isArray(body) ? body : [body]));
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "cancel";
    dialog.showModal();
    $("#confirm-cancel").focus();
  });
}

function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

// ---------------------------------------------------------------- cells of the picture

function grantText(entry) {
  if (!entry.grant_ids || !entry.grant_ids.length) return "";
  return `grant ${entry.grant_ids.join(", ")}${entry.until ? ` until ${when(entry.until)}` : ""}`;
}

function describe(entry) {
  const group = entry.group ? `, group ${entry.group}` : "";
  const grant = grantText(entry);
  return `${entry.allowed ? "allowed" : "denied"}: ${entry.reason}${group}${grant ? `, ${grant}` : ""}`;
}

// The class a cell gets for the rules beside the document ("" for none).
function markOf(entry) {
  return MARKS[entry.reason] || "";
}

// ---------------------------------------------------------------- protection and grants

const GRANT_ACTIONS = { eavesdrop: "Listen", whisper: "Whisper (and listen)", pickup: "Directed pickup" };

function renderSupervision(shown) {
  const box = el("section", { id: "supervision", class: "card", "aria-labelledby": "supervision-title" },
    el("h3", { id: "supervision-title", text: "Beside the policy: protected extensions and grants" }));
  const protectedList = shown.protected_extensions;
  box.append(el("p", { id: "protected" }, el("strong", { text: "Protected (nobody listens or whispers to them): " }),
    protectedList.length
      ? protectedList.flatMap((ext, k) => [k ? ", " : "", el("span", { class: "swatch protected", "data-ext": ext, text: ext })])
      : el("span", { class: "empty", text: "none" })));
  if (!shown.grants.length) {
    box.append(el("p", { id: "no-grants", class: "empty", text: "No grant is active or to come." }));
  } else {
    box.append(el("table", { class: "plain", id: "grants-table" },
      el("caption", { text: "Grants active or to come: each right ends at its until" }),
      el("thead", {}, el("tr", {}, ["Extension", "Right", "Reach", "From", "Until", "Note", "By", "State", "Id"]
        .map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, shown.grants.map((g) => el("tr", { "data-grant-id": g.id, "data-state": g.state, class: g.state === "active" ? "grant" : "" },
        el("th", { scope: "row", text: g.ext }), el("td", { text: GRANT_ACTIONS[g.action] || g.action }),
        el("td", { text: [...g.groups.map((n) => `group ${n}`), ...g.extensions].join(", ") }),
        el("td", { text: when(g.from) }), el("td", { class: "until", text: when(g.until) }),
        el("td", { text: g.note }), el("td", { text: g.created_by }),
        el("td", { text: g.state === "active" ? "active" : "to come" }), el("td", {}, el("code", { text: g.id })))))));
  }
  if (shown.valid_until) {
    box.append(el("p", { class: "hint", id: "valid-until",
      text: `This picture changes at ${when(shown.valid_until)}, when a grant starts or ends; it is drawn again then.` }));
  }
  return box;
}

// ---------------------------------------------------------------- the shell

let current = { client: null, view: null, abort: null };

function route() {
  const [, client, view] = location.hash.split("/");
  return { client: client ? decodeURIComponent(client) : null, view: VIEWS.includes(view) ? view : "picture" };
}

function go(client, view) {
  location.hash = `#/${encodeURIComponent(client)}/${view}`;
}

async function render() {
  if (current.abort) current.abort.abort();
  current.abort = new AbortController();
  const s = session();
  const { client, view } = route();
  const signin = $("#signin-view");
  const holder = $("#view");
  if (!s || !client) {
    signin.hidden = false;
    holder.hidden = true;
    $("#nav").hidden = true;
    $("#who").hidden = true;
    if (s) $("#client").value = s.client || "";
    $("#token").focus();
    return;
  }
  signin.hidden = true;
  holder.hidden = false;
  $("#nav").hidden = false;
  $("#who").hidden = false;
  $("#who-text").textContent = `client ${client} · ${s.admin ? "admin token" : "client token"}`;
  for (const link of document.querySelectorAll("#nav a")) {
    link.href = `#/${encodeURIComponent(client)}/${link.dataset.view}`;
    if (link.dataset.view === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  current = { ...current, client, view };
  holder.textContent = "";
  holder.dataset.view = view;
  say("");
  try {
    await VIEW_RENDERERS[view](holder, client, current.abort.signal);
  } catch (error) {
    if (error.name === "AbortError") return;
    holder.textContent = "";
    holder.append(
      el("h2", { tabindex: "-1", text: "Cannot open this view" }),
      el("p", { class: "error", role: "alert", id: "view-error", text: explainError(error) }),
    );
  }
  const heading = $("h2", holder);
  if (heading) heading.focus({ preventScroll: true });
}

async function signIn(event) {
  event.preventDefault();
  const token = $("#token").value.trim();
  const client = $("#client").value.trim();
  const error = $("#signin-error");
  error.textContent = "";
  let admin = false;
  try {
    await call("GET", "/tokens", { token });
    admin = true;
  } catch (failure) {
    if (failure.status === 401) {
      error.textContent = "This token is not valid.";
      return;
    }
  }
  try {
    await call("GET", clientPath(client, "call_control_group/"), { token });
  } catch (failure) {
    error.textContent = explainError(failure);
    return;
  }
  saveSession({ token, client, admin });
  $("#token").value = "";
  go(client, "picture");
}

async function suggestClients() {
  const s = session();
  if (!s || !s.admin) return;
  try {
    const { data } = await call("GET", "/tokens");
    const list = $("#clients");
    list.textContent = "";
    const ids = new Set((data.tokens || []).map((t) => t.client_id));
    for (const id of [...ids].sort()) list.append(el("option", { value: id }));
  } catch {
    /* suggestions only */
  }
}

// ---------------------------------------------------------------- permission picture

async function renderPicture(holder, client, signal) {
  holder.append(
    el("h2", { tabindex: "-1", text: "Who may do what to whom" }),
    el("p", { class: "hint", text: "Row extension → column extension. Every cell is the decision engine's answer." }),
  );
  const filter = el("select", { id: "action-filter" },
    el("option", { value: "all", text: "All actions" }),
    Object.entries(ACTIONS).map(([key, a]) => el("option", { value: key, text: a.label })));
  const controls = el("div", { class: "controls" },
    el("label", { for: "action-filter", text: "Action" }), filter,
    el("form", { id: "ext-form", class: "inline", role: "search" },
      el("label", { for: "ext-search", text: "Find extension" }),
      el("input", { id: "ext-search", name: "ext", autocomplete: "off", placeholder: "e.g. 100" }),
      el("button", { type: "submit", text: "Show row and column" })),
    el("button", { type: "button", id: "summary-btn", class: "quiet", text: "Group summary" }));
  const legend = el("ul", { class: "legend", id: "legend", "aria-label": "Legend" },
    el("li", {}, el("span", { class: "swatch yes", text: "✓" }), " allowed"),
    el("li", {}, el("span", { class: "swatch no", text: "·" }), " denied"),
    el("li", {}, el("span", { class: "swatch self", text: "—" }), " itself"),
    el("li", { "data-mark": "grant" }, el("span", { class: "swatch yes grant", text: "✓" }), " allowed by a temporary grant only (temporary_grant)"),
    el("li", { "data-mark": "protected" }, el("span", { class: "swatch no protected", text: "⊘" }), " protected target (protected)"),
    el("li", { class: "hint", text: "All actions: letters name the allowed ones — " +
      Object.values(ACTIONS).map((a) => `${a.short} ${a.label}`).join(", ") }));
  const area = el("div", { id: "matrix-area", class: "scroll" });
  const explain = el("aside", { id: "explain", class: "card", "aria-live": "polite" },
    el("p", { class: "hint", text: "Select a cell (click, or arrow keys then Enter) to see why." }));
  const extra = el("div", { id: "picture-extra" });
  const beside = el("div", { id: "beside" });
  holder.append(controls, legend, el("div", { class: "split" }, area, explain), beside, extra);

  let matrix = null;
  try {
    matrix = (await call("GET", clientPath(client, "call_control_group/matrix"), { signal })).data;
  } catch (error) {
    if (!(error instanceof ApiError) || error.code !== "matrix_too_large") throw error;
    area.append(el("p", { class: "notice", id: "too-large", text: error.message }));
  }
  const showBeside = (shown) => {
    beside.textContent = "";
    beside.append(renderSupervision(shown));
    redrawAt(shown.valid_until, signal);
  };
  const draw = () => {
    if (matrix) drawMatrix(area, matrix, filter.value, explain);
  };
  filter.addEventListener("change", draw);
  draw();
  if (matrix) showBeside(matrix.supervision);
  else showBeside((await showSummary(extra, client, signal)).supervision);
  $("#summary-btn", holder).addEventListener("click", () => showSummary(extra, client, signal));
  $("#ext-form", holder).addEventListener("submit", (event) => {
    event.preventDefault();
    const ext = $("#ext-search", holder).value.trim();
    if (ext) showExtension(extra, client, ext, signal).catch((e) => say(explainError(e), "error"));
  });
}

// A picture with grants holds until the next instant one starts or ends: draw it again then.
function redrawAt(iso, signal) {
  if (!iso) return;
  const delay = new Date(iso).getTime() - Date.now() + 250;
  if (!(delay > 0) || delay > 2 ** 31 - 1) return;
  const timer = setTimeout(() => {
    if (!signal.aborted && current.view === "picture") render();
  }, delay);
  signal.addEventListener("abort", () => clearTimeout(timer), { once: true });
}

// A digit's value, by character code: decoding a cell is then a few array reads.
function decoder({ width, alphabet }) {
  const digit = new Int8Array(128).fill(-1);
  for (let k = 0; k < alphabet.length; k++) digit[alphabet.charCodeAt(k)] = k;
  return (codes, index) => {
    let code = 0;
    for (let k = index * width, end = k + width; k < end; k++) code = code * 64 + digit[codes.charCodeAt(k)];
    return code;
  };
}

const ROW_PX = 24;

// A large table drawn as the window of it that shows: the rows and columns in view, with
// their headers, re-drawn as it scrolls. 200 x 200 extensions are 40,000 cells; drawn whole,
// the browser lays them all out before the first paint and on every change. The table stays
// pinned in its scroll box (position: sticky) over a spacer the size of the whole table; the
// arrow keys move a focus kept as (row, column) indices, scrolling it into view. Screen
// readers get the whole table's size and each cell's place (aria-rowcount, aria-colindex).
//   spec: { id, caption, rows, cols (header names), rowHeadEm, cellEm, cell(i, j) -> HTML of
//           the <td> attributes and text, onCell(td, i, j) for click and Enter, label(i, j) }
function drawGrid(area, spec) {
  const { rows, cols } = spec;
  const rowNames = rows.map(escapeHtml);
  const colNames = cols.map(escapeHtml);
  area.textContent = "";
  area.classList.add("windowed");
  const spacer = el("div", { class: "spacer" });
  area.append(spacer);
  spacer.innerHTML = `<table class="matrix grid" id="${spec.id}" aria-rowcount="${rows.length + 1}"` +
    ` aria-colcount="${cols.length + 1}"${spec.attrs || ""}><caption>${escapeHtml(spec.caption)}</caption>` +
    "<colgroup></colgroup><thead></thead><tbody></tbody></table>";
  const table = spacer.firstElementChild;
  const [colgroup, thead, tbody] = [$("colgroup", table), $("thead", table), $("tbody", table)];
  const em = parseFloat(getComputedStyle(table).fontSize) || 13;
  const headPx = Math.round(spec.rowHeadEm * em);
  const cellPx = Math.round(spec.cellEm * em);
  let rowPx = ROW_PX;
  // The caption and the header row sit above the rows, inside the pinned table.
  const topPx = () => thead.offsetTop + thead.offsetHeight;
  const focusAt = { i: 0, j: rows.length > 1 ? 1 : 0 };
  let window = { r0: -1, c0: -1, nr: 0, nc: 0 };
  const size = () => {
    spacer.style.height = `${topPx() + rows.length * rowPx}px`;
    spacer.style.width = `${headPx + cols.length * cellPx}px`;
  };
  // The first row and column in view: from the scroll position, the last ones when scrolled
  // to the end, and always with (i, j) when given (the cell the keyboard moves to).
  const first = (scroll, max, step, n, count, keep) => {
    let at = scroll >= max - 1 ? count - n : Math.floor(scroll / step);
    if (keep !== undefined) at = Math.min(keep, Math.max(at, keep - n + 1));
    return Math.max(0, Math.min(count - n, at));
  };
  const draw = (keep = {}) => {
    // The pinned table must fit its box (a taller one would be pushed up at the end).
    const nr = Math.min(rows.length, Math.max(1, Math.floor((area.clientHeight - topPx()) / rowPx)));
    const nc = Math.min(cols.length, Math.max(1, Math.floor((area.clientWidth - headPx) / cellPx)));
    const r0 = first(area.scrollTop, area.scrollHeight - area.clientHeight, rowPx, nr, rows.length, keep.i);
    const c0 = first(area.scrollLeft, area.scrollWidth - area.clientWidth, cellPx, nc, cols.length, keep.j);
    if (r0 === window.r0 && c0 === window.c0 && nr === window.nr && nc === window.nc) return;
    const hadFocus = table.contains(document.activeElement);
    window = { r0, c0, nr, nc };
    colgroup.innerHTML = `<col><col span="${nc}">`;
    const [headCol, cellCol] = colgroup.children;
    headCol.style.width = `${headPx}px`;
    cellCol.style.width = `${cellPx}px`;
    table.style.width = `${headPx + nc * cellPx}px`;
    let head = `<tr aria-rowindex="1"><th scope="col" aria-colindex="1">${spec.corner}</th>`;
    for (let j = c0; j < c0 + nc; j++) {
      head += `<th scope="col" aria-colindex="${j + 2}" title="${colNames[j]}">${colNames[j]}</th>`;
    }
    thead.innerHTML = head + "</tr>";
    const body = [];
    for (let i = r0; i < r0 + nr; i++) {
      let row = `<tr aria-rowindex="${i + 2}"><th scope="row" aria-colindex="1" title="${rowNames[i]}">${rowNames[i]}</th>`;
      for (let j = c0; j < c0 + nc; j++) {
        row += `<td aria-colindex="${j + 2}" data-i="${i}" data-j="${j}" tabindex="-1" ${spec.cell(i, j)}</td>`;
      }
      body.push(row + "</tr>");
    }
    tbody.innerHTML = body.join("");
    const target = cellOf(focusAt.i, focusAt.j) || $("td", tbody);
    if (target) {
      target.tabIndex = 0;
      target.setAttribute("aria-label", spec.label(Number(target.dataset.i), Number(target.dataset.j)));
      if (hadFocus) target.focus({ preventScroll: true });
    }
  };
  const cellOf = (i, j) => $(`td[data-i="${i}"][data-j="${j}"]`, tbody);
  const reveal = (i, j) => {
    // Scroll just enough that (i, j) is in the window, drawn whole.
    if (i < window.r0) area.scrollTop = i * rowPx;
    else if (i >= window.r0 + window.nr) area.scrollTop = (i - window.nr + 1) * rowPx;
    if (j < window.c0) area.scrollLeft = j * cellPx;
    else if (j >= window.c0 + window.nc) area.scrollLeft = (j - window.nc + 1) * cellPx;
    kept = { i, j };
    draw(kept);
  };
  const focus = (i, j) => {
    const old = cellOf(focusAt.i, focusAt.j);
    if (old) old.tabIndex = -1;
    focusAt.i = i;
    focusAt.j = j;
    reveal(i, j);
    const td = cellOf(i, j);
    td.tabIndex = 0;
    td.setAttribute("aria-label", spec.label(i, j));
    td.focus({ preventScroll: true });
    return td;
  };
  // The scroll that reveal() causes keeps its cell in view; a scroll by the user does not.
  let kept = {};
  let pending = false;
  area.addEventListener("scroll", () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      draw(kept);
      kept = {};
    });
  });
  table.addEventListener("click", (event) => {
    const td = event.target.closest("td");
    if (!td) return;
    const i = Number(td.dataset.i);
    const j = Number(td.dataset.j);
    spec.onCell(focus(i, j), i, j);
  });
  table.addEventListener("keydown", (event) => {
    const td = event.target.closest("td");
    if (!td) return;
    const i = Number(td.dataset.i);
    const j = Number(td.dataset.j);
    const page = Math.max(1, window.nr - 1);
    const moves = {
      ArrowRight: [i, j + 1], ArrowLeft: [i, j - 1], ArrowDown: [i + 1, j], ArrowUp: [i - 1, j],
      PageDown: [i + page, j], PageUp: [i - page, j], Home: [i, 0], End: [i, cols.length - 1],
    };
    const move = moves[event.key];
    if (move) {
      event.preventDefault();
      const [ni, nj] = move;
      focus(Math.max(0, Math.min(rows.length - 1, ni)), Math.max(0, Math.min(cols.length - 1, nj)));
    } else if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      spec.onCell(td, i, j);
    }
  });
  // The first draw measures the header and a row; the second fits the box to them.
  thead.innerHTML = `<tr><th>${spec.corner}</th></tr>`;
  size();
  draw();
  const row = $("tr", tbody);
  if (row && row.offsetHeight) rowPx = row.offsetHeight;
  size();
  window = { r0: -1 };
  draw();
  return table;
}

function drawMatrix(area, matrix, action, explain) {
  const { extensions, legend, cells } = matrix;
  area.textContent = "";
  if (!extensions.length) {
    area.append(el("p", { id: "empty-picture", text: "The policy names no extension yet." }));
    return;
  }
  const all = action === "all";
  const actions = all ? matrix.actions : [action];
  const shorts = actions.map((a) => ACTIONS[a].short);
  const allowedCode = legend.map((entry) => entry.allowed);
  const markCode = legend.map(markOf);
  const codeAt = decoder(matrix);
  const names = extensions.map(escapeHtml);
  const allowedOf = (i, j) => actions.filter((a) => allowedCode[codeAt(cells[a][i], j)]);
  const longest = Math.max(...extensions.map((ext) => ext.length));
  drawGrid(area, {
    id: "matrix",
    attrs: ` data-action="${escapeHtml(action)}"`,
    caption: `${all ? "All actions" : ACTIONS[action].label} — policy version ${matrix.policy_version}`,
    corner: "from \\ to",
    rows: extensions,
    cols: extensions,
    rowHeadEm: Math.max(5.5, 0.62 * longest + 1.2),
    cellEm: Math.max(all ? 4.2 : 2.4, 0.62 * longest + 1),
    cell: (i, j) => {
      const where = `data-row="${names[i]}" data-col="${names[j]}"`;
      if (i === j) return `class="self" ${where}>—`;
      let allowed = "";
      let text = "";
      let marks = "";
      for (let k = 0; k < actions.length; k++) {
        const code = codeAt(cells[actions[k]][i], j);
        const mark = markCode[code];
        if (mark && !marks.includes(mark)) marks += marks ? " " + mark : mark;
        if (allowedCode[code]) {
          allowed += allowed ? " " + actions[k] : actions[k];
          text += shorts[k];
        }
      }
      const shown = all ? text || (marks.includes("protected") ? "⊘" : "·") : allowed ? "✓" : marks ? "⊘" : "·";
      return `class="${allowed ? "yes" : "no"}${marks ? " " + marks : ""}" ${where} data-allowed="${allowed}"` +
        ` data-marks="${marks}">${shown}`;
    },
    label: (i, j) => {
      const [row, col] = [extensions[i], extensions[j]];
      if (i === j) return `${row} itself`;
      const allowed = allowedOf(i, j);
      const marked = actions.map((a) => legend[codeAt(cells[a][i], j)]).filter(markOf)
        .map((entry) => entry.reason === "protected" ? "protected target" : "by a temporary grant");
      const note = marked.length ? ` (${[...new Set(marked)].join(", ")})` : "";
      return all
        ? `${row} to ${col}: ${allowed.map((a) => ACTIONS[a].label).join(", ") || "nothing allowed"}${note}`
        : `${row} ${ACTIONS[action].label} ${col}: ${allowed.length ? "allowed" : "denied"}${note}`;
    },
    onCell: (td, i, j) => {
      explain.textContent = "";
      explain.append(el("h3", { text: `${extensions[i]} → ${extensions[j]}` }));
      const list = el("dl", { id: "explanation" });
      for (const a of matrix.actions) {
        const entry = legend[codeAt(cells[a][i], j)];
        const mark = markOf(entry);
        const grant = grantText(entry);
        list.append(el("dt", { text: ACTIONS[a].label }),
          el("dd", { "data-action": a, "data-allowed": String(entry.allowed), "data-reason": entry.reason,
            class: (entry.allowed ? "yes" : "no") + (mark ? " " + mark : "") },
            el("strong", { text: entry.allowed ? "allowed" : "denied" }), " ",
            el("code", { text: entry.reason }),
            entry.group ? ` · granted by group ${entry.group}` : "",
            grant ? ` · ${grant}` : "",
            el("span", { class: "hint", text: ` — ${REASONS[entry.reason] || ""}` })));
      }
      explain.append(list);
    },
  });
}

async function showSummary(extra, client, signal) {
  const { data } = await call("GET", clientPath(client, "call_control_group/matrix/summary"), { signal });
  extra.textContent = "";
  const select = el("select", { id: "summary-action" },
    Object.entries(ACTIONS).map(([key, a]) => el("option", { value: key, text: a.label, selected: key === "eavesdrop" })));
  const table = el("div", { class: "scroll", id: "summary-area" });
  const names = data.groups.map(escapeHtml);
  const longest = Math.max(4, ...data.groups.map((g) => g.length));
  const note = el("p", { class: "hint", id: "summary-cell", "aria-live": "polite" });
  const widest = String(Math.max(0, ...data.pairs.map((row) => Math.max(0, ...row)))).length;
  const draw = () => {
    const a = select.value;
    const allowedOf = data.allowed[a];
    drawGrid(table, {
      id: "summary",
      caption: `${ACTIONS[a].label}: members of the row group to members of the column group (allowed/pairs)`,
      corner: "from \\ to",
      rows: data.groups,
      cols: data.groups,
      rowHeadEm: Math.max(6, 0.62 * longest + 1.2),
      cellEm: Math.max(0.62 * (2 * widest + 1) + 1, 0.62 * longest + 1),
      cell: (i, j) => {
        const pairs = data.pairs[i][j];
        const allowed = allowedOf[i][j];
        const kind = !pairs ? "self" : allowed === pairs ? "yes" : allowed ? "some" : "no";
        return `class="${kind}" data-from="${names[i]}" data-to="${names[j]}" title="${allowed} of ${pairs} pairs">` +
          (pairs ? `${allowed}/${pairs}` : "—");
      },
      label: (i, j) => `${data.groups[i]} to ${data.groups[j]}: ${allowedOf[i][j]} of ${data.pairs[i][j]} pairs allowed`,
      onCell: (td, i, j) => {
        note.textContent = `${data.groups[i]} → ${data.groups[j]}: ${ACTIONS[a].label} allowed for ` +
          `${allowedOf[i][j]} of the ${data.pairs[i][j]} pairs of their members.`;
      },
    });
  };
  select.addEventListener("change", draw);
  extra.append(el("h3", { text: "Group summary" }),
    el("div", { class: "controls" }, el("label", { for: "summary-action", text: "Action" }), select), table, note);
  draw();
  return data;
}

async function showExtension(extra, client, ext, signal) {
  const path = clientPath(client, `call_control_group/matrix/extension/${encodeURIComponent(ext)}`);
  const { data } = await call("GET", path, { signal });
  extra.textContent = "";
  const codeAt = decoder(data);
  const others = data.others.map(escapeHtml);
  const longest = Math.max(4, ...data.others.map((o) => o.length));
  const labels = data.actions.map((a) => ACTIONS[a].label);
  const note = el("p", { class: "hint", id: "ext-cell", "aria-live": "polite" });
  const holders = [el("div", { class: "scroll" }), el("div", { class: "scroll" })];
  extra.append(el("h3", { id: "ext-title", text: `Extension ${data.extension}${data.known ? "" : " (not named by the policy)"}` }),
    el("div", { class: "split even" }, ...holders), note);
  // 20,000 others are 100,000 cells a side: drawn as the window in view (drawGrid).
  const table = (holder, title, id, side) => {
    const entryOf = (i, j) => data.legend[codeAt(data[side][data.actions[j]], i)];
    drawGrid(holder, {
      id,
      caption: title,
      corner: "extension",
      rows: data.others,
      cols: labels,
      rowHeadEm: Math.max(7, 0.62 * longest + 1.2),
      cellEm: 8, // a header too long for it is cut, and whole in its title
      cell: (i, j) => {
        const entry = entryOf(i, j);
        const mark = markOf(entry);
        return `class="${entry.allowed ? "yes" : "no"}${mark ? " " + mark : ""}" data-action="${data.actions[j]}"` +
          ` data-other="${others[i]}" data-allowed="${entry.allowed}" data-reason="${escapeHtml(entry.reason)}"` +
          ` title="${escapeHtml(describe(entry))}">${entry.allowed ? "✓" : mark ? "⊘" : "·"}`;
      },
      label: (i, j) => `${labels[j]}, ${data.others[i]}: ${describe(entryOf(i, j))}`,
      onCell: (td, i, j) => {
        const entry = entryOf(i, j);
        note.textContent = `${labels[j]}, ${data.others[i]}: ${describe(entry)}` +
          (REASONS[entry.reason] ? ` — ${REASONS[entry.reason]}` : "");
      },
    });
  };
  table(holders[0], `What ${data.extension} may do to…`, "ext-row", "row");
  table(holders[1], `Who may do what to ${data.extension}`, "ext-column", "column");
}

// ---------------------------------------------------------------- policy editor

function locate(text, loc) {
  // The offset of the key a 422 detail's loc names (best effort: keys in order).
  let at = 0;
  for (const part of loc) {
    if (typeof part !== "string" || part === "body") continue;
    const found = text.indexOf(JSON.stringify(part), at);
    if (found < 0) break;
    at = found;
  }
  return at;
}

function lineOf(text, offset) {
  return text.slice(0, offset).split("\n").length;
}

async function renderEditor(holder, client, signal) {
  const policyPath = clientPath(client, "call_control_group/");
  const loaded = await call("GET", policyPath, { signal });
  let base = { doc: loaded.data, etag: loaded.headers.get("ETag") };
  const version = () => Number(JSON.parse(base.etag));
  const title = el("h2", { tabindex: "-1", text: `Edit the policy (version ${version()})` });
  const textarea = el("textarea", { id: "doc", spellcheck: "false", rows: "22", "aria-describedby": "doc-hint errors" });
  textarea.value = pretty(base.doc);
  const errors = el("div", { id: "errors", role: "alert" });
  const review = el("div", { id: "review" });
  const previewBtn = el("button", { type: "button", id: "preview-btn", text: "Check and preview" });
  const saveBtn = el("button", { type: "button", id: "save-btn", class: "danger", hidden: true, text: "Save…" });
  holder.append(title,
    el("label", { for: "doc", text: "Policy document (JSON)" }),
    el("p", { id: "doc-hint", class: "hint", text: "Nothing is stored until you confirm. Saving sends If-Match: a change made meanwhile by someone else is refused." }),
    textarea, el("div", { class: "actions" }, previewBtn, saveBtn), errors, review);

  let checked = null;
  textarea.addEventListener("input", () => {
    checked = null;
    saveBtn.hidden = true;
  });
  const showErrors = (error) => {
    errors.textContent = "";
    errors.append(el("p", { class: "error", text: explainError(error) }));
    if (error.details && error.details.length) {
      const list = el("ul", { class: "errors", id: "error-list" });
      for (const detail of error.details) {
        const loc = detail.loc || [];
        const where = loc.filter((p) => p !== "body").join(" › ") || "(document)";
        const offset = locate(textarea.value, loc);
        list.append(el("li", { "data-loc": JSON.stringify(loc) },
          el("button", { type: "button", class: "link", text: `${where} (line ${lineOf(textarea.value, offset)})`,
            onclick: () => {
              textarea.focus();
              const key = loc.filter((p) => typeof p === "string" && p !== "body").pop();
              textarea.setSelectionRange(offset, offset + (key ? JSON.stringify(key).length : 0));
            } }),
          ": ", el("span", { class: "message", text: detail.message || JSON.stringify(detail) })));
      }
      errors.append(list);
    }
  };

  previewBtn.addEventListener("click", async () => {
    errors.textContent = "";
    review.textContent = "";
    saveBtn.hidden = true;
    const text = textarea.value;
    let parsed;
    try {
      parsed = JSON.parse(text);
    } catch (error) {
      errors.append(el("p", { class: "error", text: `Not JSON: ${error.message}` }));
      return;
    }
    try {
      const { data } = await call("POST", clientPath(client, "call_control_group/preview"), { body: text, signal });
      checked = { text, impact: data };
      const diff = el("div", { id: "diff" });
      const changed = renderDiff(diffLines(pretty(base.doc), pretty(parsed)), diff);
      review.append(el("h3", { text: `Changes to the document (${changed} line(s))` }), diff,
        el("h3", { text: "Impact" }), renderImpact(data));
      saveBtn.textContent = `Save as version ${version() + 1}…`;
      saveBtn.hidden = false;
      saveBtn.focus();
    } catch (error) {
      showErrors(error);
    }
  });

  saveBtn.addEventListener("click", async () => {
    if (!checked || checked.text !== textarea.value) return;
    const ok = await confirmDialog(`Save version ${version() + 1}?`, [
      el("p", { text: impactSentence(checked.impact) }),
      el("p", { text: "This takes effect for the very next call." })]);
    if (!ok) return;
    try {
      const saved = await call("PUT", policyPath, { body: checked.text, headers: { "If-Match": base.etag }, signal });
      base = { doc: saved.data, etag: saved.headers.get("ETag") };
      textarea.value = pretty(base.doc);
      title.textContent = `Edit the policy (version ${version()})`;
      review.textContent = "";
      saveBtn.hidden = true;
      checked = null;
      say(`Saved: version ${version()} is in force.`, "ok");
    } catch (error) {
      if (error.status === 412) return stale(error);
      showErrors(error);
    }
  });

  const stale = (error) => {
    const now = error.headers && error.headers.get("ETag");
    errors.textContent = "";
    saveBtn.hidden = true;
    const box = el("div", { class: "notice", id: "stale" },
      el("p", { class: "error", text: `Not saved: someone else saved version ${now ? JSON.parse(now) : "?"} while you edited version ${version()}. Your text is kept here; nothing was stored.` }));
    const seeBtn = el("button", { type: "button", id: "see-changes", text: "See what changed meanwhile" });
    const stalediff = el("div", { id: "stale-diff" });
    seeBtn.addEventListener("click", async () => {
      const fresh = await call("GET", policyPath, { signal });
      renderDiff(diffLines(pretty(base.doc), pretty(fresh.data)), stalediff);
      const rebase = el("button", { type: "button", id: "rebase", text: `Edit on top of version ${JSON.parse(fresh.headers.get("ETag"))} (keeps your text)` });
      rebase.addEventListener("click", () => {
        base = { doc: fresh.data, etag: fresh.headers.get("ETag") };
        title.textContent = `Edit the policy (version ${version()})`;
        box.remove();
        say("Check and preview again before saving.");
        previewBtn.focus();
      });
      stalediff.append(rebase);
    });
    box.append(seeBtn, stalediff);
    errors.append(box);
    seeBtn.focus();
  };
}

function impactSentence(impact) {
  const sum = (counts) => Object.values(counts).reduce((a, b) => a + b, 0);
  return `${sum(impact.became_allowed)} decision(s) become allowed, ${sum(impact.became_denied)} become denied;` +
    ` ${impact.sessions_ended.length} live session(s) and ${impact.replacements_ended.length} replacement(s) would end.`;
}

function sideText(side) {
  return side.reason + (side.grant_ids && side.grant_ids.length ? ` (grant ${side.grant_ids.join(", ")})` : "");
}

function renderImpact(impact) {
  const box = el("div", { id: "impact" }, el("p", { id: "impact-summary", text: impactSentence(impact) }));
  if (impact.supervision_version) {
    box.append(el("p", { class: "hint", id: "impact-beside",
      text: "Judged now with the client's protected extensions and grants (a grant's groups as the new document has them)." }));
  }
  const counts = el("table", { class: "plain" }, el("thead", {}, el("tr", {},
    el("th", { scope: "col", text: "Action" }), el("th", { scope: "col", text: "become allowed" }),
    el("th", { scope: "col", text: "become denied" }))),
  el("tbody", {}, Object.keys(ACTIONS).map((a) => el("tr", {}, el("th", { scope: "row", text: ACTIONS[a].label }),
    el("td", { text: String(impact.became_allowed[a] || 0) }), el("td", { text: String(impact.became_denied[a] || 0) })))));
  box.append(counts);
  if (impact.changes.length) {
    box.append(el("ul", { id: "impact-changes", class: "changes" }, impact.changes.map((c) =>
      el("li", { class: c.after.allowed ? "yes" : "no", "data-action": c.action, "data-ext": c.ext, "data-target": c.target },
        `${c.ext} → ${c.target}: ${ACTIONS[c.action].label} becomes ${c.after.allowed ? "allowed" : "denied"} `,
        el("code", { text: `${sideText(c.before)} → ${sideText(c.after)}` })))));
    if (impact.truncated) box.append(el("p", { class: "hint", text: "Only the first changes are listed; the counts are complete." }));
  }
  if (impact.sessions_ended.length) {
    box.append(el("h4", { text: "Live sessions this ends" }), el("ul", { id: "impact-sessions" }, impact.sessions_ended.map((s) =>
      el("li", { "data-reason": s.reason, text: `${s.listener} ${s.action === "whisper" ? "whispering to" : "listening to"} ${s.target}` +
        ` (${s.reason}${REASONS[s.reason] ? `: ${REASONS[s.reason]}` : ""})${s.ending ? " — already ending" : ""}` }))));
  }
  if (impact.replacements_ended.length) {
    box.append(el("h4", { text: "Replacements this ends" }), el("ul", { id: "impact-replacements" }, impact.replacements_ended.map((r) =>
      el("li", { text: `phone ${r.phone} acting as ${r.to_ext} (${r.reason})` }))));
  }
  return box;
}

// ---------------------------------------------------------------- history

async function renderHistory(holder, client, signal) {
  const historyPath = clientPath(client, "call_control_group/history");
  const versions = [];
  let next = null;
  const load = async () => {
    const query = next ? `?limit=20&before=${next}` : "?limit=20";
    const { data } = await call("GET", historyPath + query, { signal });
    versions.push(...data.versions);
    next = data.next_before || null;
  };
  await load();
  holder.append(el("h2", { tabindex: "-1", text: "History" }));
  if (!versions.length) {
    holder.append(el("p", { id: "no-history", text: "No version stored yet: the default document applies." }));
    return;
  }
  const table = el("table", { class: "plain", id: "history" });
  const diff = el("div", { id: "history-diff" });
  const more = el("button", { type: "button", id: "older", class: "quiet", text: "Older versions" });
  const picked = { a: versions[1] ? versions[1].version : versions[0].version, b: versions[0].version };
  const byVersion = (v) => versions.find((x) => x.version === v);
  const drawDiff = () => {
    const a = byVersion(picked.a);
    const b = byVersion(picked.b);
    diff.textContent = "";
    diff.append(el("h3", { text: `Version ${a.version} → version ${b.version}` }));
    const inner = el("div");
    renderDiff(diffLines(pretty(a.document), pretty(b.document)), inner);
    diff.append(inner);
  };
  const draw = () => {
    table.textContent = "";
    table.append(el("caption", { text: "Pick two versions to compare; restoring stores a copy as a new version." }),
      el("thead", {}, el("tr", {}, ["Version", "When", "By", "From", "To", ""].map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, versions.map((v, index) => el("tr", { "data-version": String(v.version) },
        el("th", { scope: "row", text: String(v.version) }), el("td", { text: when(v.changed_at) }), el("td", { text: v.changed_by }),
        el("td", {}, el("input", { type: "radio", name: "from", "aria-label": `compare from version ${v.version}`, checked: picked.a === v.version,
          onchange: () => { picked.a = v.version; drawDiff(); } })),
        el("td", {}, el("input", { type: "radio", name: "to", "aria-label": `compare to version ${v.version}`, checked: picked.b === v.version,
          onchange: () => { picked.b = v.version; drawDiff(); } })),
        el("td", {}, index === 0 && !next && versions.length === 1 ? "" : el("button", { type: "button", class: "quiet restore",
          "data-version": String(v.version), text: `Restore ${v.version}…`, onclick: () => restore(v) }))))));
  };
  const restore = async (v) => {
    const policyPath = clientPath(client, "call_control_group/");
    try {
      const currentDoc = await call("GET", policyPath, { signal });
      const etag = currentDoc.headers.get("ETag");
      const { data } = await call("POST", clientPath(client, "call_control_group/preview"), { body: v.document, signal });
      const ok = await confirmDialog(`Restore version ${v.version} as version ${Number(JSON.parse(etag)) + 1}?`, [
        el("p", { text: impactSentence(data) }), renderImpact(data)]);
      if (!ok) return;
      await call("PUT", policyPath, { body: v.document, headers: { "If-Match": etag }, signal });
      say(`Version ${v.version} restored as version ${Number(JSON.parse(etag)) + 1}.`, "ok");
      render();
    } catch (error) {
      say(error.status === 412 ? "Someone saved a version meanwhile: look again, then restore." : explainError(error), "error");
    }
  };
  more.addEventListener("click", async () => {
    await load();
    draw();
    more.hidden = !next;
  });
  more.hidden = !next;
  draw();
  drawDiff();
  holder.append(el("div", { class: "scroll" }, table), more, diff);
}

// ---------------------------------------------------------------- live

async function renderLive(holder, client, signal) {
  holder.append(el("h2", { tabindex: "-1", text: "Live" }));
  const state = el("p", { id: "live-state", class: "hint", text: "Connecting…" });
  const sessions = el("div", { id: "sessions" });
  const replacements = el("div", { id: "replacements" });
  holder.append(state, el("h3", { text: "Listen and whisper sessions" }), sessions,
    el("h3", { text: "Phones acting as another extension" }), replacements);
  const draw = (live) => {
    state.textContent = `Policy version ${live.policy_version} · Manager: ${live.ami} · updated ${new Date().toLocaleTimeString()}`;
    sessions.textContent = "";
    if (!live.sessions.length) sessions.append(el("p", { class: "empty", text: "Nobody is listening or whispering now." }));
    else sessions.append(el("table", { class: "plain", id: "sessions-table" },
      el("thead", {}, el("tr", {}, ["", "Listener", "Target", "Since", "Allowed by version", "PBX", "Channel", ""].map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, live.sessions.map((s) => el("tr", { "data-uniqueid": s.uniqueid, "data-pbx": s.pbx },
        el("td", { text: s.action === "whisper" ? "Whisper" : "Listen" }), el("th", { scope: "row", text: s.listener }),
        el("td", { text: s.target }), el("td", { text: when(s.since) }), el("td", { text: String(s.policy_version) }),
        el("td", { text: s.pbx }), el("td", { text: s.channel }),
        el("td", {}, el("button", { type: "button", class: "danger end", disabled: s.ending, "aria-label": `End ${s.listener} ${s.action === "whisper" ? "whispering to" : "listening to"} ${s.target}`,
          text: s.ending ? "Ending…" : "End…", onclick: () => end(s) })))))));
    replacements.textContent = "";
    if (!live.replacements.length) replacements.append(el("p", { class: "empty", text: "No phone is acting as another extension." }));
    else replacements.append(el("table", { class: "plain", id: "replacements-table" },
      el("thead", {}, el("tr", {}, ["Phone", "Acting as", "Asked as", "Since", ""].map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, live.replacements.map((r) => el("tr", { "data-phone": r.phone },
        el("th", { scope: "row", text: r.phone }), el("td", { text: r.to_ext }), el("td", { text: r.from_ext }), el("td", { text: when(r.since) }),
        el("td", {}, el("button", { type: "button", class: "restore", "aria-label": `Restore phone ${r.phone}`, text: "Restore…", onclick: () => restore(r) })))))));
  };
  const end = async (s) => {
    const ok = await confirmDialog("End this session?", el("p", {
      text: `${s.listener} is ${s.action === "whisper" ? "whispering to" : "listening to"} ${s.target} on PBX ${s.pbx}. The listener is hung up now; the audit log records that you did it.` }));
    if (!ok) return;
    try {
      await call("POST", clientPath(client, `live/${encodeURIComponent(s.pbx)}/${encodeURIComponent(s.uniqueid)}/end`), { signal });
      say(`Ended: ${s.listener} → ${s.target}.`, "ok");
    } catch (error) {
      say(explainError(error), "error");
    }
  };
  const restore = async (r) => {
    const ok = await confirmDialog("Restore this phone?", el("p", { text: `Phone ${r.phone} stops acting as ${r.to_ext} and is itself again.` }));
    if (!ok) return;
    try {
      await call("DELETE", clientPath(client, `replacements/${encodeURIComponent(r.phone)}`), { signal });
      say(`Phone ${r.phone} restored.`, "ok");
    } catch (error) {
      say(explainError(error), "error");
    }
  };
  draw((await call("GET", clientPath(client, "live"), { signal })).data);
  const follow = async () => {
    for (let attempt = 0; !signal.aborted; attempt++) {
      try {
        await stream(clientPath(client, "live/events"), (event, data) => event === "snapshot" && draw(data), signal);
      } catch (error) {
        if (signal.aborted) return;
        state.textContent = `Live updates interrupted (${explainError(error)}); retrying…`;
      }
      await new Promise((resolve) => setTimeout(resolve, Math.min(5000, 500 * (attempt + 1))));
    }
  };
  follow();
}

// ---------------------------------------------------------------- audit

async function renderAudit(holder, client, signal) {
  holder.append(el("h2", { tabindex: "-1", text: "Audit" }));
  const form = el("form", { id: "audit-form", class: "controls wrap" },
    el("label", { for: "f-ext", text: "Extension" }), el("input", { id: "f-ext", name: "ext", autocomplete: "off" }),
    el("label", { for: "f-action", text: "Action" }), el("select", { id: "f-action", name: "action" },
      el("option", { value: "", text: "any" }), ["pickup", "eavesdrop", "whisper", "replace", "restore"].map((a) => el("option", { value: a, text: a }))),
    el("label", { for: "f-decision", text: "Decision" }), el("select", { id: "f-decision", name: "decision" },
      el("option", { value: "", text: "any" }), el("option", { value: "allow", text: "allow" }), el("option", { value: "deny", text: "deny" })),
    el("label", { for: "f-since", text: "From" }), el("input", { id: "f-since", name: "since", type: "datetime-local" }),
    el("label", { for: "f-until", text: "Until" }), el("input", { id: "f-until", name: "until", type: "datetime-local" }),
    el("button", { type: "submit", text: "Show" }));
  const list = el("div", { id: "audit-list" });
  const more = el("button", { type: "button", id: "audit-older", class: "quiet", hidden: true, text: "Older events" });
  holder.append(form, list, more);
  const PAGE = 100;
  let shown = [];
  let cursor = null;
  const fetchPage = async () => {
    const f = new FormData(form);
    const query = new URLSearchParams({ limit: String(PAGE) });
    if (f.get("ext")) query.set("ext", f.get("ext"));
    if (f.get("action")) query.set("action", f.get("action"));
    if (f.get("since")) query.set("since", new Date(f.get("since")).toISOString());
    const until = cursor || (f.get("until") ? new Date(f.get("until")).toISOString() : null);
    if (until) query.set("until", until);
    const { data } = await call("GET", clientPath(client, `audit?${query}`), { signal });
    const seen = new Set(shown.map((e) => JSON.stringify(e)));
    const fresh = data.events.filter((e) => !seen.has(JSON.stringify(e)));
    shown.push(...fresh);
    more.hidden = data.events.length < PAGE;
    if (data.events.length) cursor = data.events[data.events.length - 1].time;
    draw(f.get("decision"));
  };
  const draw = (decision) => {
    const events = decision ? shown.filter((e) => e.decision === decision) : shown;
    list.textContent = "";
    if (!events.length) {
      list.append(el("p", { class: "empty", id: "audit-empty", text: "No event matches." }));
      return;
    }
    list.append(el("table", { class: "plain", id: "audit-table" },
      el("caption", { text: `${events.length} event(s), newest first` }),
      el("thead", {}, el("tr", {}, ["Time", "Action", "Extension", "Target", "Decision", "Reason", "Version", "Session"].map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, events.map((e) => el("tr", { class: e.decision === "allow" ? "yes" : "no" },
        el("td", { text: when(e.time) }), el("td", { text: e.action }), el("td", { text: e.ext }), el("td", { text: e.target || "" }),
        el("td", { text: e.decision }), el("td", {}, el("code", { text: e.reason })), el("td", { text: String(e.policy_version) }),
        el("td", { text: e.end_reason ? `ended ${when(e.ended)}: ${e.end_reason}${e.ended_by ? ` by ${e.ended_by}` : ""}` : e.started ? `since ${when(e.started)}` : "" }))))));
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    shown = [];
    cursor = null;
    fetchPage().catch((error) => say(explainError(error), "error"));
  });
  more.addEventListener("click", () => fetchPage().catch((error) => say(explainError(error), "error")));
  await fetchPage();
}

const VIEW_RENDERERS = {
  picture: renderPicture,
  editor: renderEditor,
  history: renderHistory,
  live: renderLive,
  audit: renderAudit,
};

$("#signin").addEventListener("submit", signIn);
$("#signout").addEventListener("click", () => {
  saveSession(null);
  location.hash = "";
  render();
});
$("#switch-client").addEventListener("click", () => {
  location.hash = "";
  render();
  suggestClients();
  $("#client").focus();
});
window.addEventListener("hashchange", render);
render();
suggestClients();
