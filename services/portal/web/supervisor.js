// The supervisor's view: every agent of the tenant, live (GET /api/supervisor/agents, then the
// stream GET /api/supervisor/events: a snapshot of every agent, then each change; `resync` when
// this page fell too far behind), with a forced logout; and per queue today's service level,
// answered, abandoned and average wait, the waiting callers and the longest wait (GET
// /api/supervisor/queues once, then pushed on the same stream as `queues` events whenever they
// change; the longest wait counts up here in between) beside what the agents' views tell
// (logged in, available, on calls, paused).
// Who is signed in comes from GET /api/whoami. On an agent's connected call the supervisor can
// Listen, Whisper or Barge (POST /api/supervisor/agents/{agent}/monitor: "Your phone" rings),
// switch between them (PATCH) and Leave (DELETE).
'use strict';

(() => {
  const { $, api, el, fmtDuration, since, clockTime, notice, act } = window.Portal;

  const state = {
    views: new Map(),
    queues: new Map(), // queue -> its figures (GET /api/supervisor/queues, then `queues` events)
    queuesError: null, // why the first reading of the queues failed
    events: null,
    me: null, // GET /api/whoami
  };
  const BUSY = new Set(['ringing', 'dialing', 'connected', 'on_hold', 'wrap_up']);

  function show(screen) {
    $('loading').hidden = true;
    $('signin').hidden = screen !== 'signin';
    $('board').hidden = screen !== 'board';
    $('signout').hidden = screen !== 'board';
  }

  function showSignin(message, kind) {
    closeEvents();
    state.views.clear();
    state.queues.clear();
    state.queuesError = null;
    state.me = null;
    $('agent-rows').replaceChildren();
    $('queue-tiles').replaceChildren();
    delete $('queue-tiles').dataset.queues;
    $('who').textContent = '';
    $('admin-link').hidden = true;
    show('signin');
    if (message) notice(message, kind || 'ok');
    $('username').focus();
  }
  window.Portal.onUnauthorized = () => showSignin('Your session has ended. Sign in again.', 'error');

  // Who is signed in (GET /api/whoami).
  function showWho() {
    const p = state.me;
    $('who').replaceChildren(...(p ? [el('strong', { text: p.display_name }), ` · ${p.role} · tenant ${p.tenant}`] : []));
  }

  // ---- sign in

  window.Portal.userSignin(() => start(), showSignin);

  // ---- the agents

  function callText(v) {
    const c = v.current_call;
    if (!c) return '—';
    const who = [c.caller_number, c.caller_name].filter(Boolean).join(' · ') || 'unknown caller';
    const queue = c.direction === 'outbound' ? ' · outbound call' : c.queue ? ` · ${c.queue_name || c.queue} (${c.queue})` : '';
    let s = `${who}${queue}`;
    if (c.transferred_from) s += ` · transferred from ${c.transferred_from_name ? `${c.transferred_from_name} (${c.transferred_from})` : `agent ${c.transferred_from}`}`;
    if (c.transfer) s += ` · transfer to ${c.transfer.target_label || 'target'} (${c.transfer.state})`;
    if (c.monitor) s += ` · ${c.monitor.supervisor_name || c.monitor.supervisor}: ${MODE_WORD[c.monitor.mode] || c.monitor.mode}${c.monitor.state === 'ringing' ? ' (ringing their phone)' : ''}`;
    return s;
  }

  function callClock(v) {
    const c = v.current_call;
    if (!c) return '';
    if (c.talk_ms !== undefined && c.talk_ms !== null) return `talked ${fmtDuration(c.talk_ms)}`;
    if (c.answered_at) return `talking ${fmtDuration(since(c.answered_at))}`;
    if (c.offered_at) return `ringing ${fmtDuration(since(c.offered_at))}`;
    return '';
  }

  function row(agent) {
    let tr = document.getElementById(`agent-row-${agent}`);
    if (tr) return tr;
    tr = el('tr', { id: `agent-row-${agent}`, 'data-agent': agent });
    const cells = {
      name: 'Agent', status: 'Status', since: 'Time in state', call: 'Current call', device: 'Device', login: 'Login Time',
      completed: 'Completed', missed: 'Missed', rejected: 'Rejected', queues: 'Queues', actions: '',
    };
    for (const [c, label] of Object.entries(cells)) {
      // data-label: the column's name, shown beside each value on a narrow screen.
      const td = el(c === 'name' ? 'th' : 'td', { class: `c-${c}`, 'data-label': label });
      if (c === 'name') td.setAttribute('scope', 'row');
      if (['completed', 'missed', 'rejected'].includes(c)) td.classList.add('num');
      td.append(el('div', { class: 'v' }));
      tr.append(td);
    }
    return tr;
  }

  const cell = (tr, c) => tr.querySelector(`.c-${c} > .v`);
  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text;
  }

  function renderRow(v) {
    const tr = row(v.agent);
    const name = cell(tr, 'name');
    if (!name.firstChild) name.append(el('span', { class: 'n' }), el('div', { class: 'muted small a' }));
    setText(name.querySelector('.n'), v.display_name);
    setText(name.querySelector('.a'), `Agent ${v.agent}${v.enabled ? '' : ' · disabled'}`);

    const st = cell(tr, 'status');
    const label = v.status === 'paused' && v.pause_reason ? `Paused: ${v.pause_reason}` : v.status_label;
    let pill = st.querySelector('.pill');
    if (!pill) { pill = el('span', { class: 'pill' }); st.append(pill); }
    pill.dataset.status = v.status;
    setText(pill, label);
    let note = st.querySelector('.note');
    const noteText = [
      v.status !== 'logged_out' && !v.device_online ? 'Device offline' : '',
      v.pause_reason && v.status !== 'paused' ? `Pause requested: ${v.pause_reason}` : '',
    ].filter(Boolean).join(' · ');
    if (!note) { note = el('div', { class: 'note small' }); st.append(note); }
    note.style.color = 'var(--danger)';
    setText(note, noteText);

    const call = cell(tr, 'call');
    if (!call.firstChild) call.append(el('span', { class: 'what' }), el('div', { class: 'muted small clock' }));
    setText(call.querySelector('.what'), callText(v));
    setText(cell(tr, 'device'), v.device ? `${v.device}${v.device_online ? '' : ' (offline)'}` : '—');
    setText(cell(tr, 'login'), v.login_time ? clockTime(v.login_time) : '—');
    setText(cell(tr, 'completed'), String(v.counts.completed));
    setText(cell(tr, 'missed'), String(v.counts.missed));
    setText(cell(tr, 'rejected'), String(v.counts.rejected));
    setText(cell(tr, 'queues'), v.queues.map((q) => q.queue).join(', ') || '—');
    renderActions(tr, v);
    renderRowClock(tr, v);
  }

  // On a call (connected or the caller on hold) an agent cannot be logged out: the call must
  // end first, so Force logout is not offered then (ringing and wrap-up are fine).
  const ON_CALL = new Set(['connected', 'on_hold']);

  function renderActions(tr, v) {
    const td = cell(tr, 'actions');
    const loggedIn = v.status !== 'logged_out';
    if (!loggedIn) { td.replaceChildren(); delete td.dataset.mode; return; }
    const m = v.current_call && v.current_call.monitor;
    const mode = ON_CALL.has(v.status) ? `on_call:${m ? `${m.supervisor}:${m.mode}:${m.state}` : ''}` : 'free';
    if (td.dataset.mode === mode) return; // keep the buttons (and the focus) while nothing changes
    const hadFocus = td.contains(document.activeElement);
    td.dataset.mode = mode;
    if (mode.startsWith('on_call')) {
      td.replaceChildren(monitorControls(v),
        el('span', { class: 'muted small on-call-note', text: 'On a call: Force logout once the call has ended' }));
      const first = td.querySelector('button');
      if (hadFocus) {
        if (first) first.focus();
        else { const th = tr.querySelector('th'); th.tabIndex = -1; th.focus(); }
      }
      return;
    }
    const force = el('button', {
      type: 'button', class: 'danger', 'aria-label': `Force logout of agent ${v.agent} (${v.display_name})`,
      onclick: () => {
        const confirm = el('button', {
          type: 'button', class: 'danger', 'aria-label': `Confirm the forced logout of agent ${v.agent}`,
          onclick: async (e) => {
            const ok = await act(e.currentTarget, () => api('POST', `/api/supervisor/agents/${encodeURIComponent(v.agent)}/logout`),
              `Agent ${v.agent} (${v.display_name}) is logged out.`);
            if (ok === undefined && td.isConnected) td.replaceChildren(force);
          },
        }, 'Confirm logout');
        const keep = el('button', { type: 'button', class: 'secondary', onclick: () => { td.replaceChildren(force); force.focus(); } }, 'Keep');
        td.replaceChildren(el('div', { class: 'row' }, confirm, keep));
        confirm.focus();
      },
    }, 'Force logout');
    td.replaceChildren(force);
    if (hadFocus) force.focus();
  }

  // ---- listening in: Listen, Whisper, Barge on an agent's connected call, then Leave

  const MODE_WORD = { listen: 'Listening', whisper: 'Whispering', barge: 'Barging in' };
  const MODE_BUTTON = { listen: 'Listen', whisper: 'Whisper', barge: 'Barge' };
  const MODE_HELP = {
    listen: 'you hear the agent and the caller; neither hears you',
    whisper: 'the agent hears you, the caller does not',
    barge: 'the agent and the caller both hear you',
  };
  const DEVICE_KEY = 'cc.supervisor.device';

  function monitorControls(v) {
    const box = el('div', { class: 'row monitor' });
    const m = v.current_call && v.current_call.monitor;
    const agentPath = `/api/supervisor/agents/${encodeURIComponent(v.agent)}/monitor`;
    const who = `agent ${v.agent} (${v.display_name})`;
    if (m && state.me && m.supervisor !== state.me.principal) {
      box.append(el('span', { class: 'small', text: `${m.supervisor_name || m.supervisor} is on this call` }));
      return box;
    }
    const modes = ['listen', 'whisper', 'barge'];
    if (!m) {
      for (const mode of modes) {
        box.append(el('button', {
          type: 'button', class: 'secondary', title: MODE_HELP[mode], 'aria-label': `${MODE_BUTTON[mode]} on the call of ${who}: ${MODE_HELP[mode]}`,
          onclick: (e) => {
            const device = $('my-device').value;
            if (!device) { notice('Choose your phone first (Your phone, above the agents).', 'error'); $('my-device').focus(); return; }
            act(e.currentTarget, () => api('POST', agentPath, { device, mode }),
              `Your phone ${device} rings: answer it to ${MODE_BUTTON[mode].toLowerCase()} on the call of ${who}.`);
          },
        }, MODE_BUTTON[mode]));
      }
      return box;
    }
    box.append(el('span', { class: 'small monitor-state', text: m.state === 'ringing' ? `${MODE_WORD[m.mode]}: answer your phone` : `You: ${MODE_WORD[m.mode]}` }));
    for (const mode of modes.filter((x) => x !== m.mode)) {
      box.append(el('button', {
        type: 'button', class: 'secondary', title: MODE_HELP[mode], 'aria-label': `Switch to ${MODE_BUTTON[mode]} on the call of ${who}: ${MODE_HELP[mode]}`,
        onclick: (e) => act(e.currentTarget, () => api('PATCH', agentPath, { mode }), `${MODE_WORD[mode]} on the call of ${who}.`),
      }, MODE_BUTTON[mode]));
    }
    box.append(el('button', {
      type: 'button', class: 'danger', 'aria-label': `Leave the call of ${who}`,
      onclick: (e) => act(e.currentTarget, () => api('DELETE', agentPath), `You left the call of ${who}.`),
    }, 'Leave'));
    return box;
  }

  // "Your phone": the device the supervisor is rung on when listening in (kept in this browser).
  async function loadDevices() {
    const select = $('my-device');
    let devices = [];
    try { devices = await api('GET', '/api/supervisor/devices'); } catch (e) {
      setText($('my-device-note'), `The devices cannot be read now (${e.message}).`);
      return;
    }
    const keep = select.value || localStorage.getItem(DEVICE_KEY) || '';
    select.replaceChildren(el('option', { value: '', text: 'Choose…' }),
      ...devices.map((d) => el('option', { value: d.device, text: `${d.device}${d.online ? '' : ' (offline)'}`, disabled: !d.online })));
    if (devices.some((d) => d.device === keep && d.online)) select.value = keep;
    setText($('my-device-note'), '');
  }

  function renderRowClock(tr, v) {
    setText(cell(tr, 'since'), v.status === 'logged_out' ? '—' : fmtDuration(since(v.status_since)));
    const c = tr.querySelector('.c-call .clock');
    if (c) setText(c, callClock(v));
  }

  function renderAll() {
    const tbody = $('agent-rows');
    const views = [...state.views.values()].sort((a, b) => a.agent.localeCompare(b.agent, undefined, { numeric: true }));
    views.forEach((v, i) => {
      const tr = row(v.agent);
      if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
    });
    renderQueues();
  }

  // The figures of each queue tile: today's (from the queue figures), then now: the waiting
  // callers (from the queue figures), then what the agents' views tell.
  const TODAY = [['sl', 'Service level'], ['answered', 'Answered'], ['abandoned', 'Abandoned'], ['avg_wait', 'Average wait']];
  const FIGURES = [
    ['waiting', 'Waiting calls'], ['longest', 'Longest wait'], ['logged_in', 'Agents logged in'], ['available', 'Available'],
    ['on_calls', 'On calls'], ['wrap_up', 'In wrap-up'], ['paused', 'Paused'], ['with_agent', 'Calls with an agent'],
  ];

  function longestWait(q) {
    const now = state.queues.get(q);
    if (!now || !now.waiting || !now.longest_waiting_since) return '—';
    return fmtDuration(since(now.longest_waiting_since));
  }

  function todayFigures(now) {
    if (!now || now.offered === undefined) return { sl: '—', answered: '—', abandoned: '—', avg_wait: '—' };
    return {
      sl: now.service_level_pct === null ? '—' : `${now.service_level_pct.toFixed(1)}%`,
      answered: String(now.answered),
      abandoned: String(now.abandoned),
      avg_wait: now.avg_wait_ms === null ? '—' : fmtDuration(now.avg_wait_ms),
    };
  }

  function renderQueues() {
    const names = new Map([...state.queues.values()].map((q) => [q.queue, q.name]));
    for (const v of state.views.values()) for (const q of v.assigned_queues) if (!names.has(q.queue)) names.set(q.queue, q.name);
    const tiles = $('queue-tiles');
    const queues = [...names.keys()].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
    const want = queues.map((q) => `${q}:${names.get(q)}`).join(',');
    if (tiles.dataset.queues !== want) {
      tiles.dataset.queues = want;
      tiles.replaceChildren(...queues.map((q) => el('div', { class: 'tile', id: `queue-${q}`, 'data-queue': q },
        el('h3', { text: `${names.get(q)} (${q})` }),
        el('dl', { class: 'today', 'aria-label': `${names.get(q)} (${q}) today` },
          ...TODAY.flatMap(([key, label]) => [el('div', {}, el('dt', { text: label }), el('dd', { class: `f-${key}`, text: '—' }))])),
        el('p', { class: 'sl-note muted small' }),
        el('dl', { class: 'now', 'aria-label': `${names.get(q)} (${q}) now` },
          ...FIGURES.flatMap(([key, label]) => [el('dt', { text: label }), el('dd', { class: `f-${key}`, text: '—' })])))));
    }
    const views = [...state.views.values()];
    let day = null;
    for (const q of queues) {
      const inQueue = views.filter((v) => v.status !== 'logged_out' && v.queues.some((x) => x.queue === q));
      const now = state.queues.get(q);
      if (now && now.day) day = now.day;
      const figures = {
        ...todayFigures(now),
        waiting: now ? String(now.waiting) : '—',
        longest: longestWait(q),
        logged_in: inQueue.length,
        available: inQueue.filter((v) => v.status === 'idle' && v.device_online).length,
        on_calls: inQueue.filter((v) => BUSY.has(v.status) && v.status !== 'wrap_up').length,
        wrap_up: inQueue.filter((v) => v.status === 'wrap_up').length,
        paused: inQueue.filter((v) => v.status === 'paused').length,
        with_agent: views.filter((v) => v.current_call && v.current_call.queue === q && v.current_call.phase !== 'wrap_up').length,
      };
      const tile = document.getElementById(`queue-${q}`);
      for (const [key, n] of Object.entries(figures)) setText(tile.querySelector(`.f-${key}`), String(n));
      setText(tile.querySelector('.sl-note'), now && now.service_level_s !== undefined
        ? `Service level: answered within ${now.service_level_s} s; ${now.offered} offered today.` : '');
      tile.classList.toggle('has-waiting', Boolean(now && now.waiting > 0));
    }
    const note = $('queues-note');
    setText(note, state.queuesError
      ? `Queue figures cannot be read now (${state.queuesError}); the agents' figures follow their live status.`
      : `Live: the figures are pushed as calls come and go. Today is ${day || 'the current day'} in the tenant's time zone, since midnight.`);
    note.classList.toggle('field-error', Boolean(state.queuesError));
  }

  // The longest waits count up between two readings.
  function renderWaitClocks() {
    for (const tile of $('queue-tiles').children) setText(tile.querySelector('.f-longest'), longestWait(tile.dataset.queue));
  }

  function onView(v) {
    const old = state.views.get(v.agent);
    if (old && v.version < old.version) return;
    state.views.set(v.agent, v);
    renderRow(v);
    if (old && old.status !== v.status) {
      const tr = row(v.agent);
      tr.classList.remove('flash');
      void tr.offsetWidth; // restart the animation
      tr.classList.add('flash');
    }
    renderAll();
  }

  setInterval(() => {
    for (const v of state.views.values()) {
      const tr = document.getElementById(`agent-row-${v.agent}`);
      if (tr) renderRowClock(tr, v);
    }
    renderWaitClocks();
  }, 1000);

  // ---- the queues' figures: read once, then pushed on the stream

  async function loadQueues() {
    const rows = await api('GET', '/api/supervisor/queues');
    onQueues(rows);
  }

  function onQueues(rows) {
    state.queues = new Map(rows.map((q) => [q.queue, q]));
    state.queuesError = null;
    renderQueues();
  }

  // ---- live updates

  function closeEvents() {
    if (state.events) state.events.close();
    state.events = null;
    $('connection-lost').hidden = true;
  }

  function openEvents() {
    closeEvents();
    const es = new EventSource('/api/supervisor/events');
    state.events = es;
    es.addEventListener('open', () => { $('connection-lost').hidden = true; });
    es.addEventListener('agent', (e) => {
      $('connection-lost').hidden = true;
      try { onView(JSON.parse(e.data)); } catch (err) { console.error('bad view', err); }
    });
    // The queues' figures, at once and whenever they change.
    es.addEventListener('queues', (e) => {
      try { onQueues(JSON.parse(e.data)); } catch (err) { console.error('bad queue figures', err); }
    });
    // This page fell too far behind: read every agent again.
    es.addEventListener('resync', () => loadAgents());
    es.addEventListener('error', () => {
      if (state.events !== es) return;
      $('connection-lost').hidden = false;
      if (es.readyState === EventSource.CLOSED) setTimeout(() => reconnect(es), 2000);
    });
  }

  async function reconnect(es) {
    if (state.events !== es) return;
    try {
      await loadAgents();
      openEvents();
    } catch (e) {
      if (e.status === 401) showSignin('Your session has ended. Sign in again.', 'error');
      else setTimeout(() => reconnect(es), 3000);
    }
  }

  async function loadAgents() {
    const views = await api('GET', '/api/supervisor/agents');
    for (const v of views) onView(v);
  }

  // On load and after signing in: who is signed in (401: the sign-in form), every agent, the
  // queues; then the stream of both.
  async function start() {
    try {
      state.me = await api('GET', '/api/whoami');
      await loadAgents();
    } catch (e) {
      if (e.status === 401) return showSignin();
      show('signin');
      notice(e.status === 403
        ? `${e.message}. This page is for supervisors and admins; agents use the Agent Portal (/).`
        : e.message, 'error');
      return;
    }
    show('board');
    try {
      await loadQueues();
    } catch (e) {
      if (e.status === 401) return showSignin('Your session has ended. Sign in again.', 'error');
      state.queuesError = e.message;
    }
    renderAll();
    showWho();
    loadDevices();
    openEvents();
    $('admin-link').hidden = state.me.role !== 'admin';
  }

  $('my-device').addEventListener('change', (e) => localStorage.setItem(DEVICE_KEY, e.target.value));
  $('my-device').addEventListener('focus', () => loadDevices());

  start();
})();
