// Blind, Attended and Live Transfer from the Agent Portal, with the target picker, the demo
// phone playing the phones, and the receiving agent's portal.
//
// Alice (1001) takes the customers' calls of queue 501 Support (she logs into 501 only);
// Bob (1002, queue 500 only) receives transfers.

import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startSystem } from '../lib/system.js';
import {
  test, launch, newPage, shot, expectText, expectStatus, signIn, logIn, openPhone, dial, phoneAction,
  setWrapUp, assertNoPageErrors, NARROW, DESKTOP,
} from '../lib/browser.js';

let sys;
let browser;
let alice;
let bob;
let phone;
let transfersExist = false;

before(async () => {
  sys = await startSystem('transfers');
  browser = await launch();
  await setWrapUp(sys, '501', 300);
  await setWrapUp(sys, '500', 300);
  // Whether the transfer API is there at all (it came after the pages).
  const r = await fetch(`${sys.api}/api/transfer-targets`, { headers: { 'x-tenant': 'demo' } });
  transfersExist = r.status !== 404;

  alice = await newPage(browser);
  await signIn(alice, sys, '1001');
  await alice.waitForSelector('#login-step:not([hidden])');
  await alice.uncheck('#login-q-500');
  await alice.click('#complete-login');
  await expectStatus(alice, 'idle');
  await expectText(alice, '#queues li[data-queue="500"]', 'Not logged in');

  bob = await newPage(browser);
  await logIn(bob, sys, '1002');
  phone = await openPhone(browser, sys);
});

after(async () => {
  await browser?.close();
  await sys?.stop();
});

function todoWithoutApi(t) {
  if (!transfersExist) t.todo('transfer API');
}

/** A customer calls queue 501; Alice answers on her phone. */
async function aliceConnected(number, name) {
  await dial(phone, '501', number, name);
  await expectStatus(alice, 'ringing');
  await phoneAction(phone, '1001', 'answer');
  await expectStatus(alice, 'connected');
  await expectText(alice, '#call-caller', number);
}

async function aliceEndsWrapUp() {
  await expectStatus(alice, 'wrap_up');
  await alice.click('#opt-end-wrap-up');
  await expectStatus(alice, 'idle');
}

async function openPicker(method, label) {
  await alice.click(`#opt-${method}`);
  await alice.waitForSelector('#transfer-dialog[open]');
  await expectText(alice, '#transfer-title', `${label}: choose the transfer target`);
  await alice.waitForSelector('#transfer-loading', { state: 'hidden' });
}

test('Blind Transfer to an agent: Alice drops at once; Bob rings with the call, "transferred from" Alice', async (t) => {
  todoWithoutApi(t);
  await aliceConnected('5552001', 'Blind Caller');
  await openPicker('blind', 'Blind Transfer');
  await expectText(alice, '#targets-agents', 'Bob Agent (1002)');
  await expectText(alice, '#targets-queues', 'Support (501)');
  await expectText(alice, '#targets-extensions', 'Extension 1002');
  // Alice's own extension is not offered; an offline one is, but cannot be chosen.
  assert.equal(await alice.locator('#targets-extensions button:has-text("Extension 1001")').count(), 0);
  assert.ok(await alice.isDisabled('#targets-extensions button:has-text("Extension 1007")'));
  await shot(alice, 'transfer-01-blind-picker');
  await alice.setViewportSize(NARROW);
  await shot(alice, 'transfer-01-blind-picker-narrow');
  await alice.setViewportSize(DESKTOP);

  await alice.click('#targets-agents button:has-text("Bob Agent (1002)")');
  await alice.waitForSelector('#transfer-dialog', { state: 'hidden' });
  await expectText(alice, '#notice', 'Blind Transfer to Bob Agent (1002) started');
  await expectStatus(alice, 'wrap_up');
  await expectText(alice, '#count-completed', '1');

  await expectStatus(bob, 'ringing');
  await expectText(bob, '#call-caller', '5552001');
  await expectText(bob, '#call-from', 'Alice Agent (1001)');
  await shot(bob, 'transfer-02-blind-receiving-agent-ringing');
  await phoneAction(phone, '1002', 'answer');
  await expectStatus(bob, 'connected');
  await expectText(bob, '#call-caller', 'Blind Caller');
  await expectText(phone, '#callers', 'Blind Caller → queue 501: talking with phone 1002');
  await bob.click('#opt-hangup');
  await expectStatus(bob, 'wrap_up');
  await expectText(bob, '#count-completed', '1');
  await bob.click('#opt-end-wrap-up');
  await expectStatus(bob, 'idle');
  await aliceEndsWrapUp();
});

