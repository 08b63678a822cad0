// DOM helpers. Untrusted text (image names, server messages) only ever
// reaches the page as text nodes: nothing here parses HTML.

export const $ = (id) => document.getElementById(id);

// Build an element; children may be nodes or strings (always text).
export function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return e;
}

// Show `err` (or hide the box when null) in the error box next to what
// caused it.
export function showError(box, err) {
  if (!err) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.textContent = err.message || String(err);
  box.hidden = false;
}

let toastTimer = null;

// A short success note; never used for errors (they go next to their cause).
export function toast(text) {
  const t = $("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 3500);
}

export function hideToast() {
  clearTimeout(toastTimer);
  $("toast").hidden = true;
}
