// The admin page's Webhooks tab: a subscription created with the form (its secret shown once),
// a test event sent with the button and received, an agent's pause delivered, the delivery log,
// bad input refused at the field, removal after a confirmation; axe-core clean.

import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startSystem } from '../lib/system.js';
import {
  test, launch, newPage, shot, expectText, eventually, assertNoPageErrors, injectAxe, apiSession,
} from '../lib/browser.js';

let sys;
let browser;
let page;
let receiver;
const received = [];

before(async () => {
  sys = await startSystem('webhooks');
  browser = await launch();
  page = await newPage(browser);
  receiver = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      received.push({ id: req.headers['webhook-id'], signature: req.headers['webhook-signature'], body: JSON.parse(body) });
      res.writeHead(200).end();
    });
  });
  await new Promise((r) => receiver.listen(0, '127.0.0.1', r));
});

after(async () => {
  receiver?.close();
  await browser?.close();
  await sys?.stop();
});

test('an admin creates a webhook, sends a test event, sees an agent\'s pause delivered and the log, and removes it', async () => {
  const url = `http://127.0.0.1:${receiver.address().port}/hook`;
  await page.goto(`${sys.portal}/admin`);
  await page.waitForSelector('#signin:not([hidden])');
  await page.fill('#username', 'admin');
  await page.fill('#password', 'demo-admin');
  await page.click('#signin-form button[type=submit]');
  await page.waitForSelector('#directory:not([hidden])');
  await page.click('#tab-webhooks');

  // http:// without the testing box is refused at the URL field.
  await page.fill('#nw-url', url);
  await page.click('#new-webhook button[type=submit]');
  await page.waitForSelector('#new-webhook .field-error');
  assert.equal(await page.getAttribute('#nw-url', 'aria-invalid'), 'true');

  await page.fill('#nw-url', url);
  await page.fill('#nw-types', 'AgentPaused');
  await page.fill('#nw-description', 'CRM');
  await page.check('#nw-http');
  await page.click('#new-webhook button[type=submit]');
  await page.waitForSelector('#webhook-secret:not([hidden]) code');
  const secret = await page.textContent('#webhook-secret code');
  assert.ok(secret.startsWith('whsec_'), secret);
  await expectText(page, '#webhook-rows', 'Active');
  await expectText(page, '#webhook-rows', 'AgentPaused');

  await page.click(`button[aria-label="Send test event to ${url}"]`);
  await expectText(page, '#notice', 'the receiver answered 200');
  await eventually(() => assert.ok(received.some((r) => r.body.type === 'callcenter.webhook.test.v1')));

  // An agent's pause reaches the receiver, signed.
  const alice = await apiSession(sys, { agent_number: '1001', password: 'demo1001' });
  assert.equal((await alice('POST', '/api/session', {})).status, 200);
  assert.equal((await alice('POST', '/api/session/pause', { reason: 'Lunch' })).status, 200);
  await eventually(() => assert.ok(received.some((r) => r.body.type === 'callcenter.AgentPaused.v1' && r.body.data.agent === '1001')));
  assert.ok(received.every((r) => r.signature.startsWith('v1,')));

  await page.click(`button[aria-label="Deliveries to ${url}"]`);
  await page.waitForSelector('#webhook-log:not([hidden]) #webhook-log-rows tr');
  await eventually(async () => {
    await page.click(`button[aria-label="Deliveries to ${url}"]`);
    await expectText(page, '#webhook-log-rows', 'AgentPaused');
  });
  await expectText(page, '#webhook-log-rows', 'delivered');
  await shot(page, 'webhooks-log');

  // After a reload the secret is nowhere on the page.
  await page.reload();
  await page.waitForSelector('#directory:not([hidden])');
  await page.click('#tab-webhooks');
  await page.waitForSelector('#webhook-rows tr');
  assert.ok(!(await page.content()).includes(secret), 'the secret is not shown again');

  await injectAxe(page);
  const r = await page.evaluate(() => window.axe.run(document));
  assert.deepEqual(r.violations.map((v) => `${v.id}: ${v.nodes.length}`), [], 'axe-core finds no violation');

  page.once('dialog', (d) => d.accept());
  await page.click(`button[aria-label="Remove the webhook to ${url}"]`);
  await expectText(page, '#notice', 'removed');
  await eventually(async () => {
    const rows = await page.$$eval('#webhook-rows tr', (trs) => trs.length);
    assert.equal(rows, 0);
  });
  assertNoPageErrors(page);
});
