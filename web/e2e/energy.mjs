// End-to-end test of the energy pages against the real binary in real Chromium (issue 18):
// a factory in Europe/Berlin with two machines and one day of backfilled power (HTTP
// POST /telemetry with `ts`, one gap), a time-of-use tariff set on the Settings page
// through the UI, then the Energy page's figures against what the API answers and
// against hand-computed ones.
//
//   npm run e2e:energy     (after `npm run build` and `cargo build -p factoryops`)
//
// Screenshots go to e2e/screenshots/energy-*.png.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { startServer } from "./server.mjs";

const here = new URL(".", import.meta.url).pathname;
const shots = join(here, "screenshots");
mkdirSync(shots, { recursive: true });

const ROOT_PASSWORD = "e2e-root-password-1234";
const F = { id: "watt-works", name: "Watt Works", tz: "Europe/Berlin" };
const BOSS = { email: "boss@watt-works.example", name: "Erna Energy", password: "boss-password-123" };
const VIEWER = { email: "viewer@watt-works.example", name: "Vera Viewer", password: "viewer-password-123" };

let server;
let browser;
let page;
const results = [];

function assert(cond, message) {
  if (!cond) throw new Error(`assertion failed: ${message}`);
}
function close(a, b, rel = 1e-9) {
  return Math.abs(a - b) <= rel * Math.max(1, Math.abs(a), Math.abs(b));
}

async function step(name, fn) {
  const started = Date.now();
  try {
    await fn();
    results.push({ name, ok: true });
    console.log(`  ✓ ${name} (${Date.now() - started} ms)`);
  } catch (e) {
    results.push({ name, ok: false });
    console.log(`  ✗ ${name}\n${String(e?.stack ?? e)}`);
    if (page) await page.screenshot({ path: join(shots, `energy-FAILED-${name.replace(/\W+/g, "-")}.png`), fullPage: true }).catch(() => {});
    throw e;
  }
}

/** A full-page screenshot from the top, without toasts. */
async function shot(name) {
  await page.evaluate(() => document.querySelectorAll(".toasts button").forEach((b) => b.click()));
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: join(shots, `energy-${name}.png`), fullPage: true });
}

