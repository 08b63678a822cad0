// imagegate console: a browser client of the CVM image API.
//
// The key lives in sessionStorage only; every call is signed here with
// TC3-HMAC-SHA256 (WebCrypto) and sent to POST / exactly like an SDK call,
// so the console can do nothing the API does not allow. Untrusted text (image
// names, server messages) is only ever put into the page with textContent.
"use strict";

// ---- TC3-HMAC-SHA256 signing (also loaded by tests/console/sign.test.mjs) ----

const TC3 = (() => {
  const enc = new TextEncoder();
  const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");

  async function sha256Hex(text) {
    return hex(await crypto.subtle.digest("SHA-256", enc.encode(text)));
  }

  async function hmac(keyBytes, text) {
    const key = await crypto.subtle.importKey("raw", keyBytes, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    return new Uint8Array(await crypto.subtle.sign("HMAC", key, enc.encode(text)));
  }

  // The Authorization value for a POST of `body` (a string) with
  // Content-Type application/json, signing content-type and host, as the
  // official SDKs do. The date is the UTC date of the timestamp.
  async function authorization(secretId, secretKey, host, body, timestamp) {
    const date = new Date(timestamp * 1000).toISOString().slice(0, 10);
    const canonicalRequest = [
      "POST", "/", "",
      "content-type:application/json\nhost:" + host + "\n",
      "content-type;host",
      await sha256Hex(body),
    ].join("\n");
    const scope = date + "/cvm/tc3_request";
    const stringToSign = ["TC3-HMAC-SHA256", String(timestamp), scope, await sha256Hex(canonicalRequest)].join("\n");
    const kDate = await hmac(enc.encode("TC3" + secretKey), date);
    const kService = await hmac(kDate, "cvm");
    const kSigning = await hmac(kService, "tc3_request");
    const signature = hex(await hmac(kSigning, stringToSign));
    return "TC3-HMAC-SHA256 Credential=" + secretId + "/" + scope +
      ", SignedHeaders=content-type;host, Signature=" + signature;
  }

  return { authorization, sha256Hex };
})();
globalThis.imagegateTC3 = TC3;

// ---- API calls ----

class ApiError extends Error {
  constructor(code, message, requestId) {
    super(code + ": " + message + (requestId ? " (RequestId " + requestId + ")" : ""));
    this.code = code;
    this.requestId = requestId;
  }
}

const SESSION_KEY = "imagegate.session";

function loadSession() {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    return s && s.secretId && s.secretKey && s.region ? s : null;
  } catch (_) {
    return null;
  }
}

async function callApi(session, action, params) {
  if (!globalThis.crypto || !crypto.subtle) {
    throw new ApiError("Console.InsecureContext",
      "this page is not a secure context, so the browser offers no WebCrypto to sign requests. " +
      "Open the console over HTTPS, or through localhost (e.g. an SSH tunnel).", "");
  }
  const body = JSON.stringify(params || {});
  const timestamp = Math.floor(Date.now() / 1000);
  // The browser sends location.host as the Host header; the server verifies
  // the signature against exactly that value.
  const auth = await TC3.authorization(session.secretId, session.secretKey, location.host, body, timestamp);
  let resp;
  try {
    resp = await fetch("/", {
      method: "POST",
      cache: "no-store",
      credentials: "omit",
      headers: {
        "Content-Type": "application/json",
        "X-TC-Action": action,
        "X-TC-Version": "2017-03-12",
        "X-TC-Region": session.region,
        "X-TC-Timestamp": String(timestamp),
        "X-TC-Language": "en-US",
        "Authorization": auth,
      },
      body,
    });
  } catch (e) {
    throw new ApiError("Console.NetworkError", "the server cannot be reached (" + e.message + ")", "");
  }
  let data = null;
  try {
    data = await resp.json();
  } catch (_) {
    // handled below
  }
  const r = data && data.Response;
  if (!resp.ok || !r || typeof r !== "object") {
    throw new ApiError("Console.BadReply", "unexpected reply (HTTP " + resp.status + ")", "");
  }
  if (r.Error && r.Error.Code) {
    throw new ApiError(r.Error.Code, r.Error.Message || "", r.RequestId || "");
  }
  return r;
}

