// End-to-end test of the portal against the real binary in real Chromium.
//
//   npm run e2e            (after `npm run build` and `cargo build -p factoryops`)
//
// The server sends email to a tiny SMTP server started here (e2e/smtp.mjs).
// Env: FACTORYOPS_BIN (binary), CHROMIUM_PATH (default /usr/bin/chromium),
// E2E_DEVICES (devices for the list benchmark, default 10000), E2E_HEADFUL=1.
// Screenshots of every page go to e2e/screenshots/ (the CI artifact folder).
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import mqtt from "mqtt";
import { startServer } from "./server.mjs";
import { startSmtp } from "./smtp.mjs";

const here = new URL(".", import.meta.url).pathname;
const shots = join(here, "screenshots");
rmSync(shots, { recursive: true, force: true });
mkdirSync(shots, { recursive: true });

const ROOT_PASSWORD = "e2e-root-password-1234";
const A = { id: "plant-a", name: "Plant A", tz: "Europe/Berlin" };
const B = { id: "plant-b", name: "Plant B", tz: "America/New_York" };
const BENCH = { id: "bench", name: "Benchmark plant", tz: "UTC" };
const SUPER_A = { email: "boss@plant-a.example", name: "Bea Boss", password: "boss-password-123" };
const SUPER_B = { email: "boss@plant-b.example", name: "Ben Other", password: "boss-password-456" };
const ADMIN_A = { email: "devices@plant-a.example", name: "Dev Admin", password: "admin-password-123" };
const OPS_EMAIL = "ops@plant-a.example";
const BOSS_PHONE = "+4915199998888";
const VIEWER_A = { email: "viewer@plant-a.example", name: "Vic Viewer", password: "viewer-password-123" };
const DEVICES = Number(process.env.E2E_DEVICES ?? 10000);

const results = [];
const bench = {};
let server;
let smtp;
let browser;
let page;
let shotNo = 0;

function assert(cond, message) {
  if (!cond) throw new Error(`assertion failed: ${message}`);
}

async function shot(name, { keepToasts = false } = {}) {
  if (!keepToasts) await page.evaluate(() => document.querySelectorAll(".toasts button").forEach((b) => b.click()));
  await page.evaluate(() => window.scrollTo(0, 0));
  shotNo += 1;
  const file = join(shots, `${String(shotNo).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
}

async function step(name, fn) {
  const started = Date.now();
  try {
    await fn();
    results.push({ name, ok: true, ms: Date.now() - started });
    console.log(`  ✓ ${name} (${Date.now() - started} ms)`);
  } catch (e) {
    results.push({ name, ok: false, ms: Date.now() - started, error: String(e?.stack ?? e) });
    console.log(`  ✗ ${name}\n${String(e?.stack ?? e)}`);
    if (page) await page.screenshot({ path: join(shots, `FAILED-${name.replace(/\W+/g, "-")}.png`), fullPage: true }).catch(() => {});
    throw e;
  }
}

// --- API helpers (setup that is not under test) ---
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
const rootToken = async () => (await call("POST", "/api/v1/platform/login", { body: { username: "root", password: ROOT_PASSWORD } })).access_token;
const userToken = async (factory, who) =>
  (await call("POST", `/api/v1/factories/${factory}/auth/login`, { body: { email: who.email, password: who.password } })).access_token;

async function publish(username, password, topic, payload) {
  return publishMany(username, password, topic, [payload]);
}

async function publishMany(username, password, topic, payloads) {
  const client = await mqtt.connectAsync(`mqtt://${server.mqtt.host}:${server.mqtt.port}`, {
    username,
    password,
    protocolVersion: 4,
    reconnectPeriod: 0,
    connectTimeout: 10_000,
    clean: true,
  });
  try {
    for (const payload of payloads) await client.publishAsync(topic, JSON.stringify(payload), { qos: 1 });
  } finally {
    await client.endAsync();
  }
}

