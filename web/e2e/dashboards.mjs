// End-to-end test of dashboards as data (issue 21, ADR 0022) against the real binary in
// real Chromium: a super admin starts from the built-in overview, creates a shared
// dashboard with a value, a chart (two units: two axes) and a gauge widget, meets the
// server's 422 next to the field, moves and resizes widgets, reloads; a viewer of the same
// factory finds it in the picker, opens it by its shareable URL and makes it their home.
//
//   npm run e2e:dashboards     (after `npm run build` and building the binary)
//
// Screenshots go to e2e/screenshots/dashboards-*.png (1440 px and 390 px wide).
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { startServer } from "./server.mjs";

const here = new URL(".", import.meta.url).pathname;
const shots = join(here, "screenshots");
mkdirSync(shots, { recursive: true });

const ROOT_PASSWORD = "e2e-root-password-1234";
const F = { id: "dash-works", name: "Dash Works", tz: "Europe/Berlin" };
const BOSS = { email: "boss@dash-works.example", name: "Dora Dash", password: "boss-password-123" };
const VIEWER = { email: "viewer@dash-works.example", name: "Vito Viewer", password: "viewer-password-123" };
const NAME = "Line 1 energy";

let server;
let browser;
let page;
const results = [];
const bench = {};

function assert(cond, message) {
  if (!cond) throw new Error(`assertion failed: ${message}`);
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
    if (page) await page.screenshot({ path: join(shots, `dashboards-FAILED-${name.replace(/\W+/g, "-")}.png`), fullPage: true }).catch(() => {});
    throw e;
  }
}

async function shot(name) {
  await page.evaluate(() => document.querySelectorAll(".toasts button").forEach((b) => b.click()));
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: join(shots, `dashboards-${name}.png`), fullPage: true });
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

const tid = (id) => page.getByTestId(id);

