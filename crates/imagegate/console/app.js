// imagegate console: a browser client of the CVM image API. This module
// starts the page: sign-in, the address (route.js) deciding the view, the
// refresh loop and the header's region switch. The key lives in
// sessionStorage only; every call is signed in the page (tc3.js) and sent
// to POST / like an SDK call.

import { callApi, loadSession, saveSession, forgetSession } from "./api.js";
import { $, showError, hideToast } from "./dom.js";
import { wireDetail, loadDetail, renderDetail, leaveDetail, detailBusy } from "./detail.js";
import { wireExport } from "./export.js";
import { wireImport, loadOsList } from "./importform.js";
import { loadList, renderList, showFilter, listRoute } from "./list.js";
import { loadTasks } from "./progress.js";
import { fillRegionList, switchRegion } from "./regions.js";
import { current, go, replace, listHash, PAGE_SIZE } from "./route.js";
import { wireShare } from "./share.js";
import { store, call } from "./store.js";
import { wireSync } from "./sync.js";

let timer = null;
let generation = 0;

// One refresh of the view the address names: the list page (and the tasks
// of its unfinished imports) or the image. The next comes after ~1 s while
// something imports, copies or exports, else after 5 s. A refresh
// overtaken by a newer one (the address changed) drops its results.
async function refresh() {
  if (!store.session) return;
  const mine = ++generation;
  clearTimeout(timer);
  const r = current();
  let busy = false;
  try {
    if (r.view === "detail") {
      await loadDetail(r.id);
      if (mine !== generation) return;
      renderDetail(r.id);
      busy = detailBusy();
    } else {
      const got = await loadList(r);
      const unfinished = got.set.filter((i) => i.ImageState === "IMPORTING" || i.ImageState === "IMPORTFAILED");
      await loadTasks(unfinished.map((i) => i.ImageId));
      if (mine !== generation) return;
      store.images = got.set;
      store.total = got.total;
      if (got.total && r.page > Math.ceil(got.total / PAGE_SIZE)) {
        // Past the last page (images were deleted): show the last one.
        replace(listRoute(r, { page: Math.ceil(got.total / PAGE_SIZE) }));
        timer = setTimeout(refresh, 0);
        return;
      }
      renderList(r);
      busy = got.set.some((i) => i.ImageState === "IMPORTING" || i.ImageState === "SYNCING");
    }
    showError($("filter-error"), null);
    showError($("banner"), null);
    await showQuota();
  } catch (e) {
    if (mine !== generation) return;
    if (e.code && e.code.startsWith("AuthFailure")) {
      signOut();
      showError($("signin-error"), e);
      return;
    }
    // A filter the API refuses is shown at the filter; anything else above the view.
    const filterProblem = e.field === "filter" || (e.code || "").startsWith("InvalidFilter") ||
      (e.code || "").startsWith("InvalidParameterValue");
    showError(r.view === "list" && filterProblem ? $("filter-error") : $("banner"), e);
  }
  if (mine === generation) timer = setTimeout(refresh, busy ? 1000 : 5000);
}

// Quota as used / total: used is the number of the account's images here.
async function showQuota() {
  const [q, all] = await Promise.all([
    call("DescribeImageQuota", {}),
    call("DescribeImages", { Filters: [{ Name: "image-type", Values: ["PRIVATE_IMAGE"] }], Limit: 0 }),
  ]);
  $("quota").textContent = "Quota: " + all.TotalCount + " / " + q.ImageNumQuota + " images";
}

// The view the address names.
function route() {
  if (!store.session) return;
  const r = current();
  const detail = r.view === "detail";
  $("images").hidden = detail;
  $("detail").hidden = !detail;
  if (detail) {
    store.cameFromList = store.lastShown === "list";
  } else {
    leaveDetail();
    store.lastList = r;
    showFilter(r);
  }
  store.lastShown = r.view;
  refresh();
}

function signedIn(session) {
  store.session = session;
  $("signin").hidden = true;
  $("who").hidden = false;
  $("who-id").textContent = session.secretId.length > 10
    ? session.secretId.slice(0, 6) + "…" + session.secretId.slice(-4) : session.secretId;
  $("who-region").value = session.region;
  fillRegionList();
  if (!location.hash) replace(listHash({}));
  loadOsList().catch((e) => showError($("banner"), e));
  route();
}

// The header's region: another region's images (the list, as filtered).
async function onSwitchRegion(ev) {
  ev.preventDefault();
  const input = $("who-region");
  const region = input.value.trim();
  if (!region || region === store.session.region) {
    input.value = store.session.region;
    return;
  }
  hideToast();
  showError($("region-error"), null);
  try {
    await switchRegion(region);
  } catch (e) {
    input.value = store.session.region;
    showError($("region-error"), e);
    return;
  }
  const list = listHash(store.lastList || {});
  if (location.hash !== list) go(list);
  else route();
}

function signOut() {
  forgetSession();
  store.session = null;
  store.osList = null;
  clearTimeout(timer);
  generation++;
  hideToast();
  $("who").hidden = true;
  $("images").hidden = true;
  $("detail").hidden = true;
  $("signin").hidden = false;
  $("image-rows").replaceChildren();
  showError($("banner"), null);
  showError($("region-error"), null);
}

async function onSignIn(ev) {
  ev.preventDefault();
  const f = ev.target;
  const session = {
    secretId: f.secretId.value.trim(),
    secretKey: f.secretKey.value.trim(),
    region: f.region.value.trim(),
  };
  const box = $("signin-error");
  showError(box, null);
  const button = f.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    // A cheap signed call proves the key before anything is stored.
    await callApi(session, "DescribeImageQuota", {});
    saveSession(session);
    f.secretKey.value = "";
    signedIn(session);
  } catch (e) {
    showError(box, e);
  } finally {
    button.disabled = false;
  }
}

function wireList() {
  let typing = null;
  $("filter").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      replace(listRoute(current(), { q: $("filter").value.trim(), page: 1 }));
      route();
    }, 300);
  });
  for (const [id, key] of [["type-filter", "type"], ["state-filter", "state"], ["os-filter", "os"], ["sort", "sort"]]) {
    $(id).addEventListener("change", () => go(listRoute(current(), { [key]: $(id).value, page: 1 })));
  }
  $("clear-filters").addEventListener("click", () => {
    $("filter").value = "";
    go(listRoute(current(), { q: "", type: "", state: "", os: "", page: 1 }));
  });
  $("prev-page").addEventListener("click", () => go(listRoute(current(), { page: current().page - 1 })));
  $("next-page").addEventListener("click", () => go(listRoute(current(), { page: current().page + 1 })));
}

function start() {
  $("signin-form").addEventListener("submit", onSignIn);
  $("signout").addEventListener("click", signOut);
  wireList();
  wireImport(refresh);
  wireDetail(refresh);
  wireShare(refresh);
  wireSync(refresh);
  wireExport(refresh);
  $("region-form").addEventListener("submit", onSwitchRegion);
  window.addEventListener("hashchange", () => { hideToastOnLeave(); route(); });
  const session = loadSession();
  if (session) signedIn(session);
  else $("signin").hidden = false;
}

// A success note belongs to the view it was shown on, except the one that
// brought us here (a delete returns to the list with its note).
let lastView = null;
function hideToastOnLeave() {
  const v = current().view;
  if (lastView === "list" && v === "detail") hideToast();
  lastView = v;
}

start();
