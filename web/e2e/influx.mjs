// The whole server on InfluxDB 1.x, end to end: a private `influxd`, the real binary with
// `tsdb_url` pointing at it, a device provisioned and its telemetry ingested over HTTP, the
// series read back through the API and through the portal (Explorer chart + CSV export).
//
//   npm run e2e:influx     (after `npm run build` and a debug build of the binary)
//
// Without `influxd` it skips loudly, and fails under CI=true (like testkit::unavailable):
// CI must run every backend. Env: FACTORYOPS_BIN, CHROMIUM_PATH, INFLUXD.
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { influxdBinary, startInfluxd } from "./influxd.mjs";
import { startServer } from "./server.mjs";

const ROOT_PASSWORD = "e2e-root-password-1234";
const FACTORY = "plant-i";
const BOSS = { email: "boss@plant-i.example", name: "Ida Influx", password: "boss-password-123" };
const DB = "factoryops_e2e";
const here = new URL(".", import.meta.url).pathname;
mkdirSync(join(here, "screenshots"), { recursive: true });

function assert(cond, message) {
  if (!cond) throw new Error(`assertion failed: ${message}`);
}

const binary = influxdBinary();
if (!binary) {
  const message = "InfluxDB is not available (`influxd` not found; `apt-get install influxdb`, scripts/test-deps.sh)";
  // The same test as testkit's in_ci(): CI set and not empty, "false" or "0".
  const ci = !["", "false", "0"].includes(process.env.CI ?? "");
  if (ci) {
    console.log(`e2e influx: ${message}: CI must run every backend`);
    process.exit(1);
  }
  console.log(`\n!!! SKIPPED: ${message}. Run \`make test\` to install test services. !!!\n`);
  process.exit(0);
}

let influx;
let server;
let browser;
let page;
const started = Date.now();
let failed = false;
try {
  influx = await startInfluxd(binary);
  server = await startServer({ rootPassword: ROOT_PASSWORD, env: { FACTORYOPS_TSDB_URL: influx.url(DB) } });
  console.log(`e2e influx: server at ${server.url} on InfluxDB at ${influx.url(DB)}`);

  const call = async (method, path, { token, body } = {}) => {
    const response = await fetch(`${server.url}${path}`, {
      method,
      headers: { ...(body ? { "content-type": "application/json" } : {}), ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
    return text ? JSON.parse(text) : null;
  };
  const ready = await (await fetch(`${server.url}/readyz`)).json();
  assert(ready.status === "ready", `ready on InfluxDB: ${JSON.stringify(ready)}`);

  // Provisioning through the API.
  const root = (await call("POST", "/api/v1/platform/login", { body: { username: "root", password: ROOT_PASSWORD } })).access_token;
  await call("POST", "/api/v1/platform/factories", { token: root, body: { id: FACTORY, name: "Plant on InfluxDB", timezone: "UTC" } });
  await call("POST", `/api/v1/platform/factories/${FACTORY}/super-admins`, { token: root, body: BOSS });
  const token = (await call("POST", `/api/v1/factories/${FACTORY}/auth/login`, { body: { email: BOSS.email, password: BOSS.password } }))
    .access_token;
  await call("POST", `/api/v1/factories/${FACTORY}/devices`, { token, body: { id: "oven-1", name: "Oven 1", type: "oven" } });
  const key = (await call("POST", `/api/v1/factories/${FACTORY}/api-keys`, { token, body: { name: "gateway", permissions: ["telemetry:write"] } }))
    .key;

  // 30 readings, one a minute on whole minutes, ingested over HTTP with the gateway's timestamps.
  const now = Date.now();
  const t0 = now - (now % 60_000) - 30 * 60_000;
  const readings = Array.from({ length: 30 }, (_, i) => ({ ts: t0 + i * 60_000, value: 180 + i * 0.5 }));
  const ingest = await call("POST", `/api/v1/factories/${FACTORY}/telemetry`, {
    token: key,
    body: { messages: readings.map((r) => ({ device_id: "oven-1", ts: r.ts, temp_c: r.value })) },
  });
  assert(ingest.results.every((r) => r.status === "stored"), `every message stored: ${JSON.stringify(ingest)}`);

  // The API reads the series back from InfluxDB, point for point.
  const query = new URLSearchParams({ device_id: "oven-1", property: "temp_c", from: new Date(t0).toISOString(), to: new Date(now + 1).toISOString() });
  const series = await call("GET", `/api/v1/factories/${FACTORY}/telemetry/series?${query}`, { token });
  const got = series.points.map((p) => `${Date.parse(p.ts)}=${p.value}`).join(" ");
  const want = readings.map((r) => `${r.ts}=${r.value}`).join(" ");
  assert(got === want, `API series\n got ${got}\nwant ${want}`);
  // And they are in InfluxDB itself (not in an embedded store).
  const count = await influx.query(DB, 'SELECT count("value") FROM "device_metrics"');
  assert(count[0]?.[1] === 30, `InfluxDB holds the 30 points: ${JSON.stringify(count)}`);

  // The portal: sign in, chart the property in the Explorer over 1 h, export it as CSV.
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
    headless: process.env.E2E_HEADFUL !== "1",
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 }, acceptDownloads: true });
  page = await context.newPage();
  page.setDefaultTimeout(15_000);
  await page.goto(`${server.url}/`);
  assert(!(await page.content()).includes("portal is not built"), "the portal is built into the binary (`make test-web` builds it)");
  await page.getByTestId("factory-select").selectOption(FACTORY);
  await page.getByLabel("Email").fill(BOSS.email);
  await page.getByLabel("Password").fill(BOSS.password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(`**/f/${FACTORY}`);
  await page.locator("aside").getByRole("link", { name: "Explorer", exact: true }).click();
  await page.getByLabel("Device").selectOption("oven-1");
  await page.getByLabel("Property").selectOption("temp_c");
  await page.getByRole("button", { name: "+ Add to chart" }).click();
  await page.getByRole("button", { name: "1 h" }).click();
  await page.waitForFunction(() => Number(document.querySelector('[data-testid="explorer-chart"]')?.getAttribute("data-points")) >= 30);
  const [download] = await Promise.all([page.waitForEvent("download"), page.getByTestId("export-csv").click()]);
  const rows = readFileSync(await download.path(), "utf8").trim().split("\n").slice(1);
  const csv = rows.map((row) => `${Date.parse(row.split(",")[0])}=${Number(row.split(",")[1])}`).join(" ");
  assert(csv === want, `portal CSV\n got ${csv}\nwant ${want}`);
  console.log(`  ✓ on InfluxDB: provisioned, 30 points ingested over HTTP, read back through the API and the portal (${Date.now() - started} ms)`);
} catch (e) {
  failed = true;
  console.log(`  ✗ e2e influx: ${e?.stack ?? e}`);
  if (page) await page.screenshot({ path: join(here, "screenshots", "FAILED-influx.png"), fullPage: true }).catch(() => {});
  if (server) console.log(server.log.slice(-40).join("\n"));
} finally {
  await browser?.close().catch(() => {});
  await server?.stop().catch(() => {});
  await influx?.stop().catch(() => {});
}
console.log(`e2e influx: ${failed ? "failed" : "passed"} in ${Math.round((Date.now() - started) / 1000)} s`);
process.exit(failed ? 1 : 0);
