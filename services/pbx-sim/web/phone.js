'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const tenant = new URLSearchParams(location.search).get('tenant') || 'demo';
  $('tenant').textContent = tenant;
  document.title = `Demo phone (${tenant}) — PBX simulator`;
  const base = `/tenants/${encodeURIComponent(tenant)}`;
  $('caller-number').value = `555${String(Math.floor(1000 + Math.random() * 9000))}`;

  async function call(method, path, body) {
    const opts = { method, headers: {} };
    if (body !== undefined) { opts.headers['content-type'] = 'application/json'; opts.body = JSON.stringify(body); }
    let res;
    try { res = await fetch(base + path, opts); } catch { throw new Error('The PBX simulator cannot be reached.'); }
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = null; }
    if (!res.ok) throw new Error((data && data.message) || `The simulator answered ${res.status}`);
    return data;
  }

  function notice(text, kind) {
    $('notice').textContent = text;
    $('notice').className = `notice ${kind || ''}`;
  }

  async function act(btn, fn, ok) {
    if (btn) btn.disabled = true;
    try {
      await fn();
      notice(ok, 'ok');
    } catch (e) {
      notice(e.message, 'error');
    } finally {
      poll.now();
      if (btn) btn.disabled = false;
    }
  }

  const party = (p) => [p.number, p.name].filter(Boolean).join(' · ') || 'unknown caller';

  // ---- phones: one card per device, created once and updated in place

  const cards = new Map();
  function card(device) {
    if (cards.has(device)) return cards.get(device);
    const el = document.createElement('article');
    el.className = 'phone';
    el.id = `device-${device}`;
    el.dataset.device = device;
    el.setAttribute('aria-label', `Phone ${device}`);
    el.innerHTML = `<h3><span>Phone ${device}</span><span class="reg"></span></h3>
      <p class="state"></p>
      <div class="buttons">
        <button type="button" class="answer">Answer</button>
        <button type="button" class="reject">Reject</button>
        <button type="button" class="hangup">Hang up</button>
      </div>
      <button type="button" class="secondary regbtn"></button>`;
    const b = (c) => el.querySelector(`button.${c}`);
    b('answer').setAttribute('aria-label', `Answer on phone ${device}`);
    b('reject').setAttribute('aria-label', `Reject on phone ${device}`);
    b('hangup').setAttribute('aria-label', `Hang up phone ${device}`);
    b('answer').onclick = (e) => act(e.currentTarget, () => call('POST', `/devices/${device}/answer`), `Phone ${device} answered.`);
    b('reject').onclick = (e) => act(e.currentTarget, () => call('POST', `/devices/${device}/reject`), `Phone ${device} rejected the call.`);
    b('hangup').onclick = (e) => act(e.currentTarget, () => call('POST', `/devices/${device}/hangup`), `Phone ${device} hung up.`);
    b('regbtn').onclick = (e) => {
      const online = el.dataset.online === 'true';
      act(e.currentTarget, () => call('POST', `/devices/${device}/${online ? 'unregister' : 'register'}`),
        `Phone ${device} ${online ? 'unregistered (offline)' : 'registered (online)'}.`);
    };
    cards.set(device, el);
    return el;
  }

  function renderPhones(devices, channels) {
    const box = $('phones');
    const seen = new Set();
    devices.sort((a, b) => a.device.localeCompare(b.device, undefined, { numeric: true }));
    devices.forEach((d, i) => {
      seen.add(d.device);
      const el = card(d.device);
      if (box.children[i] !== el) box.insertBefore(el, box.children[i] || null);
      const ch = channels.find((c) => c.device === d.device);
      const state = !ch ? 'idle' : !ch.answered ? 'ringing' : ch.held ? 'held' : 'connected';
      el.dataset.state = state;
      el.dataset.online = String(d.registered);
      el.querySelector('.reg').textContent = d.registered ? '● Online' : '○ Offline';
      const text = {
        idle: d.registered ? 'Idle' : 'Offline (not registered)',
        ringing: ch && `Ringing: ${party(ch.caller)}`,
        connected: ch && `On a call with ${party(ch.caller)}`,
        held: ch && `On hold (${party(ch.caller)})`,
      }[state];
      const s = el.querySelector('.state');
      if (s.textContent !== text) s.textContent = text;
      el.querySelector('button.answer').disabled = state !== 'ringing';
      el.querySelector('button.reject').disabled = state !== 'ringing';
      el.querySelector('button.hangup').disabled = state === 'idle';
      const reg = el.querySelector('button.regbtn');
      const regText = d.registered ? 'Unregister (go offline)' : 'Register (go online)';
      if (reg.textContent !== regText) reg.textContent = regText;
      reg.setAttribute('aria-label', `${d.registered ? 'Unregister' : 'Register'} phone ${d.device}`);
    });
    for (const [device, el] of cards) if (!seen.has(device)) { el.remove(); cards.delete(device); }
  }

  // ---- callers and outside numbers

  function renderLegs(listId, legs, describe) {
    const list = $(listId);
    const seen = new Set();
    legs.forEach((c, i) => {
      seen.add(c.channel);
      let li = list.querySelector(`li[data-channel="${c.channel}"]`);
      if (!li) {
        li = document.createElement('li');
        li.dataset.channel = c.channel;
        li.innerHTML = '<span class="what"></span><button type="button" class="hangup">Hang up</button>';
        li.querySelector('button').onclick = (e) => act(e.currentTarget,
          () => call('POST', `/channels/${encodeURIComponent(c.channel)}/hangup`), 'Hung up.');
      }
      if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
      const text = describe(c);
      const what = li.querySelector('.what');
      if (what.textContent !== text) what.textContent = text;
      li.querySelector('button').setAttribute('aria-label', `Hang up ${text}`);
    });
    for (const li of [...list.children]) if (!seen.has(li.dataset.channel)) li.remove();
  }

  function renderChannels(channels) {
    // Which channels talk to each other: those in the same bridge.
    const byBridge = new Map();
    for (const c of channels) if (c.bridge) byBridge.set(c.bridge, [...(byBridge.get(c.bridge) || []), c]);
    const peers = (c) => (byBridge.get(c.bridge) || []).filter((o) => o !== c)
      .map((o) => o.device ? `phone ${o.device}` : o.number ? `number ${o.number}` : party(o.caller));
    const callers = channels.filter((c) => c.direction === 'inbound');
    renderLegs('callers', callers, (c) => {
      const who = party(c.caller);
      const q = c.dialed ? ` → queue ${c.dialed}` : '';
      const with_ = peers(c);
      const state = c.held ? 'on hold' : with_.length ? `talking with ${with_.join(' and ')}` : c.answered ? 'answered' : 'waiting';
      return `${who}${q}: ${state}`;
    });
    $('no-callers').hidden = callers.length > 0;
    const outside = channels.filter((c) => c.direction !== 'inbound' && !c.device);
    $('outside-wrap').hidden = outside.length === 0;
    renderLegs('outside', outside, (c) => {
      const with_ = peers(c);
      const state = !c.answered ? 'ringing' : c.held ? 'on hold' : with_.length ? `talking with ${with_.join(' and ')}` : 'answered';
      return `Number ${c.number}: ${state}`;
    });
  }

  // ---- polling (every 500 ms, never two at once)

  const poll = (() => {
    let timer = null;
    let running = false;
    async function tick() {
      clearTimeout(timer);
      if (running) return;
      running = true;
      try {
        const [devices, channels] = await Promise.all([call('GET', '/devices'), call('GET', '/channels')]);
        $('unreachable').hidden = true;
        renderPhones(devices, channels);
        renderChannels(channels);
      } catch {
        $('unreachable').hidden = false;
      } finally {
        running = false;
        timer = setTimeout(tick, 500);
      }
    }
    return { now: tick };
  })();

  $('dial').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const queue = $('queue').value.trim();
    const number = $('caller-number').value.trim();
    if (!queue || !number) return notice('Enter the queue number and the caller number.', 'error');
    act($('call'), async () => {
      await call('POST', '/calls', { queue, caller_number: number, caller_name: $('caller-name').value.trim() });
      $('caller-number').value = `555${String(Math.floor(1000 + Math.random() * 9000))}`;
    }, `${number} is calling queue ${queue}.`);
  });

  $('add-device').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const device = $('new-device').value.trim();
    if (!device) return notice('Enter the extension number of the new device.', 'error');
    act(ev.submitter, async () => {
      await call('POST', '/devices', { device });
      $('new-device').value = '';
    }, `Device ${device} added (not registered yet: click Register).`);
  });

  poll.now();
})();
