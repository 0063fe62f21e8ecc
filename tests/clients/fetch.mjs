// One request by undici (Node's HTTP client), for the conformance suite.
// Reads the same FETCH_SPEC_FILE as fetch.py (client "undici"); the proxy URL's
// userinfo becomes the Proxy-Authorization token. Prints
// {"status", "headers", "body_b64", "trailers"} or {"error"}.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(process.env.AIRLOCK_TEST_NODE_MODULES + "/");
const { request, Agent, ProxyAgent } = require("undici");

const spec = JSON.parse(readFileSync(process.env.FETCH_SPEC_FILE, "utf8"));
const ca = readFileSync(spec.ca);
let dispatcher;
if (spec.proxy) {
  const u = new URL(spec.proxy);
  const token = "Basic " + Buffer.from(decodeURIComponent(u.username) + ":" + decodeURIComponent(u.password)).toString("base64");
  dispatcher = new ProxyAgent({ uri: `${u.protocol}//${u.host}`, token, requestTls: { ca } });
} else {
  const resolve = spec.resolve || {};
  const lookup = (host, opts, cb) => {
    const address = resolve[host] || host;
    if (opts && opts.all) cb(null, [{ address, family: 4 }]);
    else cb(null, address, 4);
  };
  dispatcher = new Agent({ connect: { ca, lookup } });
}
try {
  const headers = {};
  for (const [n, v] of spec.headers || []) headers[n] = v;
  const body = spec.body_b64 == null ? undefined : Buffer.from(spec.body_b64, "base64");
  const r = await request(spec.url, { method: spec.method, headers, body, dispatcher, headersTimeout: 30000, bodyTimeout: 30000 });
  const data = Buffer.from(await r.body.arrayBuffer());
  const flat = [];
  for (const [n, v] of Object.entries(r.headers)) for (const x of [].concat(v)) flat.push([n, x]);
  console.log(JSON.stringify({ status: r.statusCode, headers: flat, body_b64: data.toString("base64"), trailers: Object.entries(r.trailers || {}) }));
} catch (e) {
  console.log(JSON.stringify({ error: `${e.name}: ${e.message}` }));
}
await dispatcher.close();
