// The dashboard in a real browser. Starts `switchyard serve` (the binary
// `cargo test` built) on a free loopback port with two components, sends
// them traffic, and drives Debian's Chromium through playwright-core: a
// wrong token is refused, every component shows its version and calls per
// second, a deploy appears, "Roll back" brings the previous version back,
// and axe-core finds no serious or critical accessibility violation.
// A screenshot goes to loadtests/results/dashboard.png.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { existsSync, mkdtempSync, mkdirSync, openSync, readFileSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);
const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "../../..");
const targetDir = process.env.CARGO_TARGET_DIR ? resolve(repo, process.env.CARGO_TARGET_DIR) : join(repo, "target");
const binary = process.env.SWITCHYARD_BIN || join(targetDir, "debug/switchyard");
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
const components = join(repo, "components/build");
const token = `browser-${process.pid}-${Date.now()}`;
// Every wait is bounded.
const WAIT_MS = 30_000;
const TRAFFIC_MS = 50;
const MAX_TRAFFIC_ROUNDS = 6_000;

let host;
let base;
let work;
let context;
let traffic;

function freePort() {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.on("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
  });
}

function hostLog() {
  return readFileSync(join(work, "host.log"), "utf8").split("\n").slice(-20).join("\n");
}

async function waitReady(url) {
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    if (host.exitCode !== null) throw new Error(`switchyard exited with ${host.exitCode}:\n${hostLog()}`);
    try {
      if ((await fetch(url)).ok) return;
    } catch (_) {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${url} not ready:\n${hostLog()}`);
}

// The fixture with a custom section appended (id 0, size, name, payload):
// a new version with the same code.
function rebuilt(bytes, payload) {
  const name = Buffer.from("browser-test");
  const body = Buffer.concat([Buffer.from([name.length]), name, Buffer.from(payload)]);
  assert.ok(body.length < 128, "one-byte LEB128 size");
  return Buffer.concat([bytes, Buffer.from([0, body.length]), body]);
}

async function admin(method, path, body) {
  const response = await fetch(`${base}${path}`, {
    method,
    body,
    headers: { Authorization: `Bearer ${token}`, "x-switchyard-actor": "browser-test" },
  });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${text}`);
  return JSON.parse(text);
}

async function rowText(page, name, column) {
  return page.locator(`#components tr[data-component="${name}"] > *`).nth(column).innerText();
}

