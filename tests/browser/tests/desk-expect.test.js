// What agents expect from a desk: the ring countdown, the ring sound (off by default, a toggle
// kept in the browser), the desktop notification while the page is hidden, the caller's name
// first; the hold timer and count with a talk time that leaves hold out; the callers waiting
// in the agent's queues; the agent's calls today.
//
// Headless Chromium never hides a page and shows no notification, so the page is told it is
// hidden (document.hidden) and the notifications it creates are noted, before it loads.

import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startSystem } from '../lib/system.js';
import {
  test, launch, newPage, shot, expectText, expectStatus, logIn, openPhone, dial, phoneAction,
  setWrapUp, apiSession, assertNoPageErrors, eventually, injectAxe, NARROW, DESKTOP,
} from '../lib/browser.js';

let sys;
let browser;
let agent;
let phone;

const secs = (t) => {
  const p = t.trim().split(':').map(Number);
  return p.reduce((a, b) => a * 60 + b, 0);
};

async function axeClean(page, what) {
  await injectAxe(page);
  const r = await page.evaluate(() => window.axe.run(document));
  assert.deepEqual(r.violations.map((v) => `${v.id}: ${v.nodes.map((n) => n.target).join(' ')}`), [], what);
}

before(async () => {
  sys = await startSystem('desk-expect');
  browser = await launch();
  await setWrapUp(sys, '500', 300);
  const admin = await apiSession(sys, { username: 'admin', password: 'demo-admin' });
  const r = await admin('PUT', '/api/admin/queues/500/settings', { ring_timeout_s: 30 });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  agent = await newPage(browser);
  await agent.context().grantPermissions(['notifications'], { origin: sys.portal });
  await agent.addInitScript(() => {
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => !!window.pageHidden });
    const Real = window.Notification;
    window.notes = [];
    window.Notification = class extends Real {
      constructor(title, options) {
        super(title, options);
        window.notes.push({ title, body: options && options.body });
      }
    };
  });
  phone = await openPhone(browser, sys);
});

after(async () => {
  await browser?.close();
  await sys?.stop();
});

test('the ring sound is off by default; the toggle is kept in the browser', async () => {
  await logIn(agent, sys, '1001');
  assert.equal(await agent.isChecked('#ring-sound'), false);
  await expectText(agent, '#notify-state', 'Desktop notification: on');
  await agent.check('#ring-sound');
  await agent.reload();
  await expectStatus(agent, 'idle');
  assert.equal(await agent.isChecked('#ring-sound'), true, 'kept across a reload');
  assert.equal(await agent.evaluate(() => localStorage.getItem('cc.ringSound')), 'on');
});

test('a ringing call: the countdown from the queue\'s ring timeout, the caller\'s name first, the sound, and a notification while the page is hidden', async () => {
  // Sound needs a click on the page (the browser's rule); the toggle is one.
  await agent.uncheck('#ring-sound');
  await agent.check('#ring-sound');
  await agent.evaluate(() => { window.pageHidden = true; });
  await dial(phone, '500', '5551234', 'Jane');
  await expectStatus(agent, 'ringing');
  await expectText(agent, '#call-caller', /^Jane · 5551234$/);
  const first = secs(await agent.textContent('#call-ring'));
  assert.ok(first <= 30 && first >= 25, `the countdown starts at the ring timeout (30 s): ${first}`);
  await eventually(async () => assert.ok(secs(await agent.textContent('#call-ring')) < first, 'counts down'));
  await eventually(async () => assert.ok(Number(await agent.getAttribute('body', 'data-rings')) >= 1, 'the ring sound plays'));
  const notes = await agent.evaluate(() => window.notes);
  assert.deepEqual(notes, [{ title: 'Jane is calling', body: '5551234 · Queue call · Sales (500)' }]);
  // Hidden, the page does not ask for the calls waiting; shown again, it does at once.
  await agent.evaluate(() => { window.pageHidden = false; document.dispatchEvent(new Event('visibilitychange')); });
  await expectText(agent, '#waiting li[data-queue="500"]', '1 waiting');
  await expectText(agent, '#waiting li[data-queue="500"]', /longest \d+:\d\d/);
  await shot(agent, 'desk-expect-01-ringing');
  await axeClean(agent, 'ringing');
});

