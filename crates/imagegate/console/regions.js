// Regions: the API has no call that lists the regions a server serves, so
// a region is typed, and the server's refusal of one it does not serve is
// the check. The regions this tab has used (signed in to, switched to,
// copied to) are kept in the session and offered as suggestions.

import { callApi, saveSession } from "./api.js";
import { $, el } from "./dom.js";
import { store } from "./store.js";

// Regions as typed: separated by commas, semicolons or spaces.
export const regionList = (text) => [...new Set(text.split(/[\s,;]+/).filter(Boolean))];

export function knownRegions() {
  const s = store.session;
  if (!s) return [];
  return [...new Set([s.region, ...(Array.isArray(s.regions) ? s.regions : [])])];
}

// Suggest these regions from now on (they were accepted by the server).
export function rememberRegions(regions) {
  const s = store.session;
  if (!s) return;
  s.regions = [...new Set([...knownRegions(), ...regions])].sort();
  saveSession(s);
  fillRegionList();
}

export function fillRegionList() {
  $("known-regions").replaceChildren(...knownRegions().sort().map((r) => el("option", { value: r })));
}

// Use another region: a cheap signed call proves the server serves it (an
// ApiError, e.g. UnsupportedRegion, when it does not), then the session
// (and the header) names it. The caller shows the view.
export async function switchRegion(region) {
  const next = { ...store.session, region };
  await callApi(next, "DescribeImageQuota", {});
  store.session = next;
  rememberRegions([region]);
  $("who-region").value = region;
}
