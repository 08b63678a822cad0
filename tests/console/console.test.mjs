// The web console in a real browser: headless Chromium (Debian's
// /usr/bin/chromium) driven by playwright-core, against a real
// `imagegate serve` (IMAGEGATE_BIN, default target/debug/imagegate) with a
// temporary config, data directory and COS folder.
//
// Flow: sign in, import a small qcow2 made by qemu-img and watch it reach
// NORMAL, import a hostile qcow2 (backing file /etc/hostname) and see it fail
// with its reason, open the detail view, rename, delete; then the same pages
// on a 390x844 phone viewport. A screenshot of each state goes to
// tests/console/screenshots/. Any page error or CSP violation fails the test.
//
// Run: (cd tests/console && npm ci && npm test)
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, writeFileSync, rmSync, existsSync, symlinkSync, copyFileSync } from "node:fs";
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

[[accounts]]
secret_id = "${SECRET_ID}"
secret_key = "${SECRET_KEY}"
app_id = ${APP_ID}
uin = "100000000001"

[source]
cos_root = ${JSON.stringify(join(dir, "cos"))}
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

test("console: sign in, import, failure reason, rename, delete, phone layout", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "imagegate-console-"));
  makeImages(dir);
  const server = await startServer(writeConfig(dir));
  const base = `http://${server.addr}`;
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

  // Sign in; a wrong key is refused with the API's own error.
  await page.goto(base + "/console");
  assert.equal(new URL(page.url()).pathname, "/console/");
  await page.locator("#signin-form").waitFor();
  await shot(page, "01-signin");
  await page.fill("input[name=secretId]", SECRET_ID);
  await page.fill("input[name=secretKey]", "wrong-key");
  await page.click("#signin-form button[type=submit]");
  await page.locator("#signin-error").filter({ hasText: "AuthFailure.SignatureFailure" }).waitFor();
  await shot(page, "02-signin-refused");
  await page.fill("input[name=secretKey]", SECRET_KEY);
  await page.click("#signin-form button[type=submit]");
  await page.locator("#images").waitFor({ state: "visible" });
  await page.locator("#quota").filter({ hasText: "Quota" }).waitFor();
  const stored = await page.evaluate(() => [sessionStorage.getItem("imagegate.session"), localStorage.length]);
  assert.ok(stored[0] && stored[0].includes(SECRET_ID), "the key is kept in sessionStorage");
  assert.equal(stored[1], 0, "nothing in localStorage");
  await shot(page, "03-empty-list");

  // Import the good image and watch it to NORMAL.
  await importImage(page, { url: cosUrl("good.qcow2"), name: "good-image" });
  await shot(page, "04-import-form");
  await page.click("#import-form button[type=submit]");
  await row(page, "good-image").waitFor();
  await shot(page, "05-importing");
  await waitForState(page, "good-image", "NORMAL");
  await shot(page, "06-normal");

  // The hostile image fails, and the row says why and what to do.
  await importImage(page, { url: cosUrl("hostile.qcow2"), name: "hostile-image" });
  await page.click("#import-form button[type=submit]");
  await waitForState(page, "hostile-image", "IMPORTFAILED");
  const failure = row(page, "hostile-image").locator(".failure");
  await failure.waitFor();
  const failureText = await failure.textContent();
  assert.match(failureText, /^ExternalReferenceRefused .*backing file/, "the row shows the reason");
  assert.match(failureText, /What to do: /, "the row says what to do");
  await shot(page, "07-failed");

  // Detail view: checksum, source format; rename.
  await row(page, "good-image").click();
  await page.locator("#detail").waitFor({ state: "visible" });
  await page.locator("#detail-body dt", { hasText: "SHA-256" }).waitFor();
  const body = await page.locator("#detail-body").textContent();
  assert.match(body, /qcow2/i);
  assert.match(body, /[0-9a-f]{64}/);
  await shot(page, "08-detail");
  await page.fill("#rename-form input[name=name]", "good-renamed");
  await page.click("#rename-form button[type=submit]");
  await page.locator("#detail-title", { hasText: "good-renamed" }).waitFor();
  await page.locator("#toast", { hasText: "Renamed" }).waitFor();
  await shot(page, "09-renamed");

  // Phone-sized screen, list and detail.
  await page.setViewportSize({ width: 390, height: 844 });
  await shot(page, "10-phone-detail");
  await page.click("#back");
  await row(page, "good-renamed").waitFor();
  await shot(page, "11-phone-list");
  await page.setViewportSize({ width: 1280, height: 860 });

  // Delete, through the confirmation dialog.
  await row(page, "good-renamed").click();
  await page.click("#delete");
  await page.locator("#confirm-delete").waitFor({ state: "visible" });
  await shot(page, "12-confirm-delete");
  await page.click("#confirm-yes");
  await page.locator("#toast", { hasText: "Deleted" }).waitFor();
  await row(page, "good-renamed").waitFor({ state: "detached" });
  await shot(page, "13-deleted");

  // Signing out forgets the key.
  await page.click("#signout");
  await page.locator("#signin-form").waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem("imagegate.session")), null);

  assert.deepEqual(problems, [], "the page reported problems:\n" + problems.join("\n") +
    "\nserver stderr:\n" + server.stderr().slice(-2000));
});
