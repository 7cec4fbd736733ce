// The admin's directory: agents (create, rename, "may manage own queues", password reset,
// disable/enable), queues (create, members and penalties, routing settings), pause reasons
// (add, rename, retire), agent defaults, admin and supervisor accounts. Plain forms over
// the /api/admin routes; who is signed in comes from GET /api/whoami.
'use strict';

(() => {
  const { $, api, el, notice, act } = window.Portal;

  const state = { agents: [], queues: [], reasons: [], devices: [], webhooks: [], me: null };

  function show(screen) {
    $('loading').hidden = true;
    $('signin').hidden = screen !== 'signin';
    $('directory').hidden = screen !== 'directory';
    $('signout').hidden = screen !== 'directory';
    $('supervisor-link').hidden = screen !== 'directory';
  }

  function showSignin(message, kind) {
    show('signin');
    state.me = null;
    $('who').textContent = '';
    if (message) notice(message, kind || 'ok');
    $('username').focus();
  }
  window.Portal.onUnauthorized = () => showSignin('Your session has ended. Sign in again.', 'error');

  window.Portal.userSignin(() => start(), showSignin);

  // ---- tabs (arrow keys move between them)

  const tabs = [...document.querySelectorAll('[role=tab]')];
  function selectTab(tab) {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute('aria-selected', String(on));
      t.tabIndex = on ? 0 : -1;
      $(t.getAttribute('aria-controls')).hidden = !on;
    }
  }
  tabs.forEach((t, i) => {
    t.addEventListener('click', () => selectTab(t));
    t.addEventListener('keydown', (e) => {
      const d = e.key === 'ArrowRight' ? 1 : e.key === 'ArrowLeft' ? -1 : 0;
      if (!d) return;
      const next = tabs[(i + d + tabs.length) % tabs.length];
      selectTab(next);
      next.focus();
    });
  });

  // ---- errors at the field

  // A refusal that names a `field` is shown under that field's input (`inputs`: the API's field
  // name -> the input), which is marked invalid and focused; other refusals go to the banner.
  function clearFieldErrors(scope) {
    for (const e of scope.querySelectorAll('.field-error[data-for]')) e.remove();
    for (const i of scope.querySelectorAll('[aria-invalid]')) { i.removeAttribute('aria-invalid'); i.removeAttribute('aria-describedby'); }
  }
  function fieldInput(inputs, field) {
    if (!field) return null;
    return inputs[field] || inputs[field.replace(/^settings\./, '')] || null;
  }
  function showFieldError(input, message) {
    const id = `${input.id || input.getAttribute('aria-label').replace(/\W+/g, '-')}-error`;
    const p = el('p', { class: 'field-error', id, 'data-for': input.id || '', role: 'alert', text: message });
    (input.closest('div, li') || input.parentElement).append(p);
    input.setAttribute('aria-invalid', 'true');
    input.setAttribute('aria-describedby', id);
    input.focus();
  }
  // Like Portal.act, but a refusal naming one of `inputs` is shown at that input.
  async function actAt(btn, scope, inputs, fn, okText) {
    clearFieldErrors(scope);
    let fieldErr = null;
    const r = await act(btn, async () => {
      try { return await fn(); } catch (e) {
        const input = fieldInput(inputs, e.field);
        if (input) { fieldErr = { input, message: e.message }; return undefined; }
        throw e;
      }
    }, okText);
    if (fieldErr) {
      notice('');
      showFieldError(fieldErr.input, fieldErr.message);
      return undefined;
    }
    return r;
  }

  // A small form: runs `fn` with the button busy, says the result, then reloads the lists.
  // `inputs` maps the API's field names to the form's inputs, for errors at the field.
  function submit(form, fn, okText, inputs = {}) {
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const r = await actAt(ev.submitter || form.querySelector('button[type=submit]'), form, inputs, () => fn(form), okText);
      if (r !== undefined) await reload();
    });
  }

  async function reload() {
    try { await load(); } catch (e) { notice(e.message, 'error'); }
  }

  const button = (text, cls, onclick, label) => el('button', { type: 'button', class: cls, onclick, 'aria-label': label }, text);
  const action = async (btn, fn, okText) => {
    const r = await act(btn, fn, okText);
    if (r !== undefined) await reload();
  };

  // ---- agents

  function renderAgents() {
    const rows = state.agents.map((a) => {
      const nameInput = el('input', { value: a.display_name, 'aria-label': `Name of agent ${a.agent}`, size: 18 });
      const pw = el('input', { type: 'password', autocomplete: 'new-password', 'aria-label': `New password for agent ${a.agent}`, size: 12 });
      const manage = el('input', {
        type: 'checkbox', checked: a.may_manage_queues, 'aria-label': `Agent ${a.agent} may manage own queues`,
        onchange: (e) => action(null, () => api('PATCH', `/api/admin/agents/${a.agent}`, { may_manage_queues: e.currentTarget.checked }),
          `Agent ${a.agent} ${e.currentTarget.checked ? 'may now' : 'may no longer'} manage their own queues.`),
      });
      return el('tr', { id: `admin-agent-${a.agent}` },
        el('th', { scope: 'row', 'data-label': 'Agent Number' }, el('div', { class: 'v', text: a.agent })),
        el('td', { 'data-label': 'Name' }, el('div', { class: 'v row' }, nameInput,
          button('Rename', 'secondary', (e) => action(e.currentTarget,
            () => api('PATCH', `/api/admin/agents/${a.agent}`, { display_name: nameInput.value.trim() }), `Agent ${a.agent} renamed.`),
          `Rename agent ${a.agent}`))),
        el('td', { 'data-label': 'May manage own queues' }, el('div', { class: 'v' }, manage)),
        el('td', { 'data-label': 'Account' }, el('div', { class: 'v row' },
          el('span', { class: a.enabled ? '' : 'field-error', text: a.enabled ? 'Enabled' : 'Disabled' }),
          a.enabled
            ? button('Disable', 'danger', (e) => confirmDisable(e.currentTarget, a), `Disable agent ${a.agent}`)
            : button('Enable', '', (e) => action(e.currentTarget, () => api('POST', `/api/admin/agents/${a.agent}/enable`),
              `Agent ${a.agent} is enabled.`), `Enable agent ${a.agent}`))),
        el('td', { 'data-label': 'Password' }, el('div', { class: 'v row' }, pw,
          button('Reset', 'secondary', (e) => action(e.currentTarget,
            () => api('POST', `/api/admin/agents/${a.agent}/password`, { password: pw.value }), `The password of agent ${a.agent} is changed.`),
          `Reset the password of agent ${a.agent}`))));
    });
    $('agent-rows').replaceChildren(...rows);
  }

  // Disabling logs the agent out at once, even during a call: confirm first, saying so.
  async function confirmDisable(btn, a) {
    const box = btn.parentElement;
    let view = null;
    try {
      view = (await api('GET', '/api/supervisor/agents')).find((v) => v.agent === a.agent) || null;
    } catch { /* the confirmation says what is known */ }
    const onCall = view && ['ringing', 'connected', 'on_hold'].includes(view.status);
    const loggedIn = view && view.status !== 'logged_out';
    const text = onCall
      ? `Agent ${a.agent} (${a.display_name}) is on a call (${view.status_label}). Disabling logs them out now and they get no more calls.`
      : loggedIn
        ? `Agent ${a.agent} (${a.display_name}) is logged in. Disabling logs them out now.`
        : `Disable agent ${a.agent} (${a.display_name})? They can no longer sign in.`;
    const keep = button('Keep', 'secondary', () => { box.replaceChildren(...saved); btn.focus(); }, `Keep agent ${a.agent} enabled`);
    const confirm = button('Confirm disable', 'danger', (e) => action(e.currentTarget, () => api('POST', `/api/admin/agents/${a.agent}/disable`),
      `Agent ${a.agent} is disabled and logged out.`), `Confirm disabling agent ${a.agent}`);
    const saved = [...box.childNodes];
    box.replaceChildren(el('span', { class: 'confirm-text', id: `disable-note-${a.agent}`, role: 'alert', text }), confirm, keep);
    confirm.focus();
  }

  submit($('new-agent'), () => {
    const body = { agent: $('na-number').value.trim(), display_name: $('na-name').value.trim(), password: $('na-password').value };
    if ($('na-manage').value) body.may_manage_queues = $('na-manage').value === 'true';
    return api('POST', '/api/admin/agents', body).then((r) => { $('new-agent').reset(); return r ?? true; });
  }, 'Agent created.', { agent: $('na-number'), display_name: $('na-name'), password: $('na-password'), may_manage_queues: $('na-manage') });

  // ---- queues

  const STRATEGIES = ['longest_idle', 'ring_all', 'round_robin', 'fewest_calls', 'least_talk_time', 'linear', 'random'];
  // The numeric settings, with the API's defaults (used only when a queue's settings are missing).
  // [field, label, default, min, max]: the ranges the API allows (docs/getting-started.md).
  const SETTINGS = [
    ['ring_timeout_s', 'Ring timeout (s)', 20, 1, 600], ['wrap_up_s', 'Wrap-up (s)', 10, 0, 3600],
    ['max_wait_s', 'Max wait (s, 0 = no limit)', 0, 0, 86400], ['reject_delay_s', 'Reject delay (s)', 5, 0, 3600],
    ['auto_pause_after', 'Auto-pause after missed calls (0 = never)', 0, 0, 100], ['service_level_s', 'Service level (s)', 20, 1, 3600],
  ];

  // The form starts from the settings in force (`settings` of GET /api/admin/queues).
  function settingsForm(q) {
    const cur = q.settings || {};
    const id = (f) => `qs-${q.queue}-${f}`;
    const fields = [
      el('div', {}, el('label', { for: id('strategy'), text: 'Strategy' }),
        el('select', { id: id('strategy') }, ...STRATEGIES.map((s) => el('option', { value: s, text: s.replace(/_/g, ' '), selected: (cur.strategy || 'longest_idle') === s })))),
      ...SETTINGS.map(([f, label, def, min, max]) => el('div', {}, el('label', { for: id(f), text: label }),
        el('input', { id: id(f), type: 'number', min, max, step: 1, value: String(cur[f] ?? def), class: 'width-7' }))),
      el('label', { class: 'checkbox', for: id('leave') }, el('input', { type: 'checkbox', id: id('leave'), checked: Boolean(cur.leave_when_no_agents) }), 'Callers leave when no agent is logged in'),
      el('label', { class: 'checkbox', for: id('inuse') }, el('input', { type: 'checkbox', id: id('inuse'), checked: Boolean(cur.ring_in_use) }), 'Offer calls to agents already on a call'),
      // The wrap-up's disposition codes: one per line.
      el('div', { class: 'dispositions' }, el('label', { for: id('dispositions'), text: 'Disposition codes (one per line)' }),
        el('textarea', { id: id('dispositions'), rows: 4, text: (cur.dispositions || []).join('\n') })),
      el('label', { class: 'checkbox', for: id('disp-required') }, el('input', { type: 'checkbox', id: id('disp-required'), checked: Boolean(cur.disposition_required) }), 'A disposition is required before the agent is available again'),
    ];
    const form = el('form', { class: 'inline-form', novalidate: true }, ...fields, el('button', { type: 'submit' }, 'Save settings'));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const body = { strategy: $(id('strategy')).value, leave_when_no_agents: $(id('leave')).checked, ring_in_use: $(id('inuse')).checked };
      for (const [f] of SETTINGS) body[f] = Number($(id(f)).value);
      body.dispositions = $(id('dispositions')).value.split('\n').map((d) => d.trim()).filter(Boolean);
      body.disposition_required = $(id('disp-required')).checked;
      const inputs = { strategy: $(id('strategy')), dispositions: $(id('dispositions')), disposition_required: $(id('disp-required')) };
      for (const [f] of SETTINGS) inputs[f] = $(id(f));
      body.dispositions.forEach((_, i) => { inputs[`dispositions[${i}]`] = $(id('dispositions')); });
      const r = await actAt(ev.submitter, form, inputs, () => api('PUT', `/api/admin/queues/${q.queue}/settings`, body), `The settings of queue ${q.queue} are saved.`);
      if (r) q.settings = r;
    });
    return el('details', { id: `qs-${q.queue}` }, el('summary', { text: 'Routing settings' }),
      el('p', { class: 'muted small', text: 'The settings in force. Saving sets every field.' }),
      form);
  }

  function renderQueues() {
    const names = new Map(state.agents.map((a) => [a.agent, a.display_name]));
    // The settings forms that are open stay open when the list is drawn again.
    const open = new Set([...$('queue-list').querySelectorAll('details[open]')].map((d) => d.id));
    $('queue-list').replaceChildren(...state.queues.map((q) => {
      const members = el('ul', { class: 'queue-list' }, ...q.members.map((m) => {
        const pen = el('input', { type: 'number', min: 0, max: 1000, step: 1, id: `pen-${q.queue}-${m.agent}`, value: String(m.penalty), class: 'width-5', 'aria-label': `Penalty of agent ${m.agent} in queue ${q.queue}` });
        return el('li', {},
          el('span', { class: 'q-name', text: `${names.get(m.agent) || ''} (${m.agent})` }),
          el('span', { class: 'row' }, el('span', { class: 'small muted', text: 'penalty' }), pen,
            button('Set', 'secondary', async (e) => {
              const r = await actAt(e.currentTarget, e.currentTarget.closest('li'), { penalty: pen },
                () => api('PUT', `/api/admin/queues/${q.queue}/agents/${m.agent}`, { penalty: Number(pen.value) }), `Penalty of agent ${m.agent} in queue ${q.queue} set.`);
              if (r !== undefined) await reload();
            },
            `Set the penalty of agent ${m.agent} in queue ${q.queue}`),
            button('Unassign', 'danger', (e) => action(e.currentTarget,
              () => api('DELETE', `/api/admin/queues/${q.queue}/agents/${m.agent}`), `Agent ${m.agent} unassigned from queue ${q.queue}.`),
            `Unassign agent ${m.agent} from queue ${q.queue}`)));
      }));
      const candidates = state.agents.filter((a) => !q.members.some((m) => m.agent === a.agent));
      const sel = el('select', { id: `assign-${q.queue}` }, ...candidates.map((a) => el('option', { value: a.agent, text: `${a.display_name} (${a.agent})` })));
      const pen = el('input', { id: `assign-pen-${q.queue}`, type: 'number', min: 0, max: 1000, step: 1, value: '0', class: 'width-5' });
      const assign = el('form', { class: 'inline-form', novalidate: true },
        el('div', {}, el('label', { for: `assign-${q.queue}`, text: 'Assign an agent' }), sel),
        el('div', {}, el('label', { for: `assign-pen-${q.queue}`, text: 'Penalty' }), pen),
        el('button', { type: 'submit', disabled: !candidates.length }, 'Assign'));
      assign.addEventListener('submit', (ev) => {
        ev.preventDefault();
        actAt(ev.submitter, assign, { penalty: pen, agent: sel }, () => api('PUT', `/api/admin/queues/${q.queue}/agents/${sel.value}`, { penalty: Number(pen.value) }),
          `Agent ${sel.value} assigned to queue ${q.queue}.`).then((r) => (r !== undefined ? reload() : undefined));
      });
      return el('div', { class: 'tile', id: `admin-queue-${q.queue}` },
        el('h3', { text: `${q.name} (${q.queue})` }),
        q.members.length ? members : el('p', { class: 'muted small', text: 'No agent is assigned.' }),
        assign, settingsForm(q));
    }));
    for (const id of open) if ($(id)) $(id).open = true;
  }

  submit($('new-queue'), () => api('POST', '/api/admin/queues', { queue: $('nq-number').value.trim(), name: $('nq-name').value.trim() })
    .then((r) => { $('new-queue').reset(); return r ?? true; }), 'Queue created.', { queue: $('nq-number'), name: $('nq-name') });

  // ---- pause reasons

  function renderReasons() {
    $('reason-list').replaceChildren(...state.reasons.map((r) => {
      const input = el('input', { value: r.name, 'aria-label': `New name for ${r.name}`, size: 16 });
      return el('li', {}, el('span', { class: 'q-name', text: r.name }), el('span', { class: 'row' }, input,
        button('Rename', 'secondary', (e) => action(e.currentTarget,
          () => api('PATCH', `/api/admin/pause-reasons/${encodeURIComponent(r.name)}`, { name: input.value.trim() }), `${r.name} renamed to ${input.value.trim()}.`),
        `Rename pause reason ${r.name}`),
        button('Retire', 'danger', (e) => action(e.currentTarget,
          () => api('DELETE', `/api/admin/pause-reasons/${encodeURIComponent(r.name)}`), `${r.name} retired.`),
        `Retire pause reason ${r.name}`)));
    }));
  }

  submit($('new-reason'), () => api('POST', '/api/admin/pause-reasons', { name: $('nr-name').value.trim() })
    .then((r) => { $('new-reason').reset(); return r ?? true; }), 'Pause reason added.', { name: $('nr-name') });

  // ---- agent defaults and users

  submit($('defaults'), () => api('PUT', '/api/admin/agent-defaults', { may_manage_queues: $('def-manage').checked, agents_see_monitoring: $('def-monitoring').checked }).then((r) => r ?? true),
    'Agent defaults saved.');
  submit($('new-user'), () => api('POST', '/api/admin/users', {
    username: $('nu-username').value.trim(), display_name: $('nu-name').value.trim(), password: $('nu-password').value, role: $('nu-role').value,
  }).then((r) => { $('new-user').reset(); return r ?? true; }), 'User created.',
  { username: $('nu-username'), display_name: $('nu-name'), password: $('nu-password'), role: $('nu-role') });

  // ---- SIP devices (tenants whose PBX is the SIP gateway)

  // The password is in the reply once and nowhere else: show it until the admin moves on.
  function showSecret(c) {
    const box = $('sip-secret');
    box.hidden = false;
    if (c.on_pbx) {
      // Trunk mode: the phone registers on the tenant's own PBX; no SIP password of ours.
      box.replaceChildren(el('strong', { text: `Device ${c.device}` }),
        ` · its phone registers on your PBX (${c.registrar}) as extension ${c.username}; the Agent Portal follows that registration.`);
      return true;
    }
    box.replaceChildren(el('strong', { text: `Device ${c.device}` }),
      ` · user ${c.username} · domain ${c.domain} · registrar ${c.registrar} · password `,
      el('code', { text: c.password }), ' (shown once: copy it into the phone now)');
    return true;
  }

  function renderDevices() {
    $('device-rows').replaceChildren(...state.devices.map((d) => el('tr', {},
      el('td', { text: d.device }),
      el('td', { text: d.registered ? 'Online' : 'Offline' }),
      el('td', { text: d.registered ? `${d.source || ''} until ${new Date(d.expires_at).toLocaleTimeString()}` : '—' }),
      el('td', {}, el('span', { class: 'row' },
        button('New password', 'secondary', (e) => act(e.currentTarget,
          () => api('POST', `/api/admin/devices/${d.device}/password`).then(showSecret), `New SIP password for ${d.device}.`),
        `New password for SIP device ${d.device}`),
        button('Remove', 'danger', (e) => {
          if (!window.confirm(`Remove device ${d.device}? A phone registered with it goes offline.`)) return;
          action(e.currentTarget, () => api('DELETE', `/api/admin/devices/${d.device}`), `Device ${d.device} removed.`);
        }, `Remove device ${d.device}`))))));
  }

  submit($('new-device'), () => api('POST', '/api/admin/devices', { device: $('nd-number').value.trim() })
    .then((r) => { $('new-device').reset(); return showSecret(r); }), 'Device created.', { device: $('nd-number') });

  async function loadDevices() {
    try {
      state.devices = await api('GET', '/api/admin/devices');
      $('tab-devices').hidden = false;
      renderDevices();
    } catch (e) {
      if (e.status !== 409) throw e;
      $('tab-devices').hidden = true; // the simulator's tenant: no SIP devices
    }
  }

  // ---- webhooks

  const list = (v) => v.split(',').map((x) => x.trim()).filter(Boolean);

  function showWebhookSecret(w) {
    const box = $('webhook-secret');
    box.hidden = false;
    box.replaceChildren(el('strong', { text: `Webhook ${w.url}` }), ' · signing secret ',
      el('code', { text: w.secret }), ' (shown once: give it to the receiving system now)');
    return true;
  }

  async function showLog(w) {
    const rows = await api('GET', `/api/admin/webhooks/${w.id}/deliveries`);
    $('webhook-log').hidden = false;
    $('webhook-log-title').textContent = `Deliveries to ${w.url}`;
    $('webhook-log-rows').replaceChildren(...rows.map((d) => el('tr', {},
      el('td', { text: new Date(d.at).toLocaleTimeString() }),
      el('td', { text: d.event_type }),
      el('td', { text: String(d.attempt) }),
      el('td', { text: d.outcome }),
      el('td', { text: d.status_code ? String(d.status_code) : (d.error || '—') }),
      el('td', { class: 'num', text: `${d.latency_ms} ms` }))));
    return true;
  }

  function renderWebhooks() {
    $('webhook-rows').replaceChildren(...state.webhooks.map((w) => el('tr', {},
      el('td', {}, el('span', { text: w.url }), w.description ? el('div', { class: 'muted small', text: w.description }) : null),
      el('td', { text: w.event_types.length ? w.event_types.join(', ') : 'all' }),
      el('td', { text: w.status === 'suspended' ? `Suspended: ${w.suspended_reason || ''}` : 'Active' }),
      el('td', {}, el('span', { class: 'row' },
        button('Send test event', 'secondary', (e) => act(e.currentTarget,
          () => api('POST', `/api/admin/webhooks/${w.id}/test`),
          (d) => (d.status_code ? `Test event: the receiver answered ${d.status_code} in ${d.latency_ms} ms.` : `Test event not delivered: ${d.error}.`)),
        `Send test event to ${w.url}`),
        button('Deliveries', 'secondary', (e) => act(e.currentTarget, () => showLog(w)), `Deliveries to ${w.url}`),
        w.status === 'suspended' ? button('Resume', 'secondary', (e) => action(e.currentTarget,
          () => api('POST', `/api/admin/webhooks/${w.id}/resume`), `Webhook ${w.url} resumed.`), `Resume the webhook to ${w.url}`) : null,
        button('Remove', 'danger', (e) => {
          if (!window.confirm(`Remove the webhook to ${w.url}? Its deliveries stop.`)) return;
          action(e.currentTarget, () => api('DELETE', `/api/admin/webhooks/${w.id}`), `Webhook ${w.url} removed.`);
        }, `Remove the webhook to ${w.url}`))))));
  }

  submit($('new-webhook'), () => api('POST', '/api/admin/webhooks', {
    url: $('nw-url').value.trim(), event_types: list($('nw-types').value), agents: list($('nw-agents').value),
    queues: list($('nw-queues').value), description: $('nw-description').value.trim(), allow_http: $('nw-http').checked,
  }).then((r) => { $('new-webhook').reset(); return showWebhookSecret(r); }), 'Webhook created.',
  { url: $('nw-url'), event_types: $('nw-types'), agents: $('nw-agents'), queues: $('nw-queues'), description: $('nw-description') });

  async function loadWebhooks() {
    try {
      state.webhooks = await api('GET', '/api/admin/webhooks');
      renderWebhooks();
    } catch (e) {
      // The webhooks service not running: the tab says so, the rest of the page works.
      $('webhook-rows').replaceChildren(el('tr', {}, el('td', { colspan: 4, text: `Webhooks cannot be read now (${e.message}).` })));
    }
  }

  // ---- loading

  async function load() {
    const [agents, queues, reasons, defaults] = await Promise.all([
      api('GET', '/api/admin/agents'), api('GET', '/api/admin/queues'), api('GET', '/api/admin/pause-reasons'), api('GET', '/api/admin/agent-defaults'),
    ]);
    state.agents = agents;
    state.queues = queues;
    state.reasons = reasons;
    $('def-manage').checked = defaults.may_manage_queues;
    $('def-monitoring').checked = Boolean(defaults.agents_see_monitoring);
    renderAgents();
    renderQueues();
    renderReasons();
    await loadDevices();
    await loadWebhooks();
  }

  // On load and after signing in: who is signed in (401: the sign-in form), then the directory.
  async function start() {
    try {
      state.me = await api('GET', '/api/whoami');
      await load();
    } catch (e) {
      if (e.status === 401) return showSignin();
      show('signin');
      notice(e.status === 403 ? `${e.message}. The Admin page needs an admin account.` : e.message, 'error');
      return;
    }
    const p = state.me;
    $('who').replaceChildren(el('strong', { text: p.display_name }), ` · ${p.role} · tenant ${p.tenant}`);
    show('directory');
  }

  start();
})();
