// Exporting an image to a bucket of the caller: the ExportImages form
// (BucketName, ExportFormat, a file name prefix, OnlyExportRootDisk) and
// the image's export tasks, from the extension action
// DescribeExportImageTasks: the image's recent tasks when it is opened,
// then, at each refresh, the unfinished ones by TaskId. Each task shows its
// state, phase, bytes written and percent, and its outcome: the CosPaths
// written, or the failure's code and message.

import { $, el, showError, toast, hideToast } from "./dom.js";
import { formatSize, formatTime } from "./format.js";
import { stateBadge } from "./progress.js";
import { current } from "./route.js";
import { isShared } from "./share.js";
import { store, call } from "./store.js";

const RECENT = 5;
const unfinished = (t) => t.TaskState === "QUEUED" || t.TaskState === "RUNNING";

// A server without the extension action answers InvalidAction: no tasks shown.
async function describe(params) {
  try {
    const r = await call("DescribeExportImageTasks", params);
    return Array.isArray(r.ExportImageTaskSet) ? r.ExportImageTaskSet : [];
  } catch (e) {
    if (e.code === "InvalidAction") return [];
    throw e;
  }
}

// The tasks of the image of the detail (store.exports, TaskId -> task,
// newest first). The caller's own images only: a recipient may not export.
export async function loadExports(img) {
  if (!img || isShared(img)) {
    store.exports = new Map();
    store.exportsFor = null;
    return;
  }
  if (store.exportsFor !== img.ImageId) {
    const set = await describe({ ImageIds: [img.ImageId], Limit: RECENT });
    store.exports = new Map(set.map((t) => [t.TaskId, t]));
    store.exportsFor = img.ImageId;
    return;
  }
  const open = [...store.exports.values()].filter(unfinished).map((t) => t.TaskId);
  if (!open.length) return;
  for (const t of await describe({ TaskIds: open, Limit: 100 })) store.exports.set(t.TaskId, t);
}

// True while a task of the detail's image is unfinished (refresh faster).
export const exportsBusy = () => [...store.exports.values()].some(unfinished);

function progressLine(t) {
  const pct = typeof t.Percent === "number" ? t.Percent : 0;
  const parts = [t.Phase || t.TaskState, pct + "%"];
  // Percent is the guest's bytes done of the disks' total; the bytes written
  // to the bucket are fewer for a sparse or compressed format.
  if (typeof t.GuestBytesTotal === "number" && t.GuestBytesTotal > 0) {
    parts.push(formatSize(t.GuestBytesDone || 0) + " of " + formatSize(t.GuestBytesTotal));
  }
  if (typeof t.BytesWritten === "number") parts.push(formatSize(t.BytesWritten) + " written");
  if (t.CancelRequested) parts.push("cancelling");
  return el("div", { class: "progress" },
    el("progress", { max: "100", value: String(pct), "aria-label": "export progress" }),
    el("div", { class: "progress-text", text: parts.join(" · ") }));
}

function outcome(t) {
  if (t.TaskState === "SUCCEEDED") {
    const written = typeof t.BytesWritten === "number" ? formatSize(t.BytesWritten) + " written" : null;
    return [
      el("div", { class: "progress-text", text: ["100%", written, "finished " + formatTime(t.FinishTime)].filter(Boolean).join(" · ") }),
      el("ul", { class: "cos-paths" }, ...(t.CosPaths || []).map((p) => el("li", { class: "mono cos-path", text: p }))),
    ];
  }
  return [el("div", { class: "failure" },
    el("span", { class: "code", text: t.FailureCode || t.TaskState }), " ",
    el("span", { class: "msg", text: t.FailureMessage || "" }))];
}

function taskItem(t) {
  const state = t.TaskState || "QUEUED";
  const head = el("div", { class: "export-head" }, stateBadge(state), " ",
    el("span", { text: "Task " + t.TaskId + " · " + (t.ExportFormat || "") + " to bucket " + (t.BucketName || "") +
      (t.CreatedTime ? " · " + formatTime(t.CreatedTime) : "") }));
  return el("li", { class: "export-task", "data-task": String(t.TaskId), "data-state": state },
    head, ...(unfinished(t) ? [progressLine(t)] : outcome(t)));
}

export function renderExports(img) {
  const panel = $("export-panel");
  panel.hidden = !img || isShared(img);
  if (panel.hidden) return;
  const f = $("export-form");
  const normal = img.ImageState === "NORMAL";
  const button = f.querySelector("button[type=submit]");
  button.disabled = !normal;
  button.title = normal ? "" : "Only a NORMAL image can be exported.";
  const tasks = store.exportsFor === img.ImageId ? [...store.exports.values()] : [];
  $("export-tasks").replaceChildren(...tasks.map(taskItem));
  $("export-none").hidden = tasks.length > 0;
}

function params(f, id) {
  const p = {
    BucketName: f.bucket.value.trim(),
    ImageIds: [id],
    ExportFormat: f.format.value,
    OnlyExportRootDisk: f.onlyRoot.checked,
  };
  if (f.prefix.value.trim()) p.FileNamePrefixList = [f.prefix.value.trim()];
  return p;
}

async function onExport(ev, refresh) {
  ev.preventDefault();
  const f = ev.target;
  const id = current().id;
  const box = $("export-error");
  showError(box, null);
  hideToast();
  const button = f.querySelector("button[type=submit]");
  button.disabled = true;
  const p = params(f, id);
  let r;
  try {
    r = await call("ExportImages", p);
  } catch (e) {
    showError(box, e);
    return;
  } finally {
    button.disabled = false;
  }
  // Shown at once, newest first, then followed by its TaskId.
  if (store.exportsFor === id && r.TaskId !== undefined) {
    store.exports = new Map([[r.TaskId, {
      TaskId: r.TaskId, TaskState: "QUEUED", Phase: "QUEUED", Percent: 0, BytesWritten: 0,
      BucketName: p.BucketName, ExportFormat: p.ExportFormat, CosPaths: r.CosPaths || [],
    }], ...store.exports]);
  }
  toast("Export started: task " + r.TaskId);
  await refresh();
}

export function wireExport(refresh) {
  $("export-form").addEventListener("submit", (ev) => onExport(ev, refresh));
}

export function leaveExports() {
  store.exportsFor = null;
  store.exports = new Map();
  showError($("export-error"), null);
}