before(async () => {
  assert.ok(existsSync(binary), `no ${binary}: build it first (cargo build -p switchyard), or set SWITCHYARD_BIN`);
  work = mkdtempSync(join(tmpdir(), "switchyard-browser-"));
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  const config = `
[server]
listen = "127.0.0.1:${port}"
[database]
url = "sqlite://${join(work, "host.db")}"
[components.hello]
path = "${join(components, "hello.wasm")}"
[components.hello-http]
path = "${join(components, "hello-http.wasm")}"
world = "wasi-http"
[[routes]]
method = "GET"
path = "/hello"
component = "hello"
[[routes]]
method = "*"
path = "/http/{*rest}"
component = "hello-http"
`;
  writeFileSync(join(work, "switchyard.toml"), config);
  // The config decides these; an inherited variable (CI's PostgreSQL) must not.
  const env = { ...process.env, SWITCHYARD_ADMIN_TOKEN: token, RUST_LOG: "warn" };
  for (const name of ["DATABASE_URL", "SWITCHYARD_LISTEN", "SWITCHYARD_CONFIG"]) delete env[name];
  host = spawn(binary, ["serve", "--config", join(work, "switchyard.toml"), "--log-format", "json"], {
    env,
    stdio: ["ignore", "ignore", openSync(join(work, "host.log"), "a")],
  });
  await waitReady(`${base}/health/ready`);

  let rounds = 0;
  traffic = setInterval(() => {
    if (++rounds > MAX_TRAFFIC_ROUNDS) return clearInterval(traffic);
    fetch(`${base}/hello`).catch(() => {});
    fetch(`${base}/http/x`).catch(() => {});
  }, TRAFFIC_MS);

  context = await chromium.launchPersistentContext(join(work, "profile"), {
    executablePath: chromiumPath,
    headless: true,
    // axe-core is injected as a script, which the page's policy refuses.
    bypassCSP: true,
    viewport: { width: 1400, height: 1000 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
});

after(async () => {
  clearInterval(traffic);
  if (context) await context.close();
  if (host && host.exitCode === null) {
    host.kill("SIGTERM");
    await new Promise((r) => {
      const timer = setTimeout(() => {
        host.kill("SIGKILL");
        r();
      }, 15_000);
      host.on("exit", () => {
        clearTimeout(timer);
        r();
      });
    });
  }
  if (work) rmSync(work, { recursive: true, force: true });
});

test("a wrong token gets the login form with an error and no data", async () => {
  const page = await context.newPage();
  await page.goto(`${base}/dashboard`);
  await page.locator("#login").waitFor({ state: "visible", timeout: WAIT_MS });
  await page.fill("#token", "not-the-token");
  await page.click("#login-form button[type=submit]");
  await page.locator("#login-error", { hasText: "That token was refused." }).waitFor({ timeout: WAIT_MS });
  assert.equal(await page.locator("#board").isVisible(), false);
  assert.equal(await page.locator("#components tbody tr").count(), 0);
  await page.close();
});

test("every component shows its version and calls; a deploy appears and a rollback brings the old version back", async () => {
  const page = await context.newPage();
  const failures = [];
  page.on("pageerror", (err) => failures.push(err.message));
  await page.goto(`${base}/dashboard`);
  await page.fill("#token", token);
  await page.click("#login-form button[type=submit]");
  await page.locator("#board").waitFor({ state: "visible", timeout: WAIT_MS });

  const listed = await admin("GET", "/admin/components");
  const names = listed.components.map((c) => c.name);
  assert.deepEqual(names.sort(), ["hello", "hello-http"]);
  for (const name of names) {
    const version = listed.components.find((c) => c.name === name).version;
    await page.waitForFunction(
      ([n, v]) => {
        const row = document.querySelector(`#components tr[data-component="${n}"]`);
        return row && row.children[2].textContent.startsWith(v) && Number(row.children[3].textContent) > 0;
      },
      [name, version],
      { timeout: WAIT_MS },
    );
  }
  // Every component has its chart.
  assert.equal(await page.locator("#charts figure").count(), names.length);

  const before = listed.components.find((c) => c.name === "hello").version;
  const report = await admin("PUT", "/admin/components/hello", rebuilt(readFileSync(join(components, "hello.wasm")), "v2"));
  assert.notEqual(report.version, before);
  await page.waitForFunction(
    (v) => document.querySelector('#components tr[data-component="hello"]').children[2].textContent.startsWith(v),
    report.version,
    { timeout: WAIT_MS },
  );
  await page.locator("#history tbody tr", { hasText: report.version }).first().waitFor({ timeout: WAIT_MS });

  // Keyboard focus on a button outlives the once-a-second updates.
  const rollBack = page.getByRole("button", { name: "Roll back hello", exact: true });
  await rollBack.focus();
  const updated = await page.locator("#status").innerText();
  await page.waitForFunction((before) => document.querySelector("#status").textContent !== before, updated, {
    timeout: WAIT_MS,
  });
  assert.equal(await page.evaluate(() => document.activeElement.getAttribute("aria-label")), "Roll back hello");

  // Roll back, through the confirmation.
  await rollBack.click();
  const dialog = page.locator("#confirm");
  await dialog.waitFor({ state: "visible", timeout: WAIT_MS });
  assert.match(await page.locator("#confirm-text").innerText(), /roll hello back/);
  await page.click("#confirm-ok");
  await page.waitForFunction(
    (v) => document.querySelector('#components tr[data-component="hello"]').children[2].textContent.startsWith(v),
    before,
    { timeout: WAIT_MS },
  );
  assert.match(await rowText(page, "hello", 2), new RegExp(`^${before}`));
  await page.locator("#history tbody tr", { hasText: "dashboard" }).first().waitFor({ timeout: WAIT_MS });
  const history = await admin("GET", "/admin/stats");
  assert.equal(history.deploys[0].action, "rollback");
  assert.equal(history.deploys[0].actor, "dashboard");

  const results = join(repo, "loadtests/results");
  mkdirSync(results, { recursive: true });
  await page.screenshot({ path: join(results, "dashboard.png"), fullPage: true });
  assert.deepEqual(failures, [], "the page threw");
  await page.close();
});

test("a canary shows its share, and Promote makes it the version", async () => {
  const page = await context.newPage();
  await page.goto(`${base}/dashboard`);
  await page.fill("#token", token);
  await page.click("#login-form button[type=submit]");
  await page.locator("#board").waitFor({ state: "visible", timeout: WAIT_MS });
  const report = await admin(
    "PUT",
    "/admin/components/hello-http?canary=30",
    rebuilt(readFileSync(join(components, "hello-http.wasm")), "canary"),
  );
  const row = page.locator('#components tr[data-component="hello-http"]');
  await row.locator(".canary", { hasText: `${report.version} (30 %` }).waitFor({ timeout: WAIT_MS });
  await page.getByRole("button", { name: "Promote hello-http", exact: true }).click();
  await page.locator("#confirm").waitFor({ state: "visible", timeout: WAIT_MS });
  await page.click("#confirm-ok");
  await page.waitForFunction(
    (v) => {
      const cell = document.querySelector('#components tr[data-component="hello-http"]').children[2];
      return cell.textContent === v;
    },
    report.version,
    { timeout: WAIT_MS },
  );
  const rollout = await admin("GET", "/admin/components/hello-http/rollout");
  assert.equal(rollout.rollout.state, "promoted");
  assert.equal(rollout.rollout.last_decision.reason, "manual");
  await page.close();
});

test("axe-core finds no serious or critical violation", async () => {
  const page = await context.newPage();
  await page.goto(`${base}/dashboard`);
  // The login form, then the board.
  for (const step of ["login", "board"]) {
    if (step === "board") {
      await page.fill("#token", token);
      await page.click("#login-form button[type=submit]");
      await page.locator("#components tbody tr").first().waitFor({ timeout: WAIT_MS });
    } else {
      await page.locator("#login").waitFor({ state: "visible", timeout: WAIT_MS });
    }
    await page.addScriptTag({ path: require.resolve("axe-core/axe.min.js") });
    const result = await page.evaluate(() => globalThis.axe.run());
    const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
    assert.deepEqual(
      bad.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).join(", ")})`),
      [],
      `${step}: accessibility violations`,
    );
  }
  await page.close();
});
