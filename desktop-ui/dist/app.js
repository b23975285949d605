// The staff app's page: renders what the Rust commands return and forwards clicks and
// keys to them. No state of its own beyond what is on screen (selection, open tab).
"use strict";
const { invoke } = window.__TAURI__.core;
const { listen } = window.__TAURI__.event;

const $ = (sel) => document.querySelector(sel);
let session = null;      // {box_url, name, role}
let board = null;        // last Board from Rust
let selected = null;     // order id selected with the keyboard
let tab = "kitchen";
let menuItems = [];

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function toast(text, kind = "info") {
  const box = el("div", { class: `toast ${kind}` }, text);
  $("#toasts").append(box);
  setTimeout(() => box.remove(), 5000);
}

function applyTexts() {
  document.documentElement.lang = LANG === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-t]").forEach((n) => { n.textContent = t(n.dataset.t); });
  document.title = t("app_title");
}

// Integer fen as yuan, with integer arithmetic only: "¥12.50", "−¥0.30" (the students'
// page has the same helper); `symbol` "" for a form field.
const yuan = (fen, symbol = "¥") => {
  const n = Math.round(Number(fen) || 0);
  const a = Math.abs(n);
  return `${n < 0 ? "−" : ""}${symbol}${Math.trunc(a / 100)}.${String(a % 100).padStart(2, "0")}`;
};
const name = (o) => (LANG === "zh" ? o.name_zh : o.name_en);

// ---------- kitchen ----------
function cardView(card) {
  const mins = Math.floor(card.age_s / 60), secs = card.age_s % 60;
  const lines = card.lines.map((l) => el("li", {},
    el("b", {}, l.quantity + "× "), name(l),
    (LANG === "zh" ? l.options_zh : l.options_en).length
      ? el("span", { class: "options" }, " (" + (LANG === "zh" ? l.options_zh : l.options_en).join(", ") + ")") : null,
    ...l.allergens.map((a) => el("span", { class: "allergen" }, allergenName(a)))));
  let action = null;
  if (card.recall_ms !== null) {
    action = el("button", { class: "recall", onclick: (ev) => { ev.stopPropagation(); doRecall(card.id); } },
      t("recall", { s: Math.ceil(card.recall_ms / 1000) }));
  } else if (card.next_event) {
    action = el("button", { class: "bump", onclick: (ev) => { ev.stopPropagation(); doBump(card.id); } }, t("bump_" + card.next_event));
  } else if (card.state === "ready") {
    action = el("p", { class: "await" }, t("await_pickup"));
  }
  return el("article", {
    class: "card" + (card.overdue ? " overdue" : "") + (card.id === selected ? " selected" : "")
      + (card.recall_ms !== null ? " pending" : ""),
    "data-id": card.id, "data-number": card.pickup_number, "data-state": card.state,
    onclick: () => { selected = card.id; renderBoard(); },
  },
    el("header", {},
      el("span", { class: "number" }, "#" + card.pickup_number),
      card.unpaid ? el("span", { class: "badge unpaid" }, t("unpaid")) : null,
      card.overdue ? el("span", { class: "badge overdue" }, t("overdue")) : null,
      card.late_min ? el("span", { class: "badge late", "data-late": card.late_min }, t("late", { min: card.late_min })) : null,
      el("span", { class: "age" }, t("minutes", { min: mins, s: secs }))),
    card.allergens.length ? el("div", { class: "allergens" }, "⚠ " + card.allergens.map(allergenName).join(" · ")) : null,
    card.pickup_slot ? el("div", { class: "slot" }, card.pickup_slot) : null,
    card.promised_at ? el("div", { class: "promise" }, t("promised", { time: hhmm(card.promised_at) })) : null,
    el("ul", {}, lines),
    action);
}

// "HH:MM" on this terminal's clock (the canteen's).
function hhmm(iso) {
  const d = new Date(iso);
  return isNaN(d.getTime()) ? String(iso) : d.toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit", hour12: false });
}

function renderBoard() {
  if (!board) return;
  for (const col of board.columns) {
    const holder = document.querySelector(`[data-column="${col.column}"] .cards`);
    holder.replaceChildren(...(col.cards.length ? col.cards.map(cardView) : [el("p", { class: "empty" }, t("nothing_here"))]));
  }
}

async function refreshBoard(fetch) {
  try {
    board = await invoke(fetch ? "reload" : "board");
    renderBoard();
  } catch (e) { if (fetch) toast(errorText(e), "error"); }
}

