// Sharing: the mark of an image another account shares with the caller
// (ImageType SHARED_IMAGE, in the list and the detail) and, for the owner,
// with whom an image is shared (DescribeImageSharePermission) and
// ModifyImageSharePermission SHARE / CANCEL by main-account id (uin).
// A refusal is shown at the form with its code and message.

import { $, el, showError, toast, hideToast } from "./dom.js";
import { formatTime } from "./format.js";
import { current } from "./route.js";
import { store, call } from "./store.js";

// An image the caller sees only because its owner shares it.
export const isShared = (img) => Boolean(img && img.ImageType === "SHARED_IMAGE");

// The mark of an image shared with the caller, naming its owner.
export function sharedMark(img) {
  if (!isShared(img)) return null;
  return el("span", {
    class: "mark mark-shared",
    title: "Shared with you by account " + (img.ImageCreator || "?") + "; only its owner may change it",
    text: "Shared with you",
  });
}

// With whom the owner shares the image of the detail (nothing to ask for
// an image shared with the caller: only its owner may).
export async function loadShares(img) {
  if (!img || isShared(img)) {
    store.shares = null;
    return;
  }
  const r = await call("DescribeImageSharePermission", { ImageId: img.ImageId });
  store.shares = { id: img.ImageId, set: Array.isArray(r.SharePermissionSet) ? r.SharePermissionSet : [] };
}

// Account ids as typed: separated by commas, semicolons or spaces.
const accountIds = (text) => [...new Set(text.split(/[\s,;]+/).filter(Boolean))];

async function modify(permission, ids, refresh) {
  const id = current().id;
  const box = $("share-error");
  showError(box, null);
  hideToast();
  try {
    await call("ModifyImageSharePermission", { ImageId: id, AccountIds: ids, Permission: permission });
  } catch (e) {
    showError(box, e);
    return false;
  }
  toast((permission === "SHARE" ? "Shared with " : "No longer shared with ") + ids.join(", "));
  await refresh();
  return true;
}

export function renderShares(img) {
  const panel = $("share-panel");
  panel.hidden = !img || isShared(img);
  if (panel.hidden) return;
  const set = store.shares && store.shares.id === img.ImageId ? store.shares.set : [];
  const list = $("share-list");
  // Rebuilt only when it changed (a refresh must not take a button away
  // from under the pointer or the keyboard).
  const key = img.ImageId + JSON.stringify(set);
  if (list.dataset.key !== key) {
    list.dataset.key = key;
    list.replaceChildren(...shareItems(set));
  }
  shareButton(img);
}

function shareItems(set) {
  if (!set.length) return [el("p", { class: "muted", text: "Not shared with any account." })];
  const items = set.map((s) => {
    const stop = el("button", { type: "button", class: "link", text: "Stop sharing" });
    stop.addEventListener("click", () => modify("CANCEL", [s.AccountId], shareRefresh));
    return el("li", { "data-account": s.AccountId },
      el("span", { class: "mono", text: s.AccountId }),
      el("span", { class: "muted", text: " since " + formatTime(s.CreatedTime) + " " }), stop);
  });
  return [el("p", { text: "Shared with " + set.length + (set.length === 1 ? " account:" : " accounts:") }),
    el("ul", { class: "shares" }, ...items)];
}

// Only a NORMAL image can be shared (CANCEL is always possible).
function shareButton(img) {
  const share = $("share-form").querySelector("button[value=SHARE]");
  const normal = Boolean(img && img.ImageState === "NORMAL");
  share.disabled = !normal;
  share.title = normal ? "" : "Only a NORMAL image can be shared.";
}

// The list's buttons are rebuilt at each refresh; they use this.
let shareRefresh = async () => {};

export function wireShare(refresh) {
  shareRefresh = refresh;
  const f = $("share-form");
  f.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const permission = ev.submitter && ev.submitter.value === "CANCEL" ? "CANCEL" : "SHARE";
    const ids = accountIds(f.accounts.value);
    if (!ids.length) {
      showError($("share-error"), new Error("Give one or more account ids (main-account uins)."));
      return;
    }
    for (const b of f.querySelectorAll("button")) b.disabled = true;
    try {
      if (await modify(permission, ids, refresh)) f.accounts.value = "";
    } finally {
      for (const b of f.querySelectorAll("button")) b.disabled = false;
      shareButton(store.detail);
    }
  });
}
