// The web console in a real browser: headless Chromium (Debian's
// /usr/bin/chromium) driven by playwright-core, against a real
// `imagegate serve` (IMAGEGATE_BIN, default target/debug/imagegate) with a
// temporary config, data directory and COS folder.
//
// Flow: sign in; "No images yet"; import a small qcow2 made by qemu-img and
// watch it reach NORMAL with its guest summary; a hostile qcow2 (backing file
// /etc/hostname) fails with its reason; 21 more failing imports through the
// API make two pages. Then pagination with the total, sort, filters by name,
// id, state and OS, "no results for this filter", a URL per image (reload,
// Back, Forward), rename errors inline (and no stale success note), cancel
// an import that trickles in from a slow origin, quota as used / total, one
// size format, the state labels' contrast (WCAG AA) computed from the styles
// in the light and the dark scheme, delete. Screenshots at desktop and phone
// sizes, both schemes, go to tests/console/screenshots/ (gitignored). Any
// page error or CSP violation fails the test.
//
// A second test, with a server of two accounts and two regions: shared
// images marked for the recipient (its own tab) and what it may not do,
// share and unshare from the owner's detail, a copy to the second region
// opened there, SYNCING as the page would show it, an export to the
// cos_root bucket watched to SUCCEEDED, its object checked with qemu-img,
// and a failed export (stored disk removed) with its code and message.
//
// Run: (cd tests/console && npm ci && npm test)
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { createServer } from "node:http";
import { mkdtempSync, mkdirSync, writeFileSync, rmSync, existsSync, symlinkSync, copyFileSync, readFileSync, statSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = fileURLToPath(new URL("../../", import.meta.url));
const shots = fileURLToPath(new URL("./screenshots/", import.meta.url));
const bin = process.env.IMAGEGATE_BIN || join(root, "target/debug/imagegate");
const chromiumPath = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
const IMPORT_TIMEOUT_MS = Number(process.env.CONSOLE_IMPORT_TIMEOUT_MS || 90_000);

const SECRET_ID = "AKIDconsoletest0000000000000000000";
const SECRET_KEY = "console-test-secret-key-0000000000";
const APP_ID = 1250000000;
const BUCKET = "console-" + APP_ID;
const REGION = "ap-guangzhou";
const OWNER = { secretId: SECRET_ID, secretKey: SECRET_KEY, appId: APP_ID, uin: "100000000001", region: REGION };
// The account images are shared with, and a second region to copy to.
const FRIEND = {
  secretId: "AKIDconsolefriend00000000000000000", secretKey: "console-friend-secret-key-00000000",
  appId: 1250000001, uin: "100000000002", region: REGION,
};
const OTHER_REGION = "ap-shanghai";
const cosUrl = (key) => `https://${BUCKET}.cos.ap-guangzhou.myqcloud.com/${key}`;

// A small but real system disk, as tests/conformance/diskimages.py makes
// it: an MBR, a bootable 32 MiB ext4 root at 1 MiB holding a CentOS 7 tree
// (os-release, cloud-init, virtio modules, a real ELF /usr/bin/sh), as qcow2.
// And a hostile qcow2 whose backing file names a host file.
function centos7Tree(root) {
  const kver = "3.10.0-1160.el7.x86_64";
  for (const d of ["etc/cloud", "usr/bin", "usr/sbin", "boot",
    `lib/modules/${kver}/kernel/drivers/block`, `lib/modules/${kver}/kernel/drivers/net`]) {
    mkdirSync(join(root, d), { recursive: true });
  }
  writeFileSync(join(root, "etc/os-release"),
    'NAME="CentOS Linux"\nVERSION="7 (Core)"\nID="centos"\nID_LIKE="rhel fedora"\nVERSION_ID="7"\n' +
    'PRETTY_NAME="CentOS Linux 7 (Core)"\n');
  writeFileSync(join(root, "etc/centos-release"), "CentOS Linux release 7.9.2009 (Core)\n");
  symlinkSync("centos-release", join(root, "etc/redhat-release"));
  writeFileSync(join(root, "etc/fstab"), "UUID=0 / ext4 defaults 1 1\n");
  copyFileSync("/bin/sh", join(root, "usr/bin/sh"));
  symlinkSync("usr/bin", join(root, "bin"));
  symlinkSync("usr/sbin", join(root, "sbin"));
  writeFileSync(join(root, `boot/vmlinuz-${kver}`), Buffer.alloc(4096));
  writeFileSync(join(root, "etc/cloud/cloud.cfg"), "datasource_list: [ ConfigDrive, TencentCloud ]\n");
  writeFileSync(join(root, "usr/bin/cloud-init"), "#!/usr/bin/python\n");
  writeFileSync(join(root, `lib/modules/${kver}/kernel/drivers/block/virtio_blk.ko.xz`), "");
  writeFileSync(join(root, `lib/modules/${kver}/kernel/drivers/net/virtio_net.ko.xz`), "");
}

function makeImages(dir) {
  const bucket = join(dir, "cos", BUCKET);
  mkdirSync(bucket, { recursive: true });
  const tree = join(dir, "tree");
  centos7Tree(tree);
  const raw = join(dir, "disk.raw");
  execFileSync("qemu-img", ["create", "-q", "-f", "raw", raw, "48M"]);
  execFileSync("sfdisk", ["--quiet", raw], { input: "label: dos\nstart=2048, size=65536, type=83, bootable\n" });
  execFileSync("mkfs.ext4", ["-q", "-F", "-d", tree, "-E", "offset=1048576", raw, "32768k"]);
  execFileSync("qemu-img", ["convert", "-q", "-f", "raw", "-O", "qcow2", raw, join(bucket, "good.qcow2")]);
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw",
    join(bucket, "hostile.qcow2"), "16M"]);
}

function writeConfig(dir, { accounts = [OWNER], regions = [REGION] } = {}) {
  const path = join(dir, "imagegate.toml");
  const accountTables = accounts.map((a) => `[[accounts]]
secret_id = "${a.secretId}"
secret_key = "${a.secretKey}"
app_id = ${a.appId}
uin = "${a.uin}"
`).join("\n");
  writeFileSync(path, `listen = "127.0.0.1:0"
data_dir = ${JSON.stringify(join(dir, "data"))}
regions = ${JSON.stringify(regions)}

[rate_limits]
enabled = false

[workers]
concurrency = 4

${accountTables}
[source]
cos_root = ${JSON.stringify(join(dir, "cos"))}
allow_hosts = ["127.0.0.1"]
`);
  return path;
}

