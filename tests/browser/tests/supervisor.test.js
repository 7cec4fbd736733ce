// The supervisor's view follows an agent live (status, reason, call, counts) and can force a
// logout; the queue figures come from the agents' views.

import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startSystem } from '../lib/system.js';
import {
  test, launch, newPage, shot, expectText, expectStatus, logIn, openPhone, dial, phoneAction,
  setWrapUp, assertNoPageErrors, NARROW,
} from '../lib/browser.js';

let sys;
let browser;
let sup;
let agent;
let phone;

before(async () => {
  sys = await startSystem('supervisor');
  browser = await launch();
  await setWrapUp(sys, '500', 300);
  sup = await newPage(browser);
  agent = await newPage(browser);
  phone = await openPhone(browser, sys);
});

after(async () => {
  await browser?.close();
  await sys?.stop();
});

const row = (a) => `#agent-row-${a}`;

test('an agent is refused on the supervisor page; the supervisor signs in and sees every agent', async () => {
  await sup.goto(`${sys.portal}/supervisor`);
  await sup.fill('#username', '1002');
  await sup.fill('#password', 'demo1002');
  await sup.click('#signin-form button[type=submit]');
  await expectText(sup, '#signin-error', /not correct|agent/i);

  await sup.fill('#username', 'supervisor');
  await sup.fill('#password', 'demo-supervisor');
  await sup.click('#signin-form button[type=submit]');
  await sup.waitForSelector('#board:not([hidden])');
  for (const a of ['1001', '1002', '1003', '1004']) await expectText(sup, row(a), 'Logged out');
  await expectText(sup, '#queue-500', 'Sales (500)');
  await expectText(sup, '#queue-500', 'Agents logged in0');
});

test('the supervisor follows an agent live: login, pause with the reason, a call, the counts', async () => {
  await logIn(agent, sys, '1004');
  await expectText(sup, `${row('1004')} .pill`, 'Idle');
  await expectText(sup, '#queue-500', 'Agents logged in1');
  await expectText(sup, '#queue-500', 'Available1');

  await agent.selectOption('#pause-reason', 'Break');
  await agent.click('#pause');
  await expectText(sup, `${row('1004')} .pill`, 'Paused: Break');
  await expectText(sup, '#queue-500', 'Paused1');
  await agent.click('#unpause');
  await expectText(sup, `${row('1004')} .pill`, 'Idle');

  await dial(phone, '500', '5557777', 'Kim');
  await expectText(sup, `${row('1004')} .pill`, 'Ringing');
  await expectText(sup, `${row('1004')} .c-call`, '5557777 · Kim · Sales (500)');
  await phoneAction(phone, '1004', 'answer');
  await expectText(sup, `${row('1004')} .pill`, 'Connected');
  await expectText(sup, `${row('1004')} .c-call`, /talking 0:\d\d/);
  await expectText(sup, '#queue-500', 'On calls1');
  await expectText(sup, `${row('1004')} .c-since`, /^\d+:\d\d$/);
  await shot(sup, 'supervisor-01-agent-connected');

  // A forced logout during a call is refused, in words.
  await sup.click(`${row('1004')} .c-actions button`);
  await sup.click(`${row('1004')} .c-actions button.danger`);
  await expectText(sup, '#notice', 'hang up first');

  await phoneAction(phone, '1004', 'hangup');
  await expectText(sup, `${row('1004')} .pill`, 'Wrap-up');
  await expectText(sup, `${row('1004')} .c-completed`, '1');
  await expectStatus(agent, 'wrap_up');
  await agent.click('#opt-end-wrap-up');
  await expectText(sup, `${row('1004')} .pill`, 'Idle');
  await sup.setViewportSize(NARROW);
  await shot(sup, 'supervisor-02-narrow');
  await sup.setViewportSize({ width: 1280, height: 720 });
});

test('force logout: the agent is logged out, and the agent\'s page says so', async () => {
  const force = `${row('1004')} .c-actions button`;
  await sup.waitForSelector(`${force}:not([disabled])`);
  await sup.click(force);
  await sup.click(`${row('1004')} .c-actions button:has-text("Confirm logout")`);
  await expectText(sup, '#notice', 'Agent 1004 (Dave Agent) is logged out');
  await expectText(sup, `${row('1004')} .pill`, 'Logged out');
  assert.equal(await sup.locator(`${row('1004')} .c-actions button`).count(), 0);
  await agent.waitForSelector('#login-step:not([hidden])');
  await expectText(agent, '#notice', 'You are logged out');
  assertNoPageErrors(sup, agent, phone);
});