async function doBump(id) {
  try { board = await invoke("bump", { orderId: id }); renderBoard(); }
  catch (e) { toast(errorText(e), "error"); }
}
async function doRecall(id) {
  try { board = await invoke("recall", { orderId: id }); renderBoard(); }
  catch (e) { toast(errorText(e), "error"); }
}

function allCards() { return board ? board.columns.map((c) => c.cards) : [[], [], []]; }
function position(id) {
  const cols = allCards();
  for (let c = 0; c < cols.length; c++) {
    const r = cols[c].findIndex((k) => k.id === id);
    if (r >= 0) return [c, r];
  }
  return null;
}
function selectAt(c, r) {
  const cols = allCards();
  c = Math.max(0, Math.min(cols.length - 1, c));
  if (!cols[c].length) return;
  r = Math.max(0, Math.min(cols[c].length - 1, r));
  selected = cols[c][r].id;
  renderBoard();
}
document.addEventListener("keydown", (ev) => {
  if (tab !== "kitchen" || !session || ev.target.tagName === "INPUT") return;
  const pos = selected ? position(selected) : null;
  const [c, r] = pos || [0, -1];
  switch (ev.key) {
    case "ArrowDown": selectAt(c, r + 1); break;
    case "ArrowUp": selectAt(c, r - 1); break;
    case "ArrowLeft": selectAt(c - 1, 0); break;
    case "ArrowRight": selectAt(c + 1, 0); break;
    case "1": case "2": case "3": selectAt(Number(ev.key) - 1, 0); break;
    case "Enter": if (pos) doBump(selected); break;
    case "Escape": case "Backspace": if (pos) doRecall(selected); break;
    default: return;
  }
  ev.preventDefault();
});

// A short two-tone chime from WebAudio: no sound file to ship.
function chime() {
  try {
    const ctx = new AudioContext();
    [880, 1320].forEach((f, i) => {
      const o = ctx.createOscillator(), g = ctx.createGain();
      o.frequency.value = f; g.gain.value = 0.15;
      o.connect(g).connect(ctx.destination);
      o.start(ctx.currentTime + i * 0.18); o.stop(ctx.currentTime + i * 0.18 + 0.15);
    });
    setTimeout(() => ctx.close(), 1000);
  } catch (_) { /* no audio device: the toast still shows */ }
}

// ---------- a student taking more than their share ----------
async function studentAction(action) {
  const out = $("#student-result");
  try {
    const s = await invoke("student_action", {
      number: $("#student-number").value, action, reason: $("#block-reason").value,
    });
    out.className = "ok";
    out.textContent = t(action === "unblock" ? "student_unblocked" : action === "block" ? "student_blocked" : "student_cancelled",
      { number: s.student_number, n: s.cancelled.length });
    if (s.cancelled.length) refreshBoard(false);
  } catch (e) {
    out.className = "error";
    out.textContent = errorText(e);
  }
}
$("#cancel-unpaid-btn").addEventListener("click", () => studentAction("cancel_unpaid"));
$("#block-btn").addEventListener("click", () => studentAction("block"));
$("#unblock-btn").addEventListener("click", () => studentAction("unblock"));

// ---------- hand-over ----------
$("#pickup-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = $("#pickup-code");
  const out = $("#pickup-result");
  try {
    const order = await invoke("hand_over", { code: input.value });
    const items = order.lines.map((l) => l.quantity + "× " + name(l)).join(", ");
    out.className = "ok";
    out.textContent = t("picked_up", { n: order.pickup_number, items });
    refreshBoard(false);
  } catch (e) {
    out.className = "error";
    out.textContent = errorText(e);
  }
  input.value = "";
  input.focus();
});

// ---------- stock ----------
function renderStock(rows) {
  $("#stock-rows").replaceChildren(...rows.map((r) => {
    const count = el("input", { type: "number", min: "1", value: "10", class: "count", "aria-label": t("restock_count") });
    const act = (action) => invoke("stock_action", { itemId: r.id, action }).then(renderStock, (e) => toast(errorText(e), "error"));
    return el("tr", { class: r.sold_out ? "sold-out" : "" , "data-item": r.id},
      el("td", {}, name(r)),
      el("td", {}, r.remaining === null ? t("unlimited") : String(r.remaining)),
      el("td", {}, r.sold_out ? t("sold_out") : t("on_sale")),
      el("td", {},
        r.sold_out
          ? el("button", { onclick: () => act({ action: "back" }) }, t("mark_back"))
          : el("button", { onclick: () => act({ action: "sold_out" }) }, t("mark_sold_out")),
        count,
        el("button", { onclick: () => act({ action: "restock", count: Number(count.value) }) }, t("restock"))));
  }));
}
async function loadStock() {
  try { renderStock(await invoke("stock")); } catch (e) { toast(errorText(e), "error"); }
}

