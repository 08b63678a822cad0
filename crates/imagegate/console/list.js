// The image list: one page of DescribeImages (Offset/Limit, TotalCount) for
// the filter in the address, its rows, the pager and the two empty states.
// The caller's own images and those other accounts share with it (marked);
// a copy in progress shows its progress as an import does.
//
// Name, image ID, OS and type (own or shared) filter on the server
// (image-name, image-id, platform, image-type). Newest first is the API's
// order; oldest first reads the page at the other end of the same order.
// The API has no state filter and no other order, so for a state filter or
// the name order the console reads every match (100 a call, at most
// MAX_IN_BROWSER) and filters and sorts here.

import { $, el } from "./dom.js";
import { formatSize, formatTime, GIB } from "./format.js";
import { PAGE_SIZE, listHash, detailHash, go } from "./route.js";
import { store, call } from "./store.js";
import { stateBadge, progressBlock, failureBlock } from "./progress.js";
import { sharedMark } from "./share.js";
import { isSyncing, syncProgress } from "./sync.js";

const ID_RE = /^img-[0-9a-z]{8}$/i;
const MAX_IN_BROWSER = 2000;

export const hasFilter = (r) => Boolean(r.q || r.type || r.state || r.os);

const IMAGE_TYPES = { private: "PRIVATE_IMAGE", shared: "SHARED_IMAGE" };

function filters(r) {
  // Without an image-type filter the API lists both kinds.
  const f = r.type ? [{ Name: "image-type", Values: [IMAGE_TYPES[r.type]] }] : [];
  const text = r.q.trim();
  if (ID_RE.test(text)) f.push({ Name: "image-id", Values: [text.toLowerCase()] });
  else if (text) f.push({ Name: "image-name", Values: [text] });
  if (r.os) f.push({ Name: "platform", Values: [r.os] });
  return f;
}

async function page(Filters, Offset, Limit) {
  const r = await call("DescribeImages", { Filters, Offset, Limit });
  return { set: Array.isArray(r.ImageSet) ? r.ImageSet : [], total: r.TotalCount || 0 };
}

// Oldest first: the slice at the far end of the newest-first order, reversed.
// The total may change between the two calls; then the slice is read again.
async function oldestPage(Filters, pageNo) {
  let total = (await page(Filters, 0, 0)).total;
  for (let tries = 0; tries < 3; tries++) {
    const end = total - (pageNo - 1) * PAGE_SIZE;
    if (end <= 0) return { set: [], total };
    const offset = Math.max(0, end - PAGE_SIZE);
    const got = await page(Filters, offset, end - offset);
    if (got.total === total) return { set: got.set.reverse(), total };
    total = got.total;
  }
  throw new Error("the list keeps changing; try again");
}

async function everything(Filters) {
  const all = [];
  for (;;) {
    const got = await page(Filters, all.length, 100);
    if (got.total > MAX_IN_BROWSER) {
      const e = new Error(got.total + " images match; filtering by state or sorting by name reads at most " +
        MAX_IN_BROWSER + ". Narrow the list by name or OS first.");
      e.field = "filter";
      throw e;
    }
    all.push(...got.set);
    if (!got.set.length || all.length >= got.total) return all;
  }
}

// The page of images the route asks for, and the number of matches.
export async function loadList(r) {
  const Filters = filters(r);
  if (!r.state && r.sort !== "name") {
    if (r.sort === "oldest") return oldestPage(Filters, r.page);
    return page(Filters, (r.page - 1) * PAGE_SIZE, PAGE_SIZE);
  }
  let all = await everything(Filters);
  if (r.state) all = all.filter((i) => i.ImageState === r.state);
  if (r.sort === "name") {
    all.sort((a, b) => (a.ImageName || "").localeCompare(b.ImageName || "") || a.ImageId.localeCompare(b.ImageId));
  } else if (r.sort === "oldest") {
    all.reverse();
  }
  const start = (r.page - 1) * PAGE_SIZE;
  return { set: all.slice(start, start + PAGE_SIZE), total: all.length };
}

function rowOf(img) {
  const task = store.tasks.get(img.ImageId);
  const stateCell = el("div", {}, stateBadge(img.ImageState));
  if (img.ImageState === "IMPORTING" && task) stateCell.append(progressBlock(task));
  if (img.ImageState === "IMPORTFAILED") stateCell.append(failureBlock(task) || "");
  if (isSyncing(img)) stateCell.append(syncProgress(img));
  const link = el("a", { class: "name", href: detailHash(img.ImageId), text: img.ImageName || "-" });
  const mark = sharedMark(img);
  const tr = el("tr", { "data-id": img.ImageId, "data-type": img.ImageType || null },
    el("td", { "data-label": "Name" }, el("div", {}, link, mark ? " " : null, mark,
      el("span", { class: "id mono", text: img.ImageId }))),
    el("td", { "data-label": "State" }, stateCell),
    el("td", { "data-label": "OS" }, el("div", { text: img.OsName || img.Platform || "-" })),
    el("td", { "data-label": "Arch" }, el("div", { text: img.Architecture || "-" })),
    el("td", { "data-label": "Size" }, el("div", {
      class: "size", text: typeof img.ImageSize === "number" ? formatSize(img.ImageSize * GIB) : "-",
    })),
    el("td", { "data-label": "Created" }, el("div", { text: formatTime(img.CreatedTime) })));
  // The whole row opens the image; the name is the real link (keyboard, new tab).
  tr.addEventListener("click", (ev) => { if (ev.target !== link) go(detailHash(img.ImageId)); });
  return tr;
}

function renderPager(r) {
  const pages = Math.max(1, Math.ceil(store.total / PAGE_SIZE));
  const first = store.total ? (r.page - 1) * PAGE_SIZE + 1 : 0;
  const last = Math.min(store.total, r.page * PAGE_SIZE);
  $("pager-text").textContent = store.total
    ? first + "–" + last + " of " + store.total + (store.total === 1 ? " image" : " images")
    : "0 images";
  $("pager-page").textContent = "Page " + r.page + " of " + pages;
  $("prev-page").disabled = r.page <= 1;
  $("next-page").disabled = r.page >= pages;
}

export function renderList(r) {
  const rows = store.images.map(rowOf);
  $("image-rows").replaceChildren(...rows);
  const none = store.total === 0;
  $("empty").hidden = !(none && !hasFilter(r));
  $("no-results").hidden = !(none && hasFilter(r));
  $("image-table").parentElement.hidden = rows.length === 0;
  $("pager").hidden = none;
  renderPager(r);
}

// The toolbar shows the route's filter (after Back, or a reload).
export function showFilter(r) {
  if (document.activeElement !== $("filter")) $("filter").value = r.q;
  $("type-filter").value = r.type;
  $("state-filter").value = r.state;
  const os = $("os-filter");
  if (r.os && ![...os.options].some((o) => o.value === r.os)) os.append(el("option", { value: r.os, text: r.os }));
  os.value = r.os;
  $("sort").value = r.sort;
}

export const listRoute = (r, change) => listHash({ ...r, ...change });
