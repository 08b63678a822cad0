// The console's state, shared by the views, and the signed call with the
// signed-in session.

import { callApi } from "./api.js";

export const store = {
  session: null,
  images: [],          // the page shown
  total: 0,            // TotalCount of the list's filter
  tasks: new Map(),    // ImageId -> import task
  rates: new Map(),    // ImageId -> {t, bytes, rate}
  detail: null,        // the image of the detail view (DescribeImages by id)
  osList: null,        // DescribeImportImageOs
  shares: null,        // {id, set}: DescribeImageSharePermission of the detail's image
  exports: new Map(),  // TaskId -> export task of the detail's image, newest first
  exportsFor: null,    // the image those tasks are of
};

export function call(action, params) {
  return callApi(store.session, action, params);
}
