// The import form: the OS choices from DescribeImportImageOs, ImportImage,
// and its errors shown in the form.

import { $, el, showError, toast, hideToast } from "./dom.js";
import { store, call } from "./store.js";

function options(select, values) {
  select.replaceChildren(...values.map((v) => el("option", { value: v, text: v })));
}

const osSet = () => (store.osList && store.osList.ImportImageOsVersionSet) || [];

// The OS list, once per session; also fills the list's OS filter.
export async function loadOsList() {
  if (store.osList) return;
  store.osList = await call("DescribeImportImageOs", {});
  const f = $("import-form");
  options(f.osType, osSet().map((o) => o.OsName));
  fillVersions();
  const filter = $("os-filter");
  const chosen = filter.value;
  filter.replaceChildren(el("option", { value: "", text: "Any OS" }),
    ...osSet().map((o) => el("option", { value: o.OsName, text: o.OsName })));
  if (chosen && ![...filter.options].some((o) => o.value === chosen)) filter.append(el("option", { value: chosen, text: chosen }));
  filter.value = chosen;
}

function fillVersions() {
  const f = $("import-form");
  const os = osSet().find((o) => o.OsName === f.osType.value);
  options(f.osVersion, os ? os.OsVersions || [] : []);
  options(f.arch, os && os.Architecture && os.Architecture.length ? os.Architecture : ["x86_64", "i386", "arm_64"]);
}

async function openImport() {
  const form = $("import-form");
  form.hidden = false;
  showError($("import-error"), null);
  try {
    await loadOsList();
  } catch (e) {
    showError($("import-error"), e);
    return;
  }
  form.url.focus();
}

function params(f) {
  const p = {
    ImageUrl: f.url.value.trim(),
    ImageName: f.name.value.trim(),
    OsType: f.osType.value,
    OsVersion: f.osVersion.value,
    Architecture: f.arch.value,
    BootMode: f.bootMode.value,
    LicenseType: f.licenseType.value,
  };
  if (f.description.value.trim()) p.ImageDescription = f.description.value.trim();
  if (f.force.checked) p.Force = true;
  return p;
}

async function onImport(ev, refresh) {
  ev.preventDefault();
  const f = ev.target;
  const button = f.querySelector("button[type=submit]");
  const box = $("import-error");
  showError(box, null);
  hideToast();
  button.disabled = true;
  try {
    const r = await call("ImportImage", params(f));
    toast("Import started" + (r.ImageId ? ": " + r.ImageId : ""));
    f.reset();
    fillVersions();
    f.hidden = true;
    await refresh();
  } catch (e) {
    showError(box, e);
  } finally {
    button.disabled = false;
  }
}

export function wireImport(refresh) {
  const f = $("import-form");
  $("show-import").addEventListener("click", openImport);
  $("cancel-import").addEventListener("click", () => { f.hidden = true; showError($("import-error"), null); });
  f.addEventListener("submit", (ev) => onImport(ev, refresh));
  f.osType.addEventListener("change", fillVersions);
}
