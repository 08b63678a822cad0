// The console's TC3 signer (crates/imagegate/console/tc3.js) against
// Tencent's published test vector and against every TC3 POST request the
// official Python SDK signed in tcapi's recorded fixtures. No browser needed:
// Node's WebCrypto is the same API the page uses.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../../", import.meta.url));

// The module as the page loads it (it imports nothing), from its source.
function loadSigner() {
  const code = readFileSync(root + "crates/imagegate/console/tc3.js", "utf8");
  return import("data:text/javascript;base64," + Buffer.from(code).toString("base64"));
}

test("published TC3 test vector", async () => {
  const tc3 = await loadSigner();
  const auth = await tc3.authorization(
    "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE",
    "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
    "cvm.tencentcloudapi.com",
    '{"ImageIds": ["img-gvbnzy6f"]}',
    1551113065,
  );
  assert.equal(
    auth,
    "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2019-02-25/cvm/tc3_request, " +
      "SignedHeaders=content-type;host, " +
      "Signature=f3025300fad1b3d803eaef6edcfe9aebc95c769966ce3761b0bce217f270c283",
  );
});

test("same Authorization as the Python SDK for every recorded TC3 POST", async () => {
  const tc3 = await loadSigner();
  const lines = readFileSync(root + "crates/tcapi/tests/fixtures/python_sdk_requests.jsonl", "utf8")
    .split("\n")
    .filter((l) => l.trim());
  const posts = lines
    .map((l) => JSON.parse(l))
    .filter((r) => r.sign_method === "TC3-HMAC-SHA256" && r.method === "POST");
  assert.ok(posts.length >= 6, "fixtures missing: " + posts.length);
  for (const r of posts) {
    const secretId = /Credential=([^/]+)\//.exec(r.headers.Authorization)[1];
    const auth = await tc3.authorization(
      secretId,
      r.secret_key,
      r.headers.Host,
      r.body,
      Number(r.headers["X-TC-Timestamp"]),
    );
    assert.equal(auth, r.headers.Authorization, r.action + " via " + r.endpoint);
  }
});