test('hold: the hold timer and count; the talk time leaves the hold out', async () => {
  await phoneAction(phone, '1001', 'answer');
  await expectStatus(agent, 'connected');
  const rings = Number(await agent.getAttribute('body', 'data-rings'));
  await agent.waitForTimeout(3500);
  assert.equal(Number(await agent.getAttribute('body', 'data-rings')), rings, 'the sound stops at the answer');
  assert.ok(await agent.isHidden('#call-ring-wrap'));
  assert.ok(await agent.isHidden('#call-hold-wrap'), 'no hold yet');
  await expectText(agent, '#waiting li[data-queue="500"]', '0 waiting');
  await agent.click('#opt-hold');
  await expectStatus(agent, 'on_hold');
  await expectText(agent, '#call-holds', '1');
  await expectText(agent, '#call-hold-label', 'On hold for');
  await expectText(agent, '#call-hold', /^0:0[3-9]$/);
  await shot(agent, 'desk-expect-02-on-hold');
  await agent.click('#opt-resume');
  await expectStatus(agent, 'connected');
  await expectText(agent, '#call-hold-label', 'Hold time');
  const held = secs(await agent.textContent('#call-hold'));
  assert.ok(held >= 3, `hold time ${held}`);
  // Talk + hold = the time since the answer (each shown in whole seconds, rounded down, and
  // redrawn every second); with the hold counted in, talk + hold would pass it by the hold.
  await agent.waitForTimeout(1200);
  const answeredAt = await agent.evaluate(async () => (await (await fetch('/api/me')).json()).current_call.answered_at);
  const { talk, since } = await agent.evaluate((at) => ({
    talk: document.getElementById('call-talk').textContent,
    since: (Date.now() - Date.parse(at)) / 1000,
  }), answeredAt);
  const sum = secs(talk) + held;
  assert.ok(sum <= since + 1 && sum >= since - 3, `talk ${talk} + hold ${held} s = ${since} s since the answer`);
  await agent.click('#opt-hold');
  await expectText(agent, '#call-holds', '2');
  await agent.click('#opt-resume');
  await expectStatus(agent, 'connected');
  await axeClean(agent, 'connected after holds');
});

test('recent calls today: the call with its caller, queue, outcome and duration; a missed call too', async () => {
  await agent.click('#opt-hangup');
  await expectStatus(agent, 'wrap_up');
  await agent.click('#opt-end-wrap-up');
  await expectStatus(agent, 'idle');
  const row = '#recent-rows tr:first-child';
  await expectText(agent, row, 'Jane · 5551234');
  await expectText(agent, `${row} [data-label="Queue"]`, 'Sales (500)');
  await expectText(agent, `${row} [data-label="Outcome"]`, 'Answered');
  await expectText(agent, `${row} [data-label="Duration"]`, /^0:\d\d$/);
  // A call that rings out is Missed.
  const admin = await apiSession(sys, { username: 'admin', password: 'demo-admin' });
  assert.equal((await admin('PUT', '/api/admin/queues/500/settings', { ring_timeout_s: 2 })).status, 200);
  await dial(phone, '500', '5559876', 'Max');
  await expectStatus(agent, 'ringing');
  await expectText(agent, '#count-missed', '1');
  await expectText(agent, '#recent-rows', 'Max · 5559876');
  await expectText(agent, '#recent-rows tr[data-outcome="missed"] [data-label="Outcome"]', 'Missed');
  await phone.click('#callers li button.hangup');
  await expectStatus(agent, 'idle');
  await shot(agent, 'desk-expect-03-recent-calls');
  await agent.setViewportSize(NARROW);
  await shot(agent, 'desk-expect-03-recent-calls-narrow');
  await agent.setViewportSize(DESKTOP);
  await axeClean(agent, 'idle with recent calls');
});

