// The official Node.js SDK (tencentcloud-sdk-nodejs-cvm from npm, pinned by
// the lockfile) against a real `imagegate serve` (IMAGEGATE_BIN, default
// target/debug/imagegate) with a temporary config, data directory and COS
// folder, on every CVM action imagegate serves (sharing, SyncImages,
// DescribeImageFromFamily and ExportImages included).
//
// The SDK is used unchanged with `endpoint: "127.0.0.1:<port>"`: it then signs
// with the credential scope `…/127/tc3_request` (the first label of its
// endpoint), which the server accepts as the Host's first label.
//
// Run: (cd tests/node && npm ci && npm test)
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, writeFileSync, rmSync, existsSync, symlinkSync, copyFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const tencentcloud = require("tencentcloud-sdk-nodejs-cvm");
const CvmClient = tencentcloud.cvm.v20170312.Client;

const root = fileURLToPath(new URL("../../", import.meta.url));
const bin = process.env.IMAGEGATE_BIN || join(root, "target/debug/imagegate");
const IMPORT_TIMEOUT_MS = Number(process.env.NODE_IMPORT_TIMEOUT_MS || 120_000);

const SECRET_ID = "AKIDnodesdktest00000000000000000000";
const SECRET_KEY = "node-sdk-test-secret-key-000000000";
const APP_ID = 1250000001;
const BUCKET = "images-" + APP_ID;
const EXPORT_BUCKET = "exports-" + APP_ID;
const PEER_UIN = "100000000002";
const cosUrl = (key) => `https://${BUCKET}.cos.ap-guangzhou.myqcloud.com/${key}`;

// A small real system disk (MBR, ext4 root holding a CentOS 7 tree with
// cloud-init and virtio modules), as tests/console builds it.
function centos7Tree(dir) {
  const kver = "3.10.0-1160.el7.x86_64";
  for (const d of ["etc/cloud", "usr/bin", "usr/sbin", "boot",
    `lib/modules/${kver}/kernel/drivers/block`, `lib/modules/${kver}/kernel/drivers/net`]) {
    mkdirSync(join(dir, d), { recursive: true });
  }
  writeFileSync(join(dir, "etc/os-release"),
    'NAME="CentOS Linux"\nVERSION="7 (Core)"\nID="centos"\nID_LIKE="rhel fedora"\nVERSION_ID="7"\n' +
    'PRETTY_NAME="CentOS Linux 7 (Core)"\n');
  writeFileSync(join(dir, "etc/centos-release"), "CentOS Linux release 7.9.2009 (Core)\n");
  symlinkSync("centos-release", join(dir, "etc/redhat-release"));
  writeFileSync(join(dir, "etc/fstab"), "UUID=0 / ext4 defaults 1 1\n");
  copyFileSync("/bin/sh", join(dir, "usr/bin/sh"));
  symlinkSync("usr/bin", join(dir, "bin"));
  symlinkSync("usr/sbin", join(dir, "sbin"));
  writeFileSync(join(dir, `boot/vmlinuz-${kver}`), Buffer.alloc(4096));
  writeFileSync(join(dir, "etc/cloud/cloud.cfg"), "datasource_list: [ ConfigDrive, TencentCloud ]\n");
  writeFileSync(join(dir, "usr/bin/cloud-init"), "#!/usr/bin/python\n");
  writeFileSync(join(dir, `lib/modules/${kver}/kernel/drivers/block/virtio_blk.ko.xz`), "");
  writeFileSync(join(dir, `lib/modules/${kver}/kernel/drivers/net/virtio_net.ko.xz`), "");
}

function makeDisk(dir) {
  const bucket = join(dir, "cos", BUCKET);
  mkdirSync(bucket, { recursive: true });
  mkdirSync(join(dir, "cos", EXPORT_BUCKET), { recursive: true });
  const tree = join(dir, "tree");
  centos7Tree(tree);
  const raw = join(dir, "disk.raw");
  execFileSync("qemu-img", ["create", "-q", "-f", "raw", raw, "48M"]);
  execFileSync("sfdisk", ["--quiet", raw], { input: "label: dos\nstart=2048, size=65536, type=83, bootable\n" });
  execFileSync("mkfs.ext4", ["-q", "-F", "-d", tree, "-E", "offset=1048576", raw, "32768k"]);
  execFileSync("qemu-img", ["convert", "-q", "-f", "raw", "-O", "qcow2", raw, join(bucket, "good.qcow2")]);
}

