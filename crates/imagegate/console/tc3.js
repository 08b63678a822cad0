// TC3-HMAC-SHA256 signing with WebCrypto, as the official SDKs sign a POST of
// JSON (also loaded by tests/console/sign.test.mjs, without a browser).

const enc = new TextEncoder();
const hex = (buf) => Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");

export async function sha256Hex(text) {
  return hex(await crypto.subtle.digest("SHA-256", enc.encode(text)));
}

async function hmac(keyBytes, text) {
  const key = await crypto.subtle.importKey("raw", keyBytes, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await crypto.subtle.sign("HMAC", key, enc.encode(text)));
}

// The Authorization value for a POST of `body` (a string) with Content-Type
// application/json, signing content-type and host, as the official SDKs do.
// The date is the UTC date of the timestamp.
export async function authorization(secretId, secretKey, host, body, timestamp) {
  const date = new Date(timestamp * 1000).toISOString().slice(0, 10);
  const canonicalRequest = [
    "POST", "/", "",
    "content-type:application/json\nhost:" + host + "\n",
    "content-type;host",
    await sha256Hex(body),
  ].join("\n");
  const scope = date + "/cvm/tc3_request";
  const stringToSign = ["TC3-HMAC-SHA256", String(timestamp), scope, await sha256Hex(canonicalRequest)].join("\n");
  const kDate = await hmac(enc.encode("TC3" + secretKey), date);
  const kService = await hmac(kDate, "cvm");
  const kSigning = await hmac(kService, "tc3_request");
  const signature = hex(await hmac(kSigning, stringToSign));
  return "TC3-HMAC-SHA256 Credential=" + secretId + "/" + scope +
    ", SignedHeaders=content-type;host, Signature=" + signature;
}