// --- UI helpers ---
const tid = (id) => page.getByTestId(id);
const nav = (name) => page.locator("aside").getByRole("link", { name, exact: true });
async function signInFactory(factory, who) {
  await page.goto(`${server.url}/`);
  await tid("factory-select").selectOption(factory);
  await page.getByLabel("Email").fill(who.email);
  await page.getByLabel("Password").fill(who.password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(`**/f/${factory}`);
  await tid("user-name").waitFor();
}
async function signOut() {
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.waitForURL((u) => u.pathname === "/");
}

async function main() {
  console.log("e2e: starting the server");
  smtp = await startSmtp();
  server = await startServer({
    rootPassword: ROOT_PASSWORD,
    env: {
      FACTORYOPS_SMTP_URL: smtp.url,
      FACTORYOPS_SMTP_FROM: "alerts@factoryops.test",
      // One transient failure opens the email circuit, which is probed again after 2 s:
      // the provider-failing banner and the recovery fit in a test.
      FACTORYOPS_NOTIFY__BREAKER_FAILURES: "1",
      FACTORYOPS_NOTIFY__BREAKER_OPEN_SECS: "2",
      FACTORYOPS_NOTIFY__BACKOFF_BASE_SECS: "1",
    },
  });
  console.log(`e2e: server at ${server.url}, MQTT at ${server.mqtt.host}:${server.mqtt.port}, SMTP at ${smtp.url}`);
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
    headless: process.env.E2E_HEADFUL !== "1",
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 }, colorScheme: "light", acceptDownloads: true });
  page = await context.newPage();
  page.setDefaultTimeout(15_000);
  const consoleErrors = [];
  page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
  page.on("pageerror", (e) => consoleErrors.push(String(e)));

  let secret = "";
  let deviceCount = 0;

  await step("serving: index, hashed assets, SPA fallback, API 404 stays problem+json", async () => {
    const index = await fetch(`${server.url}/`, { headers: { accept: "text/html" } });
    assert(index.ok && index.headers.get("content-type").startsWith("text/html"), "index is HTML");
    assert(index.headers.get("cache-control") === "no-cache", "index is no-cache");
    const html = await index.text();
    assert(!html.includes("portal not built"), "the portal is built into the binary (run `npm run build` first)");
    const asset = /src="(\/assets\/[^"]+\.js)"/.exec(html)?.[1];
    assert(asset, "index references a hashed script");
    const js = await fetch(`${server.url}${asset}`, { headers: { "accept-encoding": "gzip" } });
    assert(js.ok && js.headers.get("cache-control").includes("immutable"), "hashed assets are immutable");
    assert(js.headers.get("content-type").startsWith("text/javascript"), `js content type: ${js.headers.get("content-type")}`);
    const deep = await fetch(`${server.url}/f/plant-a/devices/x`, { headers: { accept: "text/html" } });
    assert(deep.ok && (await deep.text()).includes('id="root"'), "SPA fallback for deep links");
    const api404 = await fetch(`${server.url}/api/v1/nope`, { headers: { accept: "text/html" } });
    assert(api404.status === 404 && api404.headers.get("content-type") === "application/problem+json", "API 404 is a problem");
  });

  await step("initial JavaScript ≤ 500 KB gzip", async () => {
    const sizes = [];
    const onResponse = (r) => {
      if (r.request().resourceType() === "script") sizes.push(r.finished().then(() => r.request().sizes()).then((x) => x.responseBodySize));
    };
    page.on("response", onResponse);
    await page.goto(`${server.url}/`, { waitUntil: "networkidle" });
    page.off("response", onResponse);
    const bytes = (await Promise.all(sizes)).reduce((a, b) => a + b, 0);
    bench.initialJsGzipKiB = Math.round((bytes / 1024) * 10) / 10;
    assert(bytes > 0 && bytes <= 500 * 1024, `initial JS ${bytes} bytes`);
  });

  await step("root signs in and creates a factory with its super admin", async () => {
    await page.goto(`${server.url}/platform/login`);
    await page.getByLabel("Password").waitFor();
    await shot("platform-login");
    await page.getByLabel("Password").fill(ROOT_PASSWORD);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.waitForURL("**/platform");
    await page.getByRole("button", { name: "+ New factory" }).click();
    const dialog = page.getByRole("dialog");
    // A bad id: the API's 422 shows next to the field.
    await dialog.getByLabel("Id").fill("Plant A!");
    await dialog.getByLabel("Name").fill(A.name);
    await dialog.getByLabel("Time zone").fill(A.tz);
    await dialog.getByRole("button", { name: "Create factory" }).click();
    await dialog.locator(".field-error").first().waitFor();
    await shot("platform-validation-error");
    await dialog.getByLabel("Id").fill(A.id);
    await dialog.getByRole("button", { name: "Create factory" }).click();
    const admin = page.getByRole("dialog", { name: `Super admin for ${A.name}` });
    await admin.getByLabel("Email").fill(SUPER_A.email);
    await admin.getByLabel("Name").fill(SUPER_A.name);
    await admin.getByLabel("Initial password").fill(SUPER_A.password);
    await admin.getByRole("button", { name: "Create super admin" }).click();
    await admin.waitFor({ state: "detached" });
    await tid("factories-table").getByText(A.id, { exact: true }).waitFor();
    // Factory B and the benchmark factory through the API.
    const root = await rootToken();
    for (const [f, sa] of [
      [B, SUPER_B],
      [BENCH, { email: "bench@example.com", name: "Bench", password: "bench-password-123" }],
    ]) {
      await call("POST", "/api/v1/platform/factories", { token: root, body: { id: f.id, name: f.name, timezone: f.tz } });
      await call("POST", `/api/v1/platform/factories/${f.id}/super-admins`, { token: root, body: sa });
    }
    await page.reload();
    await tid("factories-table").getByText(B.id, { exact: true }).waitFor();
    await shot("platform-console");
    await signOutRoot();
  });

  await step("super admin signs in via the factory dropdown", async () => {
    await page.goto(`${server.url}/`);
    await tid("factory-select").locator(`option[value="${A.id}"]`).waitFor({ state: "attached" });
    await tid("factory-select").selectOption(A.id);
    await page.getByLabel("Email").fill(SUPER_A.email);
    await page.getByLabel("Password").fill("wrong-password");
    await page.getByRole("button", { name: "Sign in" }).click();
    await tid("login-error").waitFor();
    await shot("entry-login-error");
    await page.getByLabel("Password").fill(SUPER_A.password);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.waitForURL(`**/f/${A.id}`);
    await tid("factory-name").getByText(A.name).waitFor();
    await page.locator('[data-testid="live-status"][data-status="live"]').waitFor();
  });

  await step("super admin creates an admin with devices:write only (and a viewer)", async () => {
    await nav("Users").click();
    await tid("new-user").click();
    const d = page.getByRole("dialog");
    await d.getByLabel("Email").fill(ADMIN_A.email);
    await d.getByLabel("Name").fill(ADMIN_A.name);
    await d.getByLabel("Role").selectOption("admin");
    await d.getByLabel("Initial password").fill(ADMIN_A.password);
    // devices:write is preselected; make sure it is the only one.
    for (const p of await d.getByRole("group", { name: "Permissions" }).getByRole("checkbox").all()) {
      const label = await p.evaluate((el) => el.parentElement.textContent.trim());
      if ((label === "devices:write") !== (await p.isChecked())) await p.click();
    }
    await tid("save-user").click();
    await d.waitFor({ state: "detached" });
    await tid("users-table").getByText(ADMIN_A.email).waitFor();
    const row = tid("users-table").locator("tr", { hasText: ADMIN_A.email });
    assert((await row.innerText()).includes("devices:write"), "admin has devices:write");
    await tid("new-user").click();
    await d.getByLabel("Email").fill(VIEWER_A.email);
    await d.getByLabel("Name").fill(VIEWER_A.name);
    await d.getByLabel("Role").selectOption("viewer");
    await d.getByLabel("Initial password").fill(VIEWER_A.password);
    await tid("save-user").click();
    await d.waitFor({ state: "detached" });
    await tid("users-table").getByText(VIEWER_A.email).waitFor();
    // Phone numbers (WhatsApp): the API's E.164 check shows next to the field.
    const adminRow = tid("users-table").locator("tr", { hasText: ADMIN_A.email });
    await adminRow.getByRole("button", { name: `Edit ${ADMIN_A.name}` }).click();
    await d.getByLabel("Phone (WhatsApp)").fill("0151 1234567");
    await tid("save-user").click();
    await d.locator(".field-error", { hasText: "E.164" }).waitFor();
    await shot("admin-user-phone-error");
    await d.getByLabel("Phone (WhatsApp)").fill("+4915112345678");
    await tid("save-user").click();
    await d.waitFor({ state: "detached" });
    await adminRow.getByText("+4915112345678").waitFor();
    // Their own number, for "send me a test WhatsApp".
    const ownRow = tid("users-table").locator("tr", { hasText: SUPER_A.email });
    await ownRow.getByRole("button", { name: `Edit ${SUPER_A.name}` }).click();
    await d.getByLabel("Phone (WhatsApp)").fill(BOSS_PHONE);
    await tid("save-user").click();
    await d.waitFor({ state: "detached" });
    await ownRow.getByText(BOSS_PHONE).waitFor();
    await shot("admin-users");
    await signOut();
  });

  await step("admin registers a device and rotates its secret", async () => {
    await signInFactory(A.id, ADMIN_A);
    await nav("Devices").click();
    await page.getByText("No devices yet").waitFor();
    await shot("devices-empty");
    await tid("register-device").click();
    const d = page.getByRole("dialog");
    await d.getByLabel("Id").fill("press-1");
    await d.getByLabel("Name").fill("Hydraulic press 1");
    await d.getByLabel("Type").fill("press");
    await d.getByLabel("Location").fill("Hall 2");
    await d.getByRole("button", { name: "Register" }).click();
    await page.waitForURL(`**/f/${A.id}/devices/press-1`);
    // First secret, then a rotation: only the second one works.
    await tid("rotate-secret").click();
    const first = (await tid("device-secret").innerText()).trim();
    await page.getByRole("button", { name: "I have stored the secret" }).click();
    await tid("rotate-secret").click();
    await tid("confirm-rotate").click();
    secret = (await tid("device-secret").innerText()).trim();
    assert(secret && secret !== first, "rotation issues a new secret");
    assert((await tid("mqtt-example").innerText()).includes(`-u '${A.id}/press-1'`), "MQTT example names the username");
    assert((await tid("mqtt-example").innerText()).includes(`factories/${A.id}/devices/press-1/telemetry`), "MQTT example names the topic");
    await shot("device-credentials");
    await page.getByRole("button", { name: "I have stored the secret" }).click();
    // devices:write only: no rule writing.
    await nav("Rules").click();
    await page.getByRole("heading", { name: "Rules" }).waitFor();
    assert((await tid("new-rule").count()) === 0, "an admin without rules:write sees no New rule button");
  });

  await step("a real MQTT client publishes; the live chart shows the points", async () => {
    await page.goto(`${server.url}/f/${A.id}/devices/press-1`);
    await page.locator('[data-testid="live-status"][data-status="live"]').waitFor();
    const topic = `factories/${A.id}/devices/press-1/telemetry`;
    const user = `${A.id}/press-1`;
    await publish(user, secret, topic, { power_kw: 12.5, temp_c: 42.0 });
    await page.locator('[data-testid="device-chart"]').waitFor();
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="device-chart"]')?.getAttribute("data-points")) >= 1);
    await tid("properties-table").getByText("temp_c").waitFor();
    // Live: more points arrive without a reload, including one that will trip the rule's backtest.
    for (const [i, payload] of [{ temp_c: 85.5, power_kw: 30 }, { temp_c: 44.0, power_kw: 14 }, { temp_c: 43.0, power_kw: 13.2 }].entries()) {
      await new Promise((r) => setTimeout(r, 250));
      await publish(user, secret, topic, payload);
      await page.waitForFunction((n) => Number(document.querySelector('[data-testid="device-chart"]')?.getAttribute("data-points")) >= n, i + 2);
    }
    // A bad property shows up in the payload errors.
    await publish(user, secret, topic, { temp_c: 43.5, status: "running" });
    // 45 minutes of history (devices may send their own `ts`), with one overheating episode.
    const now = Date.now();
    const history = Array.from({ length: 90 }, (_, i) => ({
      ts: now - (90 - i) * 30_000 - 60_000,
      temp_c: Math.round((55 + 8 * Math.sin(i / 7) + (i >= 40 && i < 47 ? 30 : 0) + ((i * 7) % 5) / 5) * 10) / 10,
      power_kw: Math.round((22 + 7 * Math.sin(i / 4) + ((i * 13) % 7) / 3) * 10) / 10,
    }));
    await publishMany(user, secret, topic, history);
    for (const name of ["temp_c", "power_kw"]) {
      await tid("properties-table").locator("tr", { hasText: name }).getByRole("button", { name: "Pin" }).click();
    }
    await tid("properties-table").getByRole("textbox", { name: "Unit of temp_c" }).fill("°C");
    await tid("properties-table").getByRole("button", { name: "Save" }).click();
    await page.getByText("Unit of temp_c saved").waitFor();
    await page.reload();
    await page.getByRole("button", { name: "1 h", exact: true }).click();
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="device-chart"]')?.getAttribute("data-points")) >= 90);
    await page.waitForTimeout(300);
    await shot("device-detail");
    await signOut();
  });

  await step("super admin creates a rule and backtests it (series with would-be alerts)", async () => {
    await signInFactory(A.id, SUPER_A);
    await nav("Rules").click();
    await page.getByText("No rules yet").waitFor();
    await tid("new-rule").click();
    await page.getByLabel("Name").fill("Press overheating");
    await page.getByLabel("Severity").selectOption("critical");
    await page.getByLabel("Add device").fill("press-1");
    await page.getByRole("button", { name: "Add", exact: true }).click();
    const leaf = page.locator(".cond-leaf").first();
    await leaf.getByLabel("Property").fill("temp_c");
    await leaf.getByLabel("Operator").selectOption(">");
    await leaf.getByLabel("Value").fill("hot");
    // Targets: a user from the picker, an email, and a bad WhatsApp number.
    await page.getByRole("group", { name: "Users", exact: true }).getByLabel(SUPER_A.name).check();
    await tid("notify-emails").fill(OPS_EMAIL);
    await tid("notify-whatsapp").fill("0151 1234");
    // The API's 422 lands next to the condition's field, and next to the number.
    await tid("save-rule").click();
    await page.locator("fieldset", { hasText: "Condition" }).locator(".field-error").first().waitFor();
    await leaf.getByLabel("Value").fill("80");
    await tid("save-rule").click();
    const whatsappError = await page.locator(".field", { has: tid("notify-whatsapp") }).locator(".field-error").innerText();
    assert(whatsappError.includes("0151 1234") && whatsappError.includes("E.164"), `WhatsApp error names the number: ${whatsappError}`);
    await shot("rule-editor-target-error");
    await tid("notify-whatsapp").fill("");
    await page.getByLabel("Only on certain days and times").check();
    await tid("schedule-timezone").getByText(A.tz).waitFor();
    await page.getByLabel("Only on certain days and times").uncheck();
    await page.getByRole("button", { name: "1 h" }).click();
    await tid("run-backtest").click();
    await tid("backtest-result").waitFor();
    const summary = await tid("backtest-result").innerText();
    assert(/\b2 would-be alerts\b/.test(summary), `backtest finds the overheating episode and the 85.5 °C: ${summary}`);
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="backtest-chart"]')?.getAttribute("data-points")) >= 90);
    await page.waitForTimeout(300);
    await shot("rule-editor-backtest");
    await tid("save-rule").click();
    await page.waitForURL(/\/rules\/[0-9a-f-]{36}$/);
    // The targets round-trip.
    await page.reload();
    await tid("notify-emails").waitFor();
    assert((await tid("notify-emails").inputValue()) === OPS_EMAIL, "the rule's email target is saved");
    assert(await page.getByRole("group", { name: "Users", exact: true }).getByLabel(SUPER_A.name).isChecked(), "the rule's user target is saved");
    await nav("Rules").click();
    await tid("rules-table").getByText("Press overheating").waitFor();
    await shot("rules");
  });

  await step("a publish opens an alert that appears live and emails; acknowledge; resolve", async () => {
    await nav("Alerts").click();
    await page.getByText("No alerts").waitFor();
    const mailsBefore = smtp.messages.length;
    const published = Date.now();
    await publish(`${A.id}/press-1`, secret, `factories/${A.id}/devices/press-1/telemetry`, { temp_c: 91.2, power_kw: 35 });
    // No reload: the stream brings it.
    const row = tid("alert-row").first();
    await row.waitFor();
    assert((await row.getAttribute("data-status")) === "open", "the new alert is open");
    await page.getByText("New critical alert").waitFor();
    await shot("alerts-live", { keepToasts: true });
    // The rule's email target gets the alert through the real SMTP path.
    const mail = await smtp.waitFor((m) => m.to.includes(OPS_EMAIL), { since: mailsBefore });
    bench.alertToEmailMs = mail.at - published;
    assert(mail.from === "alerts@factoryops.test", `envelope sender: ${mail.from}`);
    assert(mail.headers.to?.includes(OPS_EMAIL), `To: ${mail.headers.to}`);
    assert(/Press overheating|press-1|91\.2/.test(mail.headers.subject ?? ""), `Subject: ${mail.headers.subject}`);
    assert(/^<[^@]+@factoryops\.test>$/.test(mail.headers["message-id"] ?? ""), `Message-ID: ${mail.headers["message-id"]}`);
    await row.getByRole("link").first().click();
    await tid("acknowledge").click();
    await page.getByLabel("Note (optional)").fill("Checking the cooling circuit");
    await tid("confirm-alert-action").click();
    await page.locator('[data-testid="alert-status"]', { hasText: "acknowledged" }).waitFor();
    await tid("resolve").click();
    await page.getByLabel("Note (optional)").fill("Coolant topped up");
    await tid("confirm-alert-action").click();
    await page.locator('[data-testid="alert-status"]', { hasText: "resolved" }).waitFor();
    await tid("alert-history").getByText("Coolant topped up").waitFor();
    // The alert's own notifications, delivered.
    await tid("notifications-table").locator('[data-testid="notification-row"][data-status="delivered"]', { hasText: OPS_EMAIL }).first().waitFor();
    await shot("alert-detail");
  });

  await step("notifications: delivered email, dead letter, retry, test messages, provider banner, preferences", async () => {
    await nav("Notifications").click();
    await page.waitForURL(`**/f/${A.id}/notifications`);
    await tid("filter-status").waitFor();
    const rows = page.locator('[data-testid="notification-row"]');
    const opened = page.locator('[data-testid="notification-row"][data-kind="opened"]', { hasText: OPS_EMAIL }).first();
    await page.locator('[data-testid="notification-row"][data-kind="opened"][data-status="delivered"]', { hasText: OPS_EMAIL }).first().waitFor();
    assert((await opened.getByTestId("notification-alert-link").count()) === 1, "an alert's notification links to the alert");
    assert((await opened.innerText()).includes("1/"), "attempts are shown as n/max");
    await page.waitForTimeout(200);
    await shot("notifications");
    // Filters.
    // WhatsApp: the rule's user has a phone, but this run configures no Twilio, so those are dead letters naming the settings.
    await tid("filter-channel").selectOption("whatsapp");
    await page.waitForFunction(() => {
      const rows = [...document.querySelectorAll('[data-testid="notification-row"]')];
      return rows.length > 0 && rows.every((r) => r.getAttribute("data-channel") === "whatsapp");
    });
    assert((await rows.first().getByTestId("notification-error").innerText()).includes("TWILIO"), "an unconfigured channel's dead letter names the settings");
    await tid("filter-channel").selectOption("");
    await rows.first().waitFor();

    // The SMTP server refuses the next message for good: a dead letter.
    smtp.accepting = false;
    const mailsBefore = smtp.messages.length;
    await tid("my-notifications").click();
    await page.getByRole("heading", { name: "My notifications" }).waitFor();
    await tid("test-email").click();
    await tid("toast-success").getByText("Test email queued").waitFor();
    await page.locator('[data-testid="test-result"][data-status="dead"]').waitFor();
    await page.getByRole("link", { name: "Open the delivery log" }).click();
    await page.waitForURL(`**/f/${A.id}/notifications`);
    await tid("filter-status").selectOption("dead");
    const dead = page.locator('[data-testid="notification-row"][data-kind="test"][data-status="dead"]').first();
    await dead.waitFor();
    assert((await dead.getByTestId("notification-error").innerText()).includes("550"), "the dead letter shows the SMTP refusal");
    await page.waitForTimeout(200);
    await shot("notifications-dead-letter");
    // Accepting again: Retry delivers it (the row follows live, though it left the filter).
    smtp.accepting = true;
    await dead.getByTestId("retry-notification").click();
    await page.locator('[data-testid="notification-row"][data-kind="test"][data-status="delivered"]').first().waitFor({ timeout: 20_000 });
    const retried = await smtp.waitFor((m) => m.to.includes(SUPER_A.email) && /test notification/.test(m.headers.subject ?? ""), { since: mailsBefore });
    assert(retried, "the retried test email arrived");

    // WhatsApp is not configured in this run: the test message is a dead letter at once, naming the settings.
    await tid("my-notifications").click();
    await tid("test-whatsapp").click();
    await page.locator('[data-testid="test-result"][data-status="dead"]', { hasText: BOSS_PHONE }).waitFor();
    assert((await page.locator('[data-testid="test-result"]', { hasText: BOSS_PHONE }).innerText()).includes("TWILIO"), "the reason names the Twilio settings");

    // A failing provider (451: transient): the circuit opens, super admins see a banner, and the message is delivered when it recovers.
    smtp.tempfail = true;
    const beforeOutage = smtp.messages.length;
    await tid("test-email").click();
    await waitForReadiness((r) => r.checks?.some((c) => c.name === "notifications" && c.status === "degraded"));
    await nav("Dashboard").click();
    await tid("provider-banner").getByText("Email provider failing — messages are queued").waitFor();
    await page.waitForTimeout(200);
    await shot("dashboard-provider-failing");
    smtp.tempfail = false;
    await smtp.waitFor((m) => m.to.includes(SUPER_A.email) && /test notification/.test(m.headers.subject ?? ""), { since: beforeOutage, timeout: 30_000 });
    await waitForReadiness((r) => r.status === "ready");

    // Preferences: a bad time is refused next to its field; a good one is saved and reloads.
    await tid("my-notifications").click();
    await tid("preferences-form").waitFor();
    assert((await tid("prefs-timezone").innerText()) === A.tz, "quiet hours are in the factory's time zone");
    await tid("pref-whatsapp").uncheck();
    await tid("pref-quiet").check();
    await tid("quiet-from").fill("");
    await tid("save-preferences").click();
    await page.locator(".field", { has: tid("quiet-from") }).locator(".field-error").waitFor();
    await tid("quiet-from").fill("22:00");
    await tid("quiet-to").fill("06:30");
    await tid("save-preferences").click();
    await page.getByText("Notification preferences saved").waitFor();
    await page.reload();
    await tid("preferences-form").waitFor();
    assert(!(await tid("pref-whatsapp").isChecked()) && (await tid("pref-email").isChecked()), "channels are saved");
    assert((await tid("quiet-from").inputValue()) === "22:00" && (await tid("quiet-to").inputValue()) === "06:30", "quiet hours are saved");
    await shot("my-notifications");
  });

  await step("dashboard, explorer with CSV, API keys, audit", async () => {
    await nav("Dashboard").click();
    await tid("devices-online").getByText("1").waitFor();
    // Live traffic while the dashboard is open: the ingestion rate and pinned values follow.
    const topic = `factories/${A.id}/devices/press-1/telemetry`;
    for (let i = 0; i < 12; i++) {
      await publish(`${A.id}/press-1`, secret, topic, { temp_c: 60 + i, power_kw: 20 + (i % 4) });
      await page.waitForTimeout(150);
    }
    await tid("pinned-values").getByText("71").waitFor();
    await page.waitForTimeout(500);
    await shot("dashboard");
    // The ingestion figures (IT) live on the admins' Operations page, not the dashboard.
    assert((await page.getByText("Ingestion rate").count()) === 0, "no ingestion figures on the dashboard");
    await nav("Operations").click();
    await tid("ingestion-chart").waitFor();
    for (let i = 0; i < 6; i++) {
      await publish(`${A.id}/press-1`, secret, topic, { temp_c: 70, power_kw: 20 });
      await page.waitForTimeout(150);
    }
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="ingestion-rate"]')?.textContent?.replace(/\D/g, "")) >= 6);
    await page.waitForTimeout(2200);
    await shot("operations");
    await nav("Explorer").click();
    await page.getByLabel("Device").selectOption("press-1");
    await page.getByLabel("Property").selectOption("temp_c");
    await page.getByRole("button", { name: "+ Add to chart" }).click();
    await page.getByLabel("Property").selectOption("power_kw");
    await page.getByRole("button", { name: "+ Add to chart" }).click();
    await page.getByRole("button", { name: "1 h" }).click();
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="explorer-chart"]')?.getAttribute("data-points")) >= 5);
    const [download] = await Promise.all([page.waitForEvent("download"), tid("export-csv").click()]);
    const csv = readFileSync(await download.path(), "utf8");
    assert(csv.startsWith("time,press-1 · temp_c (°C),press-1 · power_kw"), `CSV header: ${csv.split("\n")[0]}`);
    assert(csv.trim().split("\n").length >= 6, "CSV has the points");
    await page.waitForTimeout(300);
    await shot("explorer");
    await nav("API keys").click();
    await page.getByRole("button", { name: "+ New API key" }).click();
    await page.getByRole("dialog").getByLabel("Name").fill("SCADA gateway");
    await page.getByRole("dialog").getByRole("button", { name: "Create key" }).click();
    await page.getByRole("dialog", { name: "API key created" }).locator("code.secret").waitFor();
    await shot("api-key-created");
    await page.getByRole("button", { name: "Done" }).click();
    await nav("Audit log").click();
    await tid("audit-table").waitFor();
    await shot("audit");
    // Dark theme and a tablet viewport.
    await nav("Dashboard").click();
    await page.getByRole("button", { name: "Switch to dark theme" }).click();
    await page.waitForTimeout(300);
    await shot("dashboard-dark");
    await page.setViewportSize({ width: 820, height: 1180 });
    await page.goto(`${server.url}/f/${A.id}/devices/press-1`);
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="device-chart"]')?.getAttribute("data-points")) >= 4);
    await page.waitForTimeout(300);
    await shot("device-detail-tablet-dark");
    await page.setViewportSize({ width: 1400, height: 900 });
    await page.getByRole("button", { name: "Switch to light theme" }).click();
    await signOut();
  });

  await step("silent token refresh (serialised) and session-expired handling", async () => {
    await signInFactory(A.id, SUPER_A);
    const before = await page.evaluate(() => JSON.parse(localStorage.getItem("factoryops.session")));
    // Pretend the access token is about to expire: the dashboard's parallel requests must
    // share one refresh (a second use of the rotated token would revoke the session).
    await page.evaluate(() => {
      const s = JSON.parse(localStorage.getItem("factoryops.session"));
      localStorage.setItem("factoryops.session", JSON.stringify({ ...s, expiresAt: Date.now() - 1000 }));
    });
    await page.reload();
    await tid("devices-online").getByText("1").waitFor();
    await nav("Devices").click();
    await tid("device-row").first().waitFor();
    const after = await page.evaluate(() => JSON.parse(localStorage.getItem("factoryops.session")));
    assert(after.refresh !== before.refresh && after.expiresAt > Date.now() + 60_000, "the tokens were refreshed");
    const me = await page.evaluate(async (t) => (await fetch("/api/v1/me", { headers: { authorization: `Bearer ${t}` } })).status, after.access);
    assert(me === 200, "the refreshed session is valid (no reuse detected)");
    // A revoked refresh token: the next refresh fails and the user is sent to sign in again.
    await page.evaluate(() => {
      const s = JSON.parse(localStorage.getItem("factoryops.session"));
      localStorage.setItem("factoryops.session", JSON.stringify({ ...s, access: "expired", refresh: "revoked", expiresAt: Date.now() - 1000 }));
    });
    await page.reload();
    await page.getByText("Your session has expired").waitFor();
    await shot("session-expired");
  });

  await step("factory B's user cannot see A's device by URL manipulation (404 page)", async () => {
    await signInFactory(B.id, SUPER_B);
    await page.goto(`${server.url}/f/${A.id}/devices/press-1`);
    await tid("not-found").waitFor();
    await shot("tenant-isolation-404");
    await page.goto(`${server.url}/f/${B.id}/devices/press-1`);
    await tid("not-found").waitFor();
    // The API agrees: 404, never 403.
    const token = await userToken(B.id, SUPER_B);
    const response = await fetch(`${server.url}/api/v1/factories/${A.id}/devices/press-1`, { headers: { authorization: `Bearer ${token}` } });
    assert(response.status === 404, `API answers 404 for another factory's device, got ${response.status}`);
    await signOut();
  });

  await step("a viewer sees no write buttons", async () => {
    // An open alert, so the inbox would offer acknowledge/resolve to a writer.
    const topic = `factories/${A.id}/devices/press-1/telemetry`;
    await publish(`${A.id}/press-1`, secret, topic, { temp_c: 50 });
    await publish(`${A.id}/press-1`, secret, topic, { temp_c: 95.5 });
    await signInFactory(A.id, VIEWER_A);
    const none = async (what) => assert((await page.locator(what).count()) === 0, `viewer sees no ${what}`);
    await nav("Devices").click();
    await tid("device-row").first().waitFor();
    await none('[data-testid="register-device"]');
    await page.goto(`${server.url}/f/${A.id}/devices/press-1`);
    await tid("device-title").waitFor();
    await none('[data-testid="rotate-secret"]');
    await none('[data-testid="edit-device"]');
    await none('input[aria-label^="Unit of"]');
    await nav("Rules").click();
    await tid("rules-table").waitFor();
    await none('[data-testid="new-rule"]');
    await tid("rules-table").getByRole("link", { name: "Press overheating", exact: true }).click();
    await tid("backtest").waitFor();
    await none('[data-testid="save-rule"]');
    await none('button:has-text("Delete")');
    await nav("Alerts").click();
    await page.locator('[data-testid="alert-row"][data-status="open"]').first().waitFor();
    await none('button:has-text("Acknowledge")');
    await none('button:has-text("Resolve")');
    await none('a:has-text("Users")');
    await none('aside a:has-text("Operations")');
    await shot("viewer-alerts");
    // Dead letters are visible, but only alerts:write may retry them.
    await page.goto(`${server.url}/f/${A.id}/notifications?status=dead`);
    await page.locator('[data-testid="notification-row"][data-status="dead"]').first().waitFor();
    await none('[data-testid="retry-notification"]');
    await signOut();
  });

  await step(`device list of ${DEVICES} renders fast (virtualised)`, async () => {
    const token = await userToken(BENCH.id, { email: "bench@example.com", password: "bench-password-123" });
    const started = Date.now();
    let next = 0;
    const types = ["press", "compressor", "meter", "oven", "pump"];
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < DEVICES) {
          const i = next++;
          const id = `dev-${String(i).padStart(5, "0")}`;
          await call("POST", `/api/v1/factories/${BENCH.id}/devices`, {
            token,
            body: { id, name: `Device ${i}`, type: types[i % types.length], location: `Hall ${1 + (i % 7)}` },
          });
        }
      }),
    );
    bench.provisionSeconds = Math.round((Date.now() - started) / 100) / 10;
    deviceCount = DEVICES;
    await signInFactory(BENCH.id, { email: "bench@example.com", password: "bench-password-123" });
    const t0 = await page.evaluate(() => performance.now());
    await nav("Devices").click();
    await tid("device-row").first().waitFor();
    const firstRows = (await page.evaluate(() => performance.now())) - t0;
    await page.waitForFunction((n) => document.querySelector('[data-testid="device-count"]')?.textContent?.startsWith(n.toLocaleString()) && !document.querySelector('[data-testid="device-count"]')?.textContent?.includes("loading"), deviceCount, {
      timeout: 60_000,
    });
    const allLoaded = (await page.evaluate(() => performance.now())) - t0;
    // Scroll to the end: the virtualised table renders only the visible rows.
    const scroll = await page.evaluate(async () => {
      const el = document.querySelector('[data-testid="device-list"]');
      const s = performance.now();
      el.scrollTop = el.scrollHeight;
      await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
      return { ms: performance.now() - s, rows: document.querySelectorAll('[data-testid="device-row"]').length };
    });
    await page.getByText(`dev-${String(DEVICES - 1).padStart(5, "0")}`).waitFor();
    // Client-side filter over all rows (the connectivity filter runs in the browser).
    bench.devices = deviceCount;
    bench.firstRowsMs = Math.round(firstRows);
    bench.allLoadedMs = Math.round(allLoaded);
    bench.scrollToEndMs = Math.round(scroll.ms);
    bench.renderedRows = scroll.rows;
    await shot("devices-10k");
    assert(scroll.rows < 100, `only visible rows are in the DOM (${scroll.rows})`);
  });

  await step("no errors in the browser console", async () => {
    // Expected network errors: the wrong password (401), the validation tests (422) and
    // the tenant-isolation checks (404).
    const unexpected = consoleErrors.filter((e) => !/status of (401|404|422)/.test(e));
    assert(unexpected.length === 0, `console errors:\n${unexpected.join("\n")}`);
  });
}

