// The Agent Portal's pages use the same JSON API as any integrator (see /api/docs); every
// refusal's `message` is shown in the API's words.
//
// This file holds what every page shares (window.Portal: the API client, DOM and time helpers)
// and the agent's page: sign in, Complete Login (device and queues), then the dashboard, kept
// live by the agent's event stream (GET /api/events). supervisor.js and admin.js load after it.
'use strict';

window.Portal = (() => {
  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- the API

  class ApiError extends Error {
    constructor(status, body) {
      super(body.message);
      this.status = status;
      this.code = body.error;
      this.field = body.field || null;
    }
  }

  function idempotencyKey() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return `${Date.now()}-${Math.random().toString(16).slice(2)}`;
  }

  // A W3C traceparent for each request: the click starts the trace that the services continue
  // (when they export traces; otherwise the header is ignored).
  function traceparent() {
    const hex = (n) => {
      const b = new Uint8Array(n);
      crypto.getRandomValues(b);
      return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
    };
    return `00-${hex(16)}-${hex(8)}-01`;
  }

  // The server's clock, so that times counted in the browser match the server's timestamps.
  let clockOffset = 0;
  function noteServerClock(res) {
    const date = Date.parse(res.headers.get('date') || '');
    if (!Number.isNaN(date)) {
      const off = date - Date.now();
      // The Date header has whole seconds: only a clearly wrong local clock is corrected.
      clockOffset = Math.abs(off) > 2000 ? off : 0;
    }
  }
  const now = () => Date.now() + clockOffset;

  async function api(method, path, body) {
    const opts = { method, headers: {}, credentials: 'same-origin' };
    if (body !== undefined) {
      opts.headers['content-type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    // A retried click of the same action must not act twice.
    if (method !== 'GET') opts.headers['idempotency-key'] = idempotencyKey();
    opts.headers.traceparent = traceparent();
    let res;
    try {
      res = await fetch(path, opts);
    } catch {
      throw new ApiError(0, { error: 'network', message: 'The Agent Portal cannot be reached. Check your network connection and try again.' });
    }
    noteServerClock(res);
    const text = await res.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch { data = null; }
    }
    if (!res.ok) {
      const body = data && typeof data.message === 'string'
        ? data
        : { error: `http_${res.status}`, message: `The portal answered ${res.status} ${res.statusText || ''}`.trim() };
      throw new ApiError(res.status, body);
    }
    return data;
  }

  // ---------------------------------------------------------------- small DOM helpers

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  function fmtDuration(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const sec = String(s % 60).padStart(2, '0');
    return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
  }
  const since = (iso) => now() - Date.parse(iso);
  const clockTime = (iso) => new Date(iso).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });

  let noticeTimer = null;
  function notice(text, kind) {
    const n = $('notice');
    clearTimeout(noticeTimer);
    n.textContent = text || '';
    n.className = `notice${kind ? ` ${kind}` : ''}`;
    if (kind === 'ok') noticeTimer = setTimeout(() => { n.textContent = ''; n.className = 'notice'; }, 10000);
  }

  // Runs an action from a button: the button is busy meanwhile, and the result or the refusal
  // is said in words.
  // A busy button is disabled, which takes the keyboard focus from it (to the page's body):
  // afterwards the focus goes back to it, or, when it is gone or hidden by the change, to the
  // control the page names (`Portal.focusAfter(button)`).
  function focusLost() {
    return !document.activeElement || document.activeElement === document.body;
  }
  function refocus(button) {
    if (!focusLost()) return;
    const usable = (b) => b && b.isConnected && !b.disabled && !b.closest('[hidden]');
    const next = usable(button) ? button : (Portal.focusAfter && Portal.focusAfter(button));
    if (next && next.isConnected) next.focus();
  }

  async function act(button, fn, okText) {
    const hadFocus = button && document.activeElement === button;
    if (button) { button.disabled = true; button.setAttribute('aria-busy', 'true'); }
    notice('');
    try {
      const r = await fn();
      if (okText) notice(typeof okText === 'function' ? okText(r) : okText, 'ok');
      return r;
    } catch (e) {
      notice(e.message, 'error');
      if (e.status === 401 && Portal.onUnauthorized) Portal.onUnauthorized();
      return undefined;
    } finally {
      if (button && button.isConnected) { button.disabled = false; button.removeAttribute('aria-busy'); }
      if (hadFocus) refocus(button);
    }
  }

  // The supervisor's and admin's pages: the username/password form (#signin-form, #username,
  // #password, #signin-error) and the Sign out button (#signout). `start` runs once signed in;
  // `signedOut(message)` shows the form again. Agents are sent to the Agent Portal.
  function userSignin(start, signedOut) {
    $('signin-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const username = $('username').value.trim();
      const password = $('password').value;
      const err = $('signin-error');
      err.textContent = '';
      if (!username || !password) {
        err.textContent = 'Enter your username and password.';
        return;
      }
      const button = ev.submitter || $('signin-form').querySelector('button');
      button.disabled = true;
      try {
        const r = await api('POST', '/api/login', { username, password });
        $('password').value = '';
        if (r.principal.role === 'agent') {
          err.textContent = 'This account is an agent. Agents use the Agent Portal.';
          await api('POST', '/api/signout').catch(() => {});
          return;
        }
        notice('');
        await start();
      } catch (e) {
        err.textContent = e.message;
      } finally {
        button.disabled = false;
      }
    });
    $('signout').addEventListener('click', async (ev) => {
      await act(ev.currentTarget, () => api('POST', '/api/signout'));
      signedOut('You are signed out.');
    });
  }

  const Portal = { $, api, ApiError, el, fmtDuration, since, clockTime, now, notice, act, refocus, userSignin, onUnauthorized: null, focusAfter: null };
  return Portal;
})();

