// Starts a private `influxd` (InfluxDB 1.x) on free ports with a temporary directory, like
// crates/tsdb/tests/support/influxd.rs does for the Rust tests.
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** The `influxd` binary, or null when it is not installed (INFLUXD names it explicitly). */
export function influxdBinary() {
  if (process.env.INFLUXD) return existsSync(process.env.INFLUXD) ? process.env.INFLUXD : null;
  for (const p of ["/usr/bin/influxd", "/usr/local/bin/influxd"]) if (existsSync(p)) return p;
  try {
    return execFileSync("sh", ["-c", "command -v influxd"], { encoding: "utf8" }).trim() || null;
  } catch {
    return null;
  }
}

async function freePort() {
  const server = createServer();
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address();
  await new Promise((r) => server.close(r));
  return port;
}

async function ping(port) {
  try {
    return (await fetch(`http://127.0.0.1:${port}/ping`)).status === 204;
  } catch {
    return false;
  }
}

export async function startInfluxd(binary) {
  const dir = mkdtempSync(join(tmpdir(), "factoryops-e2e-influxd-"));
  const [http, rpc] = [await freePort(), await freePort()];
  const config = join(dir, "influxdb.conf");
  writeFileSync(
    config,
    `reporting-disabled = true
bind-address = "127.0.0.1:${rpc}"
[meta]
  dir = "${dir}/meta"
[data]
  dir = "${dir}/data"
  wal-dir = "${dir}/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:${http}"
  log-enabled = false
[continuous_queries]
  enabled = false
`,
  );
  const logFile = join(dir, "influxd.log");
  const log = openSync(logFile, "a");
  const child = spawn(binary, ["-config", config], { stdio: ["ignore", log, log] });
  const started = Date.now();
  while (!(await ping(http))) {
    if (child.exitCode !== null) throw new Error(`influxd exited with ${child.exitCode}:\n${readFileSync(logFile, "utf8")}`);
    if (Date.now() - started > 30_000) throw new Error(`influxd did not answer /ping in 30 s:\n${readFileSync(logFile, "utf8")}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port: http,
    url: (db) => `http://127.0.0.1:${http}/?db=${db}`,
    /** An InfluxQL query; the first series' rows. */
    async query(db, q) {
      const response = await fetch(`http://127.0.0.1:${http}/query?${new URLSearchParams({ db, q, epoch: "ms" })}`);
      const body = await response.json();
      if (body.error || body.results?.[0]?.error) throw new Error(`influxdb: ${q}: ${body.error ?? body.results[0].error}`);
      return body.results?.[0]?.series?.[0]?.values ?? [];
    },
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGKILL");
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