// ---- formatting ----

function humanBytes(n) {
  if (typeof n !== "number" || !isFinite(n) || n < 0) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  if (n < 1024) return n + " B";
  let v = n, u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return v.toFixed(1) + " " + units[u];
}

function humanTime(iso) {
  if (!iso) return "-";
  const d = new Date(iso);
  if (isNaN(d.getTime())) return String(iso);
  return d.toISOString().replace("T", " ").slice(0, 16) + " UTC";
}

// What to do about an import failure code (the server's message says what
// was found). Mirrors the CLI's advice.
const ADVICE = {
  InvalidUrl: "Check that the URL names an existing object the service may read (COS: public-read, or a fresh pre-signed link), then import again.",
  InvalidFormatSize: "Use a raw, qcow2, VMDK or VHD(X) image within the size limits (500 GiB virtual, 50 GiB stored as qcow2).",
  ExternalReferenceRefused: "The image points at other files (backing file, data file or extents). Flatten it on a trusted machine, e.g. qemu-img convert -O qcow2 in out, and import the result.",
  PartitionNotPresent: "The disk has no partition table. Upload the whole system disk, not a single partition or an incomplete file.",
  RootPartitionNotFound: "No root file system was found: this looks like an installer, data disk or /boot image. Import the whole system disk instead.",
  VirtioNotInstall: "Install the virtio drivers in the guest, export again, or import with Force.",
  CloudInitNotInstalled: "Install cloud-init (Windows: cloudbase-init) in the guest and export again, or import with Force.",
  SourceUnreachable: "The object store could not be reached. Check the URL's host and that the service's network may reach it, then import again.",
  SourceStalled: "The download stopped making progress. Check the object store's health and import again.",
  SourceChanged: "The object changed while it was being read. Import again once the upload has finished.",
  SourceLengthMismatch: "The object store sent a different number of bytes than it announced. Upload the file again, then import.",
  SourceTooLarge: "The file is larger than the service accepts. Shrink the image (zero free space, then convert to compressed qcow2) and import again.",
  SourceAddressRefused: "The URL's host resolves to an address the network policy refuses (private, loopback, metadata). Use a COS URL, or ask the operator to allow the host.",
  ImageTruncated: "The file ends early: the upload is probably incomplete. Upload the whole file again.",
  CorruptImage: "The image's tables are damaged. Run qemu-img check where it was made and export it again.",
  UnsupportedImageFormat: "Convert the image to raw, qcow2, VMDK (monolithicSparse/streamOptimized), VHD or VHDX first.",
  EncryptedImageRefused: "Encrypted images cannot be imported. Decrypt it (e.g. qemu-img convert without encryption) and import again.",
  AmbiguousImageFormat: "The file looks like several formats at once. Export it again in a single format.",
  OsMismatch: "The OS found in the image differs from the OS type/version given. Import again with the right OS type/version.",
  ArchitectureMismatch: "The image's architecture differs from the one given. Import again with the right architecture.",
  ImportCancelled: "The import was cancelled; start it again if that was not intended.",
  InternalError: "This is the service's fault, not the image's. Try again; if it persists, give the operator the image ID.",
};

// ---- DOM helpers ----

const $ = (id) => document.getElementById(id);

