// Copying an image (SyncImages): the caller's own image to other regions,
// an image shared with the caller into its own account in this region. The
// destinations are typed (see regions.js; the server refuses a region it
// does not serve); the copies' new ids are shown, each with a way to open
// it in its region. A copy still in progress (SYNCING, SyncPercent) shows
// its progress in the list and the detail as an import does.

import { $, el, showError, toast, hideToast } from "./dom.js";
import { current, detailHash, go } from "./route.js";
import { regionList, rememberRegions, switchRegion } from "./regions.js";
import { isShared } from "./share.js";
import { store, call } from "./store.js";

export const isSyncing = (img) => Boolean(img && img.ImageState === "SYNCING");

// The progress of a copy, as progress.js shows an import's.
export function syncProgress(img) {
  const pct = typeof img.SyncPercent === "number" ? img.SyncPercent : 0;
  return el("div", { class: "progress" },
    el("progress", { max: "100", value: String(pct), "aria-label": "copy progress" }),
    el("div", { class: "progress-text", text: "SYNCING · " + pct + "%" }));
}

let shownFor = null;

export function renderSync(img) {
  const panel = $("sync-panel");
  panel.hidden = !img;
  if (!img) return;
  const f = $("sync-form");
  if (shownFor !== img.ImageId) {
    shownFor = img.ImageId;
    f.reset();
    showError($("sync-error"), null);
    $("sync-result").replaceChildren();
    // A shared image is copied into the caller's account in its own region.
    if (isShared(img)) f.regions.value = store.session.region;
  }
  $("sync-hint").textContent = isShared(img)
    ? "An image shared with you is copied into your own account, in this region (" + store.session.region +
      "); the copy is yours to rename, share and export."
    : "Copies this image to other regions this server serves, under the same name unless you give one.";
  const normal = img.ImageState === "NORMAL";
  const button = f.querySelector("button[type=submit]");
  button.disabled = !normal;
  button.title = normal ? "" : "Only a NORMAL image can be copied.";
}

function resultList(copies, openIn) {
  if (!copies.length) return [el("p", { class: "muted", text: "Copied (the server named no new image)." })];
  return [el("p", { text: "Copied:" }), el("ul", { class: "copies" }, ...copies.map((c) => {
    const open = el("button", { type: "button", class: "link", text: "Open in " + c.Region });
    open.addEventListener("click", () => openIn(c.Region, c.ImageId));
    return el("li", { "data-region": c.Region, "data-id": c.ImageId },
      el("span", { class: "mono", text: c.ImageId }), " in ", el("span", { class: "mono", text: c.Region }), " ", open);
  }))];
}

async function onSync(ev, refresh, openIn) {
  ev.preventDefault();
  const f = ev.target;
  const id = current().id;
  const box = $("sync-error");
  showError(box, null);
  hideToast();
  const regions = regionList(f.regions.value);
  if (!regions.length) {
    showError(box, new Error("Give one or more destination regions."));
    return;
  }
  const params = { ImageIds: [id], DestinationRegions: regions, ImageSetRequired: true };
  if (f.name.value.trim()) params.ImageName = f.name.value.trim();
  const button = f.querySelector("button[type=submit]");
  button.disabled = true;
  let r;
  try {
    r = await call("SyncImages", params);
  } catch (e) {
    showError(box, e);
    return;
  } finally {
    button.disabled = false;
  }
  const copies = (Array.isArray(r.ImageSet) ? r.ImageSet : []).filter((c) => c && c.ImageId);
  rememberRegions(regions);
  $("sync-result").replaceChildren(...resultList(copies, openIn));
  toast("Copied " + id + " to " + regions.join(", "));
  await refresh();
}

// `openIn(region, imageId)`: show that image, switching region first.
export function wireSync(refresh) {
  const openIn = async (region, imageId) => {
    showError($("sync-error"), null);
    try {
      if (region !== store.session.region) await switchRegion(region);
    } catch (e) {
      showError($("sync-error"), e);
      return;
    }
    go(detailHash(imageId));
  };
  $("sync-form").addEventListener("submit", (ev) => onSync(ev, refresh, openIn));
}

export function leaveSync() {
  shownFor = null;
}