/** Polls `/readyz` until `predicate` holds for its body (200 or the 503 problem). */
async function waitForReadiness(predicate, timeout = 20_000) {
  const started = Date.now();
  let last = null;
  while (Date.now() - started < timeout) {
    const response = await fetch(`${server.url}/readyz`);
    last = await response.json();
    if (predicate(last)) return last;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`readiness did not reach the expected state: ${JSON.stringify(last)}`);
}

async function signOutRoot() {
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.waitForURL("**/platform/login");
}

const started = Date.now();
let failed = false;
try {
  await main();
} catch (e) {
  failed = true;
  if (!results.some((r) => !r.ok)) console.log(`e2e: setup failed: ${e?.stack ?? e}`);
} finally {
  await browser?.close().catch(() => {});
  if (failed && server) writeFileSync(join(shots, "server.log"), server.log.join("\n"));
  await server?.stop().catch(() => {});
  await smtp?.stop().catch(() => {});
}
writeFileSync(join(shots, "bench.json"), JSON.stringify({ ...bench, at: new Date().toISOString() }, null, 2));
const passed = results.filter((r) => r.ok).length;
const failedCount = results.length - passed;
console.log(`\ne2e benchmark: ${JSON.stringify(bench)}`);
console.log(`e2e finished in ${Math.round((Date.now() - started) / 1000)} s; screenshots in ${shots}`);
console.log(`e2e: ${passed} passed, ${failedCount} failed`);
process.exit(failed || failedCount ? 1 : 0);