// Build an element; children may be nodes or strings (always text).
function el(tag, attrs, ...children) {
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

// ---- the app ----

const state = {
  session: null,
  images: [],
  tasks: new Map(),      // ImageId -> import task
  rates: new Map(),      // ImageId -> {t, bytes, rate}
  detailId: null,
  timer: null,
  refreshing: false,
  again: false,
  osList: null,
};

function showBanner(err) {
  const b = $("banner");
  if (!err) { b.hidden = true; return; }
  b.textContent = err.message || String(err);
  b.hidden = false;
}

let toastTimer = null;
function toast(text) {
  const t = $("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 3500);
}

function call(action, params) {
  return callApi(state.session, action, params);
}

function signedIn(session) {
  state.session = session;
  $("signin").hidden = true;
  $("who").hidden = false;
  $("who-id").textContent = session.secretId.length > 10
    ? session.secretId.slice(0, 6) + "…" + session.secretId.slice(-4) : session.secretId;
  $("who-region").textContent = session.region;
  $("images").hidden = false;
  showList();
  refresh();
  call("DescribeImageQuota", {}).then(
    (r) => { $("quota").textContent = "Quota " + r.ImageNumQuota + " images"; },
    () => { $("quota").textContent = ""; });
}

function signOut() {
  sessionStorage.removeItem(SESSION_KEY);
  state.session = null;
  clearTimeout(state.timer);
  $("who").hidden = true;
  $("images").hidden = true;
  $("detail").hidden = true;
  $("signin").hidden = false;
  $("image-rows").replaceChildren();
  showBanner(null);
}

async function onSignIn(ev) {
  ev.preventDefault();
  const f = ev.target;
  const session = {
    secretId: f.secretId.value.trim(),
    secretKey: f.secretKey.value.trim(),
    region: f.region.value.trim(),
  };
  const errBox = $("signin-error");
  errBox.hidden = true;
  const button = f.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    // A cheap signed call proves the key before anything is stored.
    await callApi(session, "DescribeImageQuota", {});
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
    f.secretKey.value = "";
    signedIn(session);
  } catch (e) {
    errBox.textContent = e.message;
    errBox.hidden = false;
  } finally {
    button.disabled = false;
  }
}

// One refresh: the image list, then the tasks of unfinished imports. The
// next one comes after ~1 s while something imports, else after 5 s.
async function refresh() {
  if (!state.session) return;
  if (state.refreshing) {
    // Whatever changed (a rename, a delete) is shown by one more pass.
    state.again = true;
    return;
  }
  state.refreshing = true;
  state.again = false;
  clearTimeout(state.timer);
  try {
    const filters = [{ Name: "image-type", Values: ["PRIVATE_IMAGE"] }];
    const name = $("filter").value.trim();
    if (name) filters.push({ Name: "image-name", Values: [name] });
    const r = await call("DescribeImages", { Filters: filters, Limit: 100 });
    state.images = Array.isArray(r.ImageSet) ? r.ImageSet : [];
    const unfinished = state.images
      .filter((i) => i.ImageState === "IMPORTING" || i.ImageState === "IMPORTFAILED")
      .map((i) => i.ImageId);
    if (state.detailId && !unfinished.includes(state.detailId)) unfinished.push(state.detailId);
    await loadTasks(unfinished);
    showBanner(null);
    renderList();
    if (state.detailId) renderDetail();
  } catch (e) {
    showBanner(e);
    if (e.code && e.code.startsWith("AuthFailure")) {
      signOut();
      $("signin-error").textContent = e.message;
      $("signin-error").hidden = false;
      state.refreshing = false;
      return;
    }
  }
  state.refreshing = false;
  const busy = state.images.some((i) => i.ImageState === "IMPORTING");
  state.timer = setTimeout(refresh, state.again ? 0 : busy ? 1000 : 5000);
}

async function loadTasks(ids) {
  if (!ids.length) return;
  try {
    const r = await call("DescribeImportImageTasks", { ImageIds: ids.slice(0, 100), Limit: 100 });
    const now = performance.now();
    for (const t of r.ImportImageTaskSet || []) {
      state.tasks.set(t.ImageId, t);
      const prev = state.rates.get(t.ImageId);
      const bytes = typeof t.BytesFetched === "number" ? t.BytesFetched : 0;
      let rate = prev ? prev.rate : null;
      if (prev && now > prev.t && bytes >= prev.bytes) {
        const inst = (bytes - prev.bytes) / ((now - prev.t) / 1000);
        rate = rate === null ? inst : 0.7 * rate + 0.3 * inst;
      }
      state.rates.set(t.ImageId, { t: now, bytes, rate });
    }
  } catch (e) {
    // A server without the extension action still lists images correctly.
    if (e.code !== "InvalidAction") throw e;
  }
}

function stateBadge(s) {
  return el("span", { class: "state state-" + (s || "UNKNOWN"), text: s || "-" });
}

function progressBlock(task) {
  const pct = typeof task.Percent === "number" ? task.Percent : 0;
  const parts = [task.Phase || task.TaskState || "QUEUED", pct + "%"];
  if (typeof task.BytesFetched === "number" && typeof task.BytesTotal === "number") {
    parts.push(humanBytes(task.BytesFetched) + " / " + humanBytes(task.BytesTotal));
  }
  const r = state.rates.get(task.ImageId);
  if (r && r.rate && r.rate >= 1) {
    parts.push(humanBytes(r.rate) + "/s");
    if (typeof task.BytesTotal === "number" && task.BytesTotal > r.bytes) {
      const secs = Math.round((task.BytesTotal - r.bytes) / r.rate);
      parts.push("ETA " + Math.floor(secs / 60) + "m" + String(secs % 60).padStart(2, "0") + "s");
    }
  }
  return el("div", { class: "progress" },
    el("progress", { max: "100", value: String(pct), "aria-label": "import progress" }),
    el("div", { class: "progress-text", text: parts.join(" · ") }));
}

function failureBlock(task) {
  if (!task || !task.FailureCode) return null;
  const advice = ADVICE[task.FailureCode];
  return el("div", { class: "failure" },
    el("span", { class: "code", text: task.FailureCode }), " ",
    el("span", { class: "msg", text: task.FailureMessage || "" }),
    advice ? el("div", { class: "todo", text: "What to do: " + advice }) : null);
}

function renderList() {
  const rows = state.images.map((img) => {
    const task = state.tasks.get(img.ImageId);
    const stateCell = el("div", {}, stateBadge(img.ImageState));
    if (img.ImageState === "IMPORTING" && task) stateCell.append(progressBlock(task));
    if (img.ImageState === "IMPORTFAILED") stateCell.append(failureBlock(task) || "");
    const tr = el("tr", { "data-id": img.ImageId, tabindex: "0" },
      el("td", { "data-label": "Name" }, el("div", {},
        el("span", { class: "name", text: img.ImageName || "-" }),
        el("span", { class: "id mono", text: img.ImageId }))),
      el("td", { "data-label": "State" }, stateCell),
      el("td", { "data-label": "OS" }, el("div", { text: img.OsName || img.Platform || "-" })),
      el("td", { "data-label": "Arch" }, el("div", { text: img.Architecture || "-" })),
      el("td", { "data-label": "Size" }, el("div", { text: typeof img.ImageSize === "number" ? img.ImageSize + " GiB" : "-" })),
      el("td", { "data-label": "Created" }, el("div", { text: humanTime(img.CreatedTime) })));
    tr.addEventListener("click", () => openDetail(img.ImageId));
    tr.addEventListener("keydown", (ev) => { if (ev.key === "Enter") openDetail(img.ImageId); });
    return tr;
  });
  $("image-rows").replaceChildren(...rows);
  $("empty").hidden = rows.length > 0;
  $("image-table").parentElement.hidden = rows.length === 0;
}

function showList() {
  state.detailId = null;
  $("detail").hidden = true;
  $("images").hidden = false;
}

function openDetail(id) {
  state.detailId = id;
  $("images").hidden = true;
  $("detail").hidden = false;
  const img = state.images.find((i) => i.ImageId === id);
  $("rename-form").name.value = img ? img.ImageName || "" : "";
  renderDetail();
  refresh();
}

function factsList(pairs) {
  const dl = el("dl", { class: "facts" });
  for (const [k, v] of pairs) {
    if (v === undefined || v === null || v === "" || v === "-") continue;
    dl.append(el("dt", { text: k }), el("dd", {}, typeof v === "string" ? v : v));
  }
  return dl;
}

// Guest facts are whatever the inspector found: nested objects become dotted
// names; a list of objects (partitions, filesystems) one row per item. The
// inspector's own timing ("stats") is not a fact about the guest.
function flattenFacts(v, prefix, out) {
  if (v === null || v === undefined || prefix === "stats") return out;
  const scalar = (x) => (x !== null && typeof x === "object" ? JSON.stringify(x) : String(x));
  if (Array.isArray(v)) {
    if (v.every((x) => x === null || typeof x !== "object")) {
      out.push([prefix, v.map(scalar).join(", ")]);
    } else {
      v.forEach((item, i) => {
        const text = item !== null && typeof item === "object" && !Array.isArray(item)
          ? Object.entries(item).filter(([, x]) => x !== null).map(([k, x]) => k + "=" + scalar(x)).join(", ")
          : scalar(item);
        out.push([prefix + "[" + i + "]", text]);
      });
    }
  } else if (typeof v === "object") {
    for (const [k, x] of Object.entries(v)) flattenFacts(x, prefix ? prefix + "." + k : k, out);
  } else {
    out.push([prefix, String(v)]);
  }
  return out;
}

function renderDetail() {
  const id = state.detailId;
  const img = state.images.find((i) => i.ImageId === id);
  const task = state.tasks.get(id);
  if (!img) {
    $("detail-title").textContent = id;
    $("detail-body").replaceChildren(el("p", { class: "muted", text: "This image is gone (deleted, or not in this list)." }));
    return;
  }
  $("detail-title").textContent = img.ImageName || id;
  const body = [];
  const stateLine = el("div", {}, stateBadge(img.ImageState));
  if (img.ImageState === "IMPORTING" && task) stateLine.append(progressBlock(task));
  body.push(stateLine);
  const fail = failureBlock(task);
  if (fail) body.push(fail);
  const tags = (img.Tags || []).map((t) => t.Key + "=" + t.Value).join(", ");
  const disks = (img.SnapshotSet || []).map((s) => s.DiskUsage + " " + s.DiskSize + " GiB").join(", ");
  body.push(factsList([
    ["Image ID", el("span", { class: "mono", text: img.ImageId })],
    ["Description", img.ImageDescription],
    ["OS", img.OsName],
    ["Platform", img.Platform],
    ["Architecture", img.Architecture],
    ["Size", typeof img.ImageSize === "number" ? img.ImageSize + " GiB" : null],
    ["Created", humanTime(img.CreatedTime)],
    ["Source", img.ImageSource],
    ["License", img.LicenseType],
    ["Family", img.ImageFamily],
    ["Cloud-init", typeof img.IsSupportCloudinit === "boolean" ? (img.IsSupportCloudinit ? "yes" : "no") : null],
    ["Disks", disks],
    ["Tags", tags],
  ]));
  if (task) {
    const attempts = (task.AttemptSet || []).map((a) => "#" + a.Attempt + " on " + (a.Node || "-") + " at " + humanTime(a.StartTime)).join("; ");
    body.push(el("h3", { text: "Import" }));
    body.push(factsList([
      ["Task state", task.TaskState],
      ["Phase", task.Phase],
      ["Source format", task.SourceFormat],
      ["Virtual size", typeof task.VirtualSize === "number" ? humanBytes(task.VirtualSize) + " (" + task.VirtualSize + " bytes)" : null],
      ["Source size", typeof task.BytesTotal === "number" ? humanBytes(task.BytesTotal) : null],
      ["SHA-256", task.Sha256 ? el("span", { class: "mono", text: task.Sha256 }) : null],
      ["Started", task.StartTime ? humanTime(task.StartTime) : null],
      ["Finished", task.FinishTime ? humanTime(task.FinishTime) : null],
      ["Attempts", attempts],
    ]));
    const facts = flattenFacts(task.GuestFacts, "", []);
    if (facts.length) {
      body.push(el("h3", { text: "Guest facts" }));
      body.push(factsList(facts));
    }
  }
  $("detail-body").replaceChildren(...body);
  $("delete").disabled = img.ImageState === "IMPORTING";
  $("delete").title = img.ImageState === "IMPORTING" ? "An image cannot be deleted while it imports." : "";
}

async function onRename(ev) {
  ev.preventDefault();
  const name = ev.target.name.value.trim();
  const id = state.detailId;
  try {
    await call("ModifyImageAttribute", { ImageId: id, ImageName: name });
    toast("Renamed to " + name);
    showBanner(null);
    await refresh();
  } catch (e) {
    showBanner(e);
  }
}

function onDelete() {
  const id = state.detailId;
  const img = state.images.find((i) => i.ImageId === id);
  $("confirm-name").textContent = (img && img.ImageName ? img.ImageName + " " : "") + "(" + id + ")";
  const dlg = $("confirm-delete");
  dlg.returnValue = "";
  dlg.showModal();
}

async function onConfirmClose() {
  if ($("confirm-delete").returnValue !== "delete") return;
  const id = state.detailId;
  try {
    await call("DeleteImages", { ImageIds: [id] });
    toast("Deleted " + id);
    showBanner(null);
    showList();
    await refresh();
  } catch (e) {
    showBanner(e);
  }
}

// ---- import form ----

async function openImport() {
  const form = $("import-form");
  form.hidden = false;
  if (!state.osList) {
    try {
      state.osList = await call("DescribeImportImageOs", {});
    } catch (e) {
      showBanner(e);
      return;
    }
    fillOsTypes();
  }
  form.url.focus();
}

function options(select, values) {
  select.replaceChildren(...values.map((v) => el("option", { value: v, text: v })));
}

function fillOsTypes() {
  const set = state.osList.ImportImageOsVersionSet || [];
  const f = $("import-form");
  options(f.osType, set.map((o) => o.OsName));
  fillVersions();
}

function fillVersions() {
  const f = $("import-form");
  const os = (state.osList.ImportImageOsVersionSet || []).find((o) => o.OsName === f.osType.value);
  options(f.osVersion, os ? os.OsVersions || [] : []);
  options(f.arch, os && os.Architecture && os.Architecture.length ? os.Architecture : ["x86_64", "i386", "arm_64"]);
}

async function onImport(ev) {
  ev.preventDefault();
  const f = ev.target;
  const params = {
    ImageUrl: f.url.value.trim(),
    ImageName: f.name.value.trim(),
    OsType: f.osType.value,
    OsVersion: f.osVersion.value,
    Architecture: f.arch.value,
    BootMode: f.bootMode.value,
    LicenseType: f.licenseType.value,
  };
  if (f.description.value.trim()) params.ImageDescription = f.description.value.trim();
  if (f.force.checked) params.Force = true;
  const button = f.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const r = await call("ImportImage", params);
    toast("Import started" + (r.ImageId ? ": " + r.ImageId : ""));
    showBanner(null);
    f.reset();
    fillVersions();
    f.hidden = true;
    await refresh();
  } catch (e) {
    showBanner(e);
  } finally {
    button.disabled = false;
  }
}

function start() {
  $("signin-form").addEventListener("submit", onSignIn);
  $("signout").addEventListener("click", signOut);
  $("show-import").addEventListener("click", openImport);
  $("cancel-import").addEventListener("click", () => { $("import-form").hidden = true; });
  $("import-form").addEventListener("submit", onImport);
  $("import-form").osType.addEventListener("change", fillVersions);
  $("back").addEventListener("click", () => { showList(); refresh(); });
  $("rename-form").addEventListener("submit", onRename);
  $("delete").addEventListener("click", onDelete);
  $("confirm-delete").addEventListener("close", onConfirmClose);
  let filterTimer = null;
  $("filter").addEventListener("input", () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(refresh, 300);
  });
  const session = loadSession();
  if (session) signedIn(session);
  else $("signin").hidden = false;
}

if (typeof document !== "undefined") {
  document.addEventListener("DOMContentLoaded", start);
}