test('the admin sets a queue\'s disposition codes, required; a duplicate is refused at the field', async () => {
  const admin = await newPage(browser);
  await admin.goto(`${sys.portal}/admin`);
  await admin.waitForSelector('#signin:not([hidden])');
  await admin.fill('#username', 'admin');
  await admin.fill('#password', 'demo-admin');
  await admin.click('#signin-form button[type=submit]');
  await admin.click('#tab-queues');
  await admin.click('#admin-queue-500 summary');
  await admin.fill('#qs-500-ring_timeout_s', '30');
  await admin.fill('#qs-500-wrap_up_s', '2');
  await admin.fill('#qs-500-dispositions', 'Sale\nNo sale\nSale');
  await admin.check('#qs-500-disp-required');
  await admin.click('#admin-queue-500 details button[type=submit]');
  await expectText(admin, '#qs-500-dispositions-error', 'listed twice');
  assert.equal(await admin.getAttribute('#qs-500-dispositions', 'aria-invalid'), 'true');
  await admin.fill('#qs-500-dispositions', 'Sale\nNo sale\nCall back');
  await admin.click('#admin-queue-500 details button[type=submit]');
  await expectText(admin, '#notice', 'The settings of queue 500 are saved');
  await shot(admin, 'desk-expect-04-admin-dispositions');
  await axeClean(admin, 'admin queue settings with dispositions');
  assertNoPageErrors(admin);
  await admin.context().close();
});

test('a required disposition keeps the agent in wrap-up past its time until given; the note and code reach the recent calls', async () => {
  await dial(phone, '500', '5552222', 'Ann');
  await expectStatus(agent, 'ringing');
  await phoneAction(phone, '1001', 'answer');
  await expectStatus(agent, 'connected');
  await agent.click('#opt-hangup');
  await expectStatus(agent, 'wrap_up');
  await agent.waitForSelector('#wrapup-form:not([hidden])');
  assert.deepEqual(await agent.locator('#disposition option').allTextContents(), ['Choose a disposition…', 'Sale', 'No sale', 'Call back']);
  await expectText(agent, '#wrapup-hint', 'requires a disposition');
  // End wrap-up is refused, in words.
  await agent.click('#opt-end-wrap-up');
  await expectText(agent, '#notice', 'requires a disposition');
  // The 2 s wrap-up is over, and the agent is still in wrap-up.
  await agent.waitForTimeout(3500);
  await expectStatus(agent, 'wrap_up');
  await expectText(agent, '#wrapup-hint', 'The wrap-up time is over');
  // Saving without a choice is refused at the field.
  await agent.click('#save-disposition');
  await expectText(agent, '#disposition-error', 'Choose a disposition');
  await shot(agent, 'desk-expect-05-wrap-up-disposition');
  await axeClean(agent, 'wrap-up with the disposition form');
  await agent.selectOption('#disposition', 'Call back');
  await agent.fill('#wrapup-note', 'Wants the brochure; call on Monday');
  await agent.click('#save-disposition');
  // Given past the wrap-up's time: the agent is available at once.
  await expectStatus(agent, 'idle');
  const row = '#recent-rows tr:first-child';
  await expectText(agent, row, 'Ann · 5552222');
  await expectText(agent, `${row} [data-label="Disposition"]`, 'Call back');
  const admin = await apiSession(sys, { username: 'admin', password: 'demo-admin' });
  const calls = await admin('GET', '/api/reports/calls');
  const ann = calls.body.find((c) => c.caller_name === 'Ann');
  assert.deepEqual([ann.disposition, ann.disposition_note, ann.disposition_agent], ['Call back', 'Wants the brochure; call on Monday', '1001']);
  assertNoPageErrors(agent, phone);
});
