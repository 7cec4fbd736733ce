// The admin's directory: a new agent assigned to a queue signs in on the Agent Portal; pause
// reasons added, renamed and retired; a queue's routing settings, read back after a reload;
// a supervisor is refused.

import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startSystem } from '../lib/system.js';
import {
  test, launch, newPage, shot, eventually, expectText, expectStatus, signIn, assertNoPageErrors, apiSession, NARROW, DESKTOP,
} from '../lib/browser.js';

let sys;
let browser;
let admin;

before(async () => {
  sys = await startSystem('admin');
  browser = await launch();
  admin = await newPage(browser);
});

after(async () => {
  await browser?.close();
  await sys?.stop();
});

async function signInAs(page, username, password) {
  await page.goto(`${sys.portal}/admin`);
  await page.waitForSelector('#signin:not([hidden])');
  await page.fill('#username', username);
  await page.fill('#password', password);
  await page.click('#signin-form button[type=submit]');
}

test('a supervisor is refused the admin directory, in words', async () => {
  const p = await newPage(browser);
  await signInAs(p, 'supervisor', 'demo-supervisor');
  await expectText(p, '#notice', 'The Admin page needs an admin account');
  await p.context().close();
});

test('the admin creates an agent and assigns a queue; the new agent logs in on the Agent Portal', async () => {
  await signInAs(admin, 'admin', 'demo-admin');
  await admin.waitForSelector('#directory:not([hidden])');
  await admin.waitForSelector('#admin-agent-1001');
  assert.equal(await admin.inputValue('input[aria-label="Name of agent 1001"]'), 'Alice Agent');
  await admin.fill('#na-number', '1005');
  await admin.fill('#na-name', 'Eve Agent');
  await admin.fill('#na-password', 'demo1005');
  await admin.selectOption('#na-manage', 'true');
  await admin.click('#new-agent button[type=submit]');
  await expectText(admin, '#notice', 'Agent created');
  await admin.waitForSelector('#admin-agent-1005');
  assert.equal(await admin.inputValue('input[aria-label="Name of agent 1005"]'), 'Eve Agent');
  assert.ok(await admin.isChecked('input[aria-label="Agent 1005 may manage own queues"]'));

  await admin.click('#tab-queues');
  await admin.selectOption('#assign-501', '1005');
  await admin.fill('#assign-pen-501', '2');
  await admin.click('#admin-queue-501 form.inline-form button[type=submit]');
  await expectText(admin, '#notice', 'Agent 1005 assigned to queue 501');
  await expectText(admin, '#admin-queue-501', 'Eve Agent (1005)');
  await shot(admin, 'admin-01-queues');

  const eve = await newPage(browser);
  await signIn(eve, sys, '1005');
  await eve.waitForSelector('#login-step:not([hidden])');
  await expectText(eve, '#login-queues', 'Support (501)');
  await eve.click('#complete-login');
  await expectStatus(eve, 'idle');
  await expectText(eve, '#queues', 'Support (501)');
  assertNoPageErrors(eve);
});

test('pause reasons: add, rename, retire', async () => {
  await admin.click('#tab-reasons');
  await admin.fill('#nr-name', 'Training');
  await admin.click('#new-reason button[type=submit]');
  await expectText(admin, '#reason-list', 'Training');
  await admin.fill('input[aria-label="New name for Training"]', 'Coaching');
  await admin.click('button[aria-label="Rename pause reason Training"]');
  await expectText(admin, '#notice', 'Training renamed to Coaching');
  await expectText(admin, '#reason-list', 'Coaching');
  await admin.click('button[aria-label="Retire pause reason Bathroom"]');
  await expectText(admin, '#notice', 'Bathroom retired');
  // The list is read again after the notice: wait for it.
  await eventually(async () => {
    const names = await admin.locator('#reason-list .q-name').allTextContents();
    assert.deepEqual(names, ['Lunch', 'Break', 'Coaching']);
  });
  await shot(admin, 'admin-02-pause-reasons');
});

