// The agent's desk in words: what the status, the notes and the Call Details say during an
// attended transfer (to both agents), with the device offline, and after a forced logout.
//
// Alice (1001) takes the customers' calls of queue 501 Support (she logs into 501 only);
// Bob (1002, queue 500 only) receives transfers.

import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startSystem } from '../lib/system.js';
import {
  test, launch, newPage, shot, expectText, expectStatus, signIn, logIn, openPhone, dial, phoneAction,
  setWrapUp, apiSession, assertNoPageErrors, eventually, injectAxe,
} from '../lib/browser.js';

let sys;
let browser;
let alice;
let bob;
let phone;

before(async () => {
  sys = await startSystem('desk');
  browser = await launch();
  await setWrapUp(sys, '501', 300);
  await setWrapUp(sys, '500', 300);
  alice = await newPage(browser);
  await signIn(alice, sys, '1001');
  await alice.waitForSelector('#login-step:not([hidden])');
  await alice.uncheck('#login-q-500');
  await alice.click('#complete-login');
  await expectStatus(alice, 'idle');
  bob = await newPage(browser);
  await logIn(bob, sys, '1002');
  phone = await openPhone(browser, sys);
});

after(async () => {
  await browser?.close();
  await sys?.stop();
});

/** The seconds a m:ss clock shows. */
async function seconds(page, selector) {
  const text = (await page.locator(selector).textContent()).trim();
  const [m, s] = text.split(':').map(Number);
  return m * 60 + s;
}

test('An attended transfer in words: Consulting, transferred by name, the wait of this offer, End consultation', async () => {
  await dial(phone, '501', '5553001', 'Words Caller');
  await expectStatus(alice, 'ringing');
  await phoneAction(phone, '1001', 'answer');
  await expectStatus(alice, 'connected');
  // Alice talks a while before she transfers: Bob's wait must not include it.
  await new Promise((r) => setTimeout(r, 4000));
  await alice.click('#opt-attended');
  await alice.waitForSelector('#transfer-dialog[open]');
  await alice.waitForSelector('#transfer-loading', { state: 'hidden' });
  await alice.click('#targets-agents button:has-text("Bob Agent (1002)")');
  await alice.waitForSelector('#transfer-dialog', { state: 'hidden' });

  await expectStatus(bob, 'ringing');
  await expectText(bob, '#status-note', 'Alice Agent (1001) is transferring a call to you');
  const note = await bob.locator('#status-note').textContent();
  assert.ok(!note.includes('queue call'), `not "a queue call": ${note}`);
  await expectText(bob, '#call-from', 'Alice Agent (1001)');
  assert.ok(await seconds(bob, '#call-wait') < 3, 'the wait counts from the transfer, not from the caller entering the queue');
  await shot(bob, 'desk-01-transferred-call-ringing');

  await phoneAction(phone, '1002', 'answer');
  await expectText(alice, '#status-word', 'Consulting');
  assert.equal(await alice.textContent('#status-word'), 'Consulting', 'not "On hold": Alice talks to Bob');
  await expectStatus(bob, 'connected');
  await expectText(bob, '#status-note', 'Alice Agent (1001) is consulting you');
  // Bob may only end the consultation until Alice completes.
  await bob.waitForSelector('#opt-end-consultation');
  assert.deepEqual(await bob.locator('#call-options button').evaluateAll((bs) => bs.map((b) => b.textContent)), ['End consultation']);
  assert.ok(await seconds(bob, '#call-wait') < 3, 'the wait of the answered offer');
  await shot(alice, 'desk-02-consulting');
  await shot(bob, 'desk-03-consulted');

  await bob.click('#opt-end-consultation');
  await expectStatus(bob, 'idle');
  await expectStatus(alice, 'connected');
  await expectText(alice, '#status-word', 'Connected');
  await alice.click('#opt-hangup');
  await expectStatus(alice, 'wrap_up');
  await alice.click('#opt-end-wrap-up');
  await expectStatus(alice, 'idle');
  assertNoPageErrors(alice, bob);
});

