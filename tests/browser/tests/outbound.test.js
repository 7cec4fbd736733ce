// Outbound calls from the portal: the agent dials a number or an extension in the Outbound
// call box; their own phone rings first (the demo phone), then the number; connected, the call
// has the usual options; a dial that does not connect says why; bad input is refused at the
// field, by the page and by the server.

import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startSystem } from '../lib/system.js';
import {
  test, launch, newPage, shot, expectText, expectStatus, logIn, openPhone, phoneAction,
  assertNoPageErrors, eventually, injectAxe, NARROW, DESKTOP,
} from '../lib/browser.js';

let sys;
let browser;
let agent;
let phone;

async function axeClean(page, what) {
  await injectAxe(page);
  const r = await page.evaluate(() => window.axe.run(document));
  assert.deepEqual(r.violations.map((v) => `${v.id}: ${v.nodes.map((n) => n.target).join(' ')}`), [], what);
}

before(async () => {
  sys = await startSystem('outbound');
  browser = await launch();
  agent = await newPage(browser);
  phone = await openPhone(browser, sys);
});

after(async () => {
  await browser?.close();
  await sys?.stop();
});

test('the number is checked at the field, by the page and by the server', async () => {
  await logIn(agent, sys, '1001');
  assert.equal(await agent.isDisabled('#dial'), false, 'Idle: the agent may dial');
  await agent.fill('#dial-number', '555 CALL');
  await agent.click('#dial');
  await expectText(agent, '#dial-error', 'only digits and + * #');
  assert.equal(await agent.getAttribute('#dial-number', 'aria-invalid'), 'true');
  assert.equal(await agent.evaluate(() => document.activeElement.id), 'dial-number', 'the focus is on the field at fault');
  // The server's refusal lands at the field too: an extension that is not registered.
  await agent.fill('#dial-number', '1007');
  await agent.click('#dial');
  await expectText(agent, '#dial-error', 'Device 1007 is not registered');
  await expectStatus(agent, 'idle');
  await axeClean(agent, 'a refused dial');
});

test('dialling: the agent\'s phone rings first, then the number; connected with the usual options; no wrap-up after', async () => {
  await agent.fill('#dial-number', '+49 30 555-1234');
  await agent.press('#dial-number', 'Enter');
  await expectStatus(agent, 'dialing');
  await expectText(agent, '#status-word', 'Dialing');
  await expectText(agent, '#status-note', 'Your phone is ringing: answer it to call +49305551234.');
  await expectText(agent, '#call-caller-label', 'Calling');
  await expectText(agent, '#call-caller', '+49305551234');
  await expectText(agent, '#call-queue', 'Outbound call');
  assert.deepEqual(await agent.locator('#call-options button').allTextContents(), ['Hangup']);
  assert.equal(await agent.isDisabled('#dial'), true, 'no second dial during a call');
  assert.equal(await agent.evaluate(() => document.activeElement.id), 'dial-number', 'the focus stays in the form');
  // The demo phone rings with the number it is about to call.
  await expectText(phone, '#device-1001', '+49305551234');
  await shot(agent, 'outbound-01-dialing');
  await axeClean(agent, 'dialing');

  await phoneAction(phone, '1001', 'answer');
  await expectStatus(agent, 'connected');
  assert.deepEqual(await agent.locator('#call-options button').allTextContents(),
    ['Hangup', 'Hold', 'Blind Transfer', 'Attended Transfer', 'Live Transfer']);
  await expectText(agent, '#call-talk', /^0:0\d$/);
  await agent.click('#opt-hold');
  await expectStatus(agent, 'on_hold');
  await agent.click('#opt-resume');
  await expectStatus(agent, 'connected');
  await shot(agent, 'outbound-02-connected');
  await axeClean(agent, 'connected on an outbound call');

  await agent.click('#opt-hangup');
  await expectStatus(agent, 'idle');
  assert.equal(await agent.isHidden('#wrapup-form'), true, 'no wrap-up after an outbound call');
  await expectText(agent, '#count-completed', '1');
  const row = '#recent-rows tr:first-child';
  await expectText(agent, `${row} [data-label="Caller"]`, '+49305551234');
  await expectText(agent, `${row} [data-label="Queue"]`, 'Outbound call');
  await expectText(agent, `${row} [data-label="Outcome"]`, 'Answered');
  assert.equal(await agent.isDisabled('#dial'), false, 'free again');
});

test('a dial that does not connect says why, and Hangup while the phone rings cancels it', async () => {
  // Extension 1003 declines (the demo phone's Reject on 1003).
  await agent.fill('#dial-number', '1003');
  await agent.click('#dial');
  await expectStatus(agent, 'dialing');
  await phoneAction(phone, '1001', 'answer');
  await expectText(agent, '#status-note', 'Calling 1003');
  await phoneAction(phone, '1003', 'reject');
  await expectStatus(agent, 'idle');
  await expectText(agent, '#dial-result', 'Your call to 1003 did not connect: Declined.');
  await expectText(agent, '#notice', 'did not connect: Declined');
  await expectText(agent, '#recent-rows tr:first-child [data-label="Outcome"]', 'Not connected');
  await shot(agent, 'outbound-03-declined');
  await axeClean(agent, 'after a declined dial');

  // Hangup while the agent's own phone rings: cancelled, the phone stops ringing.
  await agent.fill('#dial-number', '5550000');
  await agent.click('#dial');
  await expectStatus(agent, 'dialing');
  await agent.click('#opt-hangup');
  await expectStatus(agent, 'idle');
  await expectText(agent, '#dial-result', 'did not connect: Cancelled.');
  await eventually(async () => assert.equal(await phone.isDisabled('#device-1001 button.answer'), true, 'the phone stops ringing'));
  assert.notEqual(await agent.evaluate(() => document.activeElement.tagName), 'BODY', 'the focus is not lost');
  await agent.setViewportSize(NARROW);
  await shot(agent, 'outbound-04-narrow');
  await axeClean(agent, 'narrow');
  await agent.setViewportSize(DESKTOP);
  assertNoPageErrors(agent);
});
