// Text from outside is never markup: a caller who calls themselves
// `<img src=x onerror=window.__pwned=1>` (any caller picks their own name) rings an agent, and
// the agent's page, the supervisor's page and the demo phone show the name as text and run
// nothing; an agent name an admin typed with markup in it shows as text too. Each page is also
// checked for what its Content-Security-Policy refused (browser.js counts that as a page error).

import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startSystem } from '../lib/system.js';
import {
  test, launch, newPage, shot, expectText, expectStatus, logIn, openPhone, assertNoPageErrors,
  apiSession,
} from '../lib/browser.js';

const CALLER = '<img src=x onerror=window.__pwned=1>';
const AGENT_NAME = '<img src=x onerror=window.__pwned=2> Ann';

let sys;
let browser;
let agent;
let sup;
let phone;
let admin;

before(async () => {
  sys = await startSystem('markup');
  browser = await launch();
  agent = await newPage(browser);
  sup = await newPage(browser);
  phone = await openPhone(browser, sys);
  admin = await apiSession(sys, { username: 'admin', password: 'demo-admin' });
});

after(async () => {
  await browser?.close();
  await sys?.stop();
});

/** Nothing ran and no element came out of the text: no `window.__pwned`, no `<img src=x>`. */
async function assertInert(page, what) {
  const { pwned, images } = await page.evaluate(() => ({
    pwned: typeof window.__pwned,
    images: [...document.querySelectorAll('img')].filter((i) => i.getAttribute('src') === 'x').length,
  }));
  assert.equal(pwned, 'undefined', `${what}: an injected handler ran`);
  assert.equal(images, 0, `${what}: the name became an element`);
}

test('an admin-entered agent name with markup is text on the admin and supervisor pages', async () => {
  const r = await admin('PATCH', '/api/admin/agents/1001', { display_name: AGENT_NAME });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  await sup.goto(`${sys.portal}/supervisor`);
  await sup.fill('#username', 'supervisor');
  await sup.fill('#password', 'demo-supervisor');
  await sup.click('#signin-form button[type=submit]');
  await sup.waitForSelector('#board:not([hidden])');
  await expectText(sup, '#agent-row-1001', AGENT_NAME);
  await assertInert(sup, 'the supervisor page');

  const adminPage = await newPage(browser);
  await adminPage.goto(`${sys.portal}/admin`);
  await adminPage.waitForSelector('#signin:not([hidden])');
  await adminPage.fill('#username', 'admin');
  await adminPage.fill('#password', 'demo-admin');
  await adminPage.click('#signin-form button[type=submit]');
  await adminPage.waitForSelector('#admin-agent-1001');
  // The name is the value of the rename field there.
  assert.equal(await adminPage.inputValue('[aria-label="Name of agent 1001"]'), AGENT_NAME);
  await assertInert(adminPage, 'the admin page');
  assertNoPageErrors(adminPage);
  await adminPage.close();
});

test('a caller named with markup rings the agent: the name is text on the agent page, the supervisor page and the demo phone', async () => {
  await logIn(agent, sys, '1001');
  const r = await fetch(`${sys.sim}/tenants/demo/calls`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ queue: '500', caller_number: '5550142', caller_name: CALLER }),
  });
  assert.equal(r.status < 300, true, `the simulator places the call: ${r.status} ${await r.text()}`);

  await expectStatus(agent, 'ringing');
  await expectText(agent, '#call-caller', CALLER);
  await expectText(sup, '#agent-row-1001', CALLER);
  await expectText(phone, '#device-1001 .state', `Ringing: 5550142 · ${CALLER}`);
  await expectText(phone, '#callers', `5550142 · ${CALLER}`);
  await shot(agent, 'markup-01-agent');
  await shot(sup, 'markup-02-supervisor');
  await shot(phone, 'markup-03-phone');

  for (const [page, what] of [[agent, 'the agent page'], [sup, 'the supervisor page'], [phone, 'the demo phone']]) {
    await assertInert(page, what);
  }
  assertNoPageErrors(agent, sup, phone);
});

test('the API documentation page renders under the same policy', async () => {
  const docs = await newPage(browser);
  await docs.goto(`${sys.api}/api/docs`);
  await docs.waitForSelector('#ops details');
  await expectText(docs, '#ops', '/api/login');
  assertNoPageErrors(docs);
});
