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
// Run: (cd tests/console && npm ci && npm test)
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { createServer } from "node:http";
import { mkdtempSync, mkdirSync, writeFileSync, rmSync, existsSync, symlinkSync, copyFileSync, readFileSync } from "node:fs";
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

function writeConfig(dir) {
  const path = join(dir, "imagegate.toml");
  writeFileSync(path, `listen = "127.0.0.1:0"
data_dir = ${JSON.stringify(join(dir, "data"))}
regions = ["ap-guangzhou"]

[rate_limits]
enabled = false

[workers]
concurrency = 4

[[accounts]]
secret_id = "${SECRET_ID}"
secret_key = "${SECRET_KEY}"
app_id = ${APP_ID}
uin = "100000000001"

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

// The API from the test itself, signed by the console's own signer.
async function apiClient(addr) {
  const code = readFileSync(join(root, "crates/imagegate/console/tc3.js"), "utf8");
  const tc3 = await import("data:text/javascript;base64," + Buffer.from(code).toString("base64"));
  return async (action, params) => {
    const body = JSON.stringify(params);
    const ts = Math.floor(Date.now() / 1000);
    const resp = await fetch(`http://${addr}/`, {
      method: "POST",
      headers: {
        "Content-Type": "application/json", "X-TC-Action": action, "X-TC-Version": "2017-03-12",
        "X-TC-Region": "ap-guangzhou", "X-TC-Timestamp": String(ts),
        "Authorization": await tc3.authorization(SECRET_ID, SECRET_KEY, addr, body, ts),
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

// WCAG 2 contrast of every state label class, from the computed styles of
// labels placed in the real table (so the whole cascade applies).
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
    for (const s of ["NORMAL", "IMPORTING", "IMPORTFAILED"]) {
      const probe = document.createElement("span");
      probe.className = "state state-" + s;
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

test("console: sign in, import, list pages, filters, sort, URLs, errors, cancel, contrast, delete", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "imagegate-console-"));
  makeImages(dir);
  const origin = await slowOrigin();
  const server = await startServer(writeConfig(dir));
  const base = `http://${server.addr}`;
  const api = await apiClient(server.addr);
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
    server.child.kill("SIGTERM");
    origin.close();
    rmSync(profile, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  });

  const problems = [];
  const page = context.pages()[0] || await context.newPage();
  page.on("pageerror", (e) => problems.push("page error: " + e.message));
  page.on("console", (m) => { if (m.type() === "error") problems.push("console error: " + m.text()); });
  // Every request the page makes stays on this origin.
  page.on("request", (r) => {
    if (!r.url().startsWith(base + "/")) problems.push("request elsewhere: " + r.url());
  });

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