// Start the server; resolves with its address once it prints the listening line.
function startServer(config) {
  assert.ok(existsSync(bin), `no imagegate binary at ${bin}: build it (cargo build -p imagegate) or set IMAGEGATE_BIN`);
  const child = spawn(bin, ["serve", "--config", config], { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d) => { stderr += d; });
  return new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error("imagegate serve printed no listening line in 30 s; stderr:\n" + stderr)), 30_000);
    child.stdout.on("data", (d) => {
      out += d;
      const m = /imagegate listening on (\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ child, addr: m[1], stderr: () => stderr });
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`imagegate serve exited with ${code}; stderr:\n${stderr}`));
    });
  });
}

async function shot(page, name) {
  mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: join(shots, name + ".png"), fullPage: true });
}

// The row of an image in the list, by its name.
const row = (page, name) => page.locator("#image-rows tr", { has: page.locator(".name", { hasText: name }) });

// Wait until the image's row shows `wanted`; fail at once if the import
// ends in another state, with the reason the page shows.
async function waitForState(page, name, wanted) {
  const deadline = Date.now() + IMPORT_TIMEOUT_MS;
  let seen = "(no row)";
  while (Date.now() < deadline) {
    const r = row(page, name);
    if (await r.count()) {
      seen = (await r.locator(".state").textContent()) || "";
      if (seen === wanted) return;
      if (seen === "NORMAL" || seen === "IMPORTFAILED") {
        const failure = r.locator(".failure");
        const why = (await failure.count()) ? await failure.textContent() : "";
        throw new Error(`${name} ended ${seen}, not ${wanted}: ${why}`);
      }
    }
    await page.waitForTimeout(250);
  }
  throw new Error(`${name} did not reach ${wanted} within ${IMPORT_TIMEOUT_MS / 1000} s; it is still ${seen}. ` +
    "Is the import pipeline running in this build?");
}

async function importImage(page, { url, name }) {
  await page.click("#show-import");
  const form = page.locator("#import-form");
  await form.waitFor({ state: "visible" });
  // The OS list comes from DescribeImportImageOs.
  await page.waitForFunction(() => document.querySelector("#import-form select[name=osType]").options.length > 0);
  await form.locator("input[name=url]").fill(url);
  await form.locator("input[name=name]").fill(name);
  // The OS the good disk really holds, so the guest checks pass unforced.
  await form.locator("select[name=osType]").selectOption("CentOS");
  await form.locator("select[name=osVersion]").selectOption("7");
  await form.locator("select[name=arch]").selectOption("x86_64");
  return form;
}

// The API from the test itself, signed by the console's own signer, as
// `who` (an account and region; the owner in ap-guangzhou by default).
async function apiClient(addr, who = OWNER) {
  const code = readFileSync(join(root, "crates/imagegate/console/tc3.js"), "utf8");
  const tc3 = await import("data:text/javascript;base64," + Buffer.from(code).toString("base64"));
  return async (action, params) => {
    const body = JSON.stringify(params);
    const ts = Math.floor(Date.now() / 1000);
    const resp = await fetch(`http://${addr}/`, {
      method: "POST",
      headers: {
        "Content-Type": "application/json", "X-TC-Action": action, "X-TC-Version": "2017-03-12",
        "X-TC-Region": who.region, "X-TC-Timestamp": String(ts),
        "Authorization": await tc3.authorization(who.secretId, who.secretKey, addr, body, ts),
      },
      body,
    });
    const r = (await resp.json()).Response;
    assert.ok(!r.Error, action + ": " + JSON.stringify(r.Error));
    return r;
  };
}

