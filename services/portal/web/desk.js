// The agent's desk around the Call Details (app.js draws those): the ring sound (off by
// default; WebAudio, no audio file), the desktop notification of a ringing call while the page
// is hidden (permission asked for once), the callers waiting in the agent's queues
// (GET /api/me/queues) and the agent's calls today (GET /api/me/calls).
//
// app.js sends every view of the agent as a `portal:view` event on the document.
'use strict';

if (document.body.dataset.page === 'agent') (() => {
  const { $, api, el, fmtDuration, since, clockTime } = window.Portal;

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
    } catch {
      return; // the next round asks again; the connection banner tells of an outage
    }
    renderWaiting();
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

  // ---------------------------------------------------------------- recent calls today

  const OUTCOME = {
    answered: 'Answered', in_progress: 'On the call', missed: 'Missed', rejected: 'Rejected',
    withdrawn: 'Stopped ringing', ringing: 'Ringing',
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
        el('td', { 'data-label': 'Queue', text: `${c.queue_name} (${c.queue})` }),
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

  // ---------------------------------------------------------------- following the view

  let lastCall = null;
  let wasOn = false;
  document.addEventListener('portal:view', (e) => {
    view = e.detail;
    const on = view.status !== 'logged_out';
    onRinging(view);
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