// ==================================================================== the agent's page

if (document.body.dataset.page === 'agent') (() => {
  const { $, api, el, fmtDuration, since, clockTime, notice, act } = window.Portal;
  window.Portal.onUnauthorized = () => signedOut('Your portal session has ended. Sign in again.');
  // Where the focus goes when the control the agent used is gone: Unpause hides itself (to
  // Pause); a call option is replaced by the next step's (its first option, else the status).
  window.Portal.focusAfter = (button) => {
    if (button && button.id === 'unpause') return $('pause');
    return $('call-options').querySelector('button') || statusHeading();
  };
  function statusHeading() {
    $('status-title').setAttribute('tabindex', '-1');
    return $('status-title');
  }

  // ---------------------------------------------------------------- screens

  const state = {
    screen: null, // 'signin' | 'login' | 'dashboard'
    view: null,
    events: null,
    reasons: null,
    loginAwaited: null, // the version after which a logged-in view is expected
    loggingOut: false,
  };

  function show(screen) {
    const changed = state.screen !== screen;
    state.screen = screen;
    $('loading').hidden = true;
    $('signin').hidden = screen !== 'signin';
    $('login-step').hidden = screen !== 'login';
    $('dashboard').hidden = screen !== 'dashboard';
    $('logout').hidden = screen !== 'dashboard';
    $('signout').hidden = screen !== 'login';
    if (screen === 'signin') $('who').textContent = '';
    return changed;
  }

  function showWho(v) {
    const who = $('who');
    who.replaceChildren(el('strong', { text: v.display_name }), ` · Agent ${v.agent}`);
  }

  function showSignin(message, kind) {
    closeEvents();
    state.view = null;
    if (show('signin')) $('agent-number').focus();
    if (message) notice(message, kind || 'ok');
  }

  function signedOut(message) {
    showSignin(message, 'error');
  }

  // ---- step 1: sign in

  $('signin-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const number = $('agent-number').value.trim();
    const password = $('agent-password').value;
    const err = $('signin-error');
    err.textContent = '';
    $('agent-number').removeAttribute('aria-invalid');
    $('agent-password').removeAttribute('aria-invalid');
    if (!number || !password) {
      err.textContent = 'Enter your Agent Number and Agent Password.';
      (number ? $('agent-password') : $('agent-number')).setAttribute('aria-invalid', 'true');
      (number ? $('agent-password') : $('agent-number')).focus();
      return;
    }
    const button = ev.submitter || $('signin-form').querySelector('button');
    button.disabled = true;
    notice('');
    try {
      const r = await api('POST', '/api/login', { agent_number: number, password });
      if (r.principal && r.principal.role !== 'agent') {
        err.textContent = 'This account is not an agent. Supervisors and admins use the Supervisor and Admin pages.';
        await api('POST', '/api/signout').catch(() => {});
        return;
      }
      $('agent-password').value = '';
      await start();
    } catch (e) {
      err.textContent = e.message;
      $('agent-password').setAttribute('aria-invalid', 'true');
      $('agent-password').focus();
    } finally {
      button.disabled = false;
    }
  });

  // ---- step 2: device and queues

  const OTHER = '__other__';

  async function showLoginStep(message) {
    const first = show('login');
    for (const id of ['device-error', 'queues-error', 'login-error']) $(id).textContent = '';
    if (message) notice(message, 'ok');
    let opts;
    try {
      opts = await api('GET', '/api/login-options');
    } catch (e) {
      if (e.status === 401) return signedOut('Your portal session has ended. Sign in again.');
      $('login-error').textContent = e.message;
      return;
    }
    if (state.screen !== 'login') return;
    fillDevices(opts);
    fillLoginQueues(opts);
    if (first) $('device').focus();
  }

  function fillDevices(opts) {
    const sel = $('device');
    const previous = sel.value;
    sel.replaceChildren();
    const own = opts.devices.find((d) => d.device === opts.default_device);
    for (const d of opts.devices) {
      if (!d.online) continue;
      let text = d.device;
      if (d.device === opts.default_device) text += ' (your extension)';
      const inUse = d.in_use_by && d.in_use_by !== opts.agent;
      if (inUse) text += ` — in use by agent ${d.in_use_by}`;
      sel.append(el('option', { value: d.device, disabled: inUse, text }));
    }
    sel.append(el('option', { value: OTHER, text: 'Another extension…' }));
    const err = $('device-error');
    err.textContent = '';
    if (previous && [...sel.options].some((o) => o.value === previous && !o.disabled)) {
      sel.value = previous;
    } else if (own && own.online) {
      sel.value = own.device;
    } else {
      // The agent's own extension is not online: say so, and let them choose.
      sel.value = OTHER;
      $('other-device').value = opts.default_device || '';
      err.textContent = `Your extension ${opts.default_device} is not online. Make sure your phone is registered and online, or choose another device.`;
    }
    onDeviceChange();
  }

  function onDeviceChange() {
    const other = $('device').value === OTHER;
    $('other-device-wrap').hidden = !other;
    $('device').removeAttribute('aria-invalid');
    $('other-device').removeAttribute('aria-invalid');
  }
  $('device').addEventListener('change', () => {
    onDeviceChange();
    $('device-error').textContent = '';
    if ($('device').value === OTHER) $('other-device').focus();
  });

  function fillLoginQueues(opts) {
    const list = $('login-queues');
    list.replaceChildren();
    list.dataset.manage = String(opts.may_manage_queues);
    if (!opts.assigned_queues.length) {
      $('login-queues-hint').textContent = 'You are not assigned to any Queue yet, so you will not receive queue calls. Ask your System Administrator.';
      return;
    }
    $('login-queues-hint').textContent = opts.may_manage_queues
      ? 'The Queues you are assigned to. Add or remove yourself: you will be logged into the ticked Queues.'
      : 'The Queues you are assigned to. You will be logged into all of them.';
    for (const q of opts.assigned_queues) {
      const name = `${q.name} (${q.queue})`;
      if (opts.may_manage_queues) {
        const id = `login-q-${q.queue}`;
        list.append(el('li', {},
          el('label', { class: 'checkbox', for: id },
            el('input', { type: 'checkbox', id, value: q.queue, checked: true }),
            el('span', { class: 'q-name', text: name }))));
      } else {
        list.append(el('li', {}, el('span', { class: 'q-name', text: name })));
      }
    }
  }

  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    for (const id of ['device-error', 'queues-error', 'login-error']) $(id).textContent = '';
    onDeviceChange();
    let device = $('device').value;
    if (device === OTHER) {
      device = $('other-device').value.trim();
      if (!device) {
        $('device-error').textContent = 'Enter the extension number of your phone.';
        $('other-device').setAttribute('aria-invalid', 'true');
        $('other-device').focus();
        return;
      }
    }
    const body = { device };
    if ($('login-queues').dataset.manage === 'true') {
      body.queues = [...$('login-queues').querySelectorAll('input[type=checkbox]:checked')].map((c) => c.value);
    }
    const button = $('complete-login');
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
    notice('');
    try {
      const s = await api('POST', '/api/session', body);
      state.loginAwaited = s.version;
      $('login-error').textContent = '';
      notice(`Logged in on device ${s.device}.`, 'ok');
      await awaitLoggedIn();
    } catch (e) {
      if (e.status === 401) return signedOut('Your portal session has ended. Sign in again.');
      if (e.code === 'already_logged_in') return refresh();
      const target = e.field === 'device' ? 'device-error' : (e.field === 'queues' || e.field === 'queue') ? 'queues-error' : 'login-error';
      $(target).textContent = e.message;
      if (e.field === 'device') {
        const input = $('device').value === OTHER ? $('other-device') : $('device');
        input.setAttribute('aria-invalid', 'true');
        input.focus();
      }
    } finally {
      button.disabled = false;
      button.removeAttribute('aria-busy');
    }
  });

  // The session is recorded; the view follows through the projection. The stream brings it;
  // this also asks, in case the stream is down.
  async function awaitLoggedIn() {
    for (let i = 0; i < 40 && state.screen === 'login'; i++) {
      try {
        const v = await api('GET', '/api/me');
        if (v.status !== 'logged_out') return onView(v);
      } catch { /* the stream or the next try will tell */ }
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  $('signout').addEventListener('click', async (ev) => {
    await act(ev.currentTarget, () => api('POST', '/api/signout'));
    showSignin('You are signed out.');
  });

  // ---- the dashboard

  const METHOD_LABEL = { blind: 'Blind Transfer', attended: 'Attended Transfer', live: 'Live Transfer' };
  const TRANSFER_STATE = { ringing: 'ringing', answered: 'answered', conference: 'all parties connected' };

  async function loadReasons() {
    try {
      state.reasons = await api('GET', '/api/pause-reasons');
    } catch (e) {
      state.reasons = null;
      notice(`Pause reasons could not be loaded: ${e.message}`, 'error');
      return;
    }
    const sel = $('pause-reason');
    sel.replaceChildren(...state.reasons.map((r) => el('option', { value: r.name, text: r.name })));
    if (state.view) renderPause(state.view);
  }

  function renderStatus(v) {
    const box = $('status-box');
    box.dataset.status = v.status;
    box.dataset.deviceOnline = String(v.device_online);
    // Idle or Paused with the device offline: no call can reach the agent, and the word says so.
    const offline = !v.device_online && (v.status === 'idle' || v.status === 'paused');
    let word = v.status === 'paused' && v.pause_reason ? `Paused: ${v.pause_reason}` : v.status_label;
    if (offline) word = `Device offline (${word})`;
    if ($('status-word').textContent !== word) $('status-word').textContent = word;
    document.title = `${word} — Agent Portal`;

    const note = $('status-note');
    const call = v.current_call;
    let text = '';
    if (v.status === 'ringing' && call && call.transferred_from) text = `${fromAgent(call)} is transferring a call to you: answer it on your phone.`;
    else if (v.status === 'ringing') text = 'A queue call is ringing your phone: answer it on your phone.';
    else if (v.status === 'dialing' && call && call.dial_state === 'agent_ringing') text = `Your phone is ringing: answer it to call ${call.number}.`;
    else if (v.status === 'dialing' && call) text = `Calling ${call.number}…`;
    else if (call && call.received_transfer && call.received_transfer.state === 'consultation') text = `${fromAgent(call)} is consulting you about a transfer; the customer waits on hold. The call is yours when they click Complete.`;
    else if (call && call.received_transfer && call.received_transfer.state === 'conference') text = `You are in a 3-way call with ${fromAgent(call)} and the customer. The call is yours when they click Complete.`;
    else if (call && v.pause_reason) text = `Pause requested (${v.pause_reason}): you will be Paused when this call and its wrap-up are over.`;
    note.textContent = text;
    note.hidden = !text;

    const off = $('device-offline');
    off.hidden = v.device_online;
    off.textContent = v.device_online ? '' : `Device offline: ${v.device || 'your device'} is not registered, so no queue calls can reach you. Make sure your phone is online.`;
  }

  // The agent who transferred the call, by name ("Alice Agent (1001)").
  function fromAgent(c) {
    return c.transferred_from_name ? `${c.transferred_from_name} (${c.transferred_from})` : `Agent ${c.transferred_from}`;
  }

  function renderPause(v) {
    const paused = !!v.pause_reason;
    const sel = $('pause-reason');
    if (paused && [...sel.options].some((o) => o.value === v.pause_reason) && document.activeElement !== sel) sel.value = v.pause_reason;
    $('pause').textContent = paused ? 'Change reason' : 'Pause';
    $('pause').disabled = !state.reasons || !state.reasons.length;
    const unpauseFocused = document.activeElement === $('unpause');
    $('unpause').hidden = !paused;
    if (unpauseFocused && !paused) $('pause').focus();
  }

  function renderCall(v) {
    const c = v.current_call;
    $('no-call').hidden = !!c;
    $('call-fields').hidden = !c;
    const options = $('call-options');
    const info = $('transfer-info');
    if (!c) {
      const hadFocus = options.contains(document.activeElement);
      options.replaceChildren();
      delete options.dataset.key;
      info.hidden = true;
      $('monitor-info').hidden = true;
      if (hadFocus) statusHeading().focus();
      return;
    }
    // The caller's name first (what the agent greets), then the number.
    const caller = $('call-caller');
    if (c.caller_name) {
      caller.replaceChildren(el('span', { class: 'caller-name', text: c.caller_name }),
        el('span', { class: 'muted', text: ` · ${c.caller_number || 'Unknown number'}` }));
    } else {
      caller.replaceChildren(el('span', { text: c.caller_number || 'Unknown number' }));
    }
    const outbound = c.direction === 'outbound';
    $('call-caller-label').textContent = outbound ? 'Calling' : 'Caller';
    $('call-queue').textContent = outbound ? 'Outbound call' : c.queue ? `${c.queue_name || c.queue} (${c.queue})` : '—';
    $('call-from-wrap').hidden = !c.transferred_from;
    $('call-from').textContent = c.transferred_from ? fromAgent(c) : '';
    $('call-wrapup-wrap').hidden = !(c.phase === 'wrap_up' && c.wrap_up_until);
    $('call-ring-wrap').hidden = !(c.phase === 'ringing' && c.ring_until);
    $('call-hold-wrap').hidden = !(c.hold_count > 0);
    $('call-holds-wrap').hidden = !(c.hold_count > 0);

    // Shown only when the tenant lets agents see it (else the view carries no monitor).
    const m = c.monitor;
    $('monitor-info').hidden = !(m && m.state === 'on_call');
    $('monitor-info').textContent = m ? `Supervisor ${m.supervisor_name || m.supervisor} is on your call: ${MONITOR_TEXT[m.mode] || m.mode}.` : '';

    const t = c.transfer;
    info.hidden = !t;
    if (t) {
      const label = t.target_label || targetLabel(t.target);
      let s = `${METHOD_LABEL[t.method] || 'Transfer'} to ${label}: ${TRANSFER_STATE[t.state] || t.state}.`;
      s += t.customer_held ? ' The customer is on hold.' : ' The customer is on the line.';
      info.textContent = s;
    }
    renderOptions(v);
    renderClocks();
  }

  const MONITOR_TEXT = {
    listen: 'listening (the caller and you are heard, the supervisor is not)',
    whisper: 'whispering (you hear the supervisor, the caller does not)',
    barge: 'barging in (you and the caller hear the supervisor)',
  };

  function targetLabel(target) {
    if (!target) return 'the transfer target';
    if (target.extension) return `Extension ${target.extension}`;
    if (target.agent) return `Agent ${target.agent}`;
    if (target.queue) return `Queue ${target.queue}`;
    if (target.number) return `Number ${target.number}`;
    return 'the transfer target';
  }

  // The call options that apply now, as the view lists them (`current_call.options`; derived
  // here only for a view written before that field existed). Rebuilt only when they change, so
  // the focus stays put.
  const OPTION_KEY = {
    hangup: 'hangup', blind_transfer: 'blind', attended_transfer: 'attended', live_transfer: 'live',
    complete: 'complete', cancel: 'cancel', end_wrap_up: 'end-wrap-up',
    end_consultation: 'end-consultation', leave_conference: 'leave-conference',
  };
  function wantedOptions(c) {
    if (!c) return [];
    const t = c.transfer;
    if (Array.isArray(c.options)) {
      return c.options.map((o) => {
        if (o === 'hold') return t ? 'hold-customer' : 'hold';
        if (o === 'resume') return t ? 'resume-customer' : 'resume';
        return OPTION_KEY[o];
      }).filter((o) => o && OPTIONS[o]);
    }
    if (t) return ['complete', 'cancel', t.customer_held ? 'resume-customer' : 'hold-customer'];
    if (c.phase === 'connected') return ['hangup', 'hold', 'blind', 'attended', 'live'];
    if (c.phase === 'on_hold') return ['hangup', 'resume', 'blind', 'attended', 'live'];
    if (c.phase === 'wrap_up') return ['end-wrap-up'];
    return [];
  }

  function renderOptions(v) {
    const wanted = wantedOptions(v.current_call);
    const options = $('call-options');
    const key = wanted.join(',');
    if (options.dataset.key === key) return;
    options.dataset.key = key;
    const hadFocus = options.contains(document.activeElement);
    options.replaceChildren(...wanted.map((w) => OPTIONS[w]()));
    if (hadFocus) (options.firstElementChild || statusHeading()).focus();
  }

  const button = (text, cls, onclick, id) => el('button', { type: 'button', class: cls, id, onclick }, text);
  const OPTIONS = {
    hangup: () => button('Hangup', 'danger', (e) => act(e.currentTarget, () => api('POST', '/api/call/hangup'),
      state.view && state.view.status === 'dialing' ? 'Call cancelled.' : 'Call ended.'), 'opt-hangup'),
    hold: () => button('Hold', 'secondary', (e) => act(e.currentTarget, () => api('POST', '/api/call/hold', { held: true }), 'The customer is on hold.'), 'opt-hold'),
    resume: () => button('Resume', '', (e) => act(e.currentTarget, () => api('POST', '/api/call/hold', { held: false }), 'The customer is back on the line.'), 'opt-resume'),
    blind: () => button('Blind Transfer', 'secondary', () => openTransfer('blind'), 'opt-blind'),
    attended: () => button('Attended Transfer', 'secondary', () => openTransfer('attended'), 'opt-attended'),
    live: () => button('Live Transfer', 'secondary', () => openTransfer('live'), 'opt-live'),
    complete: () => button('Complete', '', (e) => act(e.currentTarget, () => api('POST', '/api/call/transfer/complete'), 'Transfer complete: you have left the call.'), 'opt-complete'),
    cancel: () => button('Cancel', 'secondary', (e) => act(e.currentTarget, () => api('POST', '/api/call/transfer/cancel'), 'Transfer cancelled: you are back with the customer.'), 'opt-cancel'),
    'hold-customer': () => button('Hold customer', 'secondary', (e) => act(e.currentTarget, () => api('POST', '/api/call/hold', { held: true }), 'The customer is on hold.'), 'opt-hold-customer'),
    'resume-customer': () => button('Resume customer', 'secondary', (e) => act(e.currentTarget, () => api('POST', '/api/call/hold', { held: false }), 'The customer is back on the line.'), 'opt-resume-customer'),
    'end-consultation': () => button('End consultation', 'danger', (e) => act(e.currentTarget, () => api('POST', '/api/call/hangup'), 'Consultation ended: the customer is back with the transferring agent.'), 'opt-end-consultation'),
    'leave-conference': () => button('Leave call', 'danger', (e) => act(e.currentTarget, () => api('POST', '/api/call/hangup'), 'You left the call: the customer stays with the transferring agent.'), 'opt-leave-conference'),
    'end-wrap-up': () => button('End wrap-up', '', (e) => act(e.currentTarget, () => api('POST', '/api/call/wrap-up/end'), 'Wrap-up ended: ready for the next call.'), 'opt-end-wrap-up'),
  };

  function renderStats(v) {
    $('device-used').textContent = v.device || '—';
    $('count-completed').textContent = v.counts.completed;
    $('count-missed').textContent = v.counts.missed;
    $('count-rejected').textContent = v.counts.rejected;
  }

  function renderQueues(v) {
    const list = $('queues');
    const inQueue = new Set(v.queues.map((q) => q.queue));
    const shown = v.may_manage_queues ? v.assigned_queues : v.queues;
    // Keep the focused control across re-renders (keyboard users toggling queues).
    const focused = document.activeElement && list.contains(document.activeElement) ? document.activeElement.dataset.queue : null;
    list.replaceChildren();
    $('queues-hint').textContent = v.may_manage_queues
      ? 'You may add or remove yourself from the Queues you are assigned to.'
      : (shown.length ? 'The Queues you are logged into.' : '');
    if (!shown.length) {
      list.append(el('li', { class: 'muted', text: v.assigned_queues.length ? 'You are not logged into any Queue: you will not receive queue calls.' : 'You are not assigned to any Queue.' }));
    }
    for (const q of shown) {
      const isIn = inQueue.has(q.queue);
      const name = `${q.name} (${q.queue})`;
      const li = el('li', { class: isIn ? 'in' : 'out', 'data-queue': q.queue },
        el('div', {}, el('div', { class: 'q-name', text: name }), el('div', { class: 'q-state', text: isIn ? 'Logged in' : 'Not logged in' })));
      if (v.may_manage_queues) {
        const b = el('button', {
          type: 'button', class: isIn ? 'secondary' : '', 'data-queue': q.queue,
          'aria-label': `${isIn ? 'Remove me from' : 'Add me to'} queue ${name}`,
          onclick: (e) => act(e.currentTarget,
            () => api(isIn ? 'DELETE' : 'PUT', `/api/session/queues/${encodeURIComponent(q.queue)}`),
            isIn ? `You left queue ${name}.` : `You joined queue ${name}.`),
        }, isIn ? 'Remove' : 'Add');
        li.append(b);
      }
      list.append(li);
    }
    if (focused) {
      const b = list.querySelector(`button[data-queue="${CSS.escape(focused)}"]`);
      if (b) b.focus();
    }
  }

  // What counts up (or down) every second.
  function renderClocks() {
    const v = state.view;
    if (!v || state.screen !== 'dashboard') return;
    $('status-since').textContent = `for ${fmtDuration(since(v.status_since))}`;
    if (v.login_time) {
      const lt = $('login-time');
      const t = clockTime(v.login_time);
      if (!lt.firstChild || lt.firstChild.textContent !== t) lt.replaceChildren(t, el('small', {}));
      lt.querySelector('small').textContent = `${fmtDuration(since(v.login_time))} ago`;
    } else {
      $('login-time').textContent = '—';
    }
    const c = v.current_call;
    if (!c) return;
    if (c.wait_ms !== undefined && c.wait_ms !== null) $('call-wait').textContent = fmtDuration(c.wait_ms);
    // A transferred call waits from its transfer on, not from the customer's entry into the queue.
    else if (c.transferred_from && c.offered_at) $('call-wait').textContent = fmtDuration(since(c.offered_at));
    else if (c.entered_queue_at) $('call-wait').textContent = fmtDuration(since(c.entered_queue_at));
    else $('call-wait').textContent = '—';
    // Talk time leaves hold out, as the reports count it (reporting.calls.talk_ms).
    const holding = c.held_since ? since(c.held_since) : 0;
    const held = (c.hold_ms || 0) + holding;
    if (c.talk_ms !== undefined && c.talk_ms !== null) $('call-talk').textContent = fmtDuration(c.talk_ms - (c.hold_ms || 0));
    else if (c.answered_at) $('call-talk').textContent = fmtDuration(since(c.answered_at) - held);
    else $('call-talk').textContent = '—';
    if (c.hold_count > 0) {
      // On hold now: this hold's timer; else the hold time of the call so far.
      $('call-hold-label').textContent = c.held_since ? 'On hold for' : 'Hold time';
      $('call-hold').textContent = fmtDuration(c.held_since ? holding : held);
      $('call-holds').textContent = String(c.hold_count);
    }
    if (c.phase === 'ringing' && c.ring_until) $('call-ring').textContent = fmtDuration(Math.max(0, -since(c.ring_until)) + 999);
    if (c.phase === 'wrap_up' && c.wrap_up_until) $('call-wrapup').textContent = fmtDuration(-since(c.wrap_up_until));
  }
  setInterval(renderClocks, 1000);

  function renderDashboard(v) {
    showWho(v);
    renderStatus(v);
    renderPause(v);
    renderCall(v);
    renderStats(v);
    renderQueues(v);
    renderClocks();
  }

  // Every view, from the stream or from GET /api/me, comes through here.
  function onView(v) {
    if (state.view && v.version < state.view.version) return; // an older view arrived late
    state.view = v;
    // desk.js (ring sound, desktop notification, calls waiting, recent calls) follows the view.
    document.dispatchEvent(new CustomEvent('portal:view', { detail: v }));
    showWho(v);
    if (v.status === 'logged_out') {
      if (state.loggingOut) return; // the Logout button shows the sign-in form itself
      if (state.screen === 'dashboard') {
        if (v.logged_out_by === 'supervisor') {
          showLoginStep();
          notice('A supervisor logged you out of the Agent Portal: you will not receive queue calls. Complete Login to take queue calls again.', 'warn');
        } else if (v.logged_out_by === 'account_disabled') {
          showLoginStep();
          notice('Your account was disabled by the administrator, so you were logged out of the Agent Portal.', 'warn');
        } else {
          showLoginStep('You are logged out of the Agent Portal. Complete Login to take queue calls again.');
        }
      } else if (state.screen !== 'login') {
        showLoginStep();
      }
      return;
    }
    if (state.screen !== 'dashboard') {
      show('dashboard');
      if (!state.reasons) loadReasons();
      renderDashboard(v);
      $('status-title').setAttribute('tabindex', '-1');
      $('status-title').focus();
      return;
    }
    renderDashboard(v);
  }

  $('pause').addEventListener('click', (e) => {
    const reason = $('pause-reason').value;
    if (!reason) return notice('Choose a pause reason first.', 'error');
    act(e.currentTarget, () => api('POST', '/api/session/pause', { reason }), `Paused: ${reason}.`);
  });
  $('unpause').addEventListener('click', (e) => act(e.currentTarget, () => api('POST', '/api/session/unpause'), 'Unpaused: you are Idle and ready for calls.'));

  $('logout').addEventListener('click', async (e) => {
    state.loggingOut = true;
    const ok = await act(e.currentTarget, () => api('DELETE', '/api/session'));
    if (ok === undefined) { state.loggingOut = false; return; }
    await api('POST', '/api/signout').catch(() => {});
    state.loggingOut = false;
    showSignin('You are logged out. Sign in again to take queue calls.');
  });

  // ---- transfers

  let transferMethod = null;
  const EXPLAIN = {
    blind: 'Blind Transfer: your customer is transferred to the transfer target and you drop from the call.',
    attended: 'Attended Transfer: the customer is placed on hold while you call the transfer target. Click Complete to transfer the customer and drop from the call.',
    live: 'Live Transfer: the customer, the transfer target and you are all connected. Click Complete to drop yourself from the call while the transfer target and the customer stay connected.',
  };

  async function openTransfer(method) {
    transferMethod = method;
    const dlg = $('transfer-dialog');
    $('transfer-title').textContent = `${METHOD_LABEL[method]}: choose the transfer target`;
    $('transfer-explain').textContent = EXPLAIN[method];
    $('transfer-error').textContent = '';
    $('transfer-loading').hidden = false;
    for (const id of ['targets-extensions', 'targets-agents', 'targets-queues']) {
      $(id).replaceChildren();
      $(id).closest('fieldset').hidden = true;
    }
    $('target-number').value = '';
    dlg.showModal();
    let targets;
    try {
      targets = await api('GET', '/api/transfer-targets');
    } catch (e) {
      $('transfer-loading').hidden = true;
      $('transfer-error').textContent = e.status === 404
        ? 'The list of transfer targets is not available on this system; you can still enter a number.'
        : `The transfer targets could not be loaded: ${e.message}`;
      $('target-number').focus();
      return;
    }
    $('transfer-loading').hidden = true;
    for (const id of ['targets-extensions', 'targets-agents', 'targets-queues']) $(id).closest('fieldset').hidden = false;
    fillTargets(targets);
  }

  function targetButton(target, label, sub, disabled) {
    return el('li', {}, el('button', {
      type: 'button', disabled,
      'data-target': JSON.stringify(target),
      onclick: (e) => transfer(e.currentTarget, target, label),
    }, label, sub ? el('span', { class: 'sub', text: ` · ${sub}` }) : null));
  }

  function fillTargets(t) {
    const me = state.view || {};
    const exts = (t.extensions || []).filter((x) => x.device !== me.device);
    const agents = (t.agents || []).filter((a) => a.agent !== me.agent);
    const queues = t.queues || [];
    const none = (text) => el('li', { class: 'muted small', text });
    $('targets-extensions').replaceChildren(...(exts.length ? exts.map((x) => targetButton(
      { extension: x.device }, `Extension ${x.device}`,
      `${x.online ? 'online' : 'offline'}${x.agent ? `, agent ${x.agent}` : ''}`, !x.online)) : [none('No other extension.')]));
    $('targets-agents').replaceChildren(...(agents.length ? agents.map((a) => targetButton(
      { agent: a.agent }, `${a.display_name} (${a.agent})`, a.status_label, a.status === 'logged_out')) : [none('No other agent.')]));
    // A queue takes Blind Transfers only (the customer waits in it for the next agent).
    $('targets-queues').replaceChildren(...(transferMethod !== 'blind'
      ? [none('A queue takes Blind Transfers only.')]
      : queues.length ? queues.map((q) => targetButton({ queue: q.queue }, `${q.name} (${q.queue})`, null, false)) : [none('No queue.')]));
    const first = $('targets').querySelector('button:not(:disabled)');
    if (first) first.focus();
  }

  async function transfer(btn, target, label) {
    $('transfer-error').textContent = '';
    btn.disabled = true;
    try {
      await api('POST', '/api/call/transfer', { method: transferMethod, target });
      $('transfer-dialog').close();
      notice(`${METHOD_LABEL[transferMethod]} to ${label} started.`, 'ok');
    } catch (e) {
      $('transfer-error').textContent = e.message;
    } finally {
      if (btn.isConnected) btn.disabled = false;
    }
  }

  $('number-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const number = $('target-number').value.trim();
    if (!number) {
      $('transfer-error').textContent = 'Enter the phone number to transfer to.';
      $('target-number').focus();
      return;
    }
    transfer($('transfer-number'), { number }, `number ${number}`);
  });
  $('transfer-close').addEventListener('click', () => $('transfer-dialog').close());
  $('transfer-dialog').addEventListener('close', () => {
    const first = $('call-options').querySelector('button');
    if (first) first.focus();
  });

  // ---- live updates

  function setConnected(ok) {
    $('connection-lost').hidden = ok;
  }

  function closeEvents() {
    if (state.events) state.events.close();
    state.events = null;
    setConnected(true);
  }

  function openEvents() {
    closeEvents();
    const es = new EventSource('/api/events');
    state.events = es;
    es.addEventListener('open', () => setConnected(true));
    es.addEventListener('agent', (e) => {
      setConnected(true);
      try { onView(JSON.parse(e.data)); } catch (err) { console.error('bad view', err); }
    });
    es.addEventListener('signed_out', () => signedOut('Your portal session has ended. Sign in again.'));
    es.addEventListener('error', () => {
      if (state.events !== es) return;
      setConnected(false);
      // The browser retries by itself (sending Last-Event-ID) unless the server refused the
      // stream; then find out why and open a new one.
      if (es.readyState === EventSource.CLOSED) setTimeout(() => reconnect(es), 2000);
    });
  }

  async function reconnect(es) {
    if (state.events !== es) return;
    try {
      onView(await api('GET', '/api/me'));
      openEvents();
    } catch (e) {
      if (e.status === 401) signedOut('Your portal session has ended. Sign in again.');
      else setTimeout(() => reconnect(es), 3000);
    }
  }

  // The sign-in is a cookie that every tab of the browser shares: when another tab signed in
  // as someone else, this tab follows instead of acting for the wrong agent.
  window.addEventListener('focus', async () => {
    if (!state.view || (state.screen !== 'dashboard' && state.screen !== 'login')) return;
    let v;
    try { v = await api('GET', '/api/me'); } catch (e) {
      if (e.status === 401) signedOut('Your portal session has ended. Sign in again.');
      return;
    }
    if (state.view && v.agent !== state.view.agent) {
      closeEvents();
      state.view = null;
      state.screen = null;
      await start();
      notice(`This browser is now signed in as agent ${v.agent} (from another tab).`, 'error');
    }
  });

  async function refresh() {
    onView(await api('GET', '/api/me'));
  }

  // Signed in already (the session cookie), or not.
  async function start() {
    let v;
    try {
      v = await api('GET', '/api/me');
    } catch (e) {
      if (e.status === 401) return showSignin();
      if (e.status === 403) {
        show('signin');
        notice(`${e.message}. This page is the Agent Portal; supervisors use the Supervisor page (/supervisor) and admins the Admin page (/admin).`, 'error');
        return;
      }
      show('signin');
      notice(e.message, 'error');
      return;
    }
    state.view = null;
    onView(v);
    openEvents();
  }

  start();
})();