test('Attended Transfer to an extension: the customer on hold, consult, back and forth, Complete', async (t) => {
  todoWithoutApi(t);
  await aliceConnected('5552002', 'Attended Caller');
  await openPicker('attended', 'Attended Transfer');
  await expectText(alice, '#targets-queues', 'Blind Transfers only');
  await alice.click('#targets-extensions button:has-text("Extension 1005")');
  await alice.waitForSelector('#transfer-dialog', { state: 'hidden' });

  await expectText(alice, '#transfer-info', 'Attended Transfer to Extension 1005: ringing. The customer is on hold.');
  await expectStatus(alice, 'on_hold');
  for (const id of ['opt-complete', 'opt-cancel', 'opt-resume-customer']) await alice.waitForSelector(`#${id}`);
  assert.equal(await alice.locator('#opt-hangup').count(), 0, 'no Hangup during a transfer');
  await expectText(phone, '#device-1005 .state', 'Ringing');
  await shot(alice, 'transfer-03-attended-ringing');

  await phoneAction(phone, '1005', 'answer');
  await expectText(alice, '#transfer-info', 'Attended Transfer to Extension 1005: answered. The customer is on hold.');
  await shot(alice, 'transfer-04-attended-answered');
  // Back to the customer (the target waits), then to the target again.
  await alice.click('#opt-resume-customer');
  await expectText(alice, '#transfer-info', 'The customer is on the line.');
  await expectStatus(alice, 'connected');
  await alice.click('#opt-hold-customer');
  await expectText(alice, '#transfer-info', 'The customer is on hold.');

  await alice.click('#opt-complete');
  await expectText(alice, '#notice', 'Transfer complete');
  await expectStatus(alice, 'wrap_up');
  await expectText(alice, '#count-completed', '2');
  await expectText(phone, '#device-1005 .state', 'On a call with');
  await expectText(phone, '#callers', 'Attended Caller → queue 501: talking with phone 1005');
  await shot(phone, 'transfer-05-attended-completed-phone');
  await phoneAction(phone, '1005', 'hangup');
  await expectText(phone, '#no-callers', 'No caller');
  await aliceEndsWrapUp();
});

test('Live Transfer: Cancel while the target rings; then to an outside number: all connected, hold, Complete', async (t) => {
  todoWithoutApi(t);
  await aliceConnected('5552003', 'Live Caller');

  // To Bob, cancelled while his phone rings: Alice stays with the customer.
  await openPicker('live', 'Live Transfer');
  await alice.click('#targets-agents button:has-text("Bob Agent (1002)")');
  await expectText(alice, '#transfer-info', 'Live Transfer to');
  await expectText(alice, '#transfer-info', 'ringing. The customer is on the line.');
  await expectStatus(alice, 'connected');
  await expectStatus(bob, 'ringing');
  await expectText(bob, '#call-from', 'Alice Agent (1001)');
  await shot(alice, 'transfer-06-live-ringing');
  await alice.click('#opt-cancel');
  await expectText(alice, '#notice', 'Transfer cancelled');
  await alice.waitForSelector('#transfer-info', { state: 'hidden' });
  await alice.waitForSelector('#opt-hangup');
  await expectStatus(bob, 'idle');

  // To an outside number (the simulator answers it): customer, target and Alice together.
  await openPicker('live', 'Live Transfer');
  await alice.fill('#target-number', '5559999');
  await alice.press('#target-number', 'Enter');
  await alice.waitForSelector('#transfer-dialog', { state: 'hidden' });
  await expectText(alice, '#transfer-info', 'Live Transfer to');
  await expectText(alice, '#transfer-info', 'all parties connected. The customer is on the line.');
  await expectText(phone, '#outside', 'Number 5559999: talking with');
  await shot(alice, 'transfer-07-live-conference');
  await shot(phone, 'transfer-07-live-conference-phone');

  // A temporary hold of the customer, and back.
  await alice.click('#opt-hold-customer');
  await expectText(alice, '#transfer-info', 'The customer is on hold.');
  await expectStatus(alice, 'on_hold');
  await alice.click('#opt-resume-customer');
  await expectText(alice, '#transfer-info', 'The customer is on the line.');

  await alice.click('#opt-complete');
  await expectStatus(alice, 'wrap_up');
  await expectText(alice, '#count-completed', '3');
  await expectText(phone, '#callers', 'Live Caller → queue 501: talking with number 5559999');
  await shot(alice, 'transfer-08-live-completed');
  await phone.click('#outside li button.hangup');
  await expectText(phone, '#no-callers', 'No caller');
  await aliceEndsWrapUp();
  assertNoPageErrors(alice, bob, phone);
});
