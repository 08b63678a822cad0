// One image: its facts, its import (progress, failure, guest summary with
// the raw details folded) and its actions: rename, cancel the import,
// delete, and the panels of share.js, sync.js and export.js. An image
// shared with the caller is marked, names its owner, and offers only what
// a recipient may do (copy it into the caller's account). An action's
// error is shown next to the action.

import { $, el, showError, toast, hideToast } from "./dom.js";
import { formatSize, formatTime, GIB } from "./format.js";
import { guestSummary, rawFacts } from "./facts.js";
import { stateBadge, progressBlock, failureBlock, loadTasks } from "./progress.js";
import { current, go, listHash } from "./route.js";
import { isShared, sharedMark, loadShares, renderShares } from "./share.js";
import { isSyncing, syncProgress, renderSync, leaveSync } from "./sync.js";
import { loadExports, renderExports, exportsBusy, leaveExports } from "./export.js";
import { store, call } from "./store.js";

let shownId = null;

// The image of the route (DescribeImages by id), its import task, with
// whom it is shared and its exports.
export async function loadDetail(id) {
  const r = await call("DescribeImages", { ImageIds: [id] });
  const img = (r.ImageSet || [])[0] || null;
  await Promise.all([loadTasks([id]), loadShares(img), loadExports(img)]);
  store.detail = img;
}

// True while something of the detail's image moves (refresh faster).
export const detailBusy = () => Boolean(store.detail &&
  (store.detail.ImageState === "IMPORTING" || isSyncing(store.detail))) || exportsBusy();

function factsList(pairs) {
  const dl = el("dl", { class: "facts" });
  for (const [k, v, cls] of pairs) {
    if (v === undefined || v === null || v === "" || v === "-") continue;
    dl.append(el("dt", { text: k }), el("dd", { class: cls }, v));
  }
  return dl;
}

function imageFacts(img) {
  const tags = (img.Tags || []).map((t) => t.Key + "=" + t.Value).join(", ");
  const disks = (img.SnapshotSet || []).map((s) => s.DiskUsage + " " + formatSize(s.DiskSize * GIB)).join(", ");
  return factsList([
    ["Image ID", el("span", { class: "mono", text: img.ImageId })],
    ["Type", isShared(img) ? "Shared with you (SHARED_IMAGE)" : img.ImageType === "PRIVATE_IMAGE" ? "Your own (PRIVATE_IMAGE)" : img.ImageType],
    ["Owner", isShared(img) ? el("span", { class: "mono", text: img.ImageCreator || "-" }) : null],
    ["Description", img.ImageDescription],
    ["OS", img.OsName],
    ["Platform", img.Platform],
    ["Architecture", img.Architecture],
    ["Size", typeof img.ImageSize === "number" ? formatSize(img.ImageSize * GIB) : null, "size"],
    ["Created", formatTime(img.CreatedTime)],
    ["Source", img.ImageSource],
    ["License", img.LicenseType],
    ["Family", img.ImageFamily],
    ["Disks", disks],
    ["Tags", tags],
  ]);
}

function taskFacts(task) {
  const attempts = (task.AttemptSet || []).map((a) => "#" + a.Attempt + " on " + (a.Node || "-") + " at " + formatTime(a.StartTime)).join("; ");
  return factsList([
    ["Task state", task.TaskState],
    ["Phase", task.Phase],
    ["Source format", task.SourceFormat],
    ["Virtual size", typeof task.VirtualSize === "number" ? formatSize(task.VirtualSize) : null, "size"],
    ["Source size", typeof task.BytesTotal === "number" ? formatSize(task.BytesTotal) : null, "size"],
    ["SHA-256", task.Sha256 ? el("span", { class: "mono", text: task.Sha256 }) : null],
    ["Started", task.StartTime ? formatTime(task.StartTime) : null],
    ["Finished", task.FinishTime ? formatTime(task.FinishTime) : null],
    ["Attempts", attempts],
  ]);
}