// ---------- summary ----------
async function loadSummary() {
  try {
    const s = await invoke("summary");
    const rows = (s.items || []).map((i) => el("tr", {},
      el("td", {}, LANG === "zh" ? i.name_zh : i.name_en), el("td", {}, String(i.quantity)),
      el("td", {}, yuan(i.revenue_fen ?? i.total_fen ?? i.line_total_fen ?? 0))));
    $("#summary").replaceChildren(
      el("h2", {}, t("tab_summary") + " " + s.service_day),
      el("dl", {},
        el("dt", {}, t("orders")), el("dd", {}, String(s.orders)),
        el("dt", {}, t("revenue")), el("dd", {}, yuan(s.revenue_fen)),
        el("dt", {}, t("refunds")), el("dd", {}, yuan(s.refunds_fen)),
        el("dt", {}, t("cancelled")), el("dd", {}, String(s.cancelled)),
        el("dt", {}, t("expired")), el("dd", {}, String(s.expired)),
        el("dt", {}, t("unclaimed")), el("dd", {}, String(s.unclaimed))),
      el("h3", {}, t("per_item")),
      el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, t("item")), el("th", {}, t("quantity")), el("th", {}, t("amount")))),
        el("tbody", {}, rows)));
  } catch (e) { toast(errorText(e), "error"); }
}
$("#print-btn").addEventListener("click", () => window.print());

// ---------- menu (managers) ----------
function conflictEdit(field, item, value) {
  switch (field) {
    case "price_fen": return { op: "set_price", item, price_fen: Number(value) };
    case "name_zh": return { op: "set_name_zh", item, name: String(value) };
    case "name_en": return { op: "set_name_en", item, name: String(value) };
    case "daily_quota": return { op: "set_quota", item, daily_quota: value === null ? null : Number(value) };
    case "available": return { op: "set_available", item, available: value === true || value === "true" };
    default: return null;
  }
}
function parseValue(v) { try { return JSON.parse(v); } catch (_) { return v; } }

function renderMenu(m) {
  menuItems = m.items.filter((i) => !i.archived).sort((a, b) => a.sort_key - b.sort_key);
  const byId = Object.fromEntries(m.items.map((i) => [i.id, i]));
  $("#conflicts").replaceChildren(...(m.conflicts.length ? [el("h3", { class: "error" }, t("conflicts"))] : []),
    ...m.conflicts.map((c) => {
      const [, item, field] = c.path;
      const it = byId[item];
      return el("div", { class: "conflict" },
        el("b", {}, (it ? name(it) : item) + " · " + field + ": "),
        ...c.values.map((v, i) => {
          const edit = conflictEdit(field, item, parseValue(v));
          return el("span", { class: "value" + (i === 0 ? " in-effect" : "") }, v,
            i === 0 ? el("small", {}, " (" + t("conflict_in_effect") + ")") : null,
            edit ? el("button", { onclick: () => invoke("menu_edits", { edits: [edit] }).then(renderMenu, (e) => toast(errorText(e), "error")) }, t("keep_value")) : null);
        }));
    }));
  $("#menu-rows").replaceChildren(...menuItems.map((it) => {
    const zh = el("input", { value: it.name_zh }), en = el("input", { value: it.name_en });
    const price = el("input", { type: "number", step: "0.01", min: "0", value: yuan(it.price_fen, "") });
    const quota = el("input", { type: "number", min: "0", value: it.daily_quota ?? "", placeholder: t("unlimited") });
    const avail = el("input", { type: "checkbox", checked: it.available });
    const save = async () => {
      const { id, ...fields } = it;
      Object.assign(fields, {
        name_zh: zh.value, name_en: en.value, price_fen: Math.round(Number(price.value) * 100),
        daily_quota: quota.value === "" ? null : Number(quota.value), available: avail.checked,
      });
      try { renderMenu(await invoke("update_item", { itemId: id, fields })); toast(t("saved")); }
      catch (e) { toast(errorText(e), "error"); }
    };
    return el("tr", { "data-item": it.id }, el("td", {}, zh), el("td", {}, en), el("td", {}, price),
      el("td", {}, quota), el("td", {}, avail), el("td", {}, el("button", { onclick: save }, t("save"))));
  }));
}
async function loadMenu() {
  try { renderMenu(await invoke("menu")); } catch (e) { toast(errorText(e), "error"); }
}

