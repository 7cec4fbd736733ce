// The Agent Portal without calls: sign in, the device choice, queues, pause, logout, and the
// live stream surviving an outage.

import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startSystem } from '../lib/system.js';
import {
  test, launch, newPage, shot, eventually, expectText, expectStatus, signIn, logIn, apiSession,
  assertNoPageErrors, NARROW,
} from '../lib/browser.js';

let sys;
let browser;
const pages = [];

before(async () => {
  sys = await startSystem('agent');
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await sys?.stop();
});

async function page(viewport) {
  const p = await newPage(browser, viewport);
  pages.push(p);
  return p;
}

test('a wrong password is refused in words', async () => {
  const p = await page();
  await signIn(p, sys, '1003', 'not-the-password');
  await expectText(p, '#signin-error', 'The agent number or password is not correct');
  await shot(p, 'agent-01-signin-refused');
  assert.equal(await p.getAttribute('#agent-password', 'aria-invalid'), 'true');
});

test('login with the default device: the own extension is chosen, then Idle on the dashboard', async () => {
  const p = await page();
  // Every API request starts a trace of its own: a W3C traceparent header (app.js).
  const traced = [];
  p.on('request', (r) => {
    if (new URL(r.url()).pathname.startsWith('/api/') && r.method() !== 'GET') traced.push(r.headers().traceparent);
  });
  await signIn(p, sys, '1001');
  await p.waitForSelector('#login-step:not([hidden])');
  await shot(p, 'agent-02-device-choice');
  await p.setViewportSize(NARROW);
  await shot(p, 'agent-02-device-choice-narrow');
  await p.setViewportSize({ width: 1280, height: 720 });
  // The own extension is selected; only online devices are offered (1007 is offline).
  assert.equal(await p.inputValue('#device'), '1001');
  const offered = await p.locator('#device option').evaluateAll((os) => os.map((o) => o.value));
  assert.ok(offered.includes('1006') && !offered.includes('1007'), `offered: ${offered}`);
  // 1001 may manage queues: each assigned queue has its Add/Remove control (a checkbox).
  assert.equal(await p.locator('#login-queues input[type=checkbox]').count(), 2);
  await expectText(p, '#login-queues', 'Sales (500)');
  await expectText(p, '#login-queues', 'Support (501)');

  await p.click('#complete-login');
  await expectStatus(p, 'idle');
  await expectText(p, '#status-word', 'Idle');
  await expectText(p, '#device-used', '1001');
  assert.ok(traced.length >= 2, `sign-in and login requests: ${traced}`);
  for (const t of traced) assert.match(t || '', /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
  assert.equal(new Set(traced.map((t) => t.split('-')[1])).size, traced.length, `one trace each: ${traced}`);
  await expectText(p, '#login-time', /\d/);
  await expectText(p, '#count-completed', '0');
  await expectText(p, '#no-call', 'No call');
  await shot(p, 'agent-03-idle');
  await p.setViewportSize(NARROW);
  await shot(p, 'agent-03-idle-narrow');
  // Nothing sticks out sideways on a narrow screen.
  const overflow = await p.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than the screen`);
});

test('an offline device is refused with the reason shown; an agent who may not manage queues gets no controls', async () => {
  const p = await page();
  await signIn(p, sys, '1002');
  await p.waitForSelector('#login-step:not([hidden])');
  // 1002 may not choose queues: the assigned queue is listed, with no control.
  await expectText(p, '#login-queues', 'Sales (500)');
  assert.equal(await p.locator('#login-queues input').count(), 0);

  await p.selectOption('#device', '__other__');
  await p.fill('#other-device', '1007');
  await p.click('#complete-login');
  await expectText(p, '#device-error', 'Device 1007 is not registered');
  assert.equal(await p.getAttribute('#other-device', 'aria-invalid'), 'true');
  await shot(p, 'agent-04-device-offline');

  await p.selectOption('#device', '1002');
  await p.click('#complete-login');
  await expectStatus(p, 'idle');
  await expectText(p, '#queues', 'Sales (500)');
  assert.equal(await p.locator('#queues button').count(), 0, 'no Add/Remove for 1002');
});

test('queues: 1001 removes and adds itself, and the view follows', async () => {
  const p = pages[1]; // 1001, logged in above
  await p.setViewportSize({ width: 1280, height: 720 });
  const q501 = '#queues li[data-queue="501"]';
  await expectText(p, q501, 'Logged in');
  await p.click(`${q501} button`);
  await expectText(p, q501, 'Not logged in');
  await expectText(p, `${q501} button`, 'Add');
  await expectText(p, '#notice', 'You left queue Support (501)');
  await p.click(`${q501} button`);
  await expectText(p, q501, /^(?!.*Not).*Logged in/);
  await expectText(p, `${q501} button`, 'Remove');
});

test('pause with a reason, change it, unpause', async () => {
  const p = pages[1];
  const reasons = await p.locator('#pause-reason option').evaluateAll((os) => os.map((o) => o.value));
  assert.deepEqual(reasons, ['Lunch', 'Break', 'Bathroom']);
  await p.selectOption('#pause-reason', 'Lunch');
  await p.click('#pause');
  await expectStatus(p, 'paused');
  await expectText(p, '#status-word', 'Paused: Lunch');
  await shot(p, 'agent-05-paused');
  await p.selectOption('#pause-reason', 'Break');
  await p.click('#pause'); // now "Change reason"
  await expectText(p, '#status-word', 'Paused: Break');
  await p.click('#unpause');
  await expectStatus(p, 'idle');
  await expectText(p, '#notice', 'Unpaused');
});

test('the keyboard alone can pause and unpause', async () => {
  const p = pages[1];
  await p.focus('#pause-reason');
  await p.keyboard.press('Tab');
  assert.equal(await p.evaluate(() => document.activeElement.id), 'pause');
  await p.keyboard.press('Enter');
  await expectStatus(p, 'paused');
  await p.waitForSelector('#unpause:not([hidden])');
  await p.focus('#unpause');
  await p.keyboard.press('Enter');
  await expectStatus(p, 'idle');
});

test('the stream survives an outage: a banner while it is down, then changes arrive again with no reload', async () => {
  const p = pages[1];
  const start = await sys.stopCallcenter();
  await p.waitForSelector('#connection-lost:not([hidden])');
  await expectText(p, '#connection-lost', 'Connection lost');
  await shot(p, 'agent-06-connection-lost');
  await start();
  // The agent pauses from elsewhere (the API): the open page shows it.
  const agent = await apiSession(sys, { agent_number: '1001', password: 'demo1001' });
  await eventually(async () => {
    const r = await agent('POST', '/api/session/pause', { reason: 'Bathroom' });
    assert.ok(r.status === 200 || r.body?.error === 'already_paused', JSON.stringify(r.body));
  });
  await expectText(p, '#status-word', 'Paused: Bathroom', 40_000);
  await p.waitForSelector('#connection-lost', { state: 'hidden' });
  await p.click('#unpause');
  await expectStatus(p, 'idle');
});

test('a supervisor\'s forced logout takes the agent back to Complete Login, in words', async () => {
  const p = pages[2]; // 1002
  const sup = await apiSession(sys, { username: 'supervisor', password: 'demo-supervisor' });
  const r = await sup('POST', '/api/supervisor/agents/1002/logout');
  assert.equal(r.status, 200, JSON.stringify(r.body));
  await p.waitForSelector('#login-step:not([hidden])');
  await expectText(p, '#notice', 'A supervisor logged you out');
});

test('another tab of the same browser signs in as someone else: this tab follows and says so', async () => {
  const p = pages[2]; // 1002, on the Complete Login step
  const other = await p.context().newPage();
  await other.goto(`${sys.portal}/`);
  // The cookie is shared: this tab is already signed in (as 1002); sign out and in as 1003.
  await other.waitForSelector('#login-step:not([hidden])');
  await other.click('#signout');
  await other.waitForSelector('#signin:not([hidden])');
  await other.fill('#agent-number', '1003');
  await other.fill('#agent-password', 'demo1003');
  await other.click('#signin-form button[type=submit]');
  await other.waitForSelector('#login-step:not([hidden])');
  await p.bringToFront();
  await p.evaluate(() => window.dispatchEvent(new Event('focus')));
  await expectText(p, '#notice', 'now signed in as agent 1003');
  await expectText(p, '#who', 'Agent 1003');
  await other.close();
});

test('logout ends the session and returns to the sign-in form', async () => {
  const p = pages[1];
  await p.click('#logout');
  await p.waitForSelector('#signin:not([hidden])');
  await expectText(p, '#notice', 'You are logged out');
  await shot(p, 'agent-07-logged-out');
  const agent = await apiSession(sys, { agent_number: '1001', password: 'demo1001' });
  const me = await agent('GET', '/api/me');
  assert.equal(me.body.status, 'logged_out');
  assertNoPageErrors(...pages);
});