test('a queue\'s routing settings are saved, and a value out of range is refused in words', async () => {
  await admin.click('#tab-queues');
  await admin.click('#admin-queue-500 summary');
  await admin.fill('#qs-500-wrap_up_s', '5');
  await admin.selectOption('#qs-500-strategy', 'ring_all');
  await admin.click('#admin-queue-500 details button[type=submit]');
  await expectText(admin, '#notice', 'The settings of queue 500 are saved');
  await admin.fill('#qs-500-ring_timeout_s', '9999');
  await admin.click('#admin-queue-500 details button[type=submit]');
  // The refusal is shown at the field it names, which is marked and focused.
  await expectText(admin, '#qs-500-ring_timeout_s-error', /ring_timeout_s/);
  assert.equal(await admin.getAttribute('#qs-500-ring_timeout_s', 'aria-invalid'), 'true');
  assert.equal(await admin.evaluate(() => document.activeElement.id), 'qs-500-ring_timeout_s');
  await admin.setViewportSize(NARROW);
  await shot(admin, 'admin-03-narrow');
  await admin.setViewportSize(DESKTOP);
  assertNoPageErrors(admin);
});

test('after a reload the page knows who is signed in, and the settings form starts from the settings in force', async () => {
  // The form shows the defaults of a queue never set, not another queue's settings.
  assert.equal(await admin.inputValue('#qs-501-ring_timeout_s'), '20');
  await admin.fill('#qs-500-ring_timeout_s', '35');
  await admin.fill('#qs-500-max_wait_s', '120');
  await admin.check('#qs-500-leave');
  await admin.click('#admin-queue-500 details button[type=submit]');
  await expectText(admin, '#notice', 'The settings of queue 500 are saved');

  await admin.reload();
  await admin.waitForSelector('#directory:not([hidden])');
  await expectText(admin, '#who', 'admin · tenant demo');
  await admin.click('#tab-queues');
  await admin.click('#admin-queue-500 summary');
  assert.equal(await admin.inputValue('#qs-500-ring_timeout_s'), '35');
  assert.equal(await admin.inputValue('#qs-500-max_wait_s'), '120');
  assert.equal(await admin.inputValue('#qs-500-wrap_up_s'), '5');
  assert.equal(await admin.inputValue('#qs-500-strategy'), 'ring_all');
  assert.ok(await admin.isChecked('#qs-500-leave'));
  assert.ok(!(await admin.isChecked('#qs-500-inuse')));
  assert.equal(await admin.inputValue('#qs-501-ring_timeout_s'), '20');
  assert.equal(await admin.inputValue('#qs-501-strategy'), 'longest_idle');
  assert.ok(!(await admin.isChecked('#qs-501-leave')));
  await expectText(admin, '#admin-queue-500 details', 'The settings in force');
  await shot(admin, 'admin-04-settings-read-back');

  // Drawing the list again (after assigning an agent) keeps the settings form open, with the values in force.
  await admin.selectOption('#assign-500', '1003');
  await admin.click('#admin-queue-500 form.inline-form button[type=submit]');
  await expectText(admin, '#notice', 'Agent 1003 assigned to queue 500');
  assert.ok(await admin.isVisible('#qs-500-ring_timeout_s'));
  assert.equal(await admin.inputValue('#qs-500-ring_timeout_s'), '35');

  // Signed out, a reload shows the sign-in form.
  await admin.click('#signout');
  await admin.waitForSelector('#signin:not([hidden])');
  await admin.reload();
  await admin.waitForSelector('#signin:not([hidden])');
  assert.ok(await admin.isHidden('#directory'));
  assertNoPageErrors(admin);
});

/** The simulator's control surface, for playing a caller and a phone. */
async function sim(route) {
  const r = await fetch(`${sys.sim}/tenants/demo${route.path}`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(route.body || {}),
  });
  assert.ok(r.ok, `${route.path}: ${r.status} ${await r.text()}`);
}