function writeConfig(dir) {
  const path = join(dir, "imagegate.toml");
  writeFileSync(path, `listen = "127.0.0.1:0"
data_dir = ${JSON.stringify(join(dir, "data"))}
regions = ["ap-guangzhou", "ap-shanghai"]

[rate_limits]
enabled = false

[[accounts]]
secret_id = "${SECRET_ID}"
secret_key = "${SECRET_KEY}"
app_id = ${APP_ID}
uin = "100000000001"
image_quota = 7

# The recipient of a share.
[[accounts]]
secret_id = "AKIDnodesdkpeer000000000000000000000"
secret_key = "node-sdk-peer-secret-key-0000000000"
app_id = 1250000002
uin = "100000000002"
image_quota = 7

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

function client(addr, secretKey = SECRET_KEY, region = "ap-guangzhou") {
  return new CvmClient({
    credential: { secretId: SECRET_ID, secretKey },
    region,
    profile: { httpProfile: { endpoint: addr, protocol: "http://", reqTimeout: 30 } },
  });
}

// The call must fail with this Tencent error code, as the SDK raises it.
async function rejectsWith(promise, code) {
  await assert.rejects(promise, (e) => {
    assert.equal(e.constructor.name, "TencentCloudSDKHttpException", String(e));
    assert.equal(e.code, code, `${e.code}: ${e.message}`);
    assert.match(e.requestId, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    return true;
  });
}

// Wait for the next wall-clock second. The SDK signs with the current second,
// and e.g. DescribeImages and DeleteImages of the same ids send byte-identical
// bodies: within one second they share a signature, the server refuses a
// signature turned into a mutating request and answers an identical mutating
// re-send with the first answer (README, Exposure and hostile clients). A test
// that does either in a row waits for the next second, as next_second() in
// tests/conformance/conftest.py.
async function nextSecond() {
  await new Promise((res) => setTimeout(res, 1010 - (Date.now() % 1000)));
}

async function waitSettled(cvm, imageId) {
  const deadline = Date.now() + IMPORT_TIMEOUT_MS;
  for (;;) {
    const r = await cvm.DescribeImages({ ImageIds: [imageId] });
    assert.equal(r.TotalCount, 1);
    const image = r.ImageSet[0];
    if (image.ImageState !== "IMPORTING" || Date.now() > deadline) return image;
    await new Promise((res) => setTimeout(res, 300));
  }
}

test("Node.js SDK: every CVM action against imagegate", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "imagegate-node-"));
  makeDisk(dir);
  const server = await startServer(writeConfig(dir));
  t.after(() => {
    server.child.kill("SIGTERM");
    rmSync(dir, { recursive: true, force: true });
  });
  const cvm = client(server.addr);

  await t.test("DescribeImportImageOs", async () => {
    const r = await cvm.DescribeImportImageOs({});
    assert.ok(r.ImportImageOsListSupported.Linux.includes("CentOS"), JSON.stringify(r));
    const centos = r.ImportImageOsVersionSet.find((v) => v.OsName === "CentOS");
    assert.ok(centos && centos.OsVersions.includes("7"), JSON.stringify(r.ImportImageOsVersionSet));
  });

  await t.test("DescribeImageQuota", async () => {
    const r = await cvm.DescribeImageQuota({});
    assert.equal(r.ImageNumQuota, 7);
  });

  const name = "node-" + Date.now();
  let imageId;
  await t.test("ImportImage to NORMAL", async () => {
    const dry = await cvm.ImportImage({
      Architecture: "x86_64", OsType: "CentOS", OsVersion: "7", ImageUrl: cosUrl("good.qcow2"),
      ImageName: name, DryRun: true,
    });
    assert.equal(dry.ImageId, undefined);
    const r = await cvm.ImportImage({
      Architecture: "x86_64", OsType: "CentOS", OsVersion: "7", ImageUrl: cosUrl("good.qcow2"),
      ImageName: name, ImageDescription: "from node", TagSpecification: [
        { ResourceType: "image", Tags: [{ Key: "sdk", Value: "node" }] }],
    });
    assert.match(r.ImageId, /^img-[a-z0-9]{8}$/);
    imageId = r.ImageId;
    const image = await waitSettled(cvm, imageId);
    assert.equal(image.ImageState, "NORMAL", JSON.stringify(image));
    assert.equal(image.Platform, "CentOS");
    assert.equal(image.ImageSource, "EXTERNAL_IMPORT");
    assert.deepEqual(image.Tags, [{ Key: "sdk", Value: "node" }]);
    assert.equal(image.SnapshotSet.length, 1);
  });

  await t.test("DescribeImages by filters and pages", async () => {
    const byName = await cvm.DescribeImages({ Filters: [{ Name: "image-name", Values: [name] }] });
    assert.equal(byName.TotalCount, 1);
    assert.equal(byName.ImageSet[0].ImageId, imageId);
    const byTag = await cvm.DescribeImages({ Filters: [{ Name: "tag:sdk", Values: ["node"] }], Limit: 1 });
    assert.equal(byTag.ImageSet[0].ImageId, imageId);
    const pub = await cvm.DescribeImages({ Filters: [{ Name: "image-type", Values: ["PUBLIC_IMAGE"] }] });
    assert.equal(pub.TotalCount, 0);
  });

  await t.test("ModifyImageAttribute", async () => {
    await cvm.ModifyImageAttribute({ ImageId: imageId, ImageName: name + "-renamed", ImageFamily: "fam" });
    let image = (await cvm.DescribeImages({ ImageIds: [imageId] })).ImageSet[0];
    assert.equal(image.ImageName, name + "-renamed");
    assert.equal(image.ImageFamily, "fam");
    // Terraform sends an empty family to clear it.
    await cvm.ModifyImageAttribute({ ImageId: imageId, ImageFamily: "" });
    image = (await cvm.DescribeImages({ ImageIds: [imageId] })).ImageSet[0];
    assert.equal(image.ImageFamily, "");
  });

  await t.test("errors as TencentCloudSDKHttpException with the code", async () => {
    await rejectsWith(cvm.DescribeImages({ ImageIds: ["img-BAD"] }), "InvalidImageId.Malformed");
    await rejectsWith(cvm.ModifyImageAttribute({ ImageId: "img-00000000", ImageName: "x" }), "InvalidImageId.NotFound");
    await rejectsWith(cvm.ImportImage({
      Architecture: "x86_64", OsType: "Plan9", OsVersion: "4", ImageUrl: cosUrl("good.qcow2"), ImageName: "plan9",
    }), "InvalidImageOsType.Unsupported");
    await rejectsWith(cvm.DescribeImages({ Filters: [{ Name: "image-type", Values: ["MY_IMAGE"] }] }), "InvalidFilter");
    await rejectsWith(client(server.addr, "wrong-key").DescribeImageQuota({}), "AuthFailure.SignatureFailure");
  });

  await t.test("ModifyImageSharePermission and DescribeImageSharePermission", async () => {
    await nextSecond();
    await cvm.ModifyImageSharePermission({ ImageId: imageId, AccountIds: [PEER_UIN], Permission: "SHARE" });
    const shared = await cvm.DescribeImageSharePermission({ ImageId: imageId });
    assert.deepEqual(shared.SharePermissionSet.map((p) => p.AccountId), [PEER_UIN]);
    await nextSecond();
    await rejectsWith(cvm.DeleteImages({ ImageIds: [imageId] }), "InvalidImageId.InShared");
    await nextSecond();
    await cvm.ModifyImageSharePermission({ ImageId: imageId, AccountIds: [PEER_UIN], Permission: "CANCEL" });
    assert.deepEqual((await cvm.DescribeImageSharePermission({ ImageId: imageId })).SharePermissionSet, []);
  });

  await t.test("DescribeImageFromFamily", async () => {
    await nextSecond();
    await cvm.ModifyImageAttribute({ ImageId: imageId, ImageFamily: "nodefam" });
    const r = await cvm.DescribeImageFromFamily({ ImageFamily: "nodefam" });
    assert.equal(r.Image.ImageId, imageId);
    const none = await cvm.DescribeImageFromFamily({ ImageFamily: "no-such-family" });
    assert.ok(none.Image == null, JSON.stringify(none));
  });

  await t.test("SyncImages", async () => {
    await nextSecond();
    const r = await cvm.SyncImages({ ImageIds: [imageId], DestinationRegions: ["ap-shanghai"], ImageSetRequired: true });
    assert.equal(r.ImageSet.length, 1);
    const copy = r.ImageSet[0];
    assert.equal(copy.Region, "ap-shanghai");
    const shanghai = client(server.addr, SECRET_KEY, "ap-shanghai");
    const seen = (await shanghai.DescribeImages({ ImageIds: [copy.ImageId] })).ImageSet[0];
    assert.equal(seen.ImageState, "NORMAL");
    await nextSecond();
    await shanghai.DeleteImages({ ImageIds: [copy.ImageId] });
    await nextSecond();
    await rejectsWith(cvm.SyncImages({ ImageIds: [imageId], DestinationRegions: ["ap-nowhere"] }),
      "InvalidRegion.NotFound");
  });

  await t.test("ExportImages", async () => {
    await nextSecond();
    const r = await cvm.ExportImages({ BucketName: EXPORT_BUCKET, ImageIds: [imageId], ExportFormat: "QCOW2" });
    assert.ok(Number.isInteger(r.TaskId), JSON.stringify(r));
    assert.equal(r.CosPaths.length, 1);
    const object = join(dir, "cos", EXPORT_BUCKET, r.CosPaths[0].replace(/^\//, ""));
    const deadline = Date.now() + IMPORT_TIMEOUT_MS;
    while (!existsSync(object) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 300));
    assert.ok(existsSync(object), `${object} never appeared`);
    execFileSync("qemu-img", ["check", "-q", object]);
    await rejectsWith(cvm.ExportImages({ BucketName: "exports-1250000002", ImageIds: [imageId], ExportFormat: "RAW" }),
      "InvalidParameterValue.InvalidBucketPermissionForExport");
  });

  await t.test("DeleteImages", async () => {
    await cvm.DeleteImages({ ImageIds: [imageId], DryRun: true });
    assert.equal((await cvm.DescribeImages({ ImageIds: [imageId] })).TotalCount, 1);
    await nextSecond();
    await cvm.DeleteImages({ ImageIds: [imageId] });
    assert.equal((await cvm.DescribeImages({ ImageIds: [imageId] })).TotalCount, 0);
    // A new request, not a re-send of the first: it runs and finds nothing.
    await nextSecond();
    await rejectsWith(cvm.DeleteImages({ ImageIds: [imageId] }), "InvalidImageId.NotFound");
  });
});
