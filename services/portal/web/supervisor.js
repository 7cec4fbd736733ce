// The supervisor's view: every agent of the tenant, live (GET /api/supervisor/agents, then the
// stream GET /api/supervisor/events: a snapshot of every agent, then each change; `resync` when
// this page fell too far behind), with a forced logout; and per queue what the agents' views
// tell (logged in, available, on calls, paused).
'use strict';

(() => {
  const { $, api, el, fmtDuration, since, clockTime, notice, act } = window.Portal;

  const state = { views: new Map(), queues: [], events: null, me: null };
  const BUSY = new Set(['ringing', 'connected', 'on_hold', 'wrap_up']);

  function show(screen) {
    $('loading').hidden = true;
    $('signin').hidden = screen !== 'signin';
    $('board').hidden = screen !== 'board';
    $('signout').hidden = screen !== 'board';
  }

  function showSignin(message, kind) {
    closeEvents();
    state.views.clear();
    $('agent-rows').replaceChildren();
    $('who').textContent = '';
    $('admin-link').hidden = true;
    show('signin');
    if (message) notice(message, kind || 'ok');
    $('username').focus();
  }
  window.Portal.onUnauthorized = () => showSignin('Your session has ended. Sign in again.', 'error');

  // Who is signed in: known from this tab's sign-in (the API has no "who am I" for
  // supervisors and admins); else the tenant.
  function showWho() {
    let p = null;
    try { p = JSON.parse(sessionStorage.getItem('cc.principal') || 'null'); } catch { p = null; }
    const any = state.views.values().next().value;
    const tenant = any ? any.tenant : p && p.tenant;
    $('who').replaceChildren(...(p ? [el('strong', { text: p.display_name }), ` · ${p.role}`] : []), tenant ? ` · tenant ${tenant}` : '');
  }

  // ---- sign in

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
      sessionStorage.setItem('cc.principal', JSON.stringify(r.principal));
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
    sessionStorage.removeItem('cc.principal');
    showSignin('You are signed out.');
  });

  // ---- the agents

  function callText(v) {
    const c = v.current_call;
    if (!c) return '—';
    const who = [c.caller_number, c.caller_name].filter(Boolean).join(' · ') || 'unknown caller';
    const queue = c.queue ? ` · ${c.queue_name || c.queue} (${c.queue})` : '';
    let s = `${who}${queue}`;
    if (c.transferred_from) s += ` · transferred from agent ${c.transferred_from}`;
    if (c.transfer) s += ` · transfer to ${c.transfer.target_label || 'target'} (${c.transfer.state})`;
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

  function renderActions(tr, v) {
    const td = cell(tr, 'actions');
    const loggedIn = v.status !== 'logged_out';
    if (!loggedIn) { td.replaceChildren(); return; }
    if (td.querySelector('button')) return; // keep the buttons (and the focus) while logged in
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

  function renderQueues() {
    const names = new Map(state.queues.map((q) => [q.queue, q.name]));
    for (const v of state.views.values()) for (const q of v.assigned_queues) if (!names.has(q.queue)) names.set(q.queue, q.name);
    const tiles = $('queue-tiles');
    const queues = [...names.keys()].sort();
    const want = queues.join(',');
    if (tiles.dataset.queues !== want) {
      tiles.dataset.queues = want;
      tiles.replaceChildren(...queues.map((q) => el('div', { class: 'tile', id: `queue-${q}`, 'data-queue': q },
        el('h3', { text: `${names.get(q)} (${q})` }), el('dl', {}))));
    }
    for (const q of queues) {
      const inQueue = [...state.views.values()].filter((v) => v.status !== 'logged_out' && v.queues.some((x) => x.queue === q));
      const figures = [
        ['Agents logged in', inQueue.length],
        ['Available', inQueue.filter((v) => v.status === 'idle' && v.device_online).length],
        ['On calls', inQueue.filter((v) => BUSY.has(v.status) && v.status !== 'wrap_up').length],
        ['In wrap-up', inQueue.filter((v) => v.status === 'wrap_up').length],
        ['Paused', inQueue.filter((v) => v.status === 'paused').length],
        ['Calls with an agent', [...state.views.values()].filter((v) => v.current_call && v.current_call.queue === q && v.current_call.phase !== 'wrap_up').length],
      ];
      const dl = document.getElementById(`queue-${q}`).querySelector('dl');
      const text = figures.map(([k, n]) => `${k}:${n}`).join('|');
      if (dl.dataset.text === text) continue;
      dl.dataset.text = text;
      dl.replaceChildren(...figures.flatMap(([k, n]) => [el('dt', { text: k }), el('dd', { text: String(n) })]));
    }
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
  }, 1000);

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

  async function start() {
    try {
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
      state.queues = await api('GET', '/api/admin/queues');
    } catch { state.queues = []; }
    renderAll();
    showWho();
    openEvents();
    $('admin-link').hidden = false;
  }

  start();
})();