// Cloud-init and the rest are shown only for an inspected guest.
function guestBlock(task) {
  const g = task && task.GuestFacts;
  const summary = guestSummary(g);
  if (!summary.length) return [];
  const raw = rawFacts(g, "", []);
  return [
    el("h3", { text: "Guest" }),
    el("div", { id: "guest-summary" }, factsList(summary)),
    el("details", { id: "guest-raw" }, el("summary", { text: "All inspection details (" + raw.length + ")" }), factsList(raw)),
  ];
}

export function renderDetail(id) {
  const img = store.detail && store.detail.ImageId === id ? store.detail : null;
  const task = store.tasks.get(id);
  if (shownId !== id) {
    shownId = id;
    $("rename-form").name.value = img ? img.ImageName || "" : "";
    for (const box of ["rename-error", "cancel-error", "delete-error", "share-error"]) showError($(box), null);
  }
  // A recipient may not rename, delete, share or export another's image.
  const own = Boolean(img) && !isShared(img);
  $("detail-actions").hidden = !own;
  $("rename-form").hidden = !own;
  renderShares(img);
  renderSync(img);
  renderExports(img);
  if (!img) {
    $("detail-title").textContent = id;
    $("detail-body").replaceChildren(el("p", { class: "muted", text: "No image " + id + " here (deleted, or in another region)." }));
    return;
  }
  $("detail-title").replaceChildren(img.ImageName || id, ...(isShared(img) ? [" ", sharedMark(img)] : []));
  const stateLine = el("div", {}, stateBadge(img.ImageState));
  if (img.ImageState === "IMPORTING" && task) stateLine.append(progressBlock(task));
  if (isSyncing(img)) stateLine.append(syncProgress(img));
  const body = [stateLine, failureBlock(task), imageFacts(img)];
  if (task) body.push(el("h3", { text: "Import" }), taskFacts(task), ...guestBlock(task));
  $("detail-body").replaceChildren(...body.filter(Boolean));
  const importing = img.ImageState === "IMPORTING";
  $("cancel-task").hidden = !importing;
  $("cancel-task").disabled = Boolean(task && task.CancelRequested);
  $("delete").disabled = importing;
  $("delete").title = importing ? "An image cannot be deleted while it imports; cancel the import first." : "";
}

async function onRename(ev, refresh) {
  ev.preventDefault();
  const name = ev.target.name.value.trim();
  const id = current().id;
  const box = $("rename-error");
  showError(box, null);
  hideToast();
  try {
    await call("ModifyImageAttribute", { ImageId: id, ImageName: name });
  } catch (e) {
    showError(box, e);
    ev.target.name.focus();
    return;
  }
  toast("Renamed to " + name);
  await refresh();
}

async function onCancelTask(refresh) {
  const id = current().id;
  const box = $("cancel-error");
  showError(box, null);
  hideToast();
  try {
    await call("CancelImportImageTask", { ImageId: id });
  } catch (e) {
    showError(box, e);
    return;
  }
  toast("Cancelling the import of " + id);
  await refresh();
}

function onDelete() {
  const img = store.detail;
  const id = current().id;
  $("confirm-name").textContent = (img && img.ImageName ? img.ImageName + " " : "") + "(" + id + ")";
  const dlg = $("confirm-delete");
  dlg.returnValue = "";
  dlg.showModal();
}

async function onConfirmClose() {
  if ($("confirm-delete").returnValue !== "delete") return;
  const id = current().id;
  showError($("delete-error"), null);
  hideToast();
  try {
    await call("DeleteImages", { ImageIds: [id] });
  } catch (e) {
    showError($("delete-error"), e);
    return;
  }
  toast("Deleted " + id);
  go(listHash(store.lastList || {}));
}

export function wireDetail(refresh) {
  $("rename-form").addEventListener("submit", (ev) => onRename(ev, refresh));
  $("cancel-task").addEventListener("click", () => onCancelTask(refresh));
  $("delete").addEventListener("click", onDelete);
  $("confirm-delete").addEventListener("close", onConfirmClose);
  $("back").addEventListener("click", () => {
    // Back to the list as it was when the image was opened.
    if (store.cameFromList) history.back();
    else go(listHash(store.lastList || {}));
  });
}

export function leaveDetail() {
  shownId = null;
  leaveSync();
  leaveExports();
}
