// ebb dashboard: plain JavaScript, no build step, no dependencies.
//
// Polls /api/v1/status and /api/v1/metrics once a second, follows the event
// log as Server-Sent Events (read with fetch so the bearer token can go in a
// header), and draws SVG charts. Every value from the API is put in the page
// with textContent / setAttribute, never as HTML.
'use strict';
(() => {
  const $ = (sel) => document.querySelector(sel);
  const SVG = 'http://www.w3.org/2000/svg';
  const WINDOW_MS = 10 * 60 * 1000; // history kept and drawn
  const MIN_SPAN_MS = 30 * 1000; // the x axis spans at least this
  const MAX_EVENTS = 2000;
  const SHOWN_EVENTS = 300;
  const PALETTE = ['#1f6feb', '#e8590c', '#12a150', '#7a5af8', '#d92d20', '#0ea5e9', '#c026d3', '#ca8a04', '#0d9488', '#64748b'];

  const meta = (name) => (document.querySelector(`meta[name="${name}"]`) || {}).content || '';
  const state = {
    token: sessionStorage.getItem('ebb-token') || '',
    // Signed in with a login link: the session cookie (HttpOnly, never
    // seen here) goes with every same-origin fetch.
    session: meta('ebb-session') === 'cookie',
    readsNeedToken: meta('ebb-reads') === 'token',
    services: [],
    current: new URLSearchParams(location.search).get('service'),
    points: new Map(), // service -> [point]
    forecasts: new Map(), // service -> { at, list: [/api/v1/services/{name}/forecast] }
    events: [],
    lastSeq: 0,
    colors: new Map(), // replica id -> colour
    desiredDirty: false,
    hover: new Map(), // chart id -> x in px
    selected: null, // seq of the scaling/deploy event picked on a graph or in the list
    listeners: [], // status.listeners
    certs: null, // GET /api/v1/certs, refreshed every CERTS_MS while a listener has TLS
    certsAt: 0,
  };
  const CERTS_MS = 5000;
  const CERT_SOON_DAYS = 14;

  // ------------------------------------------------------------ helpers
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const el = (tag, attrs = {}, text) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const svgEl = (tag, attrs = {}, text) => {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const fmtNum = (v, digits = 1) => (v == null || !isFinite(v) ? '–' : Number(v).toFixed(digits).replace(/\.0+$/, ''));
  const fmtTime = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });
  const fmtBytes = (b) => {
    if (b == null) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB'];
    let i = 0;
    while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
    return `${b.toFixed(i ? 1 : 0)} ${units[i]}`;
  };
  const fmtAge = (s) => {
    s = Math.floor(s);
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, '0')}m`;
    return `${Math.floor(s / 86400)}d${Math.floor(s / 3600) % 24}h`;
  };
  // Inline style attributes are refused by the page's CSP; CSSOM is not.
  const swatch = (color) => {
    const s = el('span', { class: 'swatch' });
    s.style.background = color;
    return s;
  };
  const colorOf = (id) => {
    if (!state.colors.has(id)) state.colors.set(id, PALETTE[state.colors.size % PALETTE.length]);
    return state.colors.get(id);
  };

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    const init = { method, headers, cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
    if (!response.ok) {
      const error = new Error((data && data.error) || `${response.status} ${response.statusText}`);
      error.status = response.status;
      if (response.status === 401) { state.session = false; showTokenBox(true); }
      throw error;
    }
    return data;
  }

  function setConn(ok, text) {
    $('#conn-dot').className = `dot ${ok ? 'ok' : 'bad'}`;
    $('#conn-text').textContent = text;
  }

  function say(text, error = false) {
    const m = $('#action-msg');
    m.textContent = text;
    m.className = error ? 'msg err' : 'msg';
  }

  // -------------------------------------------------------------- token
  const canControl = () => Boolean(state.token || state.session);
  function showTokenBox(show) {
    $('#token-box').hidden = !show;
    const locked = !canControl();
    for (const b of document.querySelectorAll('.controls button, .controls input')) {
      b.disabled = locked;
      b.title = locked ? 'needs the admin token' : '';
    }
  }

  $('#token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const t = $('#token-input').value.trim();
    if (!t) return;
    state.token = t;
    sessionStorage.setItem('ebb-token', t);
    $('#token-input').value = '';
    showTokenBox(false);
    say('controls unlocked');
    renderAll();
  });

  // ----------------------------------------------------------- controls
  const desiredInput = $('#desired-input');
  desiredInput.addEventListener('input', () => { state.desiredDirty = true; });
  $('#desired-minus').addEventListener('click', () => {
    desiredInput.value = Math.max(0, (parseInt(desiredInput.value, 10) || 0) - 1);
    state.desiredDirty = true;
  });
  $('#desired-plus').addEventListener('click', () => {
    desiredInput.value = (parseInt(desiredInput.value, 10) || 0) + 1;
    state.desiredDirty = true;
  });
  $('#desired-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const svc = currentService();
    const desired = parseInt(desiredInput.value, 10);
    if (!svc || !(desired >= 0)) { say('enter a number of replicas', true); return; }
    try {
      const r = await api('PUT', `/api/v1/services/${encodeURIComponent(svc.name)}/desired`, { desired, reason: 'manual (dashboard)' });
      say(r.clamped ? `desired ${r.from} → ${r.to} (${r.clamped})` : `desired ${r.from} → ${r.to}`);
      state.desiredDirty = false;
      poll();
    } catch (err) {
      say(err.message, true);
    }
  });
  $('#rollback').addEventListener('click', async () => {
    const svc = currentService();
    if (!svc || !confirm(`Roll ${svc.name} back to its previous version?`)) return;
    try {
      await api('POST', `/api/v1/services/${encodeURIComponent(svc.name)}/rollback`, { reason: 'rollback from the dashboard' });
      say('rollback started; see the events');
    } catch (err) {
      say(err.message, true);
    }
  });
  $('#replicas').addEventListener('click', async (e) => {
    const button = e.target.closest('button[data-protect]');
    if (!button) return;
    const id = button.dataset.protect;
    const protect = button.dataset.on !== 'true';
    button.disabled = true;
    try {
      const r = await api('POST', `/api/v1/replicas/${encodeURIComponent(id)}/protect`, { protected: protect });
      say(r.message || `${id} ${protect ? 'protected' : 'unprotected'}`);
      poll();
    } catch (err) {
      say(err.message, true);
      button.disabled = false;
    }
  });

  // -------------------------------------------------------------- data
  function currentService() {
    return state.services.find((s) => s.name === state.current) || state.services[0];
  }

  let polling = false;
  async function poll() {
    if (polling) return;
    polling = true;
    try {
      const status = await api('GET', '/api/v1/status');
      state.services = status.services;
      state.listeners = status.listeners || [];
      if (state.listeners.some((l) => l.tls) && Date.now() - state.certsAt >= CERTS_MS) {
        state.certsAt = Date.now();
        try { state.certs = await api('GET', '/api/v1/certs'); } catch (_) { /* keep the last answer */ }
      }
      if (!state.services.some((s) => s.name === state.current) && state.services.length) state.current = state.services[0].name;
      const svc = currentService();
      if (svc) {
        const list = state.points.get(svc.name) || [];
        const last = list.length ? list[list.length - 1].time_ms : 0;
        const since = last || Date.now() - WINDOW_MS;
        const points = await api('GET', `/api/v1/metrics?service=${encodeURIComponent(svc.name)}&since=${Math.floor(since)}`);
        for (const p of points) {
          if (list.length && p.time_ms <= list[list.length - 1].time_ms) continue;
          // [[id, cpu], ...] -> {id: cpu}
          p.replica_cpu = Object.fromEntries(p.replica_cpu || []);
          list.push(p);
        }
        if (list.length) {
          state.now = list[list.length - 1].time_ms;
          const cut = state.now - WINDOW_MS;
          while (list.length && list[0].time_ms < cut) list.shift();
        }
        state.points.set(svc.name, list);
        // Predictive policies' forecasts change hourly: read them once a minute.
        const known = state.forecasts.get(svc.name);
        if (!known || Date.now() - known.at >= 60 * 1000) {
          try {
            const list = await api('GET', `/api/v1/services/${encodeURIComponent(svc.name)}/forecast`);
            state.forecasts.set(svc.name, { at: Date.now(), list });
          } catch (_) { /* keep the last answer */ }
        }
      }
      setConn(true, 'live');
      renderAll();
    } catch (err) {
      setConn(false, err.status === 401 ? 'token needed' : 'disconnected');
    } finally {
      polling = false;
    }
  }

  async function follow() {
    for (;;) {
      try {
        const headers = { Accept: 'text/event-stream' };
        if (state.token) headers.Authorization = `Bearer ${state.token}`;
        const response = await fetch(`/api/v1/events?follow=1&after=${state.lastSeq}`, { headers, cache: 'no-store' });
        if (!response.ok || !response.body) throw new Error(String(response.status));
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let buffer = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
          let cut;
          const batch = [];
          while ((cut = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, '')).join('\n');
            if (!data) continue;
            try { batch.push(JSON.parse(data)); } catch (_) { /* skip */ }
          }
          if (batch.length) addEvents(batch);
        }
      } catch (_) {
        // Reconnect below.
      }
      await sleep(2000);
    }
  }

  function addEvents(batch) {
    const fresh = batch.filter((e) => e.seq > state.lastSeq);
    if (!fresh.length) return;
    state.lastSeq = fresh[fresh.length - 1].seq;
    state.events.push(...fresh);
    if (state.events.length > MAX_EVENTS) state.events.splice(0, state.events.length - MAX_EVENTS);
    renderEvents(fresh);
    const svc = currentService();
    if (svc) renderCharts(svc);
  }

  // ------------------------------------------------------------ render
  function renderAll() {
    renderTabs();
    renderListeners();
    const svc = currentService();
    if (!svc) return;
    renderSummary(svc);
    renderTable(svc);
    renderCharts(svc);
    renderScalingEvents();
  }

  // One panel per [listener.NAME]: addresses, TLS, routes, and each
  // certificate (from GET /api/v1/certs when it answered, else from the
  // status document) with its days left.
  const DAY_MS = 86400 * 1000;
  function daysLeftText(notAfter) {
    const ms = Date.parse(notAfter) - Date.now();
    if (!isFinite(ms)) return { text: '', cls: '' };
    if (ms <= 0) return { text: `expired ${Math.floor(-ms / DAY_MS)} days ago`, cls: 'expired' };
    const days = Math.floor(ms / DAY_MS);
    return { text: days === 1 ? '1 day left' : `${days} days left`, cls: days < CERT_SOON_DAYS ? 'soon' : '' };
  }
  function routeText(r) {
    const parts = [];
    if (r.host) parts.push(`host ${r.host}`);
    if (r.path_prefix) parts.push(`path ${r.path_prefix}*`);
    if (r.methods && r.methods.length) parts.push(r.methods.join(','));
    for (const [k, v] of Object.entries(r.headers || {})) parts.push(`${k}: ${v}`);
    return parts.length ? parts.join(' · ') : (r.rule || 'default');
  }
  function certsOf(l) {
    if (state.certs) {
      return state.certs.filter((c) => c.listener === l.name).map((c) => ({
        names: c.domains, not_after: c.not_after, expired: c.expired, source: c.source,
        renews_at: c.renews_at, error: c.error, file: c.file,
      }));
    }
    return (l.certificates || []).map((c) => ({ ...c, source: null, error: null }));
  }
  function renderListeners() {
    const box = $('#listeners');
    box.hidden = !state.listeners.length;
    if (!state.listeners.length) return;
    const panels = state.listeners.map((l) => {
      const div = el('div', { class: 'listener', 'data-listener': l.name });
      const h = el('h3', {}, l.name);
      h.append(badge(l.tls ? 'tls' : 'plain', l.tls ? 'TLS' : 'no TLS'));
      div.append(h);
      const addr = [l.tls ? `https://${l.listen}` : `http://${l.listen}`];
      if (l.http) addr.push(`http://${l.http} → redirects here`);
      if (l.unrouted) addr.push(`${l.unrouted} unrouted (404)`);
      div.append(el('p', { class: 'addr mono' }, addr.join(' · ')));
      div.append(el('h4', {}, 'Routes'));
      const routes = el('ul', { class: 'routes' });
      for (const r of l.routes || []) {
        const li = el('li', { 'data-service': r.service });
        li.append(document.createTextNode(routeText(r)), el('span', { class: 'arrow' }, ' → '), el('b', {}, r.service));
        routes.append(li);
      }
      if (!(l.routes || []).length) routes.append(el('li', { class: 'msg' }, 'no routes'));
      div.append(routes);
      if (l.tls) {
        div.append(el('h4', {}, 'Certificates'));
        const ul = el('ul', { class: 'certs' });
        for (const c of certsOf(l)) {
          const left = c.not_after ? daysLeftText(c.not_after) : { text: 'none yet', cls: 'expired' };
          const cls = c.expired ? 'expired' : left.cls;
          const li = el('li', { class: `cert ${cls}`, 'data-names': (c.names || []).join(',') });
          const top = el('div');
          top.append(el('span', { class: 'mono' }, (c.names || []).join(', ')), document.createTextNode(' '));
          if (c.source) top.append(badge('source', c.source), document.createTextNode(' '));
          top.append(el('span', { class: 'left' }, left.text));
          li.append(top);
          const sub = [];
          if (c.not_after) sub.push(`not after ${c.not_after}`);
          if (c.renews_at) sub.push(`renews ${c.renews_at}`);
          if (sub.length) li.append(el('div', { class: 'msg' }, sub.join(' · ')));
          if (c.error) li.append(el('div', { class: 'err' }, c.error));
          ul.append(li);
        }
        if (!ul.children.length) ul.append(el('li', { class: 'msg' }, 'no certificate'));
        div.append(ul);
        const shown = certsOf(l).some((c) => c.error === l.tls_error);
        if (l.tls_error && !shown) div.append(el('p', { class: 'err' }, `reload failed: ${l.tls_error}`));
      }
      return div;
    });
    $('#listener-panels').replaceChildren(...panels);
  }

  function renderTabs() {
    const nav = $('#services');
    const names = state.services.map((s) => s.name);
    if (nav.dataset.names === names.join(',') && nav.dataset.current === state.current) return;
    nav.dataset.names = names.join(',');
    nav.dataset.current = state.current;
    nav.replaceChildren(...names.map((name) => {
      const b = el('button', { type: 'button', 'aria-current': String(name === state.current) }, name);
      b.addEventListener('click', () => {
        state.current = name;
        state.desiredDirty = false;
        history.replaceState(null, '', `?service=${encodeURIComponent(name)}`);
        renderEvents(null);
        renderAll();
        poll();
      });
      return b;
    }));
  }

  // The points of the last `ms` (the cards read 10 s, not one second: a
  // single second is noisy, and a screenshot's own CPU use shows in it).
  const CARD_MS = 10 * 1000;
  function recentPoints(svc, ms = CARD_MS) {
    const list = state.points.get(svc.name) || [];
    if (!list.length) return [];
    const end = list[list.length - 1].time_ms;
    return list.filter((p) => p.time_ms > end - ms);
  }
  const mean = (xs) => {
    const v = xs.filter((x) => x != null && isFinite(x));
    return v.length ? v.reduce((a, b) => a + b, 0) / v.length : null;
  };

  function renderSummary(svc) {
    const recent = recentPoints(svc);
    const avg = (f) => mean(recent.map(f));
    const rps = avg((p) => p.requests_per_s);
    const offered = avg((p) => (p.traffic ? p.traffic.offered_per_s : null));
    const p99 = avg((p) => p.p99_ms);
    const p50 = avg((p) => p.p50_ms);
    const cpu = avg((p) => p.cpu_mean);
    const inFlight = svc.replicas.reduce((n, r) => n + r.in_flight, 0);
    $('#s-desired').textContent = svc.desired;
    $('#s-bounds').textContent = `min ${svc.min} · max ${svc.max}`;
    $('#s-in-service').textContent = svc.in_service;
    $('#s-pending').textContent = svc.pending ? `${svc.pending} pending` : 'none pending';
    $('#s-rps').textContent = recent.length ? fmtNum(rps) : '–';
    $('#s-rps').title = 'requests answered per second, mean of the last 10 s';
    const sat = svc.saturation;
    const now = sat && sat.queued ? `${sat.queued} queued` : `${inFlight} in flight`;
    $('#s-inflight').textContent = offered != null ? `offered ${fmtNum(offered, 0)} · ${now}` : now;
    $('#s-inflight').title = 'offered: requests that arrived per second (10 s avg), served or not; then queued or in flight now';
    $('#s-p99').textContent = p99 != null ? `${fmtNum(p99)} ms` : '–';
    $('#s-p50').textContent = p50 != null ? `p50 ${fmtNum(p50)} ms` : 'no data';
    $('#s-cpu').textContent = cpu != null ? `${fmtNum(cpu, 0)}%` : '–';
    $('#s-version').textContent = `version ${svc.version} · ${svc.driver}`;
    const holding = $('#holding');
    holding.hidden = !svc.holding;
    holding.textContent = svc.holding ? `Holding: ${svc.holding}` : '';
    if (!state.desiredDirty && document.activeElement !== desiredInput) desiredInput.value = svc.desired;
    desiredInput.max = String(svc.max);
    renderBanner(svc);
  }

  // The banner: the fleet is saturated (or settling after it), or the host
  // is full. Hidden otherwise.
  const SETTLE_MS = 5000; // the default settle time, when status has no holding line
  function renderBanner(svc) {
    const sat = svc.saturation;
    const host = svc.host;
    const holding = svc.holding || '';
    const holdPart = (word) => holding.split('; ').find((h) => h.includes(word));
    const lines = []; // [title, text]
    let kind = '';
    if (sat && sat.saturated) {
      kind = 'saturated';
      const parts = [`${sat.queued} request${sat.queued === 1 ? '' : 's'} queued`];
      if (sat.limit != null) parts.push(`${sat.at_limit} of ${sat.routable} replicas at their limit of ${sat.limit}`);
      if (sat.shed_per_s) parts.push(`${sat.shed_per_s} shed/s`);
      parts.push(`offered ${fmtNum(sat.offered_per_s)} req/s, served ${fmtNum(sat.served_per_s)} req/s`);
      if (sat.queue_time_ms != null) parts.push(`queue time ${fmtNum(sat.queue_time_ms)} ms`);
      lines.push(['Saturated', `${parts.join(', ')}.`]);
    } else {
      const settling = holdPart('settling after saturation');
      const recent = recentPoints(svc, SETTLE_MS).some((p) => p.traffic && p.traffic.saturated);
      if (settling || recent) {
        kind = 'settling';
        lines.push(['Settling after saturation', settling ? `${settling}.` : 'requests queued or were shed in the last few seconds; no scale-in until it settles.']);
      }
    }
    if (host && host.full) {
      kind = kind || 'host';
      let text = holdPart('host full') || host.message || `${fmtNum(host.busy_cpus)} of ${fmtNum(host.cpus)} CPUs busy`;
      text = text.replace(/^host full:\s*/, '');
      if (!text.includes('would not add capacity')) {
        text += '; more local replicas would not add capacity — lower cpu per replica, raise the host, or run on Swarm';
      }
      lines.push(['Host full', `${text}.`]);
    }
    const banner = $('#banner');
    banner.hidden = !kind;
    banner.dataset.kind = kind;
    banner.className = `banner ${kind === 'host' ? 'host' : ''}`;
    // The rows change only when the conditions do (an alert is announced);
    // the numbers under them change every second, quietly.
    const box = $('#banner-lines');
    const titles = lines.map(([title]) => title).join('|');
    if (box.dataset.titles !== titles) {
      box.dataset.titles = titles;
      box.replaceChildren(...lines.map(([title]) => {
        const row = el('p', { class: `line ${title === 'Host full' ? 'host' : ''}` });
        row.append(el('strong', {}, title), document.createTextNode(' '), el('span', { 'aria-live': 'off' }));
        return row;
      }));
    }
    lines.forEach(([, text], i) => { box.children[i].lastChild.textContent = text; });
    $('#banner-more').textContent = kind === 'saturated' && holdPart('saturated —')
      ? 'The autoscaler holds: no scale-in while requests queue, nor for a few seconds after.'
      : '';
  }

  function badge(cls, text) {
    return el('span', { class: `badge ${cls}` }, text);
  }

  function renderTable(svc) {
    const rows = svc.replicas.map((r) => {
      const tr = el('tr', { 'data-id': r.id, 'data-state': r.state, 'data-healthy': String(r.healthy) });
      const id = el('td', { class: 'mono' });
      id.append(swatch(colorOf(r.id)), document.createTextNode(r.id));
      const stateTd = el('td');
      // A warm pool member is beside the fleet: its state would read as serving.
      stateTd.append(r.pooled ? badge('warm_pool', 'warm pool') : badge(r.state, r.state.replace('_', ' ')));
      const health = el('td', { title: r.last_probe || '' });
      health.append(badge(r.health, r.health));
      const cpu = el('td', { class: 'num' }, r.cpu == null ? '–' : `${fmtNum(r.cpu, 0)}%`);
      if (r.cpu != null) {
        const bar = el('span', { class: 'bar' });
        const fill = el('span');
        fill.style.width = `${Math.min(100, Math.max(0, r.cpu))}%`;
        fill.style.background = colorOf(r.id);
        bar.append(fill);
        cpu.append(bar);
      }
      const prot = el('td');
      const button = el('button', {
        type: 'button',
        class: `small ${r.protected ? 'on' : 'secondary'}`,
        'data-protect': r.id,
        'data-on': String(r.protected),
        'aria-pressed': String(r.protected),
      }, r.protected ? 'Protected' : 'Protect');
      if (!canControl()) { button.disabled = true; button.title = 'needs the admin token'; }
      prot.append(button);
      tr.append(
        id,
        stateTd,
        health,
        el('td', {}, `v${r.version}`),
        cpu,
        el('td', { class: 'num' }, String(r.in_flight)),
        el('td', { class: 'num' }, String(r.requests)),
        el('td', { class: 'num' }, fmtBytes(r.rss_bytes)),
        el('td', { class: 'num' }, fmtAge(r.age_s)),
        prot,
      );
      return tr;
    });
    if (!rows.length) {
      const tr = el('tr');
      tr.append(el('td', { colspan: '10', class: 'msg' }, 'no replicas'));
      rows.push(tr);
    }
    $('#replicas tbody').replaceChildren(...rows);
  }

  const KIND_CLASS = {
    scaled: 'scaled',
    replica_unhealthy: 'bad', replica_exited: 'bad', replica_start_failed: 'bad', backoff: 'bad',
    replica_in_service: 'good',
    deploy_started: 'deploy', deploy_succeeded: 'deploy', deploy_rolling_back: 'bad', deploy_rolled_back: 'bad',
    saturated: 'warn', host_full: 'warn',
  };

  function eventItem(e, isNew) {
    const li = el('li', { 'data-kind': e.kind, class: isNew ? 'new' : '' });
    const t = Date.parse(e.time);
    li.append(el('time', { datetime: e.time, title: e.time }, isFinite(t) ? fmtTime(t) : e.time));
    li.append(el('span', { class: `kind ${KIND_CLASS[e.kind] || ''}` }, e.kind.replace(/_/g, ' ')));
    const why = el('span', { class: 'why' });
    if (e.replica) why.append(el('span', { class: 'who mono' }, e.replica));
    why.append(document.createTextNode(e.reason));
    li.append(why);
    return li;
  }

  function renderEvents(fresh) {
    const list = $('#events');
    const svc = state.current;
    const mine = (e) => !svc || e.service === svc;
    if (fresh === null || !list.childElementCount) {
      const shown = state.events.filter(mine).slice(-SHOWN_EVENTS).reverse();
      list.replaceChildren(...shown.map((e) => eventItem(e, false)));
    } else {
      for (const e of fresh.filter(mine)) list.prepend(eventItem(e, true));
      while (list.childElementCount > SHOWN_EVENTS) list.lastElementChild.remove();
    }
    $('#events-count').textContent = `${state.events.filter(mine).length} kept`;
    renderScalingEvents();
  }

  // ----------------------------------------------- scaling and deploys
  // The events drawn as markers on every graph, and listed with their
  // whole reason under the graphs (a marker's reason is one click away,
  // never hover only).
  const DEPLOY_KINDS = new Set(['deploy_started', 'deploy_succeeded', 'deploy_rolling_back', 'deploy_rolled_back']);
  const isMarked = (e) => (e.kind === 'scaled' && e.to != null && e.from !== e.to) || DEPLOY_KINDS.has(e.kind);
  const SHOWN_MARKED = 100;

  function markedEvents(name) {
    return state.events.filter((e) => e.service === name && isMarked(e) && isFinite(Date.parse(e.time)));
  }

  function markerOf(e) {
    const deploy = e.kind !== 'scaled';
    const dir = deploy ? 'deploy' : e.to > e.from ? 'out' : 'in';
    const what = deploy ? e.kind.replace(/_/g, ' ') : `${e.from} → ${e.to}`;
    return { t: Date.parse(e.time), v: deploy ? null : e.to, dir, seq: e.seq, title: `${fmtTime(Date.parse(e.time))} ${what}: ${e.reason}` };
  }

  const GLYPH = { out: '▲', in: '▼', deploy: '◆' };

  function renderScalingEvents() {
    const list = $('#scaling-events');
    const shown = markedEvents(state.current).slice(-SHOWN_MARKED).reverse();
    const key = `${state.current}|${state.selected}|${shown.map((e) => e.seq).join(',')}`;
    if (list.dataset.key === key) return;
    list.dataset.key = key;
    if (!shown.length) {
      list.replaceChildren(el('li', { class: 'empty-msg' }, 'No scaling or deploy yet: each one appears here, with why, and as a marker on the graphs.'));
      return;
    }
    list.replaceChildren(...shown.map((e) => {
      const m = markerOf(e);
      const selected = e.seq === state.selected;
      const li = el('li', { 'data-seq': String(e.seq), 'data-kind': e.kind, class: selected ? 'selected' : '', tabindex: '0' });
      if (selected) li.setAttribute('aria-current', 'true');
      const t = Date.parse(e.time);
      li.append(el('time', { datetime: e.time, title: e.time }, fmtTime(t)));
      const kind = el('span', { class: `kind ${KIND_CLASS[e.kind] || ''}` });
      kind.append(el('span', { class: `glyph ${m.dir === 'deploy' ? 'deploy' : ''}`, 'aria-hidden': 'true' }, GLYPH[m.dir]), document.createTextNode(e.kind.replace(/_/g, ' ')));
      li.append(kind);
      const why = el('span', { class: 'why' });
      if (e.kind === 'scaled') why.append(el('span', { class: 'change' }, `${e.from} → ${e.to}`));
      why.append(document.createTextNode(e.reason));
      li.append(why);
      return li;
    }));
  }

  // Picks an event: its markers stand out on every graph, its line in the
  // list is highlighted and scrolled into view.
  function select(seq, scroll) {
    state.selected = state.selected === seq && !scroll ? null : seq;
    renderScalingEvents();
    const svc = currentService();
    if (svc) renderCharts(svc);
    if (scroll && state.selected != null) {
      const li = document.querySelector(`#scaling-events li[data-seq="${state.selected}"]`);
      if (li) li.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
    }
  }

  $('#scaling-events').addEventListener('click', (e) => {
    const li = e.target.closest('li[data-seq]');
    if (li) select(Number(li.dataset.seq), false);
  });
  $('#scaling-events').addEventListener('keydown', (e) => {
    const li = e.target.closest('li[data-seq]');
    if (li && (e.key === 'Enter' || e.key === ' ')) { e.preventDefault(); select(Number(li.dataset.seq), false); }
  });

  // ------------------------------------------------------------ charts
  // The smallest top of the y axis at or above v whose quarters are round.
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const quarter = v / 4;
    const p = Math.pow(10, Math.floor(Math.log10(quarter)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= quarter) return 4 * m * p;
    return 40 * p;
  }

  // series: [{name, key, color, data: [[t, v|null]], step, area, dashed, dotted, right, unit}]
  // markers: [{t, v|null, dir: 'out'|'in'|'deploy', title, seq}] (v null: at the top)
  // bands: [{from, to, cls}] shaded time ranges (saturated, host full)
  //
  // The plot is redrawn each time; the markers live in their own layer and
  // are updated in place, so a marker keeps its focus and stays clickable.
  function drawChart(svg, { series, markers = [], bands = [], unit = '', yMax, integer = false, now, emptyText }) {
    const w = Math.max(200, svg.clientWidth || 400);
    const h = Math.max(120, svg.clientHeight || 190);
    const rightSeries = series.filter((s) => s.right);
    const pad = { l: 40, r: rightSeries.length ? 34 : 12, t: 10, b: 22 };
    svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
    let plot = svg.querySelector(':scope > g.plot');
    let layer = svg.querySelector(':scope > g.markers');
    let tip = svg.querySelector(':scope > g.tip');
    if (!plot || !layer || !tip) {
      plot = svgEl('g', { class: 'plot' });
      layer = svgEl('g', { class: 'markers' });
      tip = svgEl('g', { class: 'tip' });
      svg.replaceChildren(plot, layer, tip);
    }
    const all = series.flatMap((s) => s.data);
    const end = now || (all.length ? Math.max(...all.map((d) => d[0])) : Date.now());
    const first = all.length ? Math.min(...all.map((d) => d[0])) : end;
    const start = Math.min(first, end - MIN_SPAN_MS);
    const finite = (v) => v != null && isFinite(v);
    const leftValues = series.filter((s) => !s.right).flatMap((s) => s.data.map((d) => d[1])).filter(finite)
      .concat(markers.map((m) => m.v).filter(finite));
    const rightValues = rightSeries.flatMap((s) => s.data.map((d) => d[1])).filter(finite);
    const values = leftValues.concat(rightValues);
    let top = yMax != null ? yMax : niceMax(Math.max(0, ...leftValues) * 1.1);
    if (integer) top = Math.max(1, Math.ceil(top));
    const topR = Math.max(4, niceMax(Math.max(0, ...rightValues) * 1.1));
    const x = (t) => pad.l + ((t - start) / Math.max(1, end - start)) * (w - pad.l - pad.r);
    const y = (v) => pad.t + (1 - v / top) * (h - pad.t - pad.b);
    const yR = (v) => pad.t + (1 - v / topR) * (h - pad.t - pad.b);
    const nodes = [];
    for (const band of bands) {
      const x1 = Math.max(pad.l, x(band.from));
      const x2 = Math.min(w - pad.r, x(band.to));
      if (x2 <= x1) continue;
      // Saturated: the whole height; host full: a strip along the axis, so
      // both read where they overlap.
      const strip = band.cls === 'host' ? 6 : y(0) - pad.t;
      nodes.push(svgEl('rect', { class: `band ${band.cls}`, x: x1, y: y(0) - strip, width: x2 - x1, height: strip }));
    }
    const ticks = integer && top <= 8 ? Array.from({ length: top + 1 }, (_, i) => i) : [0, 0.25, 0.5, 0.75, 1].map((f) => f * top);
    for (const v of ticks) {
      nodes.push(svgEl('line', { class: 'grid', x1: pad.l, x2: w - pad.r, y1: y(v), y2: y(v) }));
      nodes.push(svgEl('text', { x: pad.l - 6, y: y(v) + 4, 'text-anchor': 'end' }, integer ? String(Math.round(v)) : fmtNum(v, top < 4 ? 2 : top < 40 ? 1 : 0)));
    }
    if (rightSeries.length) {
      for (const f of [0, 0.5, 1]) {
        const label = svgEl('text', { class: 'axis-r', x: w - pad.r + 5, y: yR(f * topR) + 4, 'text-anchor': 'start' }, fmtNum(f * topR, 0));
        label.style.fill = rightSeries[0].color;
        nodes.push(label);
      }
    }
    const xticks = Math.max(2, Math.min(6, Math.floor((w - pad.l - pad.r) / 90)));
    for (let i = 0; i <= xticks; i++) {
      const t = start + ((end - start) * i) / xticks;
      nodes.push(svgEl('text', { x: x(t), y: h - 6, 'text-anchor': i === 0 ? 'start' : i === xticks ? 'end' : 'middle' }, fmtTime(t)));
    }
    nodes.push(svgEl('line', { class: 'axis', x1: pad.l, x2: w - pad.r, y1: y(0), y2: y(0) }));
    const shownMarkers = markers.filter((m) => m.t >= start && m.t <= end + 2000);
    for (const m of shownMarkers) {
      const cls = `marker-line${m.dir === 'deploy' ? ' deploy' : ''}${m.seq === state.selected ? ' selected' : ''}`;
      nodes.push(svgEl('line', { class: cls, x1: x(m.t), x2: x(m.t), y1: pad.t, y2: y(0) }));
    }
    for (const s of series) {
      const sy = s.right ? yR : y;
      let d = '';
      let prev = null;
      for (const [t, v] of s.data) {
        if (!finite(v)) { prev = null; continue; }
        if (prev === null) d += `M${x(t).toFixed(1)},${sy(v).toFixed(1)}`;
        else if (s.step) d += `H${x(t).toFixed(1)}V${sy(v).toFixed(1)}`;
        else d += `L${x(t).toFixed(1)},${sy(v).toFixed(1)}`;
        prev = v;
      }
      if (!d) continue;
      if (s.area) {
        const pts = s.data.filter(([, v]) => finite(v));
        const a = `${d}L${x(pts[pts.length - 1][0]).toFixed(1)},${sy(0)}L${x(pts[0][0]).toFixed(1)},${sy(0)}Z`;
        nodes.push(svgEl('path', { class: 'area', d: a, fill: s.color, 'data-series': s.key || s.name }));
      }
      const path = svgEl('path', { class: `line${s.dashed ? ' dashed' : ''}${s.dotted ? ' dotted' : ''}`, d, stroke: s.color, 'data-series': s.key || s.name });
      path.append(svgEl('title', {}, s.name));
      nodes.push(path);
    }
    if (!values.length) {
      const why = all.length ? (emptyText || 'no data in this window') : 'waiting for data…';
      nodes.push(svgEl('text', { class: 'empty', x: (pad.l + w - pad.r) / 2, y: h / 2, 'text-anchor': 'middle' }, why));
    }
    plot.replaceChildren(...nodes);

    // Markers: ▲ scaled out, ▼ scaled in (at the new desired count on the
    // replicas graph, at the top elsewhere), ◆ a deploy.
    const existing = new Map([...layer.children].map((n) => [n.getAttribute('data-seq'), n]));
    for (const m of shownMarkers) {
      const cx = x(m.t);
      const cy = finite(m.v) ? y(m.v) : pad.t + 5;
      const r = m.seq === state.selected ? 7.5 : 6;
      const pts = m.dir === 'deploy'
        ? `${cx},${cy - r} ${cx + r},${cy} ${cx},${cy + r} ${cx - r},${cy}`
        : m.dir === 'in'
          ? `${cx - r},${cy - r + 1} ${cx + r},${cy - r + 1} ${cx},${cy + r}`
          : `${cx - r},${cy + r - 1} ${cx + r},${cy + r - 1} ${cx},${cy - r}`;
      let node = existing.get(String(m.seq));
      if (node) {
        existing.delete(String(m.seq));
      } else {
        node = svgEl('polygon', { 'data-seq': String(m.seq), tabindex: '0', role: 'button' });
        node.append(svgEl('title'));
        layer.append(node);
      }
      node.setAttribute('points', pts);
      node.setAttribute('class', `marker ${m.dir}${m.seq === state.selected ? ' selected' : ''}`);
      node.setAttribute('aria-label', `${m.title} (show in the list)`);
      node.firstChild.textContent = m.title;
    }
    for (const n of existing.values()) n.remove();

    // Hover read-out: the values of the second under the pointer.
    const tipNodes = [];
    const hx = state.hover.get(svg.id);
    if (hx != null && all.length && hx >= pad.l && hx <= w - pad.r) {
      const t = start + ((hx - pad.l) / (w - pad.l - pad.r)) * (end - start);
      const lines = [fmtTime(t)];
      for (const s of series) {
        let best = null;
        for (const d of s.data) if (best === null || Math.abs(d[0] - t) < Math.abs(best[0] - t)) best = d;
        if (best && best[1] != null) lines.push(`${s.name}: ${integer ? best[1] : fmtNum(best[1])}${s.unit != null ? s.unit : unit}`);
      }
      tipNodes.push(svgEl('line', { class: 'hover-line', x1: hx, x2: hx, y1: pad.t, y2: y(0) }));
      const shown = lines.slice(0, 7);
      const boxW = Math.max(...shown.map((l) => l.length)) * 6.4 + 12;
      const bx = hx + boxW + 12 > w ? hx - boxW - 8 : hx + 8;
      tipNodes.push(svgEl('rect', { class: 'tip-box', x: bx, y: pad.t, width: boxW, height: shown.length * 14 + 8, rx: 6 }));
      shown.forEach((l, i) => tipNodes.push(svgEl('text', { class: 'tip-text', x: bx + 6, y: pad.t + 15 + i * 14 }, l)));
    }
    tip.replaceChildren(...tipNodes);
    if (!svg.dataset.hooked) {
      svg.dataset.hooked = '1';
      svg.addEventListener('mousemove', (e) => {
        const rect = svg.getBoundingClientRect();
        state.hover.set(svg.id, ((e.clientX - rect.left) / rect.width) * w);
        const svc = currentService();
        if (svc) renderCharts(svc);
      });
      svg.addEventListener('mouseleave', () => {
        state.hover.delete(svg.id);
        const svc = currentService();
        if (svc) renderCharts(svc);
      });
      // A marker's reason on click (or Enter): its event in the list.
      svg.addEventListener('click', (e) => {
        const marker = e.target.closest('.marker[data-seq]');
        if (marker) select(Number(marker.getAttribute('data-seq')), true);
      });
      svg.addEventListener('keydown', (e) => {
        const marker = e.target.closest('.marker[data-seq]');
        if (marker && (e.key === 'Enter' || e.key === ' ')) { e.preventDefault(); select(Number(marker.getAttribute('data-seq')), true); }
      });
    }
  }

  // Runs of seconds where `test(point)` holds, as [from, to] time ranges.
  function runs(pts, test, cls) {
    const out = [];
    for (const p of pts) {
      if (!test(p)) continue;
      const from = p.time_ms - 1000;
      const last = out[out.length - 1];
      if (last && from - last.to <= 1500) last.to = p.time_ms;
      else out.push({ from, to: p.time_ms, cls });
    }
    return out;
  }

  function renderCharts(svc) {
    const pts = state.points.get(svc.name) || [];
    const now = pts.length ? pts[pts.length - 1].time_ms : state.now;
    const css = getComputedStyle(document.documentElement);
    const color = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
    const c1 = color('--c1', '#1f6feb');
    const c2 = color('--c2', '#e8590c');
    const c3 = color('--c3', '#0d9488');
    const bad = color('--bad', '#d92d20');
    const traffic = (f) => pts.map((p) => [p.time_ms, p.traffic ? f(p.traffic) : null]);
    const bands = runs(pts, (p) => p.traffic && p.traffic.saturated, 'sat')
      .concat(runs(pts, (p) => p.traffic && p.traffic.host_full, 'host'));
    const marked = markedEvents(svc.name).map(markerOf).filter((m) => !now || m.t >= now - WINDOW_MS);
    // Off the replicas graph, every marker sits at the top of the plot.
    const top = marked.map((m) => ({ ...m, v: null }));
    // The predictive forecast of the requests, as a dotted step line
    // (5-minute buckets) over the window.
    const predicted = ((state.forecasts.get(svc.name) || {}).list || [])
      .find((f) => f.metric === 'requests_per_replica' && f.state === 'ready');
    const forecastData = [];
    if (predicted && now) {
      predicted.values.forEach((v, i) => {
        const t = predicted.start_ms + i * predicted.step_s * 1000;
        if (t + predicted.step_s * 1000 >= now - WINDOW_MS && t <= now) forecastData.push([Math.max(t, now - WINDOW_MS), v]);
      });
      if (forecastData.length) forecastData.push([now, forecastData[forecastData.length - 1][1]]);
    }
    $('#forecast-key').hidden = !forecastData.length;
    drawChart($('#c-rps'), {
      now,
      unit: ' req/s',
      bands,
      markers: top,
      series: [
        ...(forecastData.length ? [{ name: 'forecast', key: 'forecast', color: c3, step: true, dotted: true, data: forecastData }] : []),
        { name: 'served', key: 'served', color: c1, area: true, data: pts.map((p) => [p.time_ms, p.requests_per_s]) },
        { name: 'offered', key: 'offered', color: c2, data: traffic((t) => t.offered_per_s) },
        { name: 'shed', key: 'shed', color: bad, area: true, dotted: true, data: traffic((t) => t.shed_per_s) },
        { name: 'queued', key: 'queued', color: c3, dashed: true, right: true, unit: ' requests', data: traffic((t) => t.queued) },
      ],
    });
    drawChart($('#c-latency'), {
      now,
      unit: ' ms',
      bands,
      markers: top,
      emptyText: 'no latency data in this window',
      series: [
        { name: 'p50', key: 'p50', color: c1, data: pts.map((p) => [p.time_ms, p.p50_ms]) },
        { name: 'p99', key: 'p99', color: c2, data: pts.map((p) => [p.time_ms, p.p99_ms]) },
        { name: 'queue time', key: 'queue', color: c3, dashed: true, data: traffic((t) => t.queue_ms) },
      ],
    });
    const ids = [...new Set(pts.flatMap((p) => Object.keys(p.replica_cpu || {})))];
    drawChart($('#c-cpu'), {
      now,
      unit: '%',
      bands,
      markers: top,
      yMax: Math.max(100, niceMax(Math.max(0, ...pts.flatMap((p) => Object.values(p.replica_cpu || {}))) * 1.1)),
      series: ids.map((id) => ({ name: id, color: colorOf(id), data: pts.map((p) => [p.time_ms, p.replica_cpu && id in p.replica_cpu ? p.replica_cpu[id] : null]) })),
    });
    const legend = $('#cpu-legend');
    legend.replaceChildren(...ids.map((id) => {
      const s = el('span', { class: 'mono' });
      s.append(swatch(colorOf(id)), document.createTextNode(id));
      return s;
    }));
    // Shadow policies: what they would run, never applied (dotted).
    const shadowed = pts.some((p) => p.shadow_desired != null);
    $('#shadow-legend').hidden = !shadowed;
    drawChart($('#c-replicas'), {
      now,
      integer: true,
      bands,
      yMax: Math.max(svc.max, ...pts.map((p) => Math.max(p.desired, p.in_service, p.shadow_desired ?? 0))),
      series: [
        { name: 'in service', key: 'in_service', color: c2, step: true, area: true, data: pts.map((p) => [p.time_ms, p.in_service]) },
        { name: 'desired', key: 'desired', color: c1, step: true, dashed: true, data: pts.map((p) => [p.time_ms, p.desired]) },
        ...(shadowed ? [{ name: 'shadow', key: 'shadow', color: c3, step: true, dotted: true, data: pts.map((p) => [p.time_ms, p.shadow_desired ?? null]) }] : []),
      ],
      markers: marked,
    });
  }

  window.addEventListener('resize', () => { const svc = currentService(); if (svc) renderCharts(svc); });

  // -------------------------------------------------------------- start
  showTokenBox(!canControl());
  poll();
  setInterval(poll, 1000);
  follow();
})();