// ---------- status bar ----------
async function refreshStatus() {
  if (!session) return;
  const s = await invoke("status");
  const lan = $("#lan-status");
  lan.textContent = s.lan_connected ? t("lan_ok") : t("lan_down") + (s.lan_error ? " (" + s.lan_error + ")" : "");
  lan.className = s.lan_connected ? "ok" : "bad";
  const sync = $("#sync-status");
  if (!s.sync || !s.sync.configured) { sync.textContent = t("sync_off"); sync.className = ""; }
  else if (s.sync.connected) { sync.textContent = t("sync_ok", { count: s.sync.unacked_events }); sync.className = "ok"; }
  else {
    sync.textContent = t("sync_down", { count: s.sync.unacked_events, age: s.sync.oldest_unacked_age_s })
      + (s.sync.last_error ? " — " + s.sync.last_error : "");
    sync.className = "bad";
  }
  // What the link's history says an operator must know (a restore found and re-based,
  // documents from the cloud refused) stays visible until the box restarts.
  const notes = [];
  if (s.sync && s.sync.alarm) notes.push(t("sync_alarm", { text: s.sync.alarm }));
  if (s.sync && s.sync.refused_documents && s.sync.refused_documents.length) {
    notes.push(t("sync_refused", { text: s.sync.refused_documents.join("; ") }));
  }
  if (notes.length) { sync.textContent += " — " + notes.join(" — "); sync.className = "bad"; }
  $("#who").textContent = s.name + " (" + s.role + ") @ " + (s.box_url || "");
}

// ---------- navigation, login ----------
function show(name) {
  tab = name;
  document.querySelectorAll(".panel").forEach((p) => { p.hidden = p.id !== "panel-" + name; });
  document.querySelectorAll("nav [data-tab]").forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
  if (name === "kitchen") refreshBoard(true);
  if (name === "handover") $("#pickup-code").focus();
  if (name === "stock") loadStock();
  if (name === "summary") loadSummary();
  if (name === "menu") loadMenu();
}
document.querySelectorAll("nav [data-tab]").forEach((b) => b.addEventListener("click", () => show(b.dataset.tab)));

function enter(info) {
  session = info;
  $("#login-view").hidden = true;
  $("#main-view").hidden = false;
  $("#tab-menu").hidden = info.role !== "manager";
  show("kitchen");
  refreshStatus();
}

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("#login-error").textContent = "";
  try {
    enter(await invoke("login", { address: $("#address").value, username: $("#username").value, password: $("#password").value }));
    $("#password").value = "";
  } catch (e) { $("#login-error").textContent = errorText(e); }
});
$("#logout-btn").addEventListener("click", async () => {
  await invoke("logout");
  session = null; board = null;
  $("#main-view").hidden = true; $("#login-view").hidden = false;
});
document.querySelectorAll("[data-lang-toggle]").forEach((b) => b.addEventListener("click", async () => {
  LANG = LANG === "zh" ? "en" : "zh";
  await invoke("set_language", { language: LANG }).catch(() => {});
  applyTexts(); renderBoard(); refreshStatus();
  if (session && tab !== "kitchen" && tab !== "handover") show(tab);
}));

// Desktop notifications (new orders, a lost link) are raised by the app itself; this
// switch turns them off for this terminal.
$("#notify-toggle").addEventListener("change", (ev) => {
  invoke("set_notifications", { enabled: ev.target.checked }).catch((e) => toast(errorText(e), "error"));
});

listen("board-changed", () => refreshBoard(false));
listen("status-changed", () => refreshStatus());
listen("toast", (ev) => toast(errorText(ev.payload), "error"));
listen("new-order", (ev) => {
  chime();
  for (const n of ev.payload) toast(t("new_order", { n }), "new");
});
setInterval(() => {
  if (session && tab === "kitchen") refreshBoard(false);
}, 1000);

(async () => {
  const r = await invoke("remembered");
  LANG = r.language === "en" ? "en" : "zh";
  $("#notify-toggle").checked = r.notifications !== false;
  applyTexts();
  $("#address").value = r.box_url || "";
  $("#username").value = r.username || "";
  $("#login-view").hidden = false;
  (r.box_url ? (r.username ? $("#password") : $("#username")) : $("#address")).focus();
})();