// An origin that sends a 64 MiB object at 256 KiB/s: an import of it stays
// IMPORTING long enough to be cancelled from the page.
function slowOrigin() {
  const size = 64 * 1024 * 1024;
  const server = createServer((req, res) => {
    res.writeHead(200, { "Content-Length": String(size), "ETag": '"slow-1"', "Content-Type": "application/octet-stream" });
    if (req.method === "HEAD") return res.end();
    let sent = 0;
    const chunk = Buffer.alloc(64 * 1024);
    const timer = setInterval(() => {
      if (sent >= size || res.destroyed) { clearInterval(timer); res.end(); return; }
      res.write(chunk);
      sent += chunk.length;
    }, 250);
    res.on("close", () => clearInterval(timer));
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

// WCAG 2 contrast of every state label class (images, copies, export
// tasks) and of the shared-image mark, from the computed styles of labels
// placed in the real table (so the whole cascade applies).
function stateContrasts(page) {
  return page.evaluate(() => {
    const lum = (css) => {
      const [r, g, b, a] = css.match(/[\d.]+/g).map(Number);
      if (a !== undefined && a < 1) throw new Error("translucent colour " + css);
      const lin = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
      return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
    };
    const host = document.querySelector("#image-rows td") || document.body;
    const out = {};
    const labels = ["NORMAL", "IMPORTING", "IMPORTFAILED", "SYNCING",
      "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"].map((s) => [s, "state state-" + s]);
    for (const [s, className] of [...labels, ["shared mark", "mark mark-shared"]]) {
      const probe = document.createElement("span");
      probe.className = className;
      probe.textContent = s;
      host.append(probe);
      const cs = getComputedStyle(probe);
      const [l1, l2] = [lum(cs.color), lum(cs.backgroundColor)].sort((x, y) => y - x);
      out[s] = Math.round(((l1 + 0.05) / (l2 + 0.05)) * 100) / 100;
      probe.remove();
    }
    return out;
  });
}

const visibleText = (page, sel) => page.locator(sel).innerText();
const rowNames = (page) => page.locator("#image-rows .name").allTextContents();
const hashOf = (page) => decodeURIComponent(new URL(page.url()).hash);

async function signIn(page, base) {
  // Sign in; a wrong key is refused with the API's own error.
  await page.goto(base + "/console");
  assert.equal(new URL(page.url()).pathname, "/console/");
  await page.locator("#signin-form").waitFor();
  await shot(page, "01-signin");
  await page.fill("input[name=secretId]", SECRET_ID);
  await page.fill("input[name=secretKey]", "wrong-key");
  await page.click("#signin-form button[type=submit]");
  await page.locator("#signin-error").filter({ hasText: "AuthFailure.SignatureFailure" }).waitFor();
  await page.fill("input[name=secretKey]", SECRET_KEY);
  await page.click("#signin-form button[type=submit]");
  await page.locator("#images").waitFor({ state: "visible" });
  const stored = await page.evaluate(() => [sessionStorage.getItem("imagegate.session"), localStorage.length]);
  assert.ok(stored[0] && stored[0].includes(SECRET_ID), "the key is kept in sessionStorage");
  assert.equal(stored[1], 0, "nothing in localStorage");

  // Nothing yet: "No images yet", not the no-results state; quota used / total.
  await page.locator("#empty").waitFor({ state: "visible" });
  assert.ok(await page.locator("#no-results").isHidden());
  await page.locator("#quota", { hasText: "Quota: 0 / 500 images" }).waitFor();
  await shot(page, "02-empty-list");

}

async function importTwo(page) {
  // Import the good image and watch it to NORMAL; the form describes Force
  // as skipping only the cloud-init check.
  await importImage(page, { url: cosUrl("good.qcow2"), name: "good-image" });
  assert.match(await page.locator("#import-form label.check").innerText(), /skips only the cloud-init check/);
  await shot(page, "03-import-form");
  await page.click("#import-form button[type=submit]");
  await row(page, "good-image").waitFor();
  await waitForState(page, "good-image", "NORMAL");
  const goodId = await row(page, "good-image").getAttribute("data-id");

  // The hostile image fails, and the row says why and what to do.
  await importImage(page, { url: cosUrl("hostile.qcow2"), name: "hostile-image" });
  await page.click("#import-form button[type=submit]");
  await waitForState(page, "hostile-image", "IMPORTFAILED");
  const failureText = await row(page, "hostile-image").locator(".failure").textContent();
  assert.match(failureText, /^ExternalReferenceRefused .*backing file/, "the row shows the reason");
  assert.match(failureText, /What to do: /, "the row says what to do");
  const hostileId = await row(page, "hostile-image").getAttribute("data-id");

  return { goodId, hostileId };
}

async function pagesAndOrder(page, api) {
  // 21 more (they fail at once), declared Ubuntu: 23 images, two pages.
  for (let i = 0; i <= 20; i++) {
    await api("ImportImage", {
      ImageUrl: cosUrl("hostile.qcow2"), ImageName: "bulk-" + String(i).padStart(2, "0"),
      OsType: "Ubuntu", OsVersion: "22", Architecture: "x86_64",
    });
    // Distinct creation times, so that the order is the order of creation.
    await new Promise((r) => setTimeout(r, 5));
  }
  await page.locator("#pager-text", { hasText: "1–20 of 23 images" }).waitFor({ timeout: IMPORT_TIMEOUT_MS });
  await page.locator("#quota", { hasText: "Quota: 23 / 500 images" }).waitFor();
  assert.equal(await page.locator("#image-rows tr").count(), 20);
  assert.equal((await rowNames(page))[0], "bulk-20", "newest first");
  await shot(page, "04-list-desktop");
  await page.click("#next-page");
  await page.locator("#pager-text", { hasText: "21–23 of 23 images" }).waitFor();
  assert.deepEqual(await rowNames(page), ["bulk-00", "hostile-image", "good-image"]);
  assert.match(hashOf(page), /page=2/);
  assert.ok(await page.locator("#next-page").isDisabled());
  // Reload keeps the page; Back returns to page 1.
  await page.reload();
  await page.locator("#pager-text", { hasText: "21–23 of 23 images" }).waitFor();
  await page.goBack();
  await page.locator("#pager-text", { hasText: "1–20 of 23 images" }).waitFor();

  // Sort: oldest first reads the other end of the API's order; name A-Z.
  await page.selectOption("#sort", "oldest");
  await page.locator("#image-rows tr").first().locator(".name", { hasText: "good-image" }).waitFor();
  assert.deepEqual((await rowNames(page)).slice(0, 3), ["good-image", "hostile-image", "bulk-00"]);
  await page.click("#next-page");
  await page.locator("#pager-text", { hasText: "21–23 of 23 images" }).waitFor();
  assert.deepEqual(await rowNames(page), ["bulk-18", "bulk-19", "bulk-20"]);
  await page.selectOption("#sort", "name");
  await page.locator("#pager-text", { hasText: "1–20 of 23 images" }).waitFor();
  await page.locator("#image-rows tr").first().locator(".name", { hasText: "bulk-00" }).waitFor();
  assert.deepEqual((await rowNames(page)).slice(0, 2), ["bulk-00", "bulk-01"]);
  await page.selectOption("#sort", "newest");

}

async function filters(page, goodId) {
  // Filters: name, image ID, state, OS; each in the address.
  await page.fill("#filter", "bulk-1");
  await page.locator("#pager-text", { hasText: "1–10 of 10 images" }).waitFor();
  assert.match(hashOf(page), /q=bulk-1/);
  await page.fill("#filter", goodId);
  await page.locator("#pager-text", { hasText: "1–1 of 1 image" }).waitFor();
  assert.deepEqual(await rowNames(page), ["good-image"]);
  await page.fill("#filter", "");
  await page.locator("#pager-text", { hasText: "of 23 images" }).waitFor();
  await page.selectOption("#state-filter", "NORMAL");
  await page.locator("#pager-text", { hasText: "1–1 of 1 image" }).waitFor();
  assert.deepEqual(await rowNames(page), ["good-image"]);
  await page.selectOption("#state-filter", "IMPORTFAILED");
  await page.locator("#pager-text", { hasText: "1–20 of 22 images" }).waitFor();
  await page.selectOption("#state-filter", "");
  await page.selectOption("#os-filter", "CentOS");
  await page.locator("#pager-text", { hasText: "1–2 of 2 images" }).waitFor();
  assert.deepEqual(await rowNames(page), ["hostile-image", "good-image"]);
  await page.selectOption("#os-filter", "Ubuntu");
  await page.locator("#pager-text", { hasText: "1–20 of 21 images" }).waitFor();
  // A filter that matches nothing says so (not "No images yet").
  await page.fill("#filter", "no-such-image");
  await page.locator("#no-results").waitFor({ state: "visible" });
  assert.ok(await page.locator("#empty").isHidden(), "not 'No images yet'");
  assert.ok(await page.locator("#pager").isHidden());
  await shot(page, "05-no-results");
  await page.click("#clear-filters");
  await page.locator("#pager-text", { hasText: "1–20 of 23 images" }).waitFor();
  assert.equal(await page.inputValue("#filter"), "");
  assert.equal(await page.inputValue("#os-filter"), "");

}

async function addresses(page, goodId) {
  // A URL per image: reload keeps it, Back returns to the list, Forward to it.
  await page.fill("#filter", "good");
  await row(page, "good-image").waitFor();
  await row(page, "good-image").locator(".name").click();
  await page.locator("#detail").waitFor({ state: "visible" });
  assert.equal(hashOf(page), "#/images/" + goodId);
  await page.reload();
  await page.locator("#detail-title", { hasText: "good-image" }).waitFor();
  await page.goBack();
  await page.locator("#images").waitFor({ state: "visible" });
  assert.equal(await page.inputValue("#filter"), "good", "the list's filter comes back");
  await page.goForward();
  await page.locator("#detail-title", { hasText: "good-image" }).waitFor();

}

async function guestAndSizes(page) {
  // Guest facts summarised; raw details folded; one size format.
  const summary = page.locator("#guest-summary");
  await summary.waitFor();
  const sum = await summary.innerText();
  for (const [label, value] of [["OS", /CentOS Linux 7/], ["Kernel", /3\.10\.0-1160\.el7\.x86_64/],
    ["Root filesystem", /ext4, 32 MiB, on partition 1/], ["Partitions", /MBR: #1 32 MiB linux \(boot\)/],
    ["Cloud-init", /yes/], ["Virtio drivers", /block yes, network yes/]]) {
    const dd = summary.locator("dt", { hasText: new RegExp("^" + label + "$") }).locator("xpath=following-sibling::dd[1]");
    assert.match(await dd.innerText(), value, label);
  }
  assert.equal(await page.locator("#guest-raw").getAttribute("open"), null, "raw details folded");
  assert.ok(await page.locator("#guest-raw dl").isHidden());
  const sizes = await page.locator(".size").allTextContents();
  assert.ok(sizes.length >= 3, "sizes shown: " + sizes);
  for (const s of sizes) assert.match(s, /^(\d+|\d+\.\d{1,2}) (B|KiB|MiB|GiB|TiB)$/, "one size format: " + s);
  assert.ok(sizes.includes("48 MiB"), "virtual size: " + sizes);
  await shot(page, "06-detail-desktop");

}

async function rename(page) {
  // Rename: success is a note; a refused rename shows its error at the form
  // and the earlier note is gone.
  await page.fill("#rename-form input[name=name]", "good-renamed");
  await page.click("#rename-form button[type=submit]");
  await page.locator("#detail-title", { hasText: "good-renamed" }).waitFor();
  await page.locator("#toast", { hasText: "Renamed" }).waitFor();
  await page.fill("#rename-form input[name=name]", "bulk-05");
  await page.click("#rename-form button[type=submit]");
  const renameError = page.locator("#rename-error");
  await renameError.waitFor({ state: "visible" });
  assert.match(await renameError.innerText(), /bulk-05/);
  assert.ok(await page.locator("#toast").isHidden(), "no stale success note");
  assert.ok(await page.locator("#banner").isHidden(), "the error is at the form, not in the banner");
  await shot(page, "07-rename-refused");

}

async function notInspectedAndCancel(page, base, api, origin, hostileId) {
  // An image never inspected shows no cloud-init claim.
  await page.goto(base + "/console/#/images/" + hostileId);
  await page.locator("#detail-title", { hasText: "hostile-image" }).waitFor();
  await page.locator("#detail-body .failure").waitFor();
  assert.doesNotMatch(await visibleText(page, "#detail"), /Cloud-init/);

  // Cancel an import from the page.
  const slow = await api("ImportImage", {
    ImageUrl: `http://127.0.0.1:${origin.address().port}/slow.raw`, ImageName: "slow-image",
    OsType: "CentOS", OsVersion: "7", Architecture: "x86_64",
  });
  await page.goto(base + "/console/#/images/" + slow.ImageId);
  await page.locator("#detail-body .progress").waitFor();
  await shot(page, "08-importing");
  await page.click("#cancel-task");
  await page.locator("#detail-body .failure", { hasText: "ImportCancelled" }).waitFor({ timeout: IMPORT_TIMEOUT_MS });
  assert.ok(await page.locator("#cancel-task").isHidden());

}

async function contrast(page, base, t) {
  // State labels meet WCAG AA in the light and the dark scheme.
  await page.goto(base + "/console/#/images");
  await page.locator("#pager-text", { hasText: "of 24 images" }).waitFor();
  for (const scheme of ["light", "dark"]) {
    await page.emulateMedia({ colorScheme: scheme });
    const ratios = await stateContrasts(page);
    for (const [s, ratio] of Object.entries(ratios)) {
      assert.ok(ratio >= 4.5, `${s} label contrast ${ratio}:1 in the ${scheme} scheme is below 4.5:1`);
    }
    t.diagnostic(`${scheme} state label contrast: ${JSON.stringify(ratios)}`);
    await shot(page, `09-list-${scheme}`);
  }

}

async function phoneAndDelete(page, base, goodId) {
  // Phone-sized screen: list and detail, dark and light.
  await page.setViewportSize({ width: 390, height: 844 });
  await shot(page, "10-phone-list-dark");
  await page.emulateMedia({ colorScheme: "light" });
  await shot(page, "11-phone-list");
  await page.goto(base + "/console/#/images/" + goodId);
  await page.locator("#guest-summary").waitFor();
  await shot(page, "12-phone-detail");
  await page.setViewportSize({ width: 1280, height: 860 });

  // Delete, through the confirmation dialog; back on the list.
  await page.click("#delete");
  await page.locator("#confirm-delete").waitFor({ state: "visible" });
  await shot(page, "13-confirm-delete");
  await page.click("#confirm-yes");
  await page.locator("#toast", { hasText: "Deleted" }).waitFor();
  await page.locator("#images").waitFor({ state: "visible" });
  await page.locator("#pager-text", { hasText: "of 23 images" }).waitFor();

  // Signing out forgets the key.
  await page.click("#signout");
  await page.locator("#signin-form").waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem("imagegate.session")), null);
}

// Headless Chromium with a profile of its own, closed after the test. Every
// page handed to `watch` reports page errors, console errors (a CSP
// violation is one) and requests to another origin into `problems`.
async function browser(t, base) {
  const profile = mkdtempSync(join(tmpdir(), "imagegate-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    viewport: { width: 1280, height: 860 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  t.after(async () => {
    await context.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  });
  const problems = [];
  const watch = (page) => {
    page.on("pageerror", (e) => problems.push("page error: " + e.message));
    page.on("console", (m) => { if (m.type() === "error") problems.push("console error: " + m.text()); });
    // Every request the page makes stays on this origin.
    page.on("request", (r) => {
      if (!r.url().startsWith(base + "/")) problems.push("request elsewhere: " + r.url());
    });
    return page;
  };
  return { context, problems, watch };
}

test("console: sign in, import, list pages, filters, sort, URLs, errors, cancel, contrast, delete", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "imagegate-console-"));
  makeImages(dir);
  const origin = await slowOrigin();
  const server = await startServer(writeConfig(dir));
  const base = `http://${server.addr}`;
  const api = await apiClient(server.addr);
  t.after(() => {
    server.child.kill("SIGTERM");
    origin.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const { context, problems, watch } = await browser(t, base);
  const page = watch(context.pages()[0] || await context.newPage());

  await signIn(page, base);
  const { goodId, hostileId } = await importTwo(page);
  await pagesAndOrder(page, api);
  await filters(page, goodId);
  await addresses(page, goodId);
  await guestAndSizes(page);
  await rename(page);
  await notInspectedAndCancel(page, base, api, origin, hostileId);
  await contrast(page, base, t);
  await phoneAndDelete(page, base, goodId);

  assert.deepEqual(problems, [], "the page reported problems:\n" + problems.join("\n") +
    "\nserver stderr:\n" + server.stderr().slice(-2000));
});

// Sign in as `who` (no refusal, no empty-list checks: see signIn).
async function signInAs(page, base, who) {
  await page.goto(base + "/console/");
  await page.locator("#signin-form").waitFor();
  await page.fill("#signin-form input[name=secretId]", who.secretId);
  await page.fill("#signin-form input[name=secretKey]", who.secretKey);
  await page.fill("#signin-form input[name=region]", who.region);
  await page.click("#signin-form button[type=submit]");
  await page.locator("#images").waitFor({ state: "visible" });
  assert.equal(await page.inputValue("#who-region"), who.region);
}

// The value next to a label in a facts list.
const fact = (scope, label) =>
  scope.locator("dt", { hasText: new RegExp("^" + label + "$") }).locator("xpath=following-sibling::dd[1]");

async function openDetail(page, base, id, name) {
  await page.goto(base + "/console/#/images/" + id);
  await page.locator("#detail-title", { hasText: name }).waitFor();
}

// The server answers an identical re-send of a mutating request (same
// signature: same body, action, region and second) with the first answer,
// without running it again (api/replay.rs). A test that repeats a request on
// purpose waits for the next second, so that the page signs a new one.
async function nextSecond() {
  await new Promise((r) => setTimeout(r, 1000 - (Date.now() % 1000) + 20));
}

async function share(page, accounts, permission) {
  await page.fill("#share-form input[name=accounts]", accounts);
  await page.click(`#share-form button[value=${permission}]`);
}

async function shareAndUnshare(page, context, watch, base, id, owner, friend) {
  // The owner's detail: not shared yet, and not marked as shared with anyone.
  await openDetail(page, base, id, "golden");
  await page.locator("#share-list", { hasText: "Not shared with any account." }).waitFor();
  assert.equal(await page.locator("#detail .mark-shared").count(), 0, "the owner's image is not marked shared");
  assert.match(await fact(page.locator("#detail-body"), "Type").innerText(), /PRIVATE_IMAGE/);

  // Refusals show the API's code and message at the form.
  await share(page, "100000000099", "SHARE");
  const err = page.locator("#share-error");
  await err.filter({ hasText: "InvalidAccountId.NotFound" }).waitFor();
  assert.match(await err.innerText(), /^InvalidAccountId\.NotFound: The account `100000000099` does not exist/);
  await share(page, OWNER.uin, "SHARE");
  await err.filter({ hasText: "FailedOperation.AccountIsYourSelf" }).waitFor();

  // Share with the friend: listed, the error gone, the server agrees.
  await share(page, FRIEND.uin, "SHARE");
  await page.locator(`#share-list li[data-account="${FRIEND.uin}"]`).waitFor();
  await page.locator("#toast", { hasText: "Shared with " + FRIEND.uin }).waitFor();
  assert.ok(await err.isHidden(), "no stale error");
  assert.equal(await page.inputValue("#share-form input[name=accounts]"), "");
  assert.deepEqual((await owner("DescribeImageSharePermission", { ImageId: id })).SharePermissionSet.map((s) => s.AccountId),
    [FRIEND.uin]);
  await nextSecond();
  await share(page, FRIEND.uin, "SHARE");
  await err.filter({ hasText: "FailedOperation.AccountAlreadyExists" }).waitFor();
  await shot(page, "14-owner-shared");

  // The owner's list does not mark its own image.
  await page.goto(base + "/console/#/images");
  await row(page, "golden").waitFor();
  assert.equal(await row(page, "golden").getAttribute("data-type"), "PRIVATE_IMAGE");
  assert.equal(await row(page, "golden").locator(".mark-shared").count(), 0);

  // The recipient, in a tab of its own (the session is per tab): marked in
  // the list, filtered by type, marked in the detail with its owner, and
  // only a copy offered.
  const fpage = watch(await context.newPage());
  await signInAs(fpage, base, FRIEND);
  const frow = row(fpage, "golden");
  await frow.waitFor();
  assert.equal(await frow.getAttribute("data-type"), "SHARED_IMAGE");
  assert.equal(await frow.locator(".mark-shared").innerText(), "Shared with you");
  assert.match(await frow.locator(".mark-shared").getAttribute("title"), new RegExp(OWNER.uin));
  await fpage.locator("#quota", { hasText: "Quota: 0 / 500 images" }).waitFor();
  await shot(fpage, "15-recipient-list");
  await fpage.selectOption("#type-filter", "private");
  await fpage.locator("#no-results").waitFor({ state: "visible" });
  assert.match(hashOf(fpage), /type=private/);
  await fpage.selectOption("#type-filter", "shared");
  await frow.waitFor();
  assert.equal(await fpage.locator("#image-rows tr").count(), 1);
  await fpage.selectOption("#type-filter", "");
  await frow.locator(".name").click();
  await fpage.locator("#detail-title .mark-shared", { hasText: "Shared with you" }).waitFor();
  const body = fpage.locator("#detail-body");
  await fact(body, "Owner").waitFor();
  assert.equal(await fact(body, "Owner").innerText(), OWNER.uin);
  assert.match(await fact(body, "Type").innerText(), /SHARED_IMAGE/);
  await fpage.locator("#sync-panel").waitFor({ state: "visible" });
  for (const sel of ["#rename-form", "#delete", "#cancel-task", "#share-panel", "#export-panel"]) {
    assert.ok(await fpage.locator(sel).isHidden(), sel + " is not offered for a shared image");
  }
  assert.equal(await fpage.inputValue("#sync-form input[name=regions]"), REGION, "a shared image is copied in its region");
  assert.match(await fpage.locator("#sync-hint").innerText(), /your own account/);
  await shot(fpage, "16-recipient-detail");

  // The recipient copies it into its own account: its own image, not marked.
  await fpage.fill("#sync-form input[name=name]", "friend-copy");
  await fpage.click("#sync-form button[type=submit]");
  const copy = fpage.locator(`#sync-result li[data-region="${REGION}"]`);
  await copy.waitFor();
  const copyId = await copy.getAttribute("data-id");
  assert.match(copyId, /^img-[0-9a-z]{8}$/);
  await copy.locator("button").click();
  await fpage.locator("#detail-title", { hasText: "friend-copy" }).waitFor();
  assert.equal(hashOf(fpage), "#/images/" + copyId);
  assert.equal(await fpage.locator("#detail .mark-shared").count(), 0);
  assert.ok(await fpage.locator("#rename-form").isVisible(), "the copy is the recipient's own");
  const mine = await friend("DescribeImages", { ImageIds: [copyId] });
  assert.equal(mine.ImageSet[0].ImageType, "PRIVATE_IMAGE");

  // Unshare from the owner's detail with the form (CANCEL with the id): the
  // recipient no longer sees the image.
  await openDetail(page, base, id, "golden");
  await page.locator(`#share-list li[data-account="${FRIEND.uin}"]`).waitFor();
  await share(page, FRIEND.uin, "CANCEL");
  await page.locator("#share-list", { hasText: "Not shared with any account." }).waitFor();
  await page.locator("#toast", { hasText: "No longer shared with " + FRIEND.uin }).waitFor();
  assert.deepEqual((await owner("DescribeImageSharePermission", { ImageId: id })).SharePermissionSet, []);
  const seen = await friend("DescribeImages", { Filters: [{ Name: "image-type", Values: ["SHARED_IMAGE"] }] });
  assert.equal(seen.TotalCount, 0, "unshared on the server");
  await fpage.goto(base + "/console/#/images");
  // (The tab's last list, of the shared image alone, may show for a moment.)
  await fpage.waitForFunction(() =>
    [...document.querySelectorAll("#image-rows .name")].map((e) => e.textContent).join() === "friend-copy");
  assert.equal(await fpage.locator("#pager-text").innerText(), "1–1 of 1 image");

  // Shared again, then stopped from the list of accounts.
  await nextSecond();
  await share(page, FRIEND.uin, "SHARE");
  const item = page.locator(`#share-list li[data-account="${FRIEND.uin}"]`);
  await item.waitFor();
  await nextSecond();
  await item.locator("button", { hasText: "Stop sharing" }).click();
  await page.locator("#share-list", { hasText: "Not shared with any account." }).waitFor();
  assert.deepEqual((await owner("DescribeImageSharePermission", { ImageId: id })).SharePermissionSet, []);
  await fpage.close();
}

async function copyToRegion(page, base, id, addr) {
  await openDetail(page, base, id, "golden");
  assert.match(await page.locator("#sync-hint").innerText(), /other regions/);
  const regions = page.locator("#sync-form input[name=regions]");
  const err = page.locator("#sync-error");
  // A region the server does not serve, and the image's own region: refused
  // with the API's code and message.
  await regions.fill("ap-nowhere");
  await page.click("#sync-form button[type=submit]");
  await err.filter({ hasText: "InvalidRegion.NotFound" }).waitFor();
  assert.match(await err.innerText(), /`ap-nowhere` does not exist or is not served here/);
  await regions.fill(REGION);
  await page.click("#sync-form button[type=submit]");
  await err.filter({ hasText: "InvalidParameterValue.InvalidRegion" }).waitFor();

  // The second region: the new id shown, and the server has it there.
  await regions.fill(OTHER_REGION);
  await page.click("#sync-form button[type=submit]");
  const copy = page.locator(`#sync-result li[data-region="${OTHER_REGION}"]`);
  await copy.waitFor();
  assert.ok(await err.isHidden(), "no stale error");
  const copyId = await copy.getAttribute("data-id");
  assert.match(copyId, /^img-[0-9a-z]{8}$/);
  assert.notEqual(copyId, id);
  assert.match(await copy.innerText(), new RegExp(copyId + " in " + OTHER_REGION));
  await shot(page, "17-copied");
  const there = await (await apiClient(addr, { ...OWNER, region: OTHER_REGION }))("DescribeImages", { ImageIds: [copyId] });
  assert.equal(there.TotalCount, 1);
  assert.equal(there.ImageSet[0].ImageName, "golden");
  assert.equal(there.ImageSet[0].ImageState, "NORMAL");

  // Open it: the console switches to that region and shows the copy, and
  // that region's list has it.
  await copy.locator("button", { hasText: "Open in " + OTHER_REGION }).click();
  await page.waitForFunction((h) => location.hash === h, "#/images/" + copyId);
  await fact(page.locator("#detail-body"), "Image ID").filter({ hasText: copyId }).waitFor();
  assert.match(await page.locator("#detail-title").innerText(), /^golden/);
  assert.equal(await page.inputValue("#who-region"), OTHER_REGION);
  await page.goto(base + "/console/#/images");
  // (The list of the first region may still be shown for a moment.)
  await page.locator(`#image-rows tr[data-id="${copyId}"]`).waitFor();
  assert.deepEqual(await rowNames(page), ["golden"]);
  assert.equal(await page.locator("#pager-text").innerText(), "1–1 of 1 image");
  await page.locator("#quota", { hasText: "Quota: 1 / 500 images" }).waitFor();

  // The header's switch: a region the server does not serve is refused
  // with its code; back to the first region, the original is listed.
  await page.fill("#who-region", "ap-nowhere");
  await page.press("#who-region", "Enter");
  await page.locator("#region-error", { hasText: "UnsupportedRegion" }).waitFor();
  assert.equal(await page.inputValue("#who-region"), OTHER_REGION);
  await page.fill("#who-region", REGION);
  await page.press("#who-region", "Enter");
  await page.locator(`#image-rows tr[data-id="${id}"]`).waitFor();
  assert.ok(await page.locator("#region-error").isHidden());
  const known = await page.locator("#known-regions option").evaluateAll((os) => os.map((o) => o.value));
  assert.deepEqual(known, [REGION, OTHER_REGION], "the regions used are suggested");
  return copyId;
}

// imagegate copies by sharing the stored blobs, so a copy is NORMAL when
// SyncImages returns and the server never reports SYNCING. How the page
// shows a copy in progress is checked by altering the server's real
// DescribeImages answers in the browser: the image `id` SYNCING at 42 %.
async function syncingShown(page, base, id) {
  const handler = async (route) => {
    if (route.request().headers()["x-tc-action"] !== "DescribeImages") return route.continue();
    const resp = await route.fetch();
    const json = await resp.json();
    for (const img of json.Response.ImageSet || []) {
      if (img.ImageId === id) Object.assign(img, { ImageState: "SYNCING", SyncPercent: 42 });
    }
    return route.fulfill({ response: resp, json });
  };
  await page.route(base + "/", handler);
  await page.goto(base + "/console/#/images");
  const r = page.locator(`#image-rows tr[data-id="${id}"]`);
  await r.locator(".state", { hasText: "SYNCING" }).waitFor();
  assert.equal(await r.locator(".progress-text").innerText(), "SYNCING · 42%");
  assert.equal(await r.locator("progress").getAttribute("value"), "42");
  await openDetail(page, base, id, "golden");
  await page.locator("#detail-body .progress-text", { hasText: "SYNCING · 42%" }).waitFor();
  assert.ok(await page.locator("#sync-form button[type=submit]").isDisabled(), "a copy in progress is not copied");
  // The only route: removed once its handlers in flight have answered.
  await page.unrouteAll({ behavior: "wait" });
  await page.locator("#detail-body .state", { hasText: "NORMAL" }).waitFor();
  assert.equal(await page.locator("#detail-body .progress").count(), 0);
}

async function exportWithProgress(page, base, id, dir, owner, t) {
  // Which DescribeExportImageTasks calls the page makes (it follows a new
  // task by its TaskId).
  const polls = [];
  page.on("request", (r) => {
    if (r.headers()["x-tc-action"] === "DescribeExportImageTasks") polls.push(JSON.parse(r.postData() || "{}"));
  });
  await openDetail(page, base, id, "golden");
  await page.locator("#export-none").waitFor({ state: "visible" });
  const f = page.locator("#export-form");
  const err = page.locator("#export-error");
  // Refusals with the API's code: another account's bucket, a bucket that
  // does not exist, a prefix with a slash.
  await f.locator("input[name=bucket]").fill("console-" + FRIEND.appId);
  await f.locator("button[type=submit]").click();
  await err.filter({ hasText: "InvalidParameterValue.InvalidBucketPermissionForExport" }).waitFor();
  await f.locator("input[name=bucket]").fill("missing-" + APP_ID);
  await f.locator("button[type=submit]").click();
  await err.filter({ hasText: "InvalidParameterValue.BucketNotFound" }).waitFor();
  await f.locator("input[name=bucket]").fill(BUCKET);
  await f.locator("input[name=prefix]").fill("a/b");
  await f.locator("button[type=submit]").click();
  await err.filter({ hasText: "InvalidParameterValue.InvalidFileNamePrefixList" }).waitFor();
  assert.ok(await page.locator("#export-none").isVisible(), "nothing was queued");

  // The real export: QCOW2 with a prefix, watched to SUCCEEDED.
  await f.locator("input[name=prefix]").fill("console");
  await f.locator("select[name=format]").selectOption("QCOW2");
  await f.locator("input[name=onlyRoot]").check();
  await f.locator("button[type=submit]").click();
  const task = page.locator("#export-tasks > li").first();
  await task.waitFor();
  await page.locator("#toast", { hasText: "Export started" }).waitFor();
  assert.ok(await err.isHidden(), "no stale error");
  const taskId = await task.getAttribute("data-task");
  assert.match(taskId, /^\d+$/);
  assert.match(await task.locator(".export-head").innerText(), new RegExp(`Task ${taskId} · QCOW2 to bucket ${BUCKET}`));
  const states = [];
  const deadline = Date.now() + IMPORT_TIMEOUT_MS;
  for (;;) {
    // One read of the item (it is rebuilt at each refresh).
    const { state, line, bars, text } = await task.evaluate((li) => ({
      state: li.dataset.state,
      line: [...li.querySelectorAll(".progress-text")].map((e) => e.textContent).join(" "),
      bars: li.querySelectorAll("progress").length,
      text: li.innerText,
    }));
    if (!states.length || states[states.length - 1].state !== state || states[states.length - 1].line !== line) {
      states.push({ state, line });
    }
    if (state === "SUCCEEDED") break;
    if (state === "FAILED" || state === "CANCELLED") throw new Error(`export ended ${state}: ${text}`);
    // While unfinished, a progress bar with phase, percent and bytes.
    assert.equal(bars, 1, "progress shown while " + state);
    const size = "\\d+(\\.\\d+)? (B|KiB|MiB|GiB)";
    assert.match(line, new RegExp(`^(QUEUED|EXPORTING) · \\d+%( · ${size} of ${size})? · ${size} written$`));
    if (Date.now() > deadline) throw new Error("the export did not finish: " + JSON.stringify(states));
    await page.waitForTimeout(100);
  }
  t.diagnostic("export as the page showed it: " + JSON.stringify(states));
  const done = (await task.locator(".progress-text").innerText());
  assert.match(done, /^100% · \d+(\.\d+)? (B|KiB|MiB|GiB) written · finished /);
  const cosPaths = await task.locator(".cos-path").allInnerTexts();
  assert.equal(cosPaths.length, 1, "the system disk only");
  assert.match(cosPaths[0], new RegExp(`^/console_${id}_system_snap-[0-9a-z]{8}\\.qcow2$`));
  assert.ok(polls.some((p) => Array.isArray(p.TaskIds) && p.TaskIds.includes(Number(taskId))),
    "the page followed the task by its TaskId: " + JSON.stringify(polls));
  await shot(page, "18-exported");

  // The server agrees, and the object is in the bucket's folder, complete:
  // a valid qcow2 with the guest's bytes.
  const api = (await owner("DescribeExportImageTasks", { TaskIds: [Number(taskId)] })).ExportImageTaskSet[0];
  assert.equal(api.TaskState, "SUCCEEDED");
  assert.deepEqual(api.CosPaths, cosPaths);
  const object = join(dir, "cos", BUCKET, cosPaths[0]);
  assert.ok(existsSync(object), "exported object at " + object);
  assert.ok(statSync(object).size > 0);
  execFileSync("qemu-img", ["check", "-q", "-f", "qcow2", object]);
  const info = JSON.parse(execFileSync("qemu-img", ["info", "--output=json", object], { encoding: "utf8" }));
  assert.equal(info.format, "qcow2");
  assert.equal(info["virtual-size"], 48 * 1024 * 1024);
  execFileSync("qemu-img", ["compare", "-q", "-f", "qcow2", "-F", "qcow2", object, join(dir, "cos", BUCKET, "good.qcow2")]);

  // Reopened, the image lists its export (by ImageIds) with the outcome.
  await page.reload();
  await page.locator(`#export-tasks > li[data-task="${taskId}"][data-state="SUCCEEDED"] .cos-path`, { hasText: cosPaths[0] }).waitFor();
}

// A real failed export: an image whose stored disk was removed from the
// data directory (imported here, "doomed"). The page shows the failure's
// code and message, and nothing of it is in the bucket.
async function exportFailure(page, base, dir, owner) {
  const { ImageId: doomed } = await owner("ImportImage", {
    ImageUrl: cosUrl("good.qcow2"), ImageName: "doomed", OsType: "CentOS", OsVersion: "7", Architecture: "x86_64",
  });
  await page.goto(base + "/console/#/images");
  await waitForState(page, "doomed", "NORMAL");
  const stored = join(dir, "data", "images", doomed + ".qcow2");
  assert.ok(existsSync(stored), "the stored disk is at " + stored);
  rmSync(stored);
  await openDetail(page, base, doomed, "doomed");
  const f = page.locator("#export-form");
  await f.locator("input[name=bucket]").fill(BUCKET);
  await f.locator("select[name=format]").selectOption("VMDK");
  await f.locator("button[type=submit]").click();
  const task = page.locator('#export-tasks > li[data-state="FAILED"]');
  await task.waitFor({ timeout: IMPORT_TIMEOUT_MS });
  assert.equal(await task.locator(".failure .code").innerText(), "ExportSourceUnreadable");
  assert.match(await task.locator(".failure .msg").innerText(), new RegExp(doomed + " disk 0: "));
  assert.equal(await task.locator("progress").count(), 0);
  assert.equal(await task.locator(".cos-path").count(), 0);
  const taskId = Number(await task.getAttribute("data-task"));
  const api = (await owner("DescribeExportImageTasks", { TaskIds: [taskId] })).ExportImageTaskSet[0];
  assert.equal(api.TaskState, "FAILED");
  assert.equal(api.FailureCode, "ExportSourceUnreadable");
  assert.equal(await task.locator(".failure .msg").innerText(), api.FailureMessage);
  assert.deepEqual(readdirSync(join(dir, "cos", BUCKET)).filter((n) => n.includes(doomed)), []);
  await shot(page, "19-export-failed");
}

test("console: shared images marked, share and unshare, copy to a region, export with progress", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "imagegate-console-"));
  makeImages(dir);
  const server = await startServer(writeConfig(dir, { accounts: [OWNER, FRIEND], regions: [REGION, OTHER_REGION] }));
  const base = `http://${server.addr}`;
  t.after(() => {
    server.child.kill("SIGTERM");
    rmSync(dir, { recursive: true, force: true });
  });
  const owner = await apiClient(server.addr, OWNER);
  const friend = await apiClient(server.addr, FRIEND);
  const { context, problems, watch } = await browser(t, base);
  const page = watch(context.pages()[0] || await context.newPage());

  const { ImageId: id } = await owner("ImportImage", {
    ImageUrl: cosUrl("good.qcow2"), ImageName: "golden", OsType: "CentOS", OsVersion: "7", Architecture: "x86_64",
  });
  await signInAs(page, base, OWNER);
  await waitForState(page, "golden", "NORMAL");

  await shareAndUnshare(page, context, watch, base, id, owner, friend);
  await copyToRegion(page, base, id, server.addr);
  await syncingShown(page, base, id);
  await exportWithProgress(page, base, id, dir, owner, t);
  await exportFailure(page, base, dir, owner);

  assert.deepEqual(problems, [], "the pages reported problems:\n" + problems.join("\n") +
    "\nserver stderr:\n" + server.stderr().slice(-2000));
});
