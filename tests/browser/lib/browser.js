// The browser (Debian's chromium, headless) and the helpers the tests share: waiting for a
// state with a generous timeout (a loaded 2-core machine is slow), screenshots, the steps a
// user takes on the Agent Portal and the demo phone.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { test as nodeTest } from 'node:test';
import { chromium } from 'playwright-core';
import { ARTIFACTS } from './system.js';

export const TIMEOUT = 20_000;
export const DESKTOP = { width: 1280, height: 720 };
export const NARROW = { width: 390, height: 800 };

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_BIN || '/usr/bin/chromium',
    headless: true,
  });
}

/**
 * A new browser context (its own cookies: one user) and page. Uncaught page errors are kept in
 * `page.errors`, and so is anything the Content-Security-Policy refused (an inline script or
 * style a page still had), so `assertNoPageErrors` catches both.
 */
const openPages = new Set();

export async function newPage(browser, viewport = DESKTOP) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  openPages.add(page);
  page.on('close', () => openPages.delete(page));
  page.setDefaultTimeout(TIMEOUT);
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy/i.test(m.text())) page.errors.push(m.text());
  });
  return page;
}

export async function shot(page, name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
}

/**
 * `node:test`'s test, with a screenshot of every open page when the test fails
 * (target/browser-artifacts/FAILED-<test>-<n>.png), to see what the user saw.
 */
export function test(name, fn) {
  return nodeTest(name, async (t) => {
    try {
      await fn(t);
    } catch (e) {
      const slug = name.replace(/[^a-z0-9]+/gi, '-').slice(0, 60);
      let i = 0;
      for (const p of openPages) {
        i += 1;
        await shot(p, `FAILED-${slug}-${i}`).catch(() => {});
      }
      throw e;
    }
  });
}

/** Retries `fn` until it stops throwing, for up to `timeout` ms; then throws its last error. */
export async function eventually(fn, timeout = TIMEOUT) {
  const deadline = Date.now() + timeout;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/** Waits until the element's text matches `expected` (a RegExp, or a string it must contain). */
export async function expectText(page, selector, expected, timeout = TIMEOUT) {
  await eventually(async () => {
    const text = (await page.locator(selector).first().textContent({ timeout: 1000 })) ?? '';
    if (expected instanceof RegExp) assert.match(text, expected, `${selector}`);
    else assert.ok(text.includes(expected), `${selector}: expected ${JSON.stringify(expected)} in ${JSON.stringify(text)}`);
  }, timeout);
}

export async function expectStatus(page, status) {
  await page.waitForSelector(`#status-box[data-status="${status}"]`, { timeout: TIMEOUT });
}

// ---------------------------------------------------------------- Agent Portal steps

export async function signIn(page, sys, agent, password = `demo${agent}`) {
  await page.goto(`${sys.portal}/`);
  await page.waitForSelector('#signin:not([hidden])');
  await page.fill('#agent-number', agent);
  await page.fill('#agent-password', password);
  await page.click('#signin-form button[type=submit]');
}

/** Signs in and completes the login on the default device with the default queues. */
export async function logIn(page, sys, agent) {
  await signIn(page, sys, agent);
  await page.waitForSelector('#login-step:not([hidden])');
  await eventually(async () => assert.equal(await page.inputValue('#device'), agent));
  await page.click('#complete-login');
  await expectStatus(page, 'idle');
}

// ---------------------------------------------------------------- the demo phone

export async function openPhone(browser, sys, viewport = DESKTOP) {
  const phone = await newPage(browser, viewport);
  await phone.goto(`${sys.sim}/phone`);
  await phone.waitForSelector('#device-1001');
  return phone;
}

export async function dial(phone, queue, number, name) {
  await phone.fill('#queue', queue);
  await phone.fill('#caller-number', number);
  await phone.fill('#caller-name', name);
  await phone.click('#call');
  await expectText(phone, '#notice', `${number} is calling queue ${queue}`);
}

export async function phoneAction(phone, device, action) {
  const sel = `#device-${device} button.${action}`;
  await phone.waitForSelector(`${sel}:not([disabled])`);
  await phone.click(sel);
}

// ---------------------------------------------------------------- the API, for setting up

export async function apiSession(sys, body) {
  const r = await fetch(`${sys.api}/api/login`, {
    method: 'POST',
    headers: { 'x-tenant': 'demo', 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  assert.equal(r.status, 200, `sign-in as ${JSON.stringify(body)}`);
  const { token } = await r.json();
  return async (method, route, payload) => {
    const res = await fetch(`${sys.api}${route}`, {
      method,
      headers: { 'x-tenant': 'demo', authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: payload === undefined ? undefined : JSON.stringify(payload),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  };
}

/** Sets a queue's wrap-up (seconds) as the admin, so a test can see the Wrap-up state for as long as it needs. */
export async function setWrapUp(sys, queue, seconds) {
  const admin = await apiSession(sys, { username: 'admin', password: 'demo-admin' });
  const r = await admin('PUT', `/api/admin/queues/${queue}/settings`, { wrap_up_s: seconds });
  assert.equal(r.status, 200, JSON.stringify(r.body));
}

/**
 * Loads axe-core into a page, through the DevTools protocol rather than a <script> tag: the
 * pages' Content-Security-Policy refuses inline script, as it should.
 */
export async function injectAxe(page) {
  const source = fs.readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
  await page.evaluate(source);
}

export function assertNoPageErrors(...pages) {
  for (const p of pages) assert.deepEqual(p.errors, [], `uncaught errors in ${p.url()}`);
}
