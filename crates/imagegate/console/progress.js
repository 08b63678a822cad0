// An import as the list and the detail show it: the state label, live
// progress with a rate and ETA, and a failure's reason with what to do.

import { el } from "./dom.js";
import { formatSize, ADVICE } from "./format.js";
import { store, call } from "./store.js";

// The tasks of these images (DescribeImportImageTasks), with a smoothed rate.
export async function loadTasks(ids) {
  if (!ids.length) return;
  try {
    const r = await call("DescribeImportImageTasks", { ImageIds: ids.slice(0, 100), Limit: 100 });
    const now = performance.now();
    for (const t of r.ImportImageTaskSet || []) {
      store.tasks.set(t.ImageId, t);
      const prev = store.rates.get(t.ImageId);
      const bytes = typeof t.BytesFetched === "number" ? t.BytesFetched : 0;
      let rate = prev ? prev.rate : null;
      if (prev && now > prev.t && bytes >= prev.bytes) {
        const inst = (bytes - prev.bytes) / ((now - prev.t) / 1000);
        rate = rate === null ? inst : 0.7 * rate + 0.3 * inst;
      }
      store.rates.set(t.ImageId, { t: now, bytes, rate });
    }
  } catch (e) {
    // A server without the extension action still lists images correctly.
    if (e.code !== "InvalidAction") throw e;
  }
}

export function stateBadge(s) {
  return el("span", { class: "state state-" + (s || "UNKNOWN"), text: s || "-" });
}

export function progressBlock(task) {
  const pct = typeof task.Percent === "number" ? task.Percent : 0;
  const parts = [task.Phase || task.TaskState || "QUEUED", pct + "%"];
  if (typeof task.BytesFetched === "number" && typeof task.BytesTotal === "number") {
    parts.push(formatSize(task.BytesFetched) + " / " + formatSize(task.BytesTotal));
  }
  const r = store.rates.get(task.ImageId);
  if (r && r.rate && r.rate >= 1) {
    parts.push(formatSize(r.rate) + "/s");
    if (typeof task.BytesTotal === "number" && task.BytesTotal > r.bytes) {
      const secs = Math.round((task.BytesTotal - r.bytes) / r.rate);
      parts.push("ETA " + Math.floor(secs / 60) + "m" + String(secs % 60).padStart(2, "0") + "s");
    }
  }
  if (task.CancelRequested) parts.push("cancelling");
  return el("div", { class: "progress" },
    el("progress", { max: "100", value: String(pct), "aria-label": "import progress" }),
    el("div", { class: "progress-text", text: parts.join(" · ") }));
}

export function failureBlock(task) {
  if (!task || !task.FailureCode) return null;
  const advice = ADVICE[task.FailureCode];
  return el("div", { class: "failure" },
    el("span", { class: "code", text: task.FailureCode }), " ",
    el("span", { class: "msg", text: task.FailureMessage || "" }),
    advice ? el("div", { class: "todo", text: "What to do: " + advice }) : null);
}
