// The address of each view, in the URL's fragment, so that Back, Forward,
// reload and bookmarks work:
//   #/images?q=TEXT&type=private|shared&state=S&os=OS&sort=newest|oldest|name&page=N
//                                                                  the list
//   #/images/img-xxxxxxxx                                          one image

export const PAGE_SIZE = 20;
export const SORTS = ["newest", "oldest", "name"];
// Whose images: the caller's own (PRIVATE_IMAGE) or those shared with it.
export const TYPES = ["private", "shared"];

export function parse(hash) {
  const h = (hash || "").replace(/^#/, "");
  const m = /^\/images\/(img-[0-9a-z]+)$/i.exec(h);
  if (m) return { view: "detail", id: m[1] };
  const q = new URLSearchParams(h.split("?")[1] || "");
  const page = parseInt(q.get("page") || "1", 10);
  const sort = q.get("sort") || "newest";
  const type = q.get("type") || "";
  return {
    view: "list",
    q: q.get("q") || "",
    type: TYPES.includes(type) ? type : "",
    state: q.get("state") || "",
    os: q.get("os") || "",
    sort: SORTS.includes(sort) ? sort : "newest",
    page: Number.isFinite(page) && page > 0 ? page : 1,
  };
}

export function listHash(r) {
  const q = new URLSearchParams();
  if (r.q) q.set("q", r.q);
  if (r.type) q.set("type", r.type);
  if (r.state) q.set("state", r.state);
  if (r.os) q.set("os", r.os);
  if (r.sort && r.sort !== "newest") q.set("sort", r.sort);
  if (r.page && r.page > 1) q.set("page", String(r.page));
  const s = q.toString();
  return "#/images" + (s ? "?" + s : "");
}

export const detailHash = (id) => "#/images/" + id;

export const current = () => parse(location.hash);

// A new history entry (Back returns here); hashchange renders it.
export function go(hash) {
  if (location.hash !== hash) location.hash = hash;
}

// The same entry, new address (typing in a filter is not a step back).
export function replace(hash) {
  if (location.hash !== hash) history.replaceState(null, "", hash);
}