async function signIn(who) {
  await page.goto(`${server.url}/`);
  await tid("factory-select").locator(`option[value="${F.id}"]`).waitFor({ state: "attached" });
  await tid("factory-select").selectOption(F.id);
  await page.getByLabel("Email").fill(who.email);
  await page.getByLabel("Password").fill(who.password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(`**/f/${F.id}`);
  await tid("user-name").waitFor();
}

async function signOut() {
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.waitForURL((u) => u.pathname === "/");
}

/** Fills the widget dialog and adds the widget. */
async function addWidget({ type, title, device, property, series, range, max }) {
  await tid("add-widget").click();
  const d = page.getByRole("dialog");
  await d.getByLabel("Type").selectOption(type);
  await d.getByLabel("Title").fill(title);
  if (device !== undefined) await d.getByLabel("Device", { exact: true }).fill(device);
  if (property !== undefined) await d.getByLabel("Property", { exact: true }).fill(property);
  if (series) {
    for (const [i, s] of series.entries()) {
      if (i > 0) await d.getByRole("button", { name: "+ Add series" }).click();
      await d.getByLabel(`Series ${i + 1} device`).fill(s.device_id);
      await d.getByLabel(`Series ${i + 1} property`).fill(s.property);
    }
  }
  if (range) await d.getByLabel("Time range").selectOption(range);
  if (max !== undefined) await d.getByLabel("Maximum (limit)").fill(String(max));
  await tid("save-widget").click();
  await d.waitFor({ state: "detached" });
}

async function main() {
  server = await startServer({ rootPassword: ROOT_PASSWORD });
  console.log(`dashboards e2e: server at ${server.url}`);
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
    headless: process.env.E2E_HEADFUL !== "1",
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, colorScheme: "light" });
  page = await context.newPage();
  page.setDefaultTimeout(20_000);
  const consoleErrors = [];
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));

  const base = `/api/v1/factories/${F.id}`;
  let token = "";
  let dashboardId = "";

  await step("provision: factory, a viewer, two machines with a day of power and temperature", async () => {
    const root = (await call("POST", "/api/v1/platform/login", { body: { username: "root", password: ROOT_PASSWORD } })).access_token;
    await call("POST", "/api/v1/platform/factories", { token: root, body: { id: F.id, name: F.name, timezone: F.tz } });
    await call("POST", `/api/v1/platform/factories/${F.id}/super-admins`, { token: root, body: BOSS });
    token = (await call("POST", `${base}/auth/login`, { body: { email: BOSS.email, password: BOSS.password } })).access_token;
    await call("POST", `${base}/users`, { token, body: { email: VIEWER.email, name: VIEWER.name, password: VIEWER.password, role: "viewer" } });
    await call("POST", `${base}/devices`, { token, body: { id: "press-1", name: "Press 1", type: "press" } });
    await call("POST", `${base}/devices`, { token, body: { id: "oven-1", name: "Oven 1", type: "oven" } });
    const key = (await call("POST", `${base}/api-keys`, { token, body: { name: "gateway", permissions: ["telemetry:write"] } })).key;
    const now = Date.now();
    const messages = [];
    for (let t = now - 24 * 3_600_000; t <= now; t += 5 * 60_000) {
      // A working day's shape: smooth, plus a little step noise.
      const a = (2 * Math.PI * (t % 86_400_000)) / 86_400_000;
      const noise = ((t / 300_000) % 5) / 5;
      messages.push({ device_id: "press-1", ts: t, power_kw: Math.round((28 + 9 * Math.sin(a) + noise) * 10) / 10, temp_c: Math.round((61 + 6 * Math.cos(a - 0.6)) * 10) / 10 });
      messages.push({ device_id: "oven-1", ts: t, power_kw: 18 + Math.round(4 * Math.sin(2 * a)) });
    }
    for (let i = 0; i < messages.length; i += 500) await call("POST", `${base}/telemetry`, { token: key, body: { messages: messages.slice(i, i + 500) } });
    for (const d of ["press-1", "oven-1"]) await call("PATCH", `${base}/devices/${d}/properties/power_kw`, { token, body: { quantity: "power", unit: "kW" } });
    await call("PATCH", `${base}/devices/press-1/properties/temp_c`, { token, body: { quantity: "temperature", unit: "°C" } });
  });

  await step("no dashboard yet: the built-in overview with a Create button; admins have Operations", async () => {
    await signIn(BOSS);
    await tid("devices-online").waitFor();
    await tid("create-dashboard").waitFor();
    assert((await page.getByText("Ingestion rate").count()) === 0, "the ingestion figures left the dashboard");
    await page.locator("aside").getByRole("link", { name: "Operations", exact: true }).click();
    await tid("ingestion-chart").waitFor();
    await page.locator("aside").getByRole("link", { name: "Dashboard", exact: true }).click();
    await tid("create-dashboard").waitFor();
    await shot("overview-1440");
  });

  await step("create a shared dashboard: value, chart with two units, gauge; the server's 422 shows at the field", async () => {
    await tid("create-dashboard").click();
    await page.waitForURL(`**/f/${F.id}/dashboards/new`);
    await tid("edit-bar").waitFor();
    await tid("dashboard-name").fill(NAME);
    await tid("dashboard-shared").check();
    await addWidget({ type: "value", title: "Press power", device: "press-1", property: "power_kw" });
    await addWidget({ type: "chart", title: "Press power and temperature", series: [{ device_id: "press-1", property: "power_kw" }, { device_id: "press-1", property: "temp_c" }], range: "24h" });
    // The form's own check: a gauge needs its limit.
    await tid("add-widget").click();
    const d = page.getByRole("dialog");
    await d.getByLabel("Type").selectOption("gauge");
    await d.getByLabel("Title").fill("Demand vs contract");
    await d.getByLabel("Device", { exact: true }).fill("press-9");
    await d.getByLabel("Property", { exact: true }).fill("power_kw");
    await tid("save-widget").click();
    await d.locator(".field", { has: page.getByLabel("Maximum (limit)") }).locator(".field-error").waitFor();
    await d.getByLabel("Maximum (limit)").fill("40");
    await tid("save-widget").click();
    await d.waitFor({ state: "detached" });
    // press-9 does not exist: only the server knows, and says so at widgets[5].device_id.
    await tid("save-dashboard").click();
    const gauge = tid("widget-card-gauge");
    await gauge.locator(".widget-errors", { hasText: "device_id" }).waitFor();
    await gauge.getByRole("button", { name: "Edit Demand vs contract" }).click();
    const deviceError = await d.locator(".field", { has: page.getByLabel("Device", { exact: true }) }).locator(".field-error").innerText();
    assert(/device/i.test(deviceError), `the server's error is next to the Device field: ${deviceError}`);
    await shot("server-error-at-field");
    await d.getByLabel("Device", { exact: true }).fill("press-1");
    await tid("save-widget").click();
    await d.waitFor({ state: "detached" });
    await tid("save-dashboard").click();
    await page.waitForURL(/\/dashboards\/[0-9a-f-]{36}$/);
    dashboardId = page.url().split("/").pop();
    await tid("dashboard-title").getByText(NAME).waitFor();
    const stored = await call("GET", `${base}/dashboards/${dashboardId}`, { token });
    assert(stored.shared === true && stored.widgets.length === 6, `stored: ${JSON.stringify(stored)}`);
    const types = stored.widgets.map((w) => w.type).join(",");
    assert(types === "status_grid,energy_bars,alerts,value,chart,gauge", `widget types: ${types}`);
    assert(stored.widgets.every((w) => w.layout), "every widget has a layout");
  });

  await step("the widgets show server data: value with unit and sparkline, two axes, gauge", async () => {
    const started = Date.now();
    await page.reload();
    await page.locator('[data-testid="widget-chart"][data-axes="2"]').waitFor();
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="widget-chart"]')?.getAttribute("data-points")) >= 100);
    await page.waitForFunction(() => document.querySelector('[data-testid="widget-gauge"]')?.getAttribute("data-fraction") !== "");
    await tid("widget-value").getByText("kW").waitFor();
    await page.locator(".widget-value svg.sparkline").waitFor();
    await page.locator('[data-testid="widget-energy"]').waitFor();
    await page.locator('[data-testid="widget-status"]').getByText("2 online").waitFor();
    bench.dashboardRenderMs = Date.now() - started;
    const legend = await tid("widget-chart").locator("xpath=..").innerText();
    assert(legend.includes("(kW)") && legend.includes("(°C)"), `legend names both units: ${legend}`);
    const fraction = Number(await tid("widget-gauge").getAttribute("data-fraction"));
    assert(fraction > 0 && fraction <= 1, `gauge fraction ${fraction}`);
  });

  await step("edit mode: drag a widget, resize one by keyboard, save, reload: the layout stays", async () => {
    await tid("edit-dashboard").click();
    const before = await call("GET", `${base}/dashboards/${dashboardId}`, { token });
    const valueBefore = before.widgets[3].layout;
    // Drag the value widget three columns to the right and one row down.
    const handle = page.getByRole("button", { name: "Move Press power (arrow keys)" });
    const box = await handle.boundingBox();
    const grid = await tid("dashboard-grid").boundingBox();
    const col = (grid.width + 12) / 12;
    await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
    await page.mouse.down();
    for (let i = 1; i <= 6; i++) await page.mouse.move(box.x + box.width / 2 + (3 * col * i) / 6, box.y + box.height / 2 + (84 * i) / 6);
    await page.mouse.up();
    // The gauge two columns wider, by keyboard.
    const resize = page.getByRole("button", { name: "Resize Demand vs contract (arrow keys)" });
    await resize.focus();
    await page.keyboard.press("ArrowRight");
    await page.keyboard.press("ArrowRight");
    await page.waitForTimeout(200);
    await shot("edit-mode");
    // What the grid shows (widget index → x,y,w,h) is what gets stored.
    const shown = Object.fromEntries(await tid("dashboard-grid").locator("section").evaluateAll((els) => els.map((e) => [e.getAttribute("data-index"), e.getAttribute("data-layout")])));
    await tid("save-dashboard").click();
    await tid("edit-dashboard").waitFor();
    await page.reload();
    await tid("dashboard-title").waitFor();
    const after = await call("GET", `${base}/dashboards/${dashboardId}`, { token });
    after.widgets.forEach((w, i) => assert(shown[i] === `${w.layout.x},${w.layout.y},${w.layout.w},${w.layout.h}`, `widget ${i} stored as shown: ${shown[i]} vs ${JSON.stringify(w.layout)}`));
    const v = after.widgets[3].layout;
    assert(v.x === Math.min(12 - v.w, valueBefore.x + 3), `moved value widget: ${JSON.stringify(valueBefore)} → ${JSON.stringify(v)}`);
    assert(after.widgets[5].layout.w === before.widgets[5].layout.w + 2, `resized gauge: ${JSON.stringify(after.widgets[5].layout)}`);
    // Nothing overlaps after the push-down and the compaction.
    const ls = after.widgets.map((w) => w.layout);
    for (let i = 0; i < ls.length; i++)
      for (let j = i + 1; j < ls.length; j++) {
        const [a, b] = [ls[i], ls[j]];
        assert(!(a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h), `widgets ${i} and ${j} overlap`);
      }
    const dims = await tid("dashboard-grid").locator("section").evaluateAll((els) => els.map((e) => e.getAttribute("data-layout")));
    assert(dims.length === 6, `six widgets rendered: ${dims}`);
    // For the screenshots (README): a tidy arrangement, stored through the API as any client may.
    const tidy = [
      { x: 6, y: 0, w: 3, h: 3 }, // status grid
      { x: 7, y: 3, w: 5, h: 4 }, // energy bars
      { x: 9, y: 0, w: 3, h: 3 }, // alerts
      { x: 0, y: 0, w: 3, h: 3 }, // value
      { x: 0, y: 3, w: 7, h: 4 }, // chart
      { x: 3, y: 0, w: 3, h: 3 }, // gauge
    ];
    await call("PUT", `${base}/dashboards/${dashboardId}`, { token, body: { name: after.name, shared: true, widgets: after.widgets.map((w, i) => ({ ...w, layout: tidy[i] })) } });
    await page.reload();
    await page.locator('[data-testid="widget-chart"][data-axes="2"]').waitFor();
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="widget-chart"]')?.getAttribute("data-points")) >= 100);
    await page.waitForTimeout(400);
    await shot("dashboard-1440");
    await page.getByRole("button", { name: "Switch to dark theme" }).click();
    await page.waitForTimeout(400);
    await shot("dashboard-dark-1440");
    await page.getByRole("button", { name: "Switch to light theme" }).click();
  });

  await step("the dashboard-wide range and auto-refresh live in the shareable URL", async () => {
    await page.getByRole("group", { name: "Dashboard time range" }).getByRole("button", { name: "6h", exact: true }).click();
    await page.getByLabel("Auto-refresh").selectOption("30");
    await page.waitForURL(/range=6h/);
    assert(page.url().includes("refresh=30"), `url: ${page.url()}`);
    await page.waitForFunction(() => {
      const n = Number(document.querySelector('[data-testid="widget-chart"]')?.getAttribute("data-points"));
      return n > 0 && n < 100;
    });
  });

  await step("a second user of the factory sees the shared dashboard, by picker and by URL, and makes it home", async () => {
    await signOut();
    await signIn(VIEWER);
    assert((await page.locator("aside").getByRole("link", { name: "Operations" }).count()) === 0, "a viewer has no Operations entry");
    // No home and no factory default: the overview, with the shared dashboard in the picker.
    await tid("dashboard-picker").selectOption({ label: `${NAME} · shared` });
    await page.waitForURL(`**/dashboards/${dashboardId}`);
    await tid("dashboard-title").getByText(NAME).waitFor();
    assert((await tid("edit-dashboard").count()) === 0, "a viewer who does not own it cannot edit it");
    await page.locator('[data-testid="widget-chart"][data-axes="2"]').waitFor();
    await page.goto(`${server.url}/f/${F.id}/dashboards/${dashboardId}?range=24h`);
    await tid("widget-value").getByText("kW").waitFor();
    await tid("set-home").click();
    await page.getByText("This is now your home dashboard").waitFor();
    await page.goto(`${server.url}/f/${F.id}`);
    await tid("dashboard-title").getByText(NAME).waitFor();
    const home = await call("GET", `${base}/dashboards/home`, { token: (await call("POST", `${base}/auth/login`, { body: { email: VIEWER.email, password: VIEWER.password } })).access_token });
    assert(home.dashboard_id === dashboardId, `viewer's home: ${JSON.stringify(home)}`);
  });

  await step("phone width (390 px): one column in reading order, nothing wider than the screen", async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await page.reload();
    await page.locator('[data-testid="widget-chart"][data-axes="2"]').waitFor();
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="widget-chart"]')?.getAttribute("data-points")) >= 100);
    await page.waitForTimeout(400);
    const overflow = await page.evaluate(() => {
      const wide = [];
      for (const el of document.querySelectorAll(".content *")) {
        const r = el.getBoundingClientRect();
        if (r.width > 0 && r.right > window.innerWidth + 1 && !el.closest(".widget-body")) wide.push(`${el.tagName}.${el.className} ${Math.round(r.right)}`);
      }
      return { wide: wide.slice(0, 5), scroll: document.documentElement.scrollWidth };
    });
    assert(overflow.scroll <= 391, `page scrolls sideways (${overflow.scroll}): ${overflow.wide.join(", ")}`);
    const widths = await tid("dashboard-grid").locator("section").evaluateAll((els) => els.map((e) => Math.round(e.getBoundingClientRect().width)));
    assert(widths.every((w) => w === widths[0]), `one column: ${widths}`);
    await shot("dashboard-390");
    await page.setViewportSize({ width: 1440, height: 900 });
  });

  await step("the owner deletes it; the viewer falls back to the overview", async () => {
    await signOut();
    await signIn(BOSS);
    await page.goto(`${server.url}/f/${F.id}/dashboards/${dashboardId}`);
    await tid("edit-dashboard").click();
    await page.getByRole("button", { name: "Delete", exact: true }).click();
    await tid("confirm-delete-dashboard").click();
    await page.waitForURL(`**/f/${F.id}`);
    await tid("create-dashboard").waitFor();
    await page.goto(`${server.url}/f/${F.id}/dashboards/${dashboardId}`);
    await tid("dashboard-missing").waitFor();
  });

  await step("no errors in the browser console", async () => {
    // Expected: the 422 of the validation step, the 404 of the deleted dashboard, and the
    // 401 of `/me` that signing out races with (as in run.mjs).
    const unexpected = consoleErrors.filter((e) => !/status of (401|404|422)/.test(e));
    assert(unexpected.length === 0, `console errors:\n${unexpected.join("\n")}`);
  });
}

const started = Date.now();
try {
  await main();
  console.log(`dashboards e2e: ${results.length} steps passed in ${Math.round((Date.now() - started) / 1000)} s; ${JSON.stringify(bench)}; screenshots in ${shots}`);
} catch (e) {
  process.exitCode = 1;
  if (!results.some((r) => !r.ok)) console.log(`dashboards e2e: setup failed: ${e?.stack ?? e}`);
  if (server) console.log(server.log.slice(-20).join("\n"));
} finally {
  await browser?.close().catch(() => {});
  await server?.stop().catch(() => {});
}
