// Starts a whole call center for one test file: a fresh PostgreSQL database, its own
// nats-server, and `target/debug/callcenter run --target all` with the demo tenant, on free
// ports. `stop()` ends everything (also when a test failed) and drops the database.
//
// Needs PG_ADMIN_URL and NATS_SERVER_BIN (scripts/test-browser sets both through
// scripts/lib/deps.sh) and an already built target/debug/callcenter.

import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const ARTIFACTS = path.join(ROOT, 'target', 'browser-artifacts');

const BIN = process.env.CC_BIN || path.join(ROOT, 'target', 'debug', 'callcenter');

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function portOpen(port) {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    sock.once('connect', () => { sock.destroy(); resolve(true); });
    sock.once('error', () => resolve(false));
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, timeoutMs, fn) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      if (await fn()) return;
    } catch (e) {
      last = e;
    }
    await sleep(250);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

function psql(adminUrl, sql) {
  execFileSync('psql', [adminUrl, '-v', 'ON_ERROR_STOP=1', '-q', '-c', sql], { stdio: ['ignore', 'ignore', 'pipe'] });
}

// Children still running when this process exits are killed, whatever ended the tests.
const children = new Set();
process.on('exit', () => {
  for (const c of children) {
    try { c.kill('SIGKILL'); } catch { /* already gone */ }
  }
});
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => process.exit(130));
}

function track(child) {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

async function stopChild(child, graceMs) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/**
 * Starts the system. `name` names the database, the log file and the temporary directory.
 * Returns the addresses (`portal`: http://demo.localhost:<port>, `api`: the portal on
 * 127.0.0.1 for requests with an X-Tenant header, `sim`: the PBX simulator) and
 * `stop()`, `restartCallcenter()`.
 */
export async function startSystem(name, { sip = false } = {}) {
  const adminUrl = process.env.PG_ADMIN_URL;
  const natsBin = process.env.NATS_SERVER_BIN;
  if (!adminUrl) throw new Error('PG_ADMIN_URL is not set (run the tests through scripts/test-browser)');
  if (!natsBin) throw new Error('NATS_SERVER_BIN is not set (run the tests through scripts/test-browser)');
  if (!fs.existsSync(BIN)) throw new Error(`${BIN} does not exist: build it first (cargo build)`);
  fs.mkdirSync(ARTIFACTS, { recursive: true });

  const db = `cc_browser_${name.replace(/[^a-z0-9]/gi, '_')}_${process.pid}`.toLowerCase();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `cc-browser-${name}-`));
  const [natsPort, portalPort, simPort, adminPort, sipPort] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
  const databaseUrl = `${adminUrl.replace(/\/[^/]*$/, '')}/${db}`;
  const logPath = path.join(ARTIFACTS, `${name}-callcenter.log`);

  const sys = {
    name,
    portal: `http://demo.localhost:${portalPort}`,
    api: `http://127.0.0.1:${portalPort}`,
    sim: `http://127.0.0.1:${simPort}`,
    admin: `http://127.0.0.1:${adminPort}`,
    // With `sip`: the SIP gateway serves tenant office (its portal, and where phones register).
    office: `http://office.localhost:${portalPort}`,
    sip: `127.0.0.1:${sipPort}`,
    logPath,
    nats: null,
    callcenter: null,
    dbCreated: false,
  };

  const env = {
    ...process.env,
    CC_DEMO: 'true',
    CC_DATABASE_URL: databaseUrl,
    CC_NATS_URL: `nats://127.0.0.1:${natsPort}`,
    CC_PORTAL_ADDR: `127.0.0.1:${portalPort}`,
    CC_PBX_SIM_ADDR: `127.0.0.1:${simPort}`,
    CC_ADMIN_ADDR: `127.0.0.1:${adminPort}`,
    // The pages compiled into the binary are tested (scripts/test builds it first); set
    // CC_WEB_DIR=<repository root> to test pages edited since, without rebuilding.
    ...(process.env.CC_WEB_DIR ? { CC_WEB_DIR: process.env.CC_WEB_DIR } : {}),
    CC_SHUTDOWN_GRACE_SECS: '3',
    // Webhook receivers of the tests listen on loopback.
    CC_WEBHOOK_ALLOW_PRIVATE: 'true',
    ...(sip ? { CC_SIP_TENANTS: 'office', CC_SIP_ADDR: `127.0.0.1:${sipPort}`, CC_RTP_PORTS: '0', CC_SIP_TRUNKS: 'office=127.0.0.1' } : {}),
  };

  const startCallcenter = () => {
    const log = fs.openSync(logPath, 'a');
    sys.callcenter = track(spawn(BIN, ['run', '--target', 'all'], { env, stdio: ['ignore', log, log] }));
    fs.closeSync(log);
  };

  const waitReady = async () => {
    const cc = sys.callcenter;
    await until('the callcenter to be ready (/readyz)', 90_000, async () => {
      if (cc.exitCode !== null) throw new Error(`callcenter exited with ${cc.exitCode}; see ${logPath}`);
      const r = await fetch(`${sys.admin}/readyz`);
      return r.status === 200;
    });
    // The demo tenant is seeded once everything is up: wait until an agent can sign in and
    // the simulator knows the demo's devices.
    await until('the demo tenant to be seeded', 60_000, async () => {
      const r = await fetch(`${sys.api}/api/login`, {
        method: 'POST',
        headers: { 'x-tenant': 'demo', 'content-type': 'application/json' },
        body: JSON.stringify({ username: 'admin', password: 'demo-admin' }),
      });
      if (r.status !== 200) return false;
      const d = await fetch(`${sys.sim}/tenants/demo/devices`);
      const devices = d.ok ? await d.json() : [];
      if (!devices.some((x) => x.device === '1006' && x.registered)) return false;
      if (!sip) return true;
      const o = await fetch(`${sys.api}/api/login`, {
        method: 'POST',
        headers: { 'x-tenant': 'office', 'content-type': 'application/json' },
        body: JSON.stringify({ username: 'admin', password: 'demo-admin' }),
      });
      return o.status === 200;
    });
  };

  sys.stop = async () => {
    await stopChild(sys.callcenter, 8000);
    await stopChild(sys.nats, 5000);
    if (sys.dbCreated) {
      try { psql(adminUrl, `drop database if exists ${db} with (force)`); } catch (e) { console.error(`could not drop ${db}: ${e.message}`); }
    }
    fs.rmSync(tmp, { recursive: true, force: true });
  };

  /** Stops the callcenter process (an outage of every service) and returns a function that starts it again. */
  sys.stopCallcenter = async () => {
    await stopChild(sys.callcenter, 8000);
    return async () => {
      startCallcenter();
      await waitReady();
    };
  };

  try {
    psql(adminUrl, `create database ${db}`);
    sys.dbCreated = true;
    const natsLog = fs.openSync(path.join(ARTIFACTS, `${name}-nats.log`), 'w');
    sys.nats = track(spawn(natsBin, ['-js', '-a', '127.0.0.1', '-p', String(natsPort), '-sd', path.join(tmp, 'nats')], {
      stdio: ['ignore', natsLog, natsLog],
    }));
    fs.closeSync(natsLog);
    await until('nats-server', 20_000, async () => {
      if (sys.nats.exitCode !== null) throw new Error('nats-server exited');
      return portOpen(natsPort);
    });
    fs.writeFileSync(logPath, '');
    startCallcenter();
    await waitReady();
  } catch (e) {
    await sys.stop();
    throw e;
  }
  return sys;
}