test('With the device offline the status says so, not a green Idle', async () => {
  const idleColor = await alice.locator('#status-word').evaluate((e) => getComputedStyle(e).color);
  await phone.click('#device-1001 button.regbtn');
  await expectText(alice, '#status-word', 'Device offline');
  await expectText(alice, '#device-offline', 'no queue calls can reach you');
  const color = await alice.locator('#status-word').evaluate((e) => getComputedStyle(e).color);
  assert.notEqual(color, idleColor, 'not the Idle green');
  await shot(alice, 'desk-04-device-offline');
  await phone.click('#device-1001 button.regbtn');
  await expectText(alice, '#status-word', /^Idle$/);
});

test('A forced logout is a warning that names the supervisor', async () => {
  const supervisor = await apiSession(sys, { username: 'supervisor', password: 'demo-supervisor' });
  const r = await supervisor('POST', '/api/supervisor/agents/1002/logout');
  assert.equal(r.status, 200, JSON.stringify(r.body));
  await bob.waitForSelector('#login-step:not([hidden])');
  await expectText(bob, '#notice', 'A supervisor logged you out');
  assert.equal(await bob.getAttribute('#notice', 'class'), 'notice warn');
  await shot(bob, 'desk-05-forced-logout');
});

test('Completed, Missed and Rejected are the counts of this login: a new login starts them at 0', async () => {
  await expectText(alice, '#count-completed', '1');
  await expectText(alice, '#counts-note', 'of this login');
  await alice.click('#logout');
  await alice.waitForSelector('#signin:not([hidden])');
  await signIn(alice, sys, '1001');
  await alice.waitForSelector('#login-step:not([hidden])');
  await alice.click('#complete-login');
  await expectStatus(alice, 'idle');
  await expectText(alice, '#count-completed', /^0$/);
  await expectText(alice, '#counts-note', 'of this login');
});

/** The id of the focused element ('' for the page's body: the focus was lost). */
const focused = (page) => page.evaluate(() => (document.activeElement && document.activeElement !== document.body ? document.activeElement.id : ''));

async function expectFocus(page, id) {
  await eventually(async () => assert.equal(await focused(page), id));
}

test('Keyboard: after Pause, Unpause and Hangup the focus stays on a control', async () => {
  await expectStatus(alice, 'idle');
  await alice.focus('#pause');
  await alice.keyboard.press('Enter');
  await expectStatus(alice, 'paused');
  await expectFocus(alice, 'pause'); // now "Change reason"
  await alice.waitForSelector('#unpause:not([hidden])');
  await alice.focus('#unpause');
  await alice.keyboard.press('Enter');
  await expectStatus(alice, 'idle');
  await expectFocus(alice, 'pause');

  await dial(phone, '501', '5553002', 'Keyboard Caller');
  await expectStatus(alice, 'ringing');
  await phoneAction(phone, '1001', 'answer');
  await expectStatus(alice, 'connected');
  await alice.focus('#opt-hangup');
  await alice.keyboard.press('Enter');
  await expectStatus(alice, 'wrap_up');
  await expectFocus(alice, 'opt-end-wrap-up');
  await alice.keyboard.press('Enter');
  await expectStatus(alice, 'idle');
  await expectFocus(alice, 'status-title');
  assertNoPageErrors(alice);
});

test('The demo phone passes axe-core\'s color-contrast rule, idle and with a ringing phone', async () => {
  await injectAxe(phone);
  const contrast = async () => {
    const r = await phone.evaluate(() => window.axe.run(document, { runOnly: ['color-contrast'] }));
    return r.violations.flatMap((v) => v.nodes.map((n) => `${n.target.join(' ')}: ${n.failureSummary}`));
  };
  assert.deepEqual(await contrast(), []);
  await dial(phone, '501', '5553003', 'Contrast Caller');
  await expectStatus(alice, 'ringing');
  assert.deepEqual(await contrast(), []);
  await phoneAction(phone, '1001', 'reject');
  await expectStatus(alice, 'idle');
});
