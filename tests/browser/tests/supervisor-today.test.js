// The supervisor page's queue figures of today: service level, answered, abandoned and average
// wait per queue, above the fold at 1280x720, pushed on the supervisors' event stream as calls
// come and go (the page reads GET /api/supervisor/queues once, and never polls it).

import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startSystem } from '../lib/system.js';
import {
  test, launch, newPage, shot, expectText, logIn, openPhone, dial, phoneAction,
  setWrapUp, assertNoPageErrors, injectAxe, NARROW, DESKTOP,
} from '../lib/browser.js';

let sys;
let browser;
let sup;
let agent;
let phone;
const queueReads = [];

async function axeClean(page, what) {
  await injectAxe(page);
  const r = await page.evaluate(() => window.axe.run(document));
  assert.deepEqual(r.violations.map((v) => `${v.id}: ${v.nodes.map((n) => n.target).join(' ')}`), [], what);
}

before(async () => {
  sys = await startSystem('supervisor-today');
  browser = await launch();
  await setWrapUp(sys, '500', 1);
  sup = await newPage(browser);
  sup.on('request', (r) => { if (r.url().includes('/api/supervisor/queues')) queueReads.push(Date.now()); });
  agent = await newPage(browser);
  phone = await openPhone(browser, sys);
});

after(async () => {
  await browser?.close();
  await sys?.stop();
});

test('today\'s figures of each queue, above the fold at 1280x720, with what "today" means', async () => {
  await sup.goto(`${sys.portal}/supervisor`);
  await sup.fill('#username', 'supervisor');
  await sup.fill('#password', 'demo-supervisor');
  await sup.click('#signin-form button[type=submit]');
  await sup.waitForSelector('#board:not([hidden])');
  for (const q of ['500', '501']) {
    await expectText(sup, `#queue-${q} .today`, 'Service level—');
    await expectText(sup, `#queue-${q} .today`, 'Answered0');
    await expectText(sup, `#queue-${q} .today`, 'Abandoned0');
    await expectText(sup, `#queue-${q} .today`, 'Average wait—');
  }
  await expectText(sup, '#queue-500 .sl-note', 'answered within 20 s; 0 offered today');
  const day = new Date().toISOString().slice(0, 10); // the demo tenant's time zone is UTC
  await expectText(sup, '#queues-note', `Today is ${day} in the tenant's time zone, since midnight`);
  // Above the fold: every figure of both queues is inside the first 1280x720 screen.
  for (const sel of ['#queue-500 .f-sl', '#queue-500 .f-avg_wait', '#queue-501 .f-abandoned', '#queue-501 .f-with_agent']) {
    const box = await sup.locator(sel).boundingBox();
    assert.ok(box && box.y + box.height <= DESKTOP.height && box.x + box.width <= DESKTOP.width, `${sel} above the fold: ${JSON.stringify(box)}`);
  }
  await axeClean(sup, 'the supervisor page');
});

test('an answered call and an abandoned one are pushed to the page at once; the page does not poll', async () => {
  const readsBefore = queueReads.length;
  await logIn(agent, sys, '1004');
  await dial(phone, '500', '5557777', 'Kim');
  await expectText(sup, '#queue-500', 'Waiting calls1');
  await expectText(sup, '#queue-500 .sl-note', '1 offered today');
  await sup.waitForTimeout(1500);
  await phoneAction(phone, '1004', 'answer');
  await expectText(sup, '#queue-500 .today', 'Answered1');
  await expectText(sup, '#queue-500 .today', 'Service level100.0%');
  await expectText(sup, '#queue-500 .f-avg_wait', /^0:0[1-9]$/);
  await expectText(sup, '#queue-500', 'Waiting calls0');

  // A caller gives up in queue 501 (nobody is logged into it): Abandoned 1; abandoned within
  // 5 s, it is left out of the service level, which has no ended wait to count yet.
  await dial(phone, '501', '5553131', 'Wendy');
  await expectText(sup, '#queue-501', 'Waiting calls1');
  await phone.click('#callers button[aria-label^="Hang up 5553131"]');
  await expectText(sup, '#queue-501 .today', 'Abandoned1');
  await expectText(sup, '#queue-501 .today', 'Service level—');
  await expectText(sup, '#queue-501 .f-avg_wait', /^0:0\d$/);
  await shot(sup, 'supervisor-today-01-figures');
  assert.equal(queueReads.length, readsBefore, `no GET /api/supervisor/queues after the first: the figures were pushed (${queueReads.length - readsBefore} reads)`);
  await axeClean(sup, 'figures');
  await sup.setViewportSize(NARROW);
  await shot(sup, 'supervisor-today-02-narrow');
  await axeClean(sup, 'narrow');
  await sup.setViewportSize(DESKTOP);
  assertNoPageErrors(sup);
});