async function call(method, path, { token, body } = {}) {
  const response = await fetch(`${server.url}${path}`, {
    method,
    headers: { ...(body ? { "content-type": "application/json" } : {}), ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  const json = text ? JSON.parse(text) : null;
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return json;
}

/** Local midnight of the day before `now` in Berlin, as UTC ms (via the wall clock). */
function berlinMidnight(now, daysBack) {
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat("en-US", { timeZone: F.tz, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit" })
      .formatToParts(new Date(now))
      .map((p) => [p.type, p.value]),
  );
  const wall = Date.UTC(Number(parts.year), Number(parts.month) - 1, Number(parts.day) - daysBack);
  const offset = (ms) => {
    const p = Object.fromEntries(
      new Intl.DateTimeFormat("en-US", { timeZone: F.tz, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit" })
        .formatToParts(new Date(ms))
        .map((x) => [x.type, x.value]),
    );
    return Date.UTC(Number(p.year), Number(p.month) - 1, Number(p.day), Number(p.hour), Number(p.minute)) - ms;
  };
  let t = wall - offset(wall);
  t = wall - offset(t);
  return t;
}

async function main() {
  server = await startServer({ rootPassword: ROOT_PASSWORD });
  console.log(`energy e2e: server at ${server.url}`);
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
    headless: process.env.E2E_HEADFUL !== "1",
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 }, colorScheme: "light" });
  page = await context.newPage();
  page.setDefaultTimeout(20_000);
  const consoleErrors = [];
  page.on("pageerror", (e) => consoleErrors.push(String(e)));

  const base = `/api/v1/factories/${F.id}`;
  let token = "";
  let groupId = "";
  let key = "";
  const now = Date.now();
  const dayStart = berlinMidnight(now, 1);
  const dayEnd = berlinMidnight(now, 0);
  const hours = (dayEnd - dayStart) / 3_600_000;
  // The oven's readings stop for 65 minutes from 10:00 local: a gap, not bridged.
  const gapFrom = dayStart + 10 * 3_600_000 - 5 * 60_000;
  const gapTo = dayStart + 11 * 3_600_000;

  await step("provision: factory, two machines, a day of backfilled power with one gap", async () => {
    const root = (await call("POST", "/api/v1/platform/login", { body: { username: "root", password: ROOT_PASSWORD } })).access_token;
    await call("POST", "/api/v1/platform/factories", { token: root, body: { id: F.id, name: F.name, timezone: F.tz } });
    await call("POST", `/api/v1/platform/factories/${F.id}/super-admins`, { token: root, body: BOSS });
    token = (await call("POST", `${base}/auth/login`, { body: { email: BOSS.email, password: BOSS.password } })).access_token;
    await call("POST", `${base}/users`, { token, body: { email: VIEWER.email, name: VIEWER.name, password: VIEWER.password, role: "viewer" } });
    await call("POST", `${base}/devices`, { token, body: { id: "press-1", name: "Press 1", type: "press" } });
    await call("POST", `${base}/devices`, { token, body: { id: "oven-1", name: "Oven 1", type: "oven" } });
    key = (await call("POST", `${base}/api-keys`, { token, body: { name: "gateway", permissions: ["telemetry:write"] } })).key;
    // Every 5 minutes from local midnight to the next one (both included): press 10 kW, oven 20 kW.
    const messages = [];
    for (let t = dayStart; t <= dayEnd; t += 5 * 60_000) {
      messages.push({ device_id: "press-1", ts: t, power_kw: 10 });
      if (t <= gapFrom || t >= gapTo) messages.push({ device_id: "oven-1", ts: t, power_kw: 20 });
    }
    for (let i = 0; i < messages.length; i += 500) {
      const r = await call("POST", `${base}/telemetry`, { token: key, body: { messages: messages.slice(i, i + 500) } });
      assert(r.results.every((x) => x.status === "stored" && x.rejected.length === 0), `stored: ${JSON.stringify(r.results.find((x) => x.status !== "stored" || x.rejected.length))}`);
    }
    // The oven through the API; the press through the device page below.
    await call("PATCH", `${base}/devices/oven-1/properties/power_kw`, { token, body: { quantity: "power", unit: "kW" } });
  });

  await step("the device page offers the server's suggestion; one click applies it", async () => {
    await page.goto(`${server.url}/`);
    await page.getByTestId("factory-select").selectOption(F.id);
    await page.getByLabel("Email").fill(BOSS.email);
    await page.getByLabel("Password").fill(BOSS.password);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.waitForURL(`**/f/${F.id}`);
    await page.goto(`${server.url}/f/${F.id}/devices/press-1`);
    const table = page.getByTestId("properties-table");
    // Suggested (power in kW from the name `power_kw`), not applied until clicked.
    const suggestion = table.getByTestId("suggestion-power_kw");
    await suggestion.waitFor();
    assert((await suggestion.innerText()).includes("power · kW"), `suggestion: ${await suggestion.innerText()}`);
    const before = await call("GET", `${base}/devices/press-1/properties`, { token });
    assert(before.items.find((p) => p.name === "power_kw").quantity === null, "nothing applied silently");
    await suggestion.getByRole("button", { name: "Apply suggestion" }).click();
    await suggestion.waitFor({ state: "detached" });
    await table.getByText("power · kW", { exact: true }).waitFor();
    const after = await call("GET", `${base}/devices/press-1/properties`, { token });
    const p = after.items.find((x) => x.name === "power_kw");
    assert(p.quantity === "power" && p.unit === "kW", `applied: ${JSON.stringify(p)}`);
    // The dialog: units follow the quantity; a counter takes a rollover.
    await page.getByRole("button", { name: "Semantics of power_kw" }).click();
    const dialog = page.getByRole("dialog");
    await dialog.getByTestId("semantics-quantity").selectOption("energy_counter");
    const units = await dialog.getByTestId("semantics-unit").locator("option").allInnerTexts();
    assert(units.join(",") === "Wh,kWh,MWh", `energy units: ${units}`);
    await dialog.getByLabel("Rolls over at (optional)").waitFor();
    await shot("device-semantics");
    await dialog.getByRole("button", { name: "Cancel" }).click();
  });

  await step("energy settings through the API: the site group, the emission factor", async () => {
    groupId = (await call("POST", `${base}/groups`, { token, body: { name: "Watt Works site", kind: "hierarchy", level: "site", devices: ["press-1", "oven-1"] } })).id;
    await call("PUT", `${base}/energy/emission-factor`, { token, body: { kg_per_kwh: 0.38 } });
  });

  await step("admin sets a time-of-use tariff on the Settings page; a server problem shows at its field", async () => {
    await page.locator("aside").getByRole("link", { name: "Factory settings", exact: true }).click();
    await page.waitForURL(`**/f/${F.id}/settings/tariff`);
    await page.getByTestId("tariff-periods").waitFor();
    // Night 00:00–06:00 at 0.15, day 06:00–24:00 at 0.30, every day.
    await page.getByLabel("Period 1 to").fill("06:00");
    await page.getByLabel("Period 1 price per kWh").fill("0.15");
    await page.getByTestId("add-period").click();
    for (const d of ["sat", "sun"]) await page.getByLabel(`Period 2 days ${d}`).click();
    await page.getByLabel("Period 2 from").fill("06:00");
    await page.getByLabel("Period 2 to").fill("25:00");
    await page.getByLabel("Period 2 price per kWh").fill("0.30");
    await page.getByTestId("save-tariff").click();
    // 25:00 is not a time: the server's problem shows next to the field.
    const fieldError = page.getByTestId("tariff-period-1").locator(".field-error");
    await fieldError.first().waitFor();
    await shot("settings-error");
    await page.getByLabel("Period 2 to").fill("24:00");
    await page.getByTestId("save-tariff").click();
    await page.getByTestId("tariff-in-force").waitFor();
    await page.getByTestId("tariff-versions").waitFor();
    const stored = await call("GET", `${base}/energy/tariff`, { token });
    const text = JSON.stringify(stored);
    assert(text.includes("0.15") && text.includes("0.3") && text.includes("06:00"), `stored tariff: ${text}`);
    await shot("settings-tariff");
  });

  await step("the Energy page shows the API's figures, which match the hand-computed ones", async () => {
    await page.locator("aside").getByRole("link", { name: "Energy", exact: true }).click();
    await page.getByLabel("Device or group").selectOption(`g:${groupId}`);
    await page.getByRole("group", { name: "Period" }).getByRole("button", { name: "Yesterday" }).click();
    await page.getByTestId("energy-bars").waitFor();
    const range = page.getByTestId("energy-range");
    const from = Number(await range.getAttribute("data-from"));
    const to = Number(await range.getAttribute("data-to"));
    assert(from === dayStart && to === dayEnd, `the page asks for yesterday in Berlin: ${from}..${to} vs ${dayStart}..${dayEnd}`);
    const q = `group_id=${groupId}&from=${new Date(from).toISOString()}&to=${new Date(to).toISOString()}`;
    const api = await call("GET", `${base}/energy/consumption?${q}&bucket=hour`, { token });
    const peak = await call("GET", `${base}/energy/peak-demand?${q}&interval_minutes=15`, { token });
    const sum = (k) => api.items.reduce((s, i) => s + (i[k] ?? 0), 0);
    // Wait for the page to show this query's figures.
    await page.waitForFunction((v) => Math.abs(Number(document.querySelector('[data-testid="total-kwh"]')?.getAttribute("data-value")) - v) < 1e-6 * Math.max(1, v), sum("kwh"));
    const shown = async (id) => Number(await page.getByTestId(id).getAttribute("data-value"));
    assert(close(await shown("total-kwh"), sum("kwh")), `kWh shown ${await shown("total-kwh")} vs API ${sum("kwh")}`);
    assert(close(await shown("total-cost"), sum("cost")), `cost shown ${await shown("total-cost")} vs API ${sum("cost")}`);
    assert(close(await shown("total-co2"), sum("co2_kg")), `CO2 shown ${await shown("total-co2")} vs API ${sum("co2_kg")}`);
    assert(close(await shown("total-idle"), sum("idle_kwh")), `idle shown vs API`);
    assert(Number(await page.getByTestId("energy-bars").getAttribute("data-bars")) === api.items.length, "one bar per bucket");
    assert(api.items.length === hours, `${api.items.length} hourly buckets in a ${hours}-hour day`);
    // The gap is listed, with its device.
    assert(api.gaps.some((g) => g.device_id === "oven-1"), `the API reports the oven's gap: ${JSON.stringify(api.gaps)}`);
    assert((await page.getByTestId("energy-gaps").locator("tbody tr").count()) === api.gaps.length, "every gap is listed");
    // Peak demand: the page's figure is the API's.
    const peakShown = Number(await page.getByTestId("peak-kw").first().getAttribute("data-value"));
    assert(peak.items.length > 0 && close(peakShown, peak.items[0].kw), `peak shown ${peakShown} vs API ${JSON.stringify(peak.items[0])}`);
    // Hand-computed (within 0.1 %): press 10 kW × 24 h; oven 20 kW × (24 h − 65 min);
    // cost at 0.15 for 6 night hours and 0.30 for the rest; CO2 at 0.38 kg/kWh; peak 30 kW.
    const dayMinutes = hours * 60;
    const pressKwh = (10 * dayMinutes) / 60;
    const ovenKwh = (20 * (dayMinutes - 65)) / 60;
    const expectKwh = pressKwh + ovenKwh;
    const expectCost = (10 + 20) * 6 * 0.15 + ((10 * (dayMinutes - 360)) / 60) * 0.3 + ((20 * (dayMinutes - 360 - 65)) / 60) * 0.3;
    const within = (a, b) => Math.abs(a - b) <= 0.001 * Math.abs(b);
    assert(within(sum("kwh"), expectKwh), `kWh ${sum("kwh")} vs hand-computed ${expectKwh}`);
    assert(within(sum("cost"), expectCost), `cost ${sum("cost")} vs hand-computed ${expectCost}`);
    assert(within(sum("co2_kg"), expectKwh * 0.38), `CO2 ${sum("co2_kg")} vs ${expectKwh * 0.38}`);
    assert(within(peak.items[0].kw, 30), `peak ${peak.items[0].kw} vs 30 kW`);
    await shot("page");
    await page.evaluate(() => {
      document.documentElement.dataset.theme = "dark";
      window.dispatchEvent(new CustomEvent("factoryops-theme", { detail: "dark" }));
    });
    await shot("page-dark");
    await page.evaluate(() => {
      document.documentElement.dataset.theme = "light";
      window.dispatchEvent(new CustomEvent("factoryops-theme", { detail: "light" }));
    });
  });

  await step("a child group created on the Settings page holds the press (moved out of the site)", async () => {
    await page.goto(`${server.url}/f/${F.id}/settings/groups`);
    await page.getByTestId("group-Watt Works site").getByRole("button", { name: "+ Child" }).click();
    const dialog = page.getByRole("dialog");
    await dialog.getByLabel("Name").fill("Press line");
    await dialog.getByLabel("Level").fill("line");
    await dialog.getByRole("checkbox", { name: /Press 1/ }).check();
    await dialog.getByTestId("save-group").click();
    await page.getByTestId("group-Press line").waitFor();
    const { items } = await call("GET", `${base}/groups`, { token });
    const line = items.find((g) => g.name === "Press line");
    const site = items.find((g) => g.id === groupId);
    assert(line.parent_id === groupId && line.level === "line" && line.devices.join() === "press-1", `child: ${JSON.stringify(line)}`);
    assert(site.devices.join() === "oven-1", `the press left the site group: ${JSON.stringify(site)}`);
    // The site still rolls up both machines: yesterday's energy is unchanged.
    const q = `group_id=${groupId}&from=${new Date(dayStart).toISOString()}&to=${new Date(dayEnd).toISOString()}&bucket=day`;
    const total = (await call("GET", `${base}/energy/consumption?${q}`, { token })).items.reduce((s, i) => s + i.kwh, 0);
    assert(Math.abs(total - ((10 * hours * 60) / 60 + (20 * (hours * 60 - 65)) / 60)) < 0.001 * total, `site total ${total}`);
    await shot("settings-groups");
  });

  await step("an idle threshold set on the device page makes the press's energy idle", async () => {
    await page.goto(`${server.url}/f/${F.id}/devices/press-1`);
    const card = page.getByTestId("energy-config");
    await card.getByLabel("Energy from").selectOption("power_kw");
    await card.getByLabel("Idle below (kW)").fill("15");
    await card.getByTestId("save-energy-config").click();
    await page.getByText("Energy settings saved").waitFor();
    const config = await call("GET", `${base}/energy/devices/press-1`, { token });
    assert(config.idle_below_kw === 15 && config.source_property === "power_kw", `config: ${JSON.stringify(config)}`);
    // 10 kW all day is below 15 kW: the press's whole day (240 kWh, or 250 on the fall-back day) is idle.
    const q = `device_id=press-1&from=${new Date(dayStart).toISOString()}&to=${new Date(dayEnd).toISOString()}&bucket=day`;
    const c = await call("GET", `${base}/energy/consumption?${q}`, { token });
    const idle = c.items.reduce((s, i) => s + i.idle_kwh, 0);
    assert(Math.abs(idle - 10 * hours) < 0.001 * 10 * hours, `idle ${idle} vs ${10 * hours}`);
  });

  await step("a state property shows as a timeline of coloured bands", async () => {
    const t0 = Date.now() - 3 * 3_600_000;
    const states = ["running", "idle", "running", "off"];
    const messages = states.map((state, i) => ({ device_id: "press-1", ts: t0 + i * 30 * 60_000, state }));
    const r = await call("POST", `${base}/telemetry`, { token: key, body: { messages } });
    assert(r.results.every((x) => x.status === "stored" && x.rejected.length === 0), `states stored: ${JSON.stringify(r.results)}`);
    await page.goto(`${server.url}/f/${F.id}/devices/press-1`);
    const timeline = page.getByTestId("state-timeline-state");
    await timeline.waitFor();
    // running, idle, running, off: four bands (the last one holds until now).
    assert(Number(await timeline.getAttribute("data-bands")) === 4, `bands: ${await timeline.getAttribute("data-bands")}`);
    await shot("device-states");
  });

  await step("the dashboard's energy tiles read the whole factory", async () => {
    await page.locator("aside").getByRole("link", { name: "Dashboard", exact: true }).click();
    await page.getByTestId("energy-tiles").waitFor();
    // This month's peak is yesterday's 30 kW (both machines running), unless today is the 1st.
    const dayOfMonth = Number(new Intl.DateTimeFormat("en-US", { timeZone: F.tz, day: "numeric" }).format(new Date(now)));
    if (dayOfMonth > 1) await page.waitForFunction(() => /\/\s*30 kW/.test(document.querySelector('[data-testid="tile-demand"]')?.textContent ?? ""));
    await shot("dashboard");
  });

  await step("a viewer reads the settings but cannot change them", async () => {
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.waitForURL((u) => u.pathname === "/");
    await page.getByTestId("factory-select").selectOption(F.id);
    await page.getByLabel("Email").fill(VIEWER.email);
    await page.getByLabel("Password").fill(VIEWER.password);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.waitForURL(`**/f/${F.id}`);
    await page.goto(`${server.url}/f/${F.id}/settings/tariff`);
    await page.getByTestId("tariff-in-force").waitFor();
    assert((await page.getByTestId("save-tariff").count()) === 0, "no save button for a viewer");
    assert(await page.getByLabel("Period 1 price per kWh").isDisabled(), "inputs are read-only");
  });

  assert(consoleErrors.length === 0, `page errors: ${consoleErrors.join("\n")}`);
}

const started = Date.now();
try {
  await main();
  console.log(`energy e2e: ${results.length} steps passed in ${Math.round((Date.now() - started) / 1000)} s; screenshots in ${shots}`);
} catch {
  process.exitCode = 1;
  if (server) console.log(server.log.slice(-20).join("\n"));
} finally {
  await browser?.close().catch(() => {});
  await server?.stop().catch(() => {});
}
