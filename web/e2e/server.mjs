// Starts the real `factoryops serve` binary on free ports with a fresh data dir and
// returns its HTTP and MQTT addresses (read from its JSON log lines).
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const repo = resolve(new URL("../..", import.meta.url).pathname);

export function binaryPath() {
  const candidates = [
    process.env.FACTORYOPS_BIN,
    process.env.CARGO_TARGET_DIR && join(process.env.CARGO_TARGET_DIR, "debug", "factoryops"),
    join(repo, "target", "debug", "factoryops"),
  ].filter(Boolean);
  const found = candidates.find((p) => existsSync(p));
  if (!found) throw new Error(`factoryops binary not found (tried ${candidates.join(", ")}); run cargo build -p factoryops`);
  return found;
}

export async function startServer({ rootPassword, env = {} }) {
  const dataDir = mkdtempSync(join(tmpdir(), "factoryops-e2e-"));
  // FACTORYOPS_BIN picks the binary; passed on, the server would refuse it as an unknown key.
  const { FACTORYOPS_BIN: _bin, ...inherited } = process.env;
  const child = spawn(binaryPath(), ["serve"], {
    env: {
      ...inherited,
      FACTORYOPS_DATA_DIR: dataDir,
      FACTORYOPS_HTTP_ADDR: "127.0.0.1:0",
      FACTORYOPS_MQTT_ADDR: "127.0.0.1:0",
      FACTORYOPS_ROOT_PASSWORD: rootPassword,
      FACTORYOPS_LOG_FORMAT: "json",
      FACTORYOPS_LOG_LEVEL: "info",
      // Fast password hashing for tests only.
      FACTORYOPS_AUTH__BCRYPT_COST: "4",
      // Extra settings of the run (e.g. the SMTP server it started).
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const log = [];
  let http = null;
  let mqtt = null;
  const ready = new Promise((resolveReady, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start in 60 s:\n${log.slice(-30).join("\n")}`)), 60_000);
    let buffer = "";
    const onData = (chunk) => {
      buffer += chunk.toString();
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        log.push(line);
        if (log.length > 2000) log.shift();
        try {
          const entry = JSON.parse(line);
          const message = entry.message ?? entry.fields?.message;
          if (message === "http listening") http = entry.addr ?? entry.fields?.addr;
          if (message === "mqtt listening") mqtt = entry.addr ?? entry.fields?.addr;
        } catch {
          /* not JSON */
        }
        if (http && mqtt) {
          clearTimeout(timer);
          resolveReady();
        }
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}:\n${log.slice(-30).join("\n")}`));
    });
  });
  await ready;
  const [mqttHost, mqttPort] = [mqtt.slice(0, mqtt.lastIndexOf(":")), Number(mqtt.slice(mqtt.lastIndexOf(":") + 1))];
  return {
    url: `http://${http}`,
    mqtt: { host: mqttHost, port: mqttPort },
    log,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGTERM");
        const t = setTimeout(() => child.kill("SIGKILL"), 15_000);
        await exited;
        clearTimeout(t);
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
