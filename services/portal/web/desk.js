// The agent's desk around the Call Details (app.js draws those): the ring sound (off by
// default; WebAudio, no audio file), the desktop notification of a ringing call while the page
// is hidden (permission asked for once), the callers waiting in the agent's queues
// (GET /api/me/queues), the wrap-up's disposition and note (POST /api/call/wrap-up/disposition)
// the agent's calls today (GET /api/me/calls) and the outbound call form (POST /api/call/dial).
//
// app.js sends every view of the agent as a `portal:view` event on the document.
'use strict';

if (document.body.dataset.page === 'agent') (() => {
  const { $, api, el, fmtDuration, since, clockTime, notice } = window.Portal;

  let view = null;
  const onDashboard = () => !$('dashboard').hidden && view && view.status !== 'logged_out';
  const callerLabel = (c) => c.caller_name || c.caller_number || 'Unknown number';

  // ---------------------------------------------------------------- the ring sound

  const SOUND_KEY = 'cc.ringSound';
  const soundOn = () => {
    try { return localStorage.getItem(SOUND_KEY) === 'on'; } catch { return false; }
  };
  let audio = null;
  let ringTimer = null;

  function audioContext() {
    const AC = window.AudioContext || window.webkitAudioContext;
    if (!AC) return null;
    if (!audio) audio = new AC();
    if (audio.state === 'suspended') audio.resume().catch(() => {});
    return audio;
  }

  // One ring: the two tones of a phone's ring (440 and 480 Hz), twice 0.8 s.
  function ringOnce(ctx) {
    const t0 = ctx.currentTime;
    const gain = ctx.createGain();
    gain.gain.setValueAtTime(0, t0);
    gain.connect(ctx.destination);
    for (const f of [440, 480]) {
      const o = ctx.createOscillator();
      o.frequency.value = f;
      o.connect(gain);
      o.start(t0);
      o.stop(t0 + 2);
    }
    for (const [on, off] of [[0, 0.8], [1.0, 1.8]]) {
      gain.gain.setValueAtTime(0.12, t0 + on);
      gain.gain.setValueAtTime(0, t0 + off);
    }
    // How many rings this page played (the browser tests read it).
    document.body.dataset.rings = String(Number(document.body.dataset.rings || 0) + 1);
  }

  function startRing() {
    if (ringTimer || !soundOn()) return;
    const ctx = audioContext();
    if (!ctx) return;
    ringOnce(ctx);
    ringTimer = setInterval(() => ringOnce(ctx), 3000);
  }
  function stopRing() {
    clearInterval(ringTimer);
    ringTimer = null;
  }

  $('ring-sound').checked = soundOn();
  $('ring-sound').addEventListener('change', (e) => {
    try { localStorage.setItem(SOUND_KEY, e.target.checked ? 'on' : 'off'); } catch { /* private mode: this page only */ }
    if (!e.target.checked) return stopRing();
    audioContext(); // a click lets the page play sound from now on
    if (view && view.status === 'ringing') startRing();
  });
  // Browsers let a page play sound only after the user acted on it: any click allows it.
  document.addEventListener('pointerdown', () => { if (soundOn()) audioContext(); });

  // ---------------------------------------------------------------- the desktop notification

  const ASKED_KEY = 'cc.notificationsAsked';
  let shown = null;

  function showNotifyState() {
    const p = $('notify-state');
    if (!('Notification' in window)) p.textContent = 'Desktop notifications are not supported by this browser.';
    else if (Notification.permission === 'granted') p.textContent = 'Desktop notification: on. A ringing call is announced while this page is hidden.';
    else if (Notification.permission === 'denied') p.textContent = 'Desktop notifications are blocked for this site; allow them in the browser\'s site settings to be told of a ringing call while this page is hidden.';
    else p.textContent = 'Desktop notifications are off.';
  }

  // Asked for once, the first time the agent is logged in on this browser.
  function askOnce() {
    if (!('Notification' in window) || Notification.permission !== 'default') return;
    try {
      if (localStorage.getItem(ASKED_KEY)) return;
      localStorage.setItem(ASKED_KEY, new Date().toISOString());
    } catch { return; }
    Notification.requestPermission().then(showNotifyState, showNotifyState);
  }

  function notifyRinging(c) {
    if (!document.hidden || !('Notification' in window) || Notification.permission !== 'granted') return;
    const queue = c.queue ? `${c.queue_name || c.queue} (${c.queue})` : '';
    const what = c.transferred_from ? 'Transferred call' : 'Queue call';
    const body = [c.caller_name ? c.caller_number : null, queue ? `${what} · ${queue}` : what]
      .filter(Boolean).join(' · ');
    try {
      shown = new Notification(`${callerLabel(c)} is calling`, { body, tag: `call-${c.call}` });
      shown.addEventListener('click', () => { window.focus(); shown && shown.close(); });
    } catch { shown = null; }
  }
  function closeNotification() {
    if (shown) shown.close();
    shown = null;
  }

  // ---------------------------------------------------------------- ringing

  let ringing = null; // the call ringing now
  function onRinging(v) {
    const c = v.current_call;
    const now = v.status === 'ringing' && c ? c.call : null;
    if (now === ringing) return;
    ringing = now;
    if (now) {
      startRing();
      notifyRinging(c);
    } else {
      stopRing();
      closeNotification();
    }
  }

  // ---------------------------------------------------------------- calls waiting

  let queues = [];
  let queuesLoaded = false;
  let waitingTimer = null;

  function renderWaiting() {
    const list = $('waiting');
    if (!queues.length) {
      list.replaceChildren(el('li', { class: 'muted', text: 'You are not assigned to any Queue.' }));
      return;
    }
    list.replaceChildren(...queues.map((q) => {
      const longest = q.longest_waiting_since ? `longest ${fmtDuration(since(q.longest_waiting_since))}` : 'no caller waiting';
      return el('li', { class: q.waiting > 0 ? 'busy' : '', 'data-queue': q.queue },
        el('span', { class: 'q-name', text: `${q.name} (${q.queue})` }),
        el('span', { class: 'w-count' }, `${q.waiting} waiting`, el('span', { class: 'w-longest', text: longest })));
    }));
  }

  async function loadWaiting() {
    if (!onDashboard() || document.hidden) return;
    try {
      queues = await api('GET', '/api/me/queues');
      queuesLoaded = true;
    } catch {
      return; // the next round asks again; the connection banner tells of an outage
    }
    renderWaiting();
    if (view) renderWrapUp(view);
  }

  function pollWaiting(on) {
    if (on && !waitingTimer) {
      loadWaiting();
      waitingTimer = setInterval(loadWaiting, 3000);
    } else if (!on && waitingTimer) {
      clearInterval(waitingTimer);
      waitingTimer = null;
    }
  }
  // The longest waits count up between two answers.
  setInterval(() => { if (onDashboard() && queues.length) renderWaiting(); }, 1000);
  document.addEventListener('visibilitychange', () => { if (!document.hidden) loadWaiting(); });

  // ---------------------------------------------------------------- wrap-up: disposition, note

  let wrapping = null; // the call whose wrap-up the form is for
  const queueOf = (c) => queues.find((q) => q.queue === c.queue);

  function renderWrapUp(v) {
    const c = v.current_call;
    const form = $('wrapup-form');
    if (!c || c.phase !== 'wrap_up') {
      form.hidden = true;
      wrapping = null;
      return;
    }
    // The queue's codes come with the calls waiting (of the agent's own queues).
    if (!queuesLoaded) return loadWaiting();
    const q = queueOf(c) || { queue: c.queue, name: c.queue_name || c.queue, dispositions: [], disposition_required: false };
    const codes = q.dispositions || [];
    if (wrapping !== c.call) {
      // A new wrap-up: an empty form (later views keep what the agent is typing).
      wrapping = c.call;
      const sel = $('disposition');
      sel.replaceChildren(el('option', { value: '', text: q.disposition_required ? 'Choose a disposition…' : 'No disposition' }),
        ...codes.map((d) => el('option', { value: d, text: d })));
      sel.value = c.disposition || '';
      $('wrapup-note').value = c.note || '';
      for (const id of ['disposition-error', 'note-error', 'disposition-saved']) $(id).textContent = '';
    }
    $('disposition-wrap').hidden = codes.length === 0;
    form.hidden = false;
    form.dataset.required = String(!!q.disposition_required);
    form.dataset.given = String(!!c.disposition);
    renderWrapUpHint();
  }

  function renderWrapUpHint() {
    const form = $('wrapup-form');
    const c = view && view.current_call;
    if (form.hidden || !c) return;
    const q = queueOf(c);
    let text = '';
    if (q && q.disposition_required && !c.disposition) {
      text = c.wrap_up_until && since(c.wrap_up_until) >= 0
        ? `The wrap-up time is over: you become available when you save a disposition.`
        : `${q.name} (${q.queue}) requires a disposition before you become available again.`;
    } else if (c.disposition) {
      text = `Disposition saved: ${c.disposition}.`;
    }
    if ($('wrapup-hint').textContent !== text) $('wrapup-hint').textContent = text;
  }
  setInterval(renderWrapUpHint, 1000);

  $('wrapup-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    for (const id of ['disposition-error', 'note-error', 'disposition-saved']) $(id).textContent = '';
    $('disposition').removeAttribute('aria-invalid');
    $('wrapup-note').removeAttribute('aria-invalid');
    const disposition = $('disposition-wrap').hidden ? null : ($('disposition').value || null);
    const note = $('wrapup-note').value.trim() || null;
    const form = $('wrapup-form');
    if (!disposition && !note) {
      const msg = form.dataset.required === 'true' ? 'Choose a disposition.' : 'Choose a disposition or write a note.';
      const [err, input] = $('disposition-wrap').hidden ? ['note-error', 'wrapup-note'] : ['disposition-error', 'disposition'];
      $(err).textContent = msg;
      $(input).setAttribute('aria-invalid', 'true');
      $(input).focus();
      return;
    }
    const button = $('save-disposition');
    button.disabled = true;
    try {
      await api('POST', '/api/call/wrap-up/disposition', { disposition, note });
      $('disposition-saved').textContent = 'Saved.';
    } catch (e) {
      const [err, input] = e.field === 'note' ? ['note-error', 'wrapup-note'] : e.field === 'disposition' ? ['disposition-error', 'disposition'] : [null, null];
      if (err && !(err === 'disposition-error' && $('disposition-wrap').hidden)) {
        $(err).textContent = e.message;
        $(input).setAttribute('aria-invalid', 'true');
        $(input).focus();
      } else {
        notice(e.message, 'error');
      }
    } finally {
      button.disabled = false;
    }
  });

  // ---------------------------------------------------------------- recent calls today

  const OUTCOME = {
    answered: 'Answered', in_progress: 'On the call', missed: 'Missed', rejected: 'Rejected',
    withdrawn: 'Stopped ringing', ringing: 'Ringing', dialing: 'Dialing', not_connected: 'Not connected',
  };

  function renderRecent(calls) {
    $('recent-empty').hidden = calls.length > 0;
    $('recent-wrap').hidden = calls.length === 0;
    $('recent-rows').replaceChildren(...calls.map((c) => {
      const caller = c.caller_name ? `${c.caller_name} · ${c.caller_number}` : (c.caller_number || 'Unknown number');
      const answered = c.outcome === 'answered' || c.outcome === 'in_progress';
      return el('tr', { 'data-call': c.call, 'data-outcome': c.outcome },
        el('td', { 'data-label': 'Time', text: clockTime(c.at) }),
        el('td', { 'data-label': 'Caller', text: caller }),
        el('td', { 'data-label': 'Queue', text: c.direction === 'outbound' ? 'Outbound call' : `${c.queue_name} (${c.queue})` }),
        el('td', { 'data-label': 'Outcome', text: OUTCOME[c.outcome] || c.outcome }),
        el('td', { 'data-label': 'Duration', text: answered ? fmtDuration(c.talk_ms) : '—' }),
        el('td', { 'data-label': 'Disposition', text: c.disposition || '—' }));
    }));
  }

  let recentTimer = null;
  async function loadRecent() {
    if (!onDashboard()) return;
    try {
      renderRecent(await api('GET', '/api/me/calls'));
    } catch { /* asked again at the next change */ }
  }
  // The reporting model follows the events a moment later: ask now and once more shortly.
  function recentSoon() {
    clearTimeout(recentTimer);
    loadRecent();
    recentTimer = setTimeout(loadRecent, 1500);
  }
  setInterval(loadRecent, 30000);

  // ---------------------------------------------------------------- outbound calls

  // What a phone's keypad dials (the server checks the same: 1 to 32 of 0-9 + * #, spaces,
  // dashes, dots and brackets left out).
  const dialable = (s) => s.replace(/[\s\-.()]/g, '');
  const mayDial = (v) => v && (v.status === 'idle' || v.status === 'paused');
  let dialing = false;
  let failureSeen; // the last dial failure told (undefined: none seen yet on this page)

  function renderDial(v) {
    const free = mayDial(v);
    $('dial').disabled = !free || dialing;
    let hint = 'Your phone rings first: answer it, then the number is called.';
    if (v.status === 'dialing') hint = 'Calling: Hangup in Call Details ends it.';
    else if (!free) hint = 'You can dial when you are Idle or Paused (no queue calls are offered to you during your call).';
    if ($('dial-hint').textContent !== hint) $('dial-hint').textContent = hint;
    const f = v.dial_failure;
    const text = f ? `Your call to ${f.number} did not connect: ${f.label}.` : '';
    if ($('dial-result').textContent !== text) $('dial-result').textContent = text;
    // A failure that happens while the page is open is told as a notice too.
    const id = f ? f.call : null;
    if (failureSeen !== undefined && id && id !== failureSeen) notice(text, 'error');
    failureSeen = id;
  }

  $('dial-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const input = $('dial-number');
    const err = $('dial-error');
    err.textContent = '';
    input.removeAttribute('aria-invalid');
    const number = dialable(input.value.trim());
    const refuse = (message) => {
      err.textContent = message;
      input.setAttribute('aria-invalid', 'true');
      input.focus();
    };
    if (!number) return refuse('Enter the number or extension to call.');
    if (!/^[0-9+*#]+$/.test(number)) return refuse('A number to dial has only digits and + * #.');
    if (number.length > 32) return refuse('A number to dial is at most 32 characters.');
    dialing = true;
    $('dial').disabled = true;
    try {
      await api('POST', '/api/call/dial', { number: input.value });
      input.value = '';
      notice(`Calling ${number}: answer your phone.`, 'ok');
      input.focus();
    } catch (e) {
      if (e.status === 401) return;
      refuse(e.message);
    } finally {
      dialing = false;
      if (view) renderDial(view);
    }
  });

  // ---------------------------------------------------------------- following the view

  let lastCall = null;
  let wasOn = false;
  document.addEventListener('portal:view', (e) => {
    view = e.detail;
    const on = view.status !== 'logged_out';
    onRinging(view);
    renderWrapUp(view);
    renderDial(view);
    if (on) askOnce();
    showNotifyState();
    // app.js shows the dashboard after this event: look once it is drawn.
    setTimeout(() => {
      pollWaiting(onDashboard());
      loadWaiting(); // a call of the agent's came or went: the figures changed too
      const c = view.current_call;
      const key = c ? `${c.call}:${c.phase}` : null;
      if ((on && !wasOn) || key !== lastCall) recentSoon();
      lastCall = key;
      wasOn = on;
    }, 0);
  });
})();
