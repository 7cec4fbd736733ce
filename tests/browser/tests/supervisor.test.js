// The supervisor's view follows an agent live (status, reason, call, counts), listens in on a
// call (Listen, Whisper, Barge, Leave, rung on "Your phone") and can force a logout; the queue
// figures come from the agents' views, the waiting callers and the longest wait from the queue
// figures (GET /api/supervisor/queues, then pushed on the stream: supervisor-today.test.js);
// who is signed in from GET /api/whoami.

import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startSystem } from '../lib/system.js';
import {
  test, launch, newPage, shot, expectText, expectStatus, logIn, openPhone, dial, phoneAction,
  setWrapUp, assertNoPageErrors, eventually, NARROW, apiSession,
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
  await expectText(sup, '#queue-500', 'Waiting calls0');
  await expectText(sup, '#queue-501', 'Support (501)');
  await expectText(sup, '#who', 'Demo Supervisor · supervisor · tenant demo');
  assert.ok(await sup.isHidden('#admin-link'), 'the Admin link is for admins only');

  // A reload keeps the sign-in: the page asks who is signed in.
  await sup.reload();
  await sup.waitForSelector('#board:not([hidden])');
  await expectText(sup, '#who', 'Demo Supervisor · supervisor · tenant demo');
  await expectText(sup, row('1001'), 'Logged out');
});

// The longest wait as the page shows it, in seconds (null for "—").
async function longestWait(queue) {
  const text = (await sup.textContent(`#queue-${queue} .f-longest`)).trim();
  if (text === '—') return null;
  const m = text.match(/^(\d+):(\d\d)$/);
  assert.ok(m, `longest wait ${JSON.stringify(text)}`);
  return Number(m[1]) * 60 + Number(m[2]);
}

test('a caller waiting in a queue nobody is logged into: Waiting calls 1, the longest wait counts up; 0 when the caller hangs up', async () => {
  await expectText(sup, '#queue-501', 'Waiting calls0');
  assert.equal(await longestWait('501'), null);
  await dial(phone, '501', '5553131', 'Wendy');
  await expectText(sup, '#queue-501', 'Waiting calls1');
  await expectText(sup, '#queue-501 .f-longest', /^\d+:\d\d$/);
  await expectText(sup, '#queue-500', 'Waiting calls0');
  const first = await longestWait('501');
  // It counts up in the browser, between the readings too.
  await eventually(async () => assert.ok((await longestWait('501')) >= first + 2, 'the longest wait counts up'));
  assert.match(await sup.getAttribute('#queue-501', 'class'), /has-waiting/);
  await expectText(sup, '#queues-note', 'pushed as calls come and go');
  await shot(sup, 'supervisor-00-waiting-caller');

  await phone.click('#callers button[aria-label^="Hang up 5553131"]');
  await expectText(sup, '#queue-501', 'Waiting calls0');
  await expectText(sup, '#queue-501 .f-longest', '—');
  assert.doesNotMatch(await sup.getAttribute('#queue-501', 'class'), /has-waiting/);
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

  // During a call Force logout is not offered (it would be refused): the row says why.
  await expectText(sup, `${row('1004')} .c-actions`, 'On a call: Force logout once the call has ended');
  assert.equal(await sup.locator(`${row('1004')} .c-actions button:has-text("Force logout")`).count(), 0);
  // And the API's refusal, for a page that raced the call, is in a supervisor's words.
  const api = await apiSession(sys, { username: 'supervisor', password: 'demo-supervisor' });
  const refused = await api('POST', '/api/supervisor/agents/1004/logout');
  assert.equal(refused.status, 409);
  assert.equal(refused.body.message, 'Agent 1004 is on a call: they can be logged out once the call has ended');

  // Listening in: the supervisor's phone (1005 on the demo phone) rings; once answered the
  // supervisor listens, switches to whisper and barge on the same call, and leaves.
  const actions = `${row('1004')} .c-actions`;
  await sup.click(`${actions} button:has-text("Listen")`);
  await expectText(sup, '#notice', 'Choose your phone first');
  await sup.selectOption('#my-device', '1005');
  await sup.click(`${actions} button:has-text("Listen")`);
  await expectText(sup, '#notice', 'Your phone 1005 rings');
  await expectText(sup, actions, 'Listening: answer your phone');
  await phoneAction(phone, '1005', 'answer');
  await expectText(sup, actions, 'You: Listening');
  await expectText(sup, `${row('1004')} .c-call`, 'Demo Supervisor: Listening');
  await shot(sup, 'supervisor-03-listening');
  await sup.click(`${actions} button:has-text("Whisper")`);
  await expectText(sup, actions, 'You: Whispering');
  // The tenant does not show it to agents (the default): the agent's page says nothing.
  assert.ok(await agent.isHidden('#monitor-info'), 'the agent is not told by default');
  // Once the admin turns "Agents see when a supervisor listens" on, the agent's page says it.
  const admin = await apiSession(sys, { username: 'admin', password: 'demo-admin' });
  const on = await admin('PUT', '/api/admin/agent-defaults', { may_manage_queues: false, agents_see_monitoring: true });
  assert.equal(on.status, 200);
  await new Promise((r) => setTimeout(r, 2500)); // the portal reads the setting every 2 s
  await sup.click(`${actions} button:has-text("Barge")`);
  await expectText(sup, actions, 'You: Barging in');
  await expectText(agent, '#monitor-info', 'Supervisor Demo Supervisor is on your call: barging in');
  await sup.click(`${actions} button:has-text("Leave")`);
  await expectText(sup, '#notice', 'You left the call of agent 1004');
  // The row changes when the view without the monitor arrives (a moment after the reply).
  await eventually(async () => assert.equal(await sup.locator(`${actions} button:has-text("Leave")`).count(), 0));
  await expectText(sup, actions, 'Barge');

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
  await expectText(agent, '#notice', 'A supervisor logged you out');
  assertNoPageErrors(sup, agent, phone);
});