test('number inputs carry the ranges the API allows, and refusals are shown at the field they name', async () => {
  await signInAs(admin, 'admin', 'demo-admin');
  await admin.waitForSelector('#directory:not([hidden])');
  await admin.click('#tab-queues');
  await admin.click('#admin-queue-501 summary');
  const range = async (sel) => [await admin.getAttribute(sel, 'min'), await admin.getAttribute(sel, 'max')];
  assert.deepEqual(await range('#qs-501-ring_timeout_s'), ['1', '600']);
  assert.deepEqual(await range('#qs-501-service_level_s'), ['1', '3600']);
  assert.deepEqual(await range('#qs-501-wrap_up_s'), ['0', '3600']);
  assert.deepEqual(await range('#qs-501-max_wait_s'), ['0', '86400']);
  assert.deepEqual(await range('#qs-501-auto_pause_after'), ['0', '100']);
  assert.deepEqual(await range('#assign-pen-501'), ['0', '1000']);
  // 0 where the API needs at least 1: refused at the field, not only in a banner.
  await admin.fill('#qs-501-service_level_s', '0');
  await admin.click('#admin-queue-501 details button[type=submit]');
  await expectText(admin, '#qs-501-service_level_s-error', /service_level_s/);
  assert.equal(await admin.getAttribute('#qs-501-service_level_s', 'aria-invalid'), 'true');
  await admin.fill('#qs-501-service_level_s', '20');
  await admin.click('#admin-queue-501 details button[type=submit]');
  await expectText(admin, '#notice', 'The settings of queue 501 are saved');
  assert.equal(await admin.locator('#qs-501-service_level_s-error').count(), 0, 'the error is gone once saved');

  // A new agent whose number exists: at the Agent Number field.
  await admin.click('#tab-agents');
  await admin.fill('#na-number', '1001');
  await admin.fill('#na-name', 'Another Alice');
  await admin.fill('#na-password', 'whatever1001');
  await admin.click('#new-agent button[type=submit]');
  await expectText(admin, '#na-number-error', '1001');
  assert.equal(await admin.evaluate(() => document.activeElement.id), 'na-number');
  await shot(admin, 'admin-05-field-error');
});

test('Disable asks first, and says when the agent is on a call', async () => {
  // Eve (1005, queue 501) takes a call.
  await sim({ path: '/calls', body: { queue: '501', caller_number: '5554001', caller_name: 'Disabling Caller' } });
  const sup = await apiSession(sys, { username: 'supervisor', password: 'demo-supervisor' });
  const eveIs = async (status) => {
    for (let i = 0; i < 100; i++) {
      const r = await sup('GET', '/api/supervisor/agents');
      if (r.body.find((v) => v.agent === '1005')?.status === status) return;
      await new Promise((res) => setTimeout(res, 200));
    }
    assert.fail(`Eve never ${status}`);
  };
  await eveIs('ringing');
  await sim({ path: '/devices/1005/answer' });
  await eveIs('connected');

  const disable = 'button[aria-label="Disable agent 1005"]';
  await admin.click(disable);
  await expectText(admin, '#disable-note-1005', 'Agent 1005 (Eve Agent) is on a call');
  assert.equal(await admin.evaluate(() => document.activeElement.textContent), 'Confirm disable');
  await shot(admin, 'admin-06-confirm-disable');
  await admin.click('button[aria-label="Keep agent 1005 enabled"]');
  await admin.waitForSelector(disable);
  assert.equal(await admin.evaluate(() => document.activeElement.getAttribute('aria-label')), 'Disable agent 1005');
  const still = await sup('GET', '/api/supervisor/agents');
  assert.equal(still.body.find((v) => v.agent === '1005').enabled, true, 'nothing was done');

  await admin.click(disable);
  await admin.click('button[aria-label="Confirm disabling agent 1005"]');
  await expectText(admin, '#notice', 'Agent 1005 is disabled and logged out');
  await expectText(admin, '#admin-agent-1005', 'Disabled');
  assertNoPageErrors(admin);
});
