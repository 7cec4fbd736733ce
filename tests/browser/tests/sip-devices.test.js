// The admin page's SIP devices tab, for a tenant whose PBX is the SIP gateway: the demo SIP
// devices listed offline, a new device whose password is shown once (and nowhere after a
// reload), a new password, a removal after a confirmation; the simulator's tenant has no tab.

import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startSystem } from '../lib/system.js';
import { test, launch, newPage, shot, expectText, eventually, assertNoPageErrors, injectAxe } from '../lib/browser.js';

let sys;
let browser;
let page;

before(async () => {
  sys = await startSystem('sip-devices', { sip: true });
  browser = await launch();
  page = await newPage(browser);
});

after(async () => {
  await browser?.close();
  await sys?.stop();
});

async function signInAt(p, base) {
  await p.goto(`${base}/admin`);
  await p.waitForSelector('#signin:not([hidden])');
  await p.fill('#username', 'admin');
  await p.fill('#password', 'demo-admin');
  await p.click('#signin-form button[type=submit]');
  await p.waitForSelector('#directory:not([hidden])');
}

test('the SIP devices tab lists the devices, shows a new password once, renews and removes', async () => {
  await signInAt(page, sys.office);
  await page.click('#tab-devices');
  await page.waitForSelector('#device-rows tr');
  const rows = await page.$$eval('#device-rows tr', (trs) => trs.map((t) => t.textContent));
  assert.ok(rows.some((r) => r.startsWith('1001') && r.includes('Offline')), rows.join(' | '));

  await page.fill('#nd-number', '1008');
  await page.click('#new-device button[type=submit]');
  await page.waitForSelector('#sip-secret:not([hidden]) code');
  const password = await page.textContent('#sip-secret code');
  assert.ok(password.length >= 12, `a generated password: ${password}`);
  await expectText(page, '#sip-secret', 'office.localhost');
  await expectText(page, '#sip-secret', 'shown once');
  await shot(page, 'sip-devices-created');

  // After a reload the password is nowhere on the page.
  await page.reload();
  await page.waitForSelector('#directory:not([hidden])');
  await page.click('#tab-devices');
  await page.waitForSelector('#device-rows tr');
  assert.ok(!(await page.content()).includes(password), 'the password is not shown again');

  await page.click('button[aria-label="New password for SIP device 1008"]');
  await page.waitForSelector('#sip-secret:not([hidden]) code');
  assert.notEqual(await page.textContent('#sip-secret code'), password);

  page.once('dialog', (d) => d.accept());
  await page.click('button[aria-label="Remove device 1008"]');
  await expectText(page, '#notice', 'Device 1008 removed');
  await eventually(async () => {
    const rows = await page.$$eval('#device-rows tr', (trs) => trs.map((t) => t.textContent));
    assert.ok(!rows.some((r) => r.startsWith('1008')), rows.join(' | '));
  });

  // Bad input is refused at the field, nothing is created.
  await page.fill('#nd-number', '10x8');
  await page.click('#new-device button[type=submit]');
  await page.waitForSelector('#new-device .field-error');
  assert.equal(await page.getAttribute('#nd-number', 'aria-invalid'), 'true');

  await injectAxe(page);
  const r = await page.evaluate(() => window.axe.run(document));
  assert.deepEqual(r.violations.map((v) => `${v.id}: ${v.nodes.length}`), [], 'axe-core finds no violation');
  assertNoPageErrors(page);
});

test('the simulator\'s tenant has no SIP devices tab', async () => {
  const p = await newPage(browser);
  await signInAt(p, sys.portal);
  await p.waitForSelector('#tab-devices', { state: 'attached' });
  assert.equal(await p.isHidden('#tab-devices'), true);
  await p.context().close();
});
