// A queue call end to end in two windows: the demo phone places the caller and plays the
// agent's phone; the Agent Portal follows live (no reload): Ringing with the Call Details,
// Rejected, Connected, On hold, Hangup, Wrap-up, Idle.

import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startSystem } from '../lib/system.js';
import {
  test, launch, newPage, shot, expectText, expectStatus, logIn, openPhone, dial, phoneAction,
  setWrapUp, assertNoPageErrors, NARROW, DESKTOP,
} from '../lib/browser.js';

let sys;
let browser;
let agent;
let phone;

before(async () => {
  sys = await startSystem('call');
  browser = await launch();
  // A long wrap-up, so the test sees the Wrap-up state and ends it itself.
  await setWrapUp(sys, '500', 300);
  agent = await newPage(browser);
  phone = await openPhone(browser, sys);
});

after(async () => {
  await browser?.close();
  await sys?.stop();
});

test('the demo phone lists the devices, online and offline', async () => {
  await expectText(phone, '#device-1001', 'Online');
  await expectText(phone, '#device-1007', 'Offline');
  await expectText(phone, '#device-1001 .state', 'Idle');
  assert.ok(await phone.isDisabled('#device-1001 button.answer'));
  await shot(phone, 'phone-01-idle');
});

test('a call is offered: Ringing with the Call Details, live, on the portal and on the phone', async () => {
  await logIn(agent, sys, '1001');
  const loadedAt = await agent.evaluate(() => performance.timeOrigin);
  await dial(phone, '500', '5551234', 'Jane');
  await expectStatus(agent, 'ringing');
  await expectText(agent, '#status-word', 'Ringing');
  await expectText(agent, '#call-caller', '5551234');
  await expectText(agent, '#call-caller', 'Jane');
  await expectText(agent, '#call-queue', 'Sales (500)');
  await expectText(agent, '#status-note', 'answer it on your phone');
  await expectText(phone, '#device-1001 .state', 'Ringing: 5551234 · Jane');
  await expectText(phone, '#callers', '5551234 · Jane → queue 500: waiting');
  await shot(agent, 'call-01-ringing');
  await shot(phone, 'phone-02-ringing');
  // Live: the page was not reloaded.
  assert.equal(await agent.evaluate(() => performance.timeOrigin), loadedAt);
});

test('rejected on the phone: Rejected 1, then the caller is offered again and answered: Connected', async () => {
  await phoneAction(phone, '1001', 'reject');
  await expectText(agent, '#count-rejected', '1');
  // After the queue's reject delay the waiting caller rings the agent again.
  await expectStatus(agent, 'ringing');
  await phoneAction(phone, '1001', 'answer');
  await expectStatus(agent, 'connected');
  await expectText(agent, '#status-word', 'Connected');
  await expectText(agent, '#call-caller', '5551234');
  await expectText(agent, '#call-wait', /^\d+:\d\d$/);
  // The talk time counts up in the browser.
  await expectText(agent, '#call-talk', /^0:0[1-9]|^0:[1-5]\d/);
  for (const id of ['opt-hangup', 'opt-hold', 'opt-blind', 'opt-attended', 'opt-live']) {
    assert.ok(await agent.isVisible(`#${id}`), `${id} is offered while Connected`);
  }
  assert.equal(await agent.locator('#opt-end-wrap-up').count(), 0);
  await expectText(phone, '#device-1001 .state', 'On a call with 5551234 · Jane');
  await expectText(phone, '#callers', 'talking with phone 1001');
  await shot(agent, 'call-02-connected');
  await shot(phone, 'phone-03-connected');
  await agent.setViewportSize(NARROW);
  await shot(agent, 'call-02-connected-narrow');
  await agent.setViewportSize(DESKTOP);
});

test('logout during a call is refused, in words', async () => {
  await agent.click('#logout');
  await expectText(agent, '#notice', 'hang up first');
  assert.ok(await agent.isVisible('#dashboard'));
});

test('hold and resume the customer', async () => {
  await agent.click('#opt-hold');
  await expectStatus(agent, 'on_hold');
  await expectText(agent, '#status-word', 'On hold');
  await expectText(agent, '#notice', 'The customer is on hold');
  await shot(agent, 'call-03-on-hold');
  await agent.click('#opt-resume');
  await expectStatus(agent, 'connected');
});

test('hangup from the portal: Completed 1 and Wrap-up, then End wrap-up: Idle', async () => {
  await agent.click('#opt-hangup');
  await expectStatus(agent, 'wrap_up');
  await expectText(agent, '#status-word', 'Wrap-up');
  await expectText(agent, '#count-completed', '1');
  await expectText(agent, '#count-rejected', '1');
  await expectText(agent, '#count-missed', '0');
  await expectText(agent, '#call-wrapup', /^\d+:\d\d$/);
  await expectText(phone, '#device-1001 .state', 'Idle');
  await expectText(phone, '#no-callers', 'No caller');
  await shot(agent, 'call-04-wrap-up');
  await agent.click('#opt-end-wrap-up');
  await expectStatus(agent, 'idle');
  await expectText(agent, '#no-call', 'No call');
});

test('the caller hangs up while ringing: no count, back to Idle', async () => {
  await dial(phone, '500', '5550000', 'Max');
  await expectStatus(agent, 'ringing');
  await phone.click('#callers li button.hangup');
  await expectStatus(agent, 'idle');
  await expectText(agent, '#count-missed', '0');
  await expectText(agent, '#count-completed', '1');
});

test('a phone unregistered mid-session: the portal says the device is offline', async () => {
  await phone.click('#device-1001 button.regbtn');
  await expectText(phone, '#device-1001', 'Offline');
  await agent.waitForSelector('#device-offline:not([hidden])');
  await expectText(agent, '#device-offline', 'Device offline');
  await shot(agent, 'call-05-device-offline');
  await phone.click('#device-1001 button.regbtn');
  await agent.waitForSelector('#device-offline', { state: 'hidden' });
  await phone.setViewportSize(NARROW);
  await shot(phone, 'phone-04-narrow');
  assertNoPageErrors(agent, phone);
});
