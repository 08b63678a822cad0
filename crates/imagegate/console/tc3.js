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
// application/json, signing content-type and host as the official SDKs do,
// plus `signed`: more headers (lower-case name -> value as sent) to cover.
// The console passes X-TC-Action and X-TC-Region, so that no two of its
// requests share a signature (a server that binds each signature to one
// action would refuse a DeleteImages whose body and second equal those of
// the DescribeImages just before it), and so that a captured request cannot
// be re-sent as another action. The date is the UTC date of the timestamp.
export async function authorization(secretId, secretKey, host, body, timestamp, signed = {}) {
  const date = new Date(timestamp * 1000).toISOString().slice(0, 10);
  const extra = Object.keys(signed).sort();
  const names = ["content-type", "host", ...extra].join(";");
  const canonicalHeaders = "content-type:application/json\nhost:" + host + "\n" +
    extra.map((name) => name + ":" + String(signed[name]).trim() + "\n").join("");
  const canonicalRequest = ["POST", "/", "", canonicalHeaders, names, await sha256Hex(body)].join("\n");
  const scope = date + "/cvm/tc3_request";
  const stringToSign = ["TC3-HMAC-SHA256", String(timestamp), scope, await sha256Hex(canonicalRequest)].join("\n");
  const kDate = await hmac(enc.encode("TC3" + secretKey), date);
  const kService = await hmac(kDate, "cvm");
  const kSigning = await hmac(kService, "tc3_request");
  const signature = hex(await hmac(kSigning, stringToSign));
  return "TC3-HMAC-SHA256 Credential=" + secretId + "/" + scope +
    ", SignedHeaders=" + names + ", Signature=" + signature;
}
