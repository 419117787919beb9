// Parley web client: plain JavaScript, no framework, no build step.
//
// Talks to the server it is served from: REST for accounts, history, groups
// and files; one WebSocket (/ws/chat?token=…) for everything live. The token
// lives in sessionStorage, so two tabs can be two different users.
//
// The sidebar is one list of private conversations and groups, newest
// activity first, loaded from GET /conversations (all pages, bounded) when a
// page starts and again when the socket reconnects; its last messages give
// the first `sync` cursor, so the socket only replays what arrived after the
// list. Live frames keep it current in between: a new message moves its
// conversation up and counts as unread, reads count down, and the unread
// numbers come back from the server with every reload of the list.
//
// Messages change after they are sent (replies quote the original; edits,
// tombstones and reactions arrive as `message_updated` frames carrying the
// whole new state, which replaces the old in place). The `sync` cursor is the
// highest message id or change_id seen on the socket.
//
// Every piece of user content reaches the page through textContent or
// attribute setters, never through innerHTML.

'use strict';

(() => {
  // ---- constants ------------------------------------------------------------

  const PAGE_SIZE = 50;
  const TYPING_SEND_EVERY_MS = 1000;
  const TYPING_SHOW_MS = 3000;
  const FILE_CONTENT_TYPE = 'application/vnd.parley.file+json';
  const FILE_MESSAGE_TYPE = 'file';
  const FILE_URL_RE = /^\/files\/[A-Za-z0-9-]{1,64}$/;
  const TOKEN_KEY = 'parley.token';
  const USER_KEY = 'parley.username';
  const ACTIVE_KEY = 'parley.active';
  const MAX_NOTICES = 4;
  const LIST_PAGE = 100; // GET /conversations page size (its maximum)
  const MAX_LIST_PAGES = 20; // at most 2000 conversations in the sidebar
  const REACTION_CHOICES = ['👍', '❤️', '😂', '🎉', '😮', '😢'];
  const MAX_JUMP_PAGES = 40; // older pages loaded at most to reach a quoted message
  const HIGHLIGHT_MS = 2500;

  // ---- small helpers ----------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  /** Creates an element with a class and optional text (always via textContent). */
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  const lower = (s) => String(s).toLowerCase();
  const sameUser = (a, b) => a != null && b != null && lower(a) === lower(b);

  function uuid() {
    if (window.crypto && typeof crypto.randomUUID === 'function') return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  function formatTime(ts) {
    const d = ts ? new Date(ts) : new Date();
    if (Number.isNaN(d.getTime())) return '';
    const now = new Date();
    const sameDay = d.toDateString() === now.toDateString();
    const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    return sameDay ? time : `${d.toLocaleDateString([], { month: 'short', day: 'numeric' })} ${time}`;
  }

  function formatSize(n) {
    const size = Number(n) || 0;
    if (size < 1024) return `${size} B`;
    if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KB`;
    return `${(size / (1024 * 1024)).toFixed(1)} MB`;
  }

  /** The username and expiry inside a JWT, if it can be read. */
  function tokenClaims(token) {
    try {
      const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      const json = decodeURIComponent(
        Array.from(atob(part), (c) => '%' + c.charCodeAt(0).toString(16).padStart(2, '0')).join(''),
      );
      return JSON.parse(json);
    } catch (_) {
      return {};
    }
  }

  // ---- state ------------------------------------------------------------------

  /**
   * One conversation's loaded messages. `key` is `u:<lower username>` for a
   * private conversation and `g:<id>` for a group.
   */
  function newConversation(key) {
    return {
      key,
      byId: new Map(), // id → message
      pending: new Map(), // client_id → pending message (not yet acked)
      loaded: false,
      loading: false,
      hasOlder: false,
      oldestId: null,
    };
  }

  const state = {
    token: null,
    me: null,
    ws: null,
    wsOpen: false,
    syncing: false,
    reconnectAttempt: 0,
    reconnectTimer: null,
    reconnected: false, // set after the first open: later opens also reload the conversation list
    stopped: true,
    maxId: 0, // the highest message id or change_id seen on the socket (the `sync` cursor)
    // The conversation list. Each entry has lastId and last (its newest
    // message), activity (ms), unread (a count) and counted (ids counted live
    // since the list was loaded, which its next load may not include yet).
    contacts: new Map(), // lower name → {name, lastId, last, activity, unread, counted}
    groups: new Map(), // id → {id, name, description, role, members, lastId, last, activity, unread, counted}
    presence: new Map(), // lower name → 'online' | 'offline'
    convs: new Map(), // key → conversation
    active: null, // {kind:'user', name} | {kind:'group', id}
    typing: new Map(), // key → {users: Map<lower name, {name, until}>}
    typingSentAt: new Map(), // key → ms
    readSent: new Set(), // private message ids we already marked read
    groupReadSent: new Map(), // group id → highest id we sent read for
    listLoading: null, // the GET /conversations walk under way
    listAgain: false, // another walk was asked for while one ran
    listLoaded: false,
    listTimer: null,
    descriptionsLoading: false,
    observer: null,
    replyTo: new Map(), // conversation key → id of the message being answered
    editing: null, // {id, draft} while a message is edited inline
    confirmDelete: null, // id whose Delete button asks for confirmation
    picker: null, // id whose reaction picker is open
    highlight: null, // {id, until}: the message just jumped to
    search: null, // {q, before, offset, results, more, loading}
  };

  const keyOfUser = (name) => `u:${lower(name)}`;
  const keyOfGroup = (id) => `g:${id}`;
  const activeKey = () =>
    state.active ? (state.active.kind === 'user' ? keyOfUser(state.active.name) : keyOfGroup(state.active.id)) : null;

  function conv(key) {
    let c = state.convs.get(key);
    if (!c) {
      c = newConversation(key);
      state.convs.set(key, c);
    }
    return c;
  }

  // ---- notices ------------------------------------------------------------------

  function notify(text, kind = 'error') {
    const box = $('notices');
    const node = $('notice-template').content.firstElementChild.cloneNode(true);
    node.classList.add(`notice-${kind}`);
    node.dataset.kind = kind;
    node.querySelector('.notice-text').textContent = text;
    node.querySelector('.notice-close').addEventListener('click', () => node.remove());
    box.appendChild(node);
    while (box.children.length > MAX_NOTICES) box.firstElementChild.remove();
    if (kind !== 'error') setTimeout(() => node.remove(), 5000);
  }

  // ---- REST -----------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  /** Calls the API; throws ApiError with the server's `detail` on failure. */
  async function api(method, path, body, { raw = false } = {}) {
    const headers = {};
    if (state.token) headers.Authorization = `Bearer ${state.token}`;
    let payload;
    if (body instanceof FormData) {
      payload = body;
    } else if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      payload = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, { method, headers, body: payload });
    } catch (_) {
      throw new ApiError(0, 'cannot reach the server');
    }
    if (!res.ok) {
      let detail = `${res.status} ${res.statusText}`;
      try {
        const err = await res.json();
        if (err && err.detail) detail = err.detail;
      } catch (_) {
        /* not a JSON body */
      }
      if (res.status === 401 && state.token && !path.startsWith('/auth/')) {
        signOut('Your session has expired. Please sign in again.');
      }
      throw new ApiError(res.status, detail);
    }
    if (raw) return res;
    if (res.status === 204) return null;
    return res.json();
  }

  function showApiError(err, prefix) {
    const detail = err instanceof ApiError ? err.message : String(err && err.message ? err.message : err);
    notify(prefix ? `${prefix}: ${detail}` : detail, 'error');
  }

  // ---- auth screen ----------------------------------------------------------------

  function setAuthMode(mode) {
    const form = $('auth-form');
    form.dataset.mode = mode;
    $('tab-login').setAttribute('aria-selected', String(mode === 'login'));
    $('tab-register').setAttribute('aria-selected', String(mode === 'register'));
    $('auth-submit').textContent = mode === 'login' ? 'Sign in' : 'Create account';
    $('auth-password').setAttribute('autocomplete', mode === 'login' ? 'current-password' : 'new-password');
    $('auth-email').required = mode === 'register';
  }

  async function onAuthSubmit(ev) {
    ev.preventDefault();
    const mode = $('auth-form').dataset.mode;
    const username = $('auth-username').value.trim();
    const password = $('auth-password').value;
    const email = $('auth-email').value.trim();
    const button = $('auth-submit');
    button.disabled = true;
    try {
      if (mode === 'register') {
        await api('POST', '/auth/register', { username, email, password });
      }
      const login = await api('POST', '/auth/login', { username, password });
      $('auth-password').value = '';
      startSession(login.access_token, username);
    } catch (err) {
      showApiError(err, mode === 'register' ? 'Could not create the account' : 'Could not sign in');
    } finally {
      button.disabled = false;
    }
  }

  // ---- session lifecycle ----------------------------------------------------------

  function startSession(token, typedName) {
    const claims = tokenClaims(token);
    state.token = token;
    state.me = typeof claims.name === 'string' && claims.name ? claims.name : typedName;
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(USER_KEY, state.me);
    state.stopped = false;
    try {
      // Earlier versions kept a contact list here; GET /conversations replaced it.
      localStorage.removeItem(`parley.cache.${lower(state.me)}`);
    } catch (_) {
      /* storage disabled */
    }

    $('auth-view').hidden = true;
    $('chat-view').hidden = false;
    $('me-name').textContent = state.me;
    document.title = `Parley — ${state.me}`;
    renderSidebar();
    renderConversation();
    // The list first: its newest message ids are where the socket's `sync` starts.
    refreshList().then(() => {
      if (state.token !== token) return;
      restoreActive();
      connect();
    });
  }

  /** Reopens the conversation that was open before a reload. */
  function restoreActive() {
    if (state.active || !state.me) return;
    try {
      const t = JSON.parse(sessionStorage.getItem(ACTIVE_KEY) || 'null');
      if (t && t.kind === 'user' && typeof t.name === 'string' && t.name) {
        ensureContact(t.name);
        openConversation({ kind: 'user', name: t.name });
      } else if (t && t.kind === 'group' && state.groups.has(t.id)) {
        openConversation({ kind: 'group', id: t.id });
      }
    } catch (_) {
      /* nothing to restore */
    }
  }

  /** Signs out; `revoke` also asks the server to revoke the token (the Sign out button). */
  function signOut(message, revoke = false) {
    if (revoke && state.token) {
      // Best effort: the token dies on the server even if this page is closed next.
      fetch('/auth/logout', {
        method: 'POST',
        headers: { Authorization: `Bearer ${state.token}` },
        keepalive: true,
      }).catch(() => {});
    }
    state.stopped = true;
    if (state.ws) {
      try {
        state.ws.close(1000, 'signed out');
      } catch (_) {
        /* already closed */
      }
    }
    clearTimeout(state.reconnectTimer);
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(USER_KEY);
    sessionStorage.removeItem(ACTIVE_KEY);
    Object.assign(state, {
      token: null,
      me: null,
      ws: null,
      wsOpen: false,
      syncing: false,
      reconnected: false,
      maxId: 0,
      active: null,
      listLoaded: false,
      listAgain: false,
    });
    clearTimeout(state.listTimer);
    state.listTimer = null;
    for (const m of [state.contacts, state.groups, state.presence, state.convs, state.typing, state.typingSentAt]) m.clear();
    state.readSent.clear();
    state.groupReadSent.clear();
    state.replyTo.clear();
    state.editing = null;
    state.confirmDelete = null;
    state.picker = null;
    closeSearch();
    $('chat-view').hidden = true;
    $('auth-view').hidden = false;
    document.title = 'Parley';
    $('message-list').replaceChildren();
    if (message) notify(message, 'info');
    $('auth-username').focus();
  }

  // ---- WebSocket --------------------------------------------------------------------

  function setConnState(s, label) {
    $('chat-view').dataset.conn = s;
    const node = $('conn-status');
    node.dataset.state = s;
    node.textContent = label;
  }

  function connect() {
    if (state.stopped || !state.token) return;
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const url = `${proto}//${location.host}/ws/chat?token=${encodeURIComponent(state.token)}`;
    setConnState('connecting', state.reconnectAttempt ? 'Reconnecting…' : 'Connecting…');
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (_) {
      scheduleReconnect();
      return;
    }
    state.ws = ws;
    let opened = false;

    ws.addEventListener('open', () => {
      if (state.ws !== ws) return;
      opened = true;
      state.wsOpen = true;
      state.reconnectAttempt = 0;
      setConnState('online', 'Online');
      // Catch up on anything we missed, then resend unacknowledged messages
      // (same client_id: the server stores each at most once).
      state.syncing = true;
      sendFrame({ type: 'sync', since: state.maxId });
      for (const c of state.convs.values()) {
        for (const p of c.pending.values()) if (p.frame && !p.failed) sendFrame(p.frame);
      }
      // Reads and messages elsewhere while we were away: the server's counts.
      if (state.reconnected) scheduleListRefresh();
      state.reconnected = true;
    });

    ws.addEventListener('message', (ev) => {
      if (state.ws !== ws) return;
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch (_) {
        return;
      }
      handleFrame(frame);
    });

    ws.addEventListener('close', () => {
      if (state.ws !== ws) return;
      state.ws = null;
      state.wsOpen = false;
      state.syncing = false;
      if (state.stopped) return;
      if (!opened) {
        // The handshake failed: an expired token answers 401; find out.
        api('GET', '/auth/me').catch(() => {});
      }
      scheduleReconnect();
    });
  }

  function scheduleReconnect() {
    if (state.stopped) return;
    const attempt = state.reconnectAttempt++;
    const base = Math.min(15000, 500 * 2 ** attempt);
    const delay = Math.round(base / 2 + Math.random() * (base / 2));
    setConnState('offline', `Offline — reconnecting in ${Math.ceil(delay / 1000)} s`);
    clearTimeout(state.reconnectTimer);
    state.reconnectTimer = setTimeout(connect, delay);
  }

  function sendFrame(frame) {
    if (!state.ws || !state.wsOpen) return false;
    try {
      state.ws.send(JSON.stringify(frame));
      return true;
    } catch (_) {
      return false;
    }
  }

  // ---- incoming frames ------------------------------------------------------------

  function handleFrame(f) {
    switch (f.type) {
      case 'message':
        onMessageFrame(f);
        break;
      case 'message_updated':
        onMessageUpdated(f);
        break;
      case 'ack':
        onAck(f);
        break;
      case 'receipt':
        onReceipt(f);
        break;
      case 'status':
        onPresence(f.user, f.status);
        break;
      case 'typing':
        onTyping(f);
        break;
      case 'synced':
        onSynced(f);
        break;
      case 'member_added':
      case 'member_removed':
      case 'role_changed':
        onMemberEvent(f);
        break;
      case 'error':
        onErrorFrame(f);
        break;
      default:
        break;
    }
  }

  function seeId(id) {
    if (Number.isInteger(id) && id > state.maxId) state.maxId = id;
  }

  function previewOf(msg) {
    if (msg.deleted) return 'message deleted';
    const file = fileInfo(msg);
    if (file) return `File: ${file.filename}`;
    return String(msg.content).replace(/\s+/g, ' ').slice(0, 80);
  }

  /** The lifecycle fields a view carries only when set. */
  const LIFECYCLE_FIELDS = ['reply_to', 'edited_at', 'deleted', 'reactions', 'change_id'];

  /** A message as the client keeps it, from a `message` or `message_updated` frame. */
  function messageOf(f) {
    const msg = {
      id: f.id,
      sender: f.sender,
      recipient: f.recipient,
      group_id: f.group_id,
      content: f.content,
      timestamp: f.timestamp,
      message_type: f.message_type,
      content_type: f.content_type,
      status: f.status,
    };
    for (const k of LIFECYCLE_FIELDS) if (f[k] !== undefined && f[k] !== null) msg[k] = f[k];
    return msg;
  }

  /** True when `incoming` is not older than what we hold (changes carry a rising change_id). */
  const isNewerState = (existing, incoming) => !existing || (incoming.change_id || 0) >= (existing.change_id || 0);

  function onMessageFrame(f) {
    const replay = state.syncing;
    seeId(f.id);
    seeId(f.change_id);
    const msg = messageOf(f);
    const mine = sameUser(f.sender, state.me);
    if (f.group_id != null) {
      const g = state.groups.get(f.group_id);
      if (!g) {
        // Someone added us to a group, or we joined from elsewhere: reload the list.
        scheduleListRefresh();
      } else if (noteLast(g, msg) && !mine && !isViewing(keyOfGroup(f.group_id))) {
        countUnread(g, f.id);
      }
      const c = state.convs.get(keyOfGroup(f.group_id));
      if (c && (c.loaded || c.loading)) addMessage(c, msg);
      clearTypingFor(keyOfGroup(f.group_id), f.sender);
    } else {
      const other = mine ? f.recipient : f.sender;
      // A conversation the list does not hold yet: the server's count covers its earlier messages.
      if (!state.contacts.has(lower(other))) scheduleListRefresh();
      const contact = ensureContact(other, true);
      // Each private message is read on its own: one the viewer is looking at
      // is counted here and counted down when it is marked read.
      if (noteLast(contact, msg) && !mine && f.status !== 'read' && !state.readSent.has(f.id)) countUnread(contact, f.id);
      const c = state.convs.get(keyOfUser(other));
      if (c && (c.loaded || c.loading)) addMessage(c, msg);
      if (!mine) {
        clearTypingFor(keyOfUser(other), f.sender);
      }
    }
    if (replay) return; // rendered once at `synced`
    renderSidebar();
    if (activeKey()) {
      renderMessages();
      markVisibleRead();
    }
  }

  /** An edit, deletion or reaction: the message's whole new state replaces ours in place. */
  function onMessageUpdated(f) {
    seeId(f.change_id);
    if (!Number.isInteger(f.id)) return;
    const msg = messageOf(f);
    let key;
    if (f.group_id != null) {
      key = keyOfGroup(f.group_id);
    } else {
      const other = sameUser(f.sender, state.me) ? f.recipient : f.sender;
      if (!other) return;
      key = keyOfUser(other);
    }
    // A change is not activity: the entry keeps its place and shows the new state.
    const entry = entryOf(key);
    if (entry && entry.lastId === f.id && isNewerState(entry.last, msg)) entry.last = msg;
    // The server counts no deleted message as unread; one counted here stops counting.
    if (entry && msg.deleted && entry.counted && entry.counted.has(f.id)) countRead(entry, f.id);
    applyUpdate(key, msg);
    if (state.editing && state.editing.id === f.id && msg.deleted) state.editing = null;
    if (state.syncing) return; // rendered once at `synced`
    renderSidebar();
    if (activeKey() === key) renderMessages();
  }

  /** Puts a message's new state into its conversation, if that conversation holds it. */
  function applyUpdate(key, msg) {
    const c = state.convs.get(key);
    if (!c) return false;
    const existing = c.byId.get(msg.id);
    // A message below the loaded pages is fetched in its current state when they are.
    if (!existing && !(c.loaded && c.oldestId != null && msg.id > c.oldestId)) return false;
    if (!isNewerState(existing, msg)) return false;
    if (existing && (STATUS_RANK[existing.status] || 0) > (STATUS_RANK[msg.status] || 0)) msg.status = existing.status;
    if (key.startsWith('g:')) msg.group_id = Number(key.slice(2));
    c.byId.set(msg.id, msg);
    return true;
  }

  function onAck(f) {
    seeId(f.id);
    for (const c of state.convs.values()) {
      const p = c.pending.get(f.client_id);
      if (!p) continue;
      c.pending.delete(f.client_id);
      const msg = {
        id: f.id,
        sender: state.me,
        recipient: p.recipient,
        group_id: p.group_id,
        content: p.content,
        timestamp: f.timestamp,
        message_type: p.message_type,
        content_type: p.content_type,
        status: f.status,
      };
      if (p.reply_to) msg.reply_to = p.reply_to;
      if (!c.byId.has(f.id)) addMessage(c, msg);
      if (p.recipient) {
        // `delivered` means the recipient has a socket open right now; `sent`, none.
        if (f.status === 'delivered' || f.status === 'sent') {
          const seen = f.status === 'delivered' ? 'online' : 'offline';
          if (state.presence.get(lower(p.recipient)) !== seen) onPresence(p.recipient, seen);
        }
        noteLast(ensureContact(p.recipient), msg);
      } else if (p.group_id != null) {
        noteLast(state.groups.get(p.group_id), msg);
      }
      renderSidebar();
      if (activeKey() === c.key) renderMessages();
      return;
    }
  }

  const STATUS_RANK = { sent: 1, delivered: 2, read: 3 };

  function onReceipt(f) {
    if (sameUser(f.user, state.me)) {
      // We read this message on another of our sockets.
      const id = f.message_id;
      if (state.readSent.has(id)) return;
      state.readSent.add(id);
      let counted = false;
      for (const c of state.convs.values()) {
        const m = c.byId.get(id);
        if (!m || !c.key.startsWith('u:')) continue;
        if (m.status !== 'read' && !sameUser(m.sender, state.me)) {
          countRead(state.contacts.get(c.key.slice(2)), id);
          counted = true;
        }
        m.status = 'read';
        if (activeKey() === c.key) renderMessages();
      }
      // Not loaded here (or a group's cursor): the server knows what is left unread.
      if (!counted) scheduleListRefresh();
      renderSidebar();
      return;
    }
    for (const c of state.convs.values()) {
      const m = c.byId.get(f.message_id);
      if (m && (STATUS_RANK[f.status] || 0) > (STATUS_RANK[m.status] || 0)) {
        m.status = f.status;
        if (activeKey() === c.key) renderMessages();
      }
    }
  }

  function onPresence(user, status) {
    if (!user || (status !== 'online' && status !== 'offline')) return;
    state.presence.set(lower(user), status);
    renderSidebar();
    renderConversationHeader();
  }

  function onTyping(f) {
    if (sameUser(f.user, state.me)) return;
    const key = f.group_id != null ? keyOfGroup(f.group_id) : keyOfUser(f.user);
    let t = state.typing.get(key);
    if (!t) {
      t = new Map();
      state.typing.set(key, t);
    }
    t.set(lower(f.user), { name: f.user, until: Date.now() + TYPING_SHOW_MS });
    // Someone typing has a socket open.
    if (state.presence.get(lower(f.user)) !== 'online') onPresence(f.user, 'online');
    renderTyping();
    setTimeout(renderTyping, TYPING_SHOW_MS + 50);
  }

  function clearTypingFor(key, user) {
    const t = state.typing.get(key);
    if (t && t.delete(lower(user))) renderTyping();
  }

  function onSynced(f) {
    seeId(f.last_id);
    if (f.more) {
      // The replay stopped at its size limit: ask for the rest.
      sendFrame({ type: 'sync', since: f.last_id });
      return;
    }
    state.syncing = false;
    // Without a list (it failed to load), the replay was all we had: ask again.
    if (!state.listLoaded) scheduleListRefresh();
    renderSidebar();
    if (activeKey()) renderMessages();
    markVisibleRead();
  }

  function onErrorFrame(f) {
    if (f.client_id) {
      for (const c of state.convs.values()) {
        const p = c.pending.get(f.client_id);
        if (!p) continue;
        if (f.code === 429 && p.frame && (p.retries || 0) < 5) {
          // Rate limited: keep it pending and send it again shortly (same client_id).
          p.retries = (p.retries || 0) + 1;
          setTimeout(() => {
            if (c.pending.get(p.client_id) === p && !p.failed) sendFrame(p.frame);
          }, 1000 * p.retries + Math.random() * 500);
          return;
        }
        p.failed = f.detail || 'refused';
        if (activeKey() === c.key) renderMessages();
      }
    }
    notify(f.detail || 'The server refused a request', 'error');
  }

  // ---- the conversation list ------------------------------------------------------------

  /** The contact for `name`; `canonical` when the name comes from the server (as registered). */
  function ensureContact(name, canonical = false) {
    const k = lower(name);
    let c = state.contacts.get(k);
    if (!c) {
      c = { name, lastId: 0, last: null, activity: 0, unread: 0, counted: new Set() };
      state.contacts.set(k, c);
    } else if (canonical && c.name !== name) {
      c.name = name;
      if (state.active && state.active.kind === 'user' && lower(state.active.name) === k) {
        state.active.name = name;
        renderConversationHeader();
      }
    }
    return c;
  }

  /** The list entry of a conversation key, if the list holds it. */
  function entryOf(key) {
    return key.startsWith('g:') ? state.groups.get(Number(key.slice(2))) : state.contacts.get(key.slice(2));
  }

  /** Makes `msg` the entry's last message if it is newer; true when it was (new activity). */
  function noteLast(entry, msg) {
    if (!entry || !Number.isInteger(msg.id) || msg.id <= (entry.lastId || 0)) return false;
    entry.lastId = msg.id;
    entry.last = msg;
    const t = Date.parse(msg.timestamp);
    entry.activity = Math.max(entry.activity || 0, Number.isNaN(t) ? Date.now() : t);
    return true;
  }

  /** One more unread message, newer than what the server counted when the list was loaded. */
  function countUnread(entry, id) {
    entry.unread = (entry.unread || 0) + 1;
    entry.counted.add(id);
  }

  /** A private message from the other user, not deleted, that this reader has not read. */
  function unreadHere(m) {
    return !sameUser(m.sender, state.me) && !m.deleted && m.status !== 'read' && !state.readSent.has(m.id);
  }

  /** Messages of the other user in a loaded private conversation not yet read here. */
  function unreadShown(c) {
    let n = 0;
    for (const m of c.byId.values()) if (unreadHere(m)) n += 1;
    return n;
  }

  /** A message marked read (or deleted): one fewer unread. */
  function countRead(entry, id) {
    if (!entry) return;
    entry.unread = Math.max(0, (entry.unread || 0) - 1);
    entry.counted.delete(id);
  }

  /**
   * Takes a conversation's state from the server: its count, plus the
   * messages counted live that arrived after the server's last message.
   */
  function reconcile(entry, last, activity, unread) {
    const serverLast = last ? last.id : 0;
    const later = [...(entry.counted || [])].filter((id) => id > serverLast);
    entry.counted = new Set(later);
    entry.unread = unread + later.length;
    if ((entry.lastId || 0) < serverLast || ((entry.lastId || 0) === serverLast && isNewerState(entry.last, last || {}))) {
      entry.lastId = serverLast;
      entry.last = last;
      entry.activity = activity;
    }
  }

  function removeGroup(id) {
    state.groups.delete(id);
    if (state.active && state.active.kind === 'group' && state.active.id === id) {
      state.active = null;
      sessionStorage.removeItem(ACTIVE_KEY);
      renderConversation();
    }
  }

  /** Applies the walked list; `complete` when it reached the end, so a group not in it is gone. */
  function applyList(items, complete) {
    const listed = new Set();
    let top = 0;
    for (const item of items) {
      const last = item.last_message ? { ...item.last_message } : null;
      if (last) top = Math.max(top, Number(last.id) || 0, Number(last.change_id) || 0);
      const activity = Date.parse(item.last_activity) || 0;
      const unread = Number(item.unread) || 0;
      if (item.kind === 'group' && Number.isInteger(item.group_id)) {
        if (last) last.group_id = item.group_id;
        listed.add(item.group_id);
        let g = state.groups.get(item.group_id);
        if (!g) {
          g = { id: item.group_id, lastId: 0, last: null, activity: 0, unread: 0, counted: new Set() };
          state.groups.set(item.group_id, g);
        }
        g.name = item.name;
        g.role = item.role;
        reconcile(g, last, activity, unread);
        // The reader is looking at it: markVisibleRead moves the cursor.
        if (isViewing(keyOfGroup(g.id))) g.unread = 0;
      } else if (item.kind === 'private' && typeof item.peer === 'string') {
        const contact = ensureContact(item.peer, true);
        reconcile(contact, last, activity, unread);
        // A count the server took before this reader's `read` frames
        // committed still holds them; the open conversation knows better.
        const key = keyOfUser(item.peer);
        const shown = state.convs.get(key);
        if (isViewing(key) && shown && shown.loaded) contact.unread = unreadShown(shown);
      }
    }
    if (complete) for (const id of [...state.groups.keys()]) if (!listed.has(id)) removeGroup(id);
    // A page's first list starts the socket's cursor: history covers what came before.
    if (!state.listLoaded) seeId(top);
  }

  /** Walks GET /conversations page by page (bounded) and applies it; one walk at a time. */
  async function refreshList() {
    if (state.listLoading) {
      state.listAgain = true;
      return state.listLoading;
    }
    const token = state.token;
    const run = (async () => {
      try {
        const items = [];
        let before = null;
        let complete = false;
        for (let n = 0; n < MAX_LIST_PAGES; n += 1) {
          const q = new URLSearchParams({ limit: String(LIST_PAGE) });
          if (before) q.set('before', before);
          const page = await api('GET', `/conversations?${q}`);
          items.push(...(Array.isArray(page.conversations) ? page.conversations : []));
          if (!page.more || !page.next_before) {
            complete = true;
            break;
          }
          before = page.next_before;
        }
        if (state.token !== token) return;
        applyList(items, complete);
        state.listLoaded = true;
        renderSidebar();
        renderConversationHeader();
        if (state.active && state.active.kind === 'group') renderMessages(); // our role decides who may delete
        markVisibleRead();
      } catch (err) {
        if (!(err instanceof ApiError && err.status === 401)) showApiError(err, 'Could not load the conversations');
      }
    })();
    state.listLoading = run;
    await run;
    state.listLoading = null;
    if (state.listAgain && state.token === token) {
      state.listAgain = false;
      return refreshList();
    }
    return undefined;
  }

  /** Reloads the list soon; many frames in a row ask once. */
  function scheduleListRefresh() {
    if (state.listTimer || !state.token) return;
    state.listTimer = setTimeout(() => {
      state.listTimer = null;
      if (state.me) refreshList();
    }, 200);
  }

  /** member_added, member_removed, role_changed: the list and the open group's members follow. */
  function onMemberEvent(f) {
    const id = f.group_id;
    if (!Number.isInteger(id)) return;
    const me = sameUser(f.user, state.me);
    if (me && f.type === 'member_removed') {
      removeGroup(id);
      renderSidebar();
      return;
    }
    const g = state.groups.get(id);
    if (me && f.type === 'role_changed' && g && typeof f.role === 'string') {
      g.role = f.role;
      renderConversationHeader();
      if (activeKey() === keyOfGroup(id)) renderMessages();
    } else if (!g) {
      // We were added (the frame has no group name): the list has it.
      scheduleListRefresh();
    }
    if (activeKey() === keyOfGroup(id)) loadMembers(id);
  }

  /** The list has no group descriptions; GET /groups fills them in for the header. */
  async function loadDescriptions() {
    if (state.descriptionsLoading) return;
    state.descriptionsLoading = true;
    try {
      for (const d of await api('GET', '/groups')) {
        const g = state.groups.get(d.id);
        if (g) g.description = d.description || '';
      }
      renderConversationHeader();
    } catch (_) {
      /* the header simply goes without */
    } finally {
      state.descriptionsLoading = false;
    }
  }

  async function onNewConversation(ev) {
    ev.preventDefault();
    const input = $('new-conversation-input');
    const name = input.value.trim();
    if (!name) return;
    if (sameUser(name, state.me)) {
      notify('That is you — pick someone else to talk to.', 'error');
      return;
    }
    const existing = state.contacts.get(lower(name));
    if (existing) {
      input.value = '';
      openConversation({ kind: 'user', name: existing.name });
      return;
    }
    // Loading the history checks that the user exists (404 otherwise).
    try {
      const page = await api('GET', `/messages/private/${encodeURIComponent(name)}?limit=${PAGE_SIZE}`);
      const shown = page.length ? (sameUser(page[0].sender, state.me) ? page[0].recipient : page[0].sender) : name;
      const contact = ensureContact(shown, page.length > 0);
      const c = conv(keyOfUser(shown));
      c.loaded = false;
      mergePage(c, page, true);
      if (page.length) noteLast(contact, page[page.length - 1]);
      // A conversation without messages is new activity: it goes to the top until others pass it.
      else contact.activity = Math.max(contact.activity, Date.now());
      input.value = '';
      openConversation({ kind: 'user', name: contact.name });
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) notify(`No user called “${name}”.`, 'error');
      else showApiError(err, 'Could not start the conversation');
    }
  }

  async function onNewGroup(ev) {
    ev.preventDefault();
    const name = $('new-group-name').value.trim();
    const description = $('new-group-description').value.trim();
    if (!name) return;
    try {
      const g = await api('POST', '/groups', { name, description });
      const entry = state.groups.get(g.id) || { id: g.id, lastId: 0, last: null, unread: 0, counted: new Set() };
      Object.assign(entry, {
        name: g.name,
        description: g.description || '',
        role: 'owner',
        activity: Math.max(entry.activity || 0, Date.parse(g.created_at) || Date.now()),
      });
      state.groups.set(g.id, entry);
      $('new-group-name').value = '';
      $('new-group-description').value = '';
      renderSidebar();
      openConversation({ kind: 'group', id: g.id });
    } catch (err) {
      showApiError(err, 'Could not create the group');
    }
  }

  async function onAddMember(ev) {
    ev.preventDefault();
    if (!state.active || state.active.kind !== 'group') return;
    const groupId = state.active.id;
    const input = $('add-member-input');
    const username = input.value.trim();
    if (!username) return;
    try {
      const member = await api('POST', `/groups/${groupId}/members`, { username });
      input.value = '';
      notify(`${member.username} was added to the group.`, 'info');
      loadMembers(groupId);
    } catch (err) {
      showApiError(err, `Could not add ${username}`);
    }
  }

  async function loadMembers(groupId) {
    try {
      const members = await api('GET', `/groups/${groupId}/members`);
      const g = state.groups.get(groupId);
      if (g) g.members = members;
      renderConversationHeader();
      // Who may delete what follows the members' roles.
      if (activeKey() === keyOfGroup(groupId)) renderMessages();
    } catch (err) {
      if (!(err instanceof ApiError && (err.status === 401 || err.status === 403 || err.status === 404))) {
        showApiError(err, 'Could not load the members');
      }
    }
  }

  // ---- conversations -------------------------------------------------------------

  function isViewing(key) {
    return activeKey() === key && document.visibilityState === 'visible';
  }

  function openConversation(target) {
    state.active = target;
    state.editing = null;
    state.picker = null;
    state.confirmDelete = null;
    sessionStorage.setItem(ACTIVE_KEY, JSON.stringify(target));
    const key = activeKey();
    const c = conv(key);
    if (target.kind === 'group') {
      const g = state.groups.get(target.id);
      if (g) g.unread = 0;
      loadMembers(target.id);
      if (g && g.description === undefined) loadDescriptions();
    }
    renderSidebar();
    renderConversation();
    if (!c.loaded) loadHistory(c, false);
    else {
      scrollToBottom();
      markVisibleRead();
    }
    $('composer-input').focus();
  }

  function historyPath(key, before) {
    const q = `limit=${PAGE_SIZE}${before ? `&before=${before}` : ''}`;
    if (key.startsWith('g:')) return `/groups/${key.slice(2)}/messages?${q}`;
    const contact = state.contacts.get(key.slice(2));
    const name = contact ? contact.name : key.slice(2);
    return `/messages/private/${encodeURIComponent(name)}?${q}`;
  }

  /** Adds a page of history; `newest` is true for the first (newest) page. */
  function mergePage(c, page, newest) {
    const groupId = c.key.startsWith('g:') ? Number(c.key.slice(2)) : undefined;
    for (const m of page) {
      const existing = c.byId.get(m.id);
      const msg = { ...m, group_id: groupId };
      if (existing && (STATUS_RANK[existing.status] || 0) > (STATUS_RANK[m.status] || 0)) msg.status = existing.status;
      // A live update that arrived while this page was on its way is newer.
      if (isNewerState(existing, msg)) c.byId.set(m.id, msg);
    }
    if (page.length) {
      const first = page[0].id;
      c.oldestId = c.oldestId == null ? first : Math.min(c.oldestId, first);
    }
    // A full page means there may be more below it (one extra request at worst).
    if (newest && c.loaded && c.oldestId != null && page.length && c.oldestId < page[0].id) {
      /* older pages were loaded before: keep their flag */
    } else {
      c.hasOlder = page.length === PAGE_SIZE;
    }
    c.loaded = true;
  }

  async function loadHistory(c, older) {
    if (c.loading) return;
    c.loading = true;
    renderOlderControls();
    const scroller = $('message-scroller');
    const fromBottom = scroller.scrollHeight - scroller.scrollTop;
    try {
      const page = await api('GET', historyPath(c.key, older ? c.oldestId : null));
      mergePage(c, page, !older);
      if (activeKey() === c.key) {
        renderMessages();
        if (older) scroller.scrollTop = scroller.scrollHeight - fromBottom;
        else scrollToBottom();
        markVisibleRead();
      }
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) showApiError(err, 'Could not load messages');
    } finally {
      c.loading = false;
      renderOlderControls();
    }
  }

  function scrollToBottom() {
    const s = $('message-scroller');
    s.scrollTop = s.scrollHeight;
  }

  function nearBottom() {
    const s = $('message-scroller');
    return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
  }

  function addMessage(c, msg) {
    const existing = c.byId.get(msg.id);
    if (!isNewerState(existing, msg)) return;
    if (existing && (STATUS_RANK[existing.status] || 0) > (STATUS_RANK[msg.status] || 0)) msg.status = existing.status;
    c.byId.set(msg.id, msg);
    if (c.oldestId == null) c.oldestId = msg.id;
  }

  // ---- sending ---------------------------------------------------------------------

  function targetFields() {
    return state.active.kind === 'user' ? { recipient: state.active.name } : { group_id: state.active.id };
  }

  function queueMessage(content, message_type, content_type, reply_to) {
    const c = conv(activeKey());
    const client_id = uuid();
    const fields = targetFields();
    const frame = { type: 'message', ...fields, content, message_type, content_type, client_id };
    if (reply_to) frame.reply_to = reply_to;
    const pending = {
      client_id,
      ...fields,
      content,
      message_type,
      content_type,
      reply_to: reply_to || undefined,
      frame,
      failed: null,
      timestamp: new Date().toISOString(),
    };
    c.pending.set(client_id, pending);
    if (state.active.kind === 'user') ensureContact(state.active.name);
    sendFrame(frame); // if the socket is down, it is sent on reconnect
    renderMessages();
    scrollToBottom();
    return pending;
  }

  function onComposerSubmit(ev) {
    ev.preventDefault();
    if (!state.active) return;
    const input = $('composer-input');
    const content = input.value;
    if (!content.trim()) return;
    const key = activeKey();
    const replyTo = state.replyTo.get(key);
    state.replyTo.delete(key);
    queueMessage(content, 'text', 'text/plain', replyTo);
    input.value = '';
    autoGrow();
    renderReplyBar();
  }

  // ---- replies, edits, deletions and reactions -----------------------------------

  /** The message `id` of the open conversation, if it is loaded. */
  function activeMessage(id) {
    const c = state.active && state.convs.get(activeKey());
    return c ? c.byId.get(id) : undefined;
  }

  /** A one-line description of a message for quotes. */
  function snippetOf(msg) {
    if (!msg) return 'an earlier message';
    if (msg.deleted) return 'message deleted';
    const text = previewOf(msg);
    return text.length > 70 ? `${text.slice(0, 70)}…` : text;
  }

  function startReply(id) {
    if (!state.active) return;
    state.replyTo.set(activeKey(), id);
    renderReplyBar();
    $('composer-input').focus();
  }

  function cancelReply() {
    if (state.active) state.replyTo.delete(activeKey());
    renderReplyBar();
    $('composer-input').focus();
  }

  /** The "Replying to …" bar above the composer. */
  function renderReplyBar() {
    const bar = $('reply-bar');
    const id = state.active ? state.replyTo.get(activeKey()) : undefined;
    if (!id) {
      bar.hidden = true;
      return;
    }
    const m = activeMessage(id);
    bar.hidden = false;
    bar.dataset.replyTo = String(id);
    $('reply-bar-sender').textContent = m ? (sameUser(m.sender, state.me) ? 'yourself' : m.sender) : 'a message';
    $('reply-bar-text').textContent = snippetOf(m);
  }

  /** May the viewer delete `m` in the open conversation? Mirrors the server's rule. */
  function canDelete(m, isGroup) {
    if (sameUser(m.sender, state.me)) return true;
    if (!isGroup) return false;
    const g = state.groups.get(state.active.id);
    if (!g) return false;
    if (g.role === 'owner') return true;
    if (g.role !== 'admin') return false;
    const member = g.members && g.members.find((x) => sameUser(x.username, m.sender));
    // An admin deletes a plain member's message (a member who left counts as one).
    return !member || member.role === 'member';
  }

  /** Applies a REST answer (the message's new state) and re-renders. */
  function applyAnswer(key, msg) {
    if (msg && Number.isInteger(msg.id) && applyUpdate(key, messageOf(msg)) && activeKey() === key) renderMessages();
  }

  function startEdit(id) {
    const m = activeMessage(id);
    if (!m || m.deleted) return;
    state.editing = { id, draft: m.content };
    state.picker = null;
    renderMessages();
    const box = $('message-list').querySelector(`li[data-id="${id}"] textarea`);
    if (box) {
      box.focus();
      box.setSelectionRange(box.value.length, box.value.length);
    }
  }

  function cancelEdit() {
    const id = state.editing && state.editing.id;
    state.editing = null;
    renderMessages();
    const node = id && $('message-list').querySelector(`li[data-id="${id}"] [data-action="edit"]`);
    if (node) node.focus();
  }

  async function saveEdit() {
    const e = state.editing;
    if (!e || e.saving) return;
    const key = activeKey();
    const m = activeMessage(e.id);
    const content = e.draft;
    if (!content.trim()) {
      notify('A message cannot be empty: delete it instead.', 'error');
      return;
    }
    if (m && content === m.content) {
      cancelEdit();
      return;
    }
    e.saving = true;
    try {
      const answer = await api('PATCH', `/messages/${e.id}`, { content });
      if (state.editing === e) state.editing = null;
      applyAnswer(key, answer);
      if (activeKey() === key) renderMessages();
    } catch (err) {
      e.saving = false;
      showApiError(err, 'Could not edit the message');
    }
  }

  async function deleteMessage(id) {
    const key = activeKey();
    state.confirmDelete = null;
    try {
      const answer = await api('DELETE', `/messages/${id}`);
      applyAnswer(key, answer);
    } catch (err) {
      showApiError(err, 'Could not delete the message');
      if (activeKey() === key) renderMessages();
    }
  }

  async function setReaction(id, emoji) {
    const key = activeKey();
    state.picker = null;
    try {
      const answer = await api('PUT', `/messages/${id}/reaction`, { emoji });
      applyAnswer(key, answer);
    } catch (err) {
      showApiError(err, 'Could not react');
    }
    if (activeKey() === key) renderMessages();
  }

  async function removeReaction(id) {
    const key = activeKey();
    try {
      const answer = await api('DELETE', `/messages/${id}/reaction`);
      applyAnswer(key, answer);
    } catch (err) {
      showApiError(err, 'Could not remove the reaction');
    }
  }

  /** Scrolls to message `id` of the open conversation (loading older pages if needed) and highlights it. */
  async function jumpToMessage(id) {
    const key = activeKey();
    const c = key && state.convs.get(key);
    if (!c) return false;
    for (let pages = 0, waits = 0; !c.byId.has(id) && activeKey() === key && waits < 200; ) {
      if (c.loading) {
        waits += 1;
        await new Promise((r) => setTimeout(r, 50));
      } else if (c.hasOlder && pages < MAX_JUMP_PAGES) {
        pages += 1;
        await loadHistory(c, true);
      } else {
        break;
      }
    }
    if (activeKey() !== key) return false;
    const node = $('message-list').querySelector(`li[data-id="${id}"]`);
    if (!node) {
      notify('That message is no longer in this conversation.', 'info');
      return false;
    }
    node.scrollIntoView({ block: 'center' });
    state.highlight = { id, until: Date.now() + HIGHLIGHT_MS };
    for (const old of $('message-list').querySelectorAll('li.highlight')) {
      old.classList.remove('highlight');
      delete old.dataset.highlight;
    }
    node.classList.add('highlight');
    node.dataset.highlight = 'true';
    setTimeout(() => {
      if (state.highlight && state.highlight.id === id && state.highlight.until <= Date.now()) state.highlight = null;
      const now = $('message-list').querySelector(`li[data-id="${id}"]`);
      if (now && !state.highlight) {
        now.classList.remove('highlight');
        delete now.dataset.highlight;
      }
    }, HIGHLIGHT_MS + 20);
    const focusable = node.querySelector('.bubble');
    if (focusable) focusable.focus({ preventScroll: true });
    return true;
  }

  function onComposerKey(ev) {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $('composer').requestSubmit();
    } else if (ev.key === 'Escape' && state.active && state.replyTo.has(activeKey())) {
      ev.preventDefault();
      cancelReply();
    }
  }

  function onComposerInput() {
    autoGrow();
    if (!state.active || !$('composer-input').value) return;
    const key = activeKey();
    const now = Date.now();
    if (now - (state.typingSentAt.get(key) || 0) < TYPING_SEND_EVERY_MS) return;
    if (sendFrame({ type: 'typing', ...targetFields() })) state.typingSentAt.set(key, now);
  }

  function autoGrow() {
    const t = $('composer-input');
    t.style.height = 'auto';
    t.style.height = `${Math.min(t.scrollHeight, 160)}px`;
  }

  async function onFileChosen() {
    const input = $('file-input');
    const file = input.files && input.files[0];
    input.value = '';
    if (!file || !state.active) return;
    const key = activeKey();
    const fields = targetFields();
    const c = conv(key);
    const uploadId = `upload-${uuid()}`;
    c.pending.set(uploadId, {
      client_id: uploadId,
      ...fields,
      content: JSON.stringify({ url: '', filename: file.name, size: file.size }),
      message_type: FILE_MESSAGE_TYPE,
      content_type: FILE_CONTENT_TYPE,
      uploading: true,
      timestamp: new Date().toISOString(),
    });
    if (activeKey() === key) {
      renderMessages();
      scrollToBottom();
    }
    try {
      const form = new FormData();
      form.append('file', file, file.name);
      const up = await api('POST', '/files/upload', form);
      c.pending.delete(uploadId);
      const content = JSON.stringify({ url: up.url, filename: up.filename, size: up.size });
      const client_id = uuid();
      const frame = { type: 'message', ...fields, content, message_type: FILE_MESSAGE_TYPE, content_type: FILE_CONTENT_TYPE, client_id };
      c.pending.set(client_id, {
        client_id,
        ...fields,
        content,
        message_type: FILE_MESSAGE_TYPE,
        content_type: FILE_CONTENT_TYPE,
        frame,
        failed: null,
        timestamp: new Date().toISOString(),
      });
      sendFrame(frame);
    } catch (err) {
      c.pending.delete(uploadId);
      showApiError(err, `Could not upload ${file.name}`);
    }
    if (activeKey() === key) {
      renderMessages();
      scrollToBottom();
    }
  }

  /** The file a message carries, if it is a file message with a safe URL. */
  function fileInfo(msg) {
    const declared = msg.content_type === FILE_CONTENT_TYPE || msg.message_type === FILE_MESSAGE_TYPE;
    // Private history does not return content or message types, so a JSON
    // body of exactly this shape is recognised too.
    if (!declared && (msg.content_type || msg.message_type)) return null;
    const text = String(msg.content || '');
    if (!text.startsWith('{')) return null;
    try {
      const data = JSON.parse(text);
      if (!data || typeof data !== 'object' || typeof data.filename !== 'string' || typeof data.url !== 'string') return null;
      if (data.url && !FILE_URL_RE.test(data.url)) return null; // only our own /files/{id}: the token goes with it
      return { url: data.url, filename: data.filename || 'file', size: Number(data.size) || 0 };
    } catch (_) {
      return null;
    }
  }

  async function downloadFile(file, button) {
    button.disabled = true;
    const label = button.querySelector('.file-action');
    if (label) label.textContent = 'Downloading…';
    try {
      const res = await api('GET', file.url, undefined, { raw: true });
      const blob = await res.blob();
      const href = URL.createObjectURL(blob);
      const a = document.createElement('a');
      a.href = href;
      a.download = file.filename;
      a.hidden = true;
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(href), 60000);
      button.dataset.downloaded = 'true';
    } catch (err) {
      showApiError(err, `Could not download ${file.filename}`);
    } finally {
      button.disabled = false;
      if (label) label.textContent = 'Download';
    }
  }

  // ---- reading ---------------------------------------------------------------------

  function ensureObserver() {
    if (state.observer) return state.observer;
    state.observer = new IntersectionObserver(
      (entries) => {
        let any = false;
        for (const e of entries) {
          if (e.isIntersecting) {
            e.target.dataset.seen = 'true';
            any = true;
          }
        }
        if (any) markVisibleRead();
      },
      { root: $('message-scroller'), threshold: 0.5 },
    );
    return state.observer;
  }

  /** Sends `read` for what the user can see in the open conversation. */
  function markVisibleRead() {
    if (!state.active || document.visibilityState !== 'visible' || !state.me) return;
    const key = activeKey();
    const c = state.convs.get(key);
    if (!c || !c.loaded) return;
    const list = $('message-list');
    if (state.active.kind === 'user') {
      const contact = state.contacts.get(lower(state.active.name));
      let changed = false;
      for (const node of list.querySelectorAll('li[data-unread="true"][data-seen="true"]')) {
        const id = Number(node.dataset.id);
        const m = c.byId.get(id);
        if (!m || state.readSent.has(id)) continue;
        state.readSent.add(id);
        if (!sendFrame({ type: 'read', message_id: id })) {
          api('POST', `/messages/${id}/read`).catch(() => state.readSent.delete(id));
        }
        m.status = 'read';
        node.dataset.unread = 'false';
        countRead(contact, id);
        changed = true;
      }
      if (changed) renderSidebar();
    } else {
      const g = state.groups.get(state.active.id);
      let top = 0;
      for (const node of list.querySelectorAll('li[data-seen="true"]')) top = Math.max(top, Number(node.dataset.id) || 0);
      const sent = state.groupReadSent.get(state.active.id) || 0;
      if (top > sent) {
        state.groupReadSent.set(state.active.id, top);
        if (!sendFrame({ type: 'read', message_id: top })) {
          api('POST', `/messages/${top}/read`).catch(() => {});
        }
      }
      if (g && g.unread) {
        g.unread = 0;
        renderSidebar();
      }
    }
  }

  // ---- rendering: sidebar ----------------------------------------------------------

  function presenceOf(name) {
    return state.presence.get(lower(name)) || 'unknown';
  }

  function presenceDot(name) {
    const p = presenceOf(name);
    const dot = el('span', 'presence');
    dot.dataset.presence = p;
    dot.dataset.testid = 'presence';
    const label = p === 'unknown' ? 'presence unknown' : p;
    dot.title = label;
    dot.setAttribute('role', 'img');
    dot.setAttribute('aria-label', label);
    return dot;
  }

  function badge(n) {
    const b = el('span', 'badge', n > 99 ? '99+' : String(n));
    b.dataset.testid = 'unread';
    b.setAttribute('aria-label', `${n} unread`);
    return b;
  }

  /** The list's time of last activity: the time today, else the date. */
  function formatListTime(ms) {
    if (!ms) return '';
    const d = new Date(ms);
    if (Number.isNaN(d.getTime())) return '';
    const now = new Date();
    if (d.toDateString() === now.toDateString()) return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    const sameYear = d.getFullYear() === now.getFullYear();
    return d.toLocaleDateString([], sameYear ? { month: 'short', day: 'numeric' } : { year: 'numeric', month: 'short', day: 'numeric' });
  }

  /** The last message as one line: the sender in groups, "You" for the viewer, a tombstone as such. */
  function listSnippet(entry, isGroup) {
    const m = entry.last;
    if (!m) return isGroup ? 'No messages yet' : ' ';
    const text = previewOf(m);
    if (m.deleted) return text;
    if (sameUser(m.sender, state.me)) return `You: ${text}`;
    return isGroup ? `${m.sender}: ${text}` : text;
  }

  /** One conversation of the list. */
  function listItem(entry, isGroup, current) {
    const name = entry.name;
    const li = el('li');
    const btn = el('button', 'conv-item');
    btn.type = 'button';
    btn.dataset.kind = isGroup ? 'group' : 'private';
    btn.dataset.unread = String(entry.unread || 0);
    if (isGroup) {
      btn.dataset.testid = `group-${entry.id}`;
      btn.dataset.groupName = entry.name;
    } else {
      btn.dataset.testid = `contact-${entry.name}`;
      btn.dataset.username = entry.name;
    }
    if (current) btn.setAttribute('aria-current', 'true');
    const wrap = el('span', 'avatar-wrap');
    const avatar = el('span', isGroup ? 'avatar avatar-group' : 'avatar', isGroup ? '#' : name.slice(0, 1).toUpperCase());
    avatar.setAttribute('aria-hidden', 'true');
    avatar.style.setProperty('--hue', String(hueOf(isGroup ? `g${entry.id}${name}` : name)));
    wrap.append(avatar);
    if (!isGroup) {
      wrap.append(presenceDot(name));
    } else {
      const online = onlineMembers(entry);
      if (online !== null && (online > 0 || knowsAnyPresence(entry))) {
        const dot = el('span', 'presence');
        dot.dataset.presence = online > 0 ? 'online' : 'offline';
        dot.title = `${online} online`;
        dot.setAttribute('role', 'img');
        dot.setAttribute('aria-label', `${online} other members online`);
        wrap.append(dot);
      }
    }
    const top = el('span', 'conv-top');
    top.append(el('span', 'conv-name', name));
    const when = el('time', 'conv-time', formatListTime(entry.activity));
    when.dataset.testid = 'conv-time';
    if (entry.activity) {
      when.setAttribute('datetime', new Date(entry.activity).toISOString());
      when.title = new Date(entry.activity).toLocaleString();
    }
    top.append(when);
    const bottom = el('span', 'conv-bottom');
    const preview = el('span', 'conv-preview', listSnippet(entry, isGroup));
    preview.dataset.testid = 'conv-preview';
    if (entry.last && entry.last.deleted) preview.classList.add('deleted');
    bottom.append(preview);
    if (entry.unread > 0) bottom.append(badge(entry.unread));
    const text = el('span', 'conv-text');
    text.append(top, bottom);
    btn.append(wrap, text);
    btn.addEventListener('click', () =>
      openConversation(isGroup ? { kind: 'group', id: entry.id } : { kind: 'user', name: entry.name }),
    );
    li.append(btn);
    return li;
  }

  /** The conversation list: private conversations and groups together, newest activity first. */
  function renderSidebar() {
    if (!state.me) return;
    const key = activeKey();
    const rows = [
      ...[...state.contacts.values()].map((entry) => ({ entry, isGroup: false, key: keyOfUser(entry.name) })),
      ...[...state.groups.values()].map((entry) => ({ entry, isGroup: true, key: keyOfGroup(entry.id) })),
    ];
    rows.sort(
      (a, b) =>
        (b.entry.activity || 0) - (a.entry.activity || 0) ||
        (b.entry.lastId || 0) - (a.entry.lastId || 0) ||
        a.entry.name.localeCompare(b.entry.name),
    );
    $('conversation-list').replaceChildren(...rows.map((r) => listItem(r.entry, r.isGroup, r.key === key)));
    $('conversations-empty').hidden = rows.length > 0;
    const total = rows.reduce((n, r) => n + (r.entry.unread || 0), 0);
    document.title = total ? `(${total}) Parley — ${state.me}` : `Parley — ${state.me}`;
  }

  function knowsAnyPresence(g) {
    return g.members.some((m) => !sameUser(m.username, state.me) && presenceOf(m.username) !== 'unknown');
  }

  function onlineMembers(g) {
    if (!g.members) return null;
    return g.members.filter((m) => !sameUser(m.username, state.me) && presenceOf(m.username) === 'online').length;
  }

  function hueOf(s) {
    let h = 0;
    for (const ch of lower(s)) h = (h * 31 + ch.codePointAt(0)) % 360;
    return h;
  }

  // ---- rendering: conversation -------------------------------------------------------

  function renderConversation() {
    const has = !!state.active;
    $('conversation-placeholder').hidden = has;
    $('conversation-body').hidden = !has;
    $('message-list').replaceChildren();
    if (!has) return;
    $('composer-input').value = '';
    autoGrow();
    renderConversationHeader();
    renderMessages();
    renderTyping();
    renderReplyBar();
    scrollToBottom();
  }

  function renderConversationHeader() {
    if (!state.active) return;
    const title = $('conversation-title');
    const sub = $('conversation-subtitle');
    const dot = $('conversation-presence');
    const addForm = $('add-member-form');
    if (state.active.kind === 'user') {
      title.textContent = state.active.name;
      const p = presenceOf(state.active.name);
      dot.hidden = false;
      dot.dataset.presence = p;
      dot.title = p;
      sub.textContent = p === 'unknown' ? 'Direct message' : p === 'online' ? 'Online' : 'Offline';
      addForm.hidden = true;
    } else {
      const g = state.groups.get(state.active.id);
      title.textContent = g ? g.name : `Group ${state.active.id}`;
      dot.hidden = true;
      const parts = [];
      if (g && g.description) parts.push(g.description);
      if (g && g.members) {
        parts.push(
          `${g.members.length} member${g.members.length === 1 ? '' : 's'}: ` +
            g.members.map((m) => (m.role === 'member' ? m.username : `${m.username} (${m.role})`)).join(', '),
        );
      }
      sub.textContent = parts.join(' · ');
      const canAdd = g && (g.role === 'owner' || g.role === 'admin');
      addForm.hidden = !canAdd;
    }
    $('composer-input').placeholder =
      state.active.kind === 'user' ? `Message ${state.active.name}…` : `Message #${title.textContent}…`;
  }

  function renderOlderControls() {
    const c = state.active && state.convs.get(activeKey());
    const btn = $('load-older-button');
    const start = $('history-start');
    if (!c) {
      btn.hidden = true;
      start.hidden = true;
      return;
    }
    btn.hidden = !c.hasOlder;
    btn.disabled = c.loading;
    btn.textContent = c.loading ? 'Loading…' : 'Load older messages';
    start.hidden = c.hasOlder || !c.loaded;
    start.textContent = c.byId.size || c.pending.size ? 'Beginning of the conversation' : 'No messages yet — say hello!';
  }

  const STATUS_LABEL = { sent: '✓', delivered: '✓✓', read: '✓✓ Read' };
  const STATUS_TITLE = { sent: 'Sent', delivered: 'Delivered', read: 'Read' };

  /** Reconciles the message list with the open conversation's messages. */
  function renderMessages() {
    renderOlderControls();
    if (!state.active) return;
    const c = state.convs.get(activeKey());
    const list = $('message-list');
    if (!c) {
      list.replaceChildren();
      return;
    }
    const stick = nearBottom();
    const isGroup = state.active.kind === 'group';
    const items = [...c.byId.values()].sort((a, b) => a.id - b.id);
    const pend = [...c.pending.values()];
    const wanted = [];
    for (const m of items) wanted.push({ key: `m${m.id}`, m, pending: null });
    for (const p of pend) wanted.push({ key: `p${p.client_id}`, m: p, pending: p });

    const existing = new Map();
    for (const node of list.children) existing.set(node.dataset.key, node);
    const observer = ensureObserver();

    let prevSender = null;
    let prevTime = 0;
    let cursor = list.firstElementChild;
    for (const w of wanted) {
      const mine = sameUser(w.m.sender || state.me, state.me) || !!w.pending;
      const sender = w.pending ? state.me : w.m.sender;
      const t = new Date(w.m.timestamp || 0).getTime();
      const continued = sameUser(prevSender, sender) && t - prevTime < 5 * 60 * 1000;
      prevSender = sender;
      prevTime = t;
      const sig = signature(w, continued, isGroup);
      let node = existing.get(w.key);
      if (!node || node.dataset.sig !== sig) {
        const fresh = buildMessage(w, mine, continued, isGroup);
        fresh.dataset.sig = sig;
        if (node) {
          if (node.dataset.seen) fresh.dataset.seen = node.dataset.seen;
          observer.unobserve(node);
          node.replaceWith(fresh);
          if (cursor === node) cursor = fresh;
        }
        node = fresh;
        if (!w.pending) observer.observe(node);
      }
      existing.delete(w.key);
      if (node === cursor) cursor = cursor.nextElementSibling;
      else list.insertBefore(node, cursor);
    }
    for (const node of existing.values()) {
      observer.unobserve(node);
      node.remove();
    }
    if (stick) scrollToBottom();
  }

  function signature(w, continued, isGroup) {
    const m = w.m;
    const p = w.pending;
    const quoted = m.reply_to ? activeMessage(m.reply_to) : undefined;
    const own = !p && m.id != null;
    return [
      m.status || '',
      p ? (p.failed ? 'f' : p.uploading ? 'u' : 'p') : '',
      continued ? 'c' : '',
      isGroup ? 'g' : '',
      m.content.length,
      m.change_id || 0,
      m.reply_to ? `${m.reply_to}:${quoted ? `${quoted.change_id || 0}` : '-'}` : '',
      own && state.editing && state.editing.id === m.id ? 'e' : '',
      own && state.confirmDelete === m.id ? 'x' : '',
      own && state.picker === m.id ? 'r' : '',
      own && !m.deleted && canDelete(m, isGroup) ? 'd' : '',
    ].join('|');
  }

  function buildMessage(w, mine, continued, isGroup) {
    const m = w.m;
    const p = w.pending;
    const li = el('li', `message ${mine ? 'mine' : 'theirs'}${continued ? ' continued' : ''}`);
    li.dataset.testid = 'message';
    li.dataset.key = w.key;
    if (p) {
      li.dataset.clientId = p.client_id;
      li.dataset.pending = p.failed ? 'failed' : 'true';
    } else {
      li.dataset.id = String(m.id);
      li.dataset.sender = m.sender;
      const unread = !mine && !isGroup && unreadHere(m);
      li.dataset.unread = String(unread);
    }
    li.dataset.mine = String(mine);

    if (!continued) {
      const meta = el('div', 'message-meta');
      if (!mine || isGroup) meta.append(el('span', 'message-sender', mine ? 'You' : m.sender));
      const time = el('time', 'message-time', formatTime(m.timestamp));
      if (m.timestamp) time.setAttribute('datetime', m.timestamp);
      meta.append(time);
      li.append(meta);
    }

    if (!p && state.highlight && state.highlight.id === m.id && state.highlight.until > Date.now()) {
      li.classList.add('highlight');
      li.dataset.highlight = 'true';
    }

    const bubble = el('div', 'bubble');
    bubble.tabIndex = -1;
    if (m.reply_to && !m.deleted) bubble.append(buildQuote(m.reply_to));
    const file = m.deleted ? null : fileInfo(m);
    const editing = !p && state.editing && state.editing.id === m.id;
    if (m.deleted) {
      li.dataset.deleted = 'true';
      bubble.classList.add('tombstone');
      const text = el('div', 'message-content', 'message deleted');
      text.dataset.testid = 'message-content';
      bubble.append(text);
    } else if (editing) {
      bubble.classList.add('editing');
      bubble.append(buildEditor());
    } else if (file) {
      bubble.classList.add('file-bubble');
      const btn = el('button', 'file-link');
      btn.type = 'button';
      btn.dataset.testid = 'file-download';
      btn.dataset.filename = file.filename;
      const icon = el('span', 'file-icon');
      icon.setAttribute('aria-hidden', 'true');
      const info = el('span', 'file-info');
      info.append(el('span', 'file-name', file.filename), el('span', 'file-size', formatSize(file.size)));
      const action = el('span', 'file-action', p && p.uploading ? 'Uploading…' : 'Download');
      btn.append(icon, info, action);
      btn.setAttribute('aria-label', `Download ${file.filename} (${formatSize(file.size)})`);
      if (p || !file.url) btn.disabled = true;
      else btn.addEventListener('click', () => downloadFile(file, btn));
      bubble.append(btn);
    } else {
      const text = el('div', 'message-content', m.content);
      text.dataset.testid = 'message-content';
      bubble.append(text);
    }
    if (m.edited_at && !m.deleted && !editing) {
      const mark = el('span', 'message-edited', 'edited');
      mark.dataset.testid = 'message-edited';
      mark.title = `Edited ${formatTime(m.edited_at)}`;
      bubble.append(mark);
    }
    const row = el('div', 'bubble-row');
    row.append(bubble);
    if (!p && !m.deleted && !editing) row.append(buildActions(m, mine, isGroup, !!file));
    li.append(row);
    if (!p && !m.deleted && Array.isArray(m.reactions) && m.reactions.length) li.append(buildReactions(m));

    if (mine && (p || !isGroup)) {
      const st = el('div', 'message-status');
      st.dataset.testid = 'message-status';
      if (p) {
        if (p.failed) {
          st.classList.add('failed');
          st.append(el('span', null, `Not sent: ${p.failed} `));
          if (p.frame) {
            const retry = el('button', 'link-button', 'Retry');
            retry.type = 'button';
            retry.addEventListener('click', () => {
              p.failed = null;
              sendFrame(p.frame);
              renderMessages();
            });
            const drop = el('button', 'link-button', 'Discard');
            drop.type = 'button';
            drop.addEventListener('click', () => {
              for (const c of state.convs.values()) c.pending.delete(p.client_id);
              renderMessages();
            });
            st.append(retry, drop);
          }
          st.dataset.status = 'failed';
        } else {
          st.textContent = p.uploading ? 'Uploading…' : 'Sending…';
          st.dataset.status = 'pending';
        }
      } else {
        const s = m.status || 'sent';
        st.textContent = STATUS_LABEL[s] || s;
        st.title = STATUS_TITLE[s] || s;
        st.dataset.status = s;
        st.classList.add(`status-${s}`);
      }
      li.append(st);
    }
    return li;
  }

  /** The quoted original above a reply; clicking it scrolls to the original. */
  function buildQuote(id) {
    const q = activeMessage(id);
    const btn = el('button', 'reply-quote');
    btn.type = 'button';
    btn.dataset.testid = 'reply-quote';
    btn.dataset.replyTo = String(id);
    const who = q ? (sameUser(q.sender, state.me) ? 'You' : q.sender) : 'Reply';
    const snippet = snippetOf(q);
    btn.append(el('span', 'reply-quote-sender', who), el('span', 'reply-quote-text', snippet));
    if (q && q.deleted) btn.classList.add('deleted');
    btn.setAttribute('aria-label', `In reply to ${q ? `${who}: ${snippet}` : 'an earlier message'}. Show the original`);
    btn.title = 'Show the original message';
    btn.addEventListener('click', () => jumpToMessage(id));
    return btn;
  }

  function buildEditor() {
    const e = state.editing;
    const form = el('form', 'edit-form');
    form.dataset.testid = 'edit-form';
    const label = el('label', 'visually-hidden', 'Edit message');
    const box = el('textarea', 'edit-input');
    box.id = `edit-input-${e.id}`;
    label.htmlFor = box.id;
    box.dataset.testid = 'edit-input';
    box.rows = 2;
    box.maxLength = 8192;
    box.value = e.draft;
    box.addEventListener('input', () => {
      e.draft = box.value;
    });
    box.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        saveEdit();
      } else if (ev.key === 'Escape') {
        ev.preventDefault();
        cancelEdit();
      }
    });
    const save = el('button', 'primary small', 'Save');
    save.type = 'submit';
    save.dataset.testid = 'edit-save';
    const cancel = el('button', 'small', 'Cancel');
    cancel.type = 'button';
    cancel.dataset.testid = 'edit-cancel';
    cancel.addEventListener('click', cancelEdit);
    const buttons = el('div', 'edit-buttons');
    buttons.append(el('span', 'edit-hint', 'Enter to save · Esc to cancel'), cancel, save);
    form.append(label, box, buttons);
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      saveEdit();
    });
    return form;
  }

  /** Reaction chips with counts; the viewer's own is pressed, and clicking it takes it back. */
  function buildReactions(m) {
    const wrap = el('div', 'reactions');
    wrap.dataset.testid = 'reactions';
    for (const r of m.reactions) {
      const users = Array.isArray(r.users) ? r.users : [];
      const own = users.some((u) => sameUser(u, state.me));
      const chip = el('button', 'reaction-chip');
      chip.type = 'button';
      chip.dataset.testid = 'reaction-chip';
      chip.dataset.emoji = r.emoji;
      chip.dataset.mine = String(own);
      chip.setAttribute('aria-pressed', String(own));
      const emoji = el('span', 'reaction-emoji', r.emoji);
      emoji.setAttribute('aria-hidden', 'true');
      const count = el('span', 'reaction-count', r.count);
      count.dataset.testid = 'reaction-count';
      chip.append(emoji, count);
      const who = users.join(', ');
      chip.title = who;
      chip.setAttribute(
        'aria-label',
        `${r.emoji} ${r.count}${who ? ` (${who})` : ''}: ${own ? 'remove your reaction' : `react with ${r.emoji}`}`,
      );
      chip.addEventListener('click', () => (own ? removeReaction(m.id) : setReaction(m.id, r.emoji)));
      wrap.append(chip);
    }
    return wrap;
  }

  function actionButton(label, action, text, onClick) {
    const b = el('button', 'message-action', text);
    b.type = 'button';
    b.dataset.action = action;
    b.dataset.testid = `action-${action}`;
    b.setAttribute('aria-label', label);
    b.title = label;
    b.addEventListener('click', onClick);
    return b;
  }

  /** Reply, react, edit and delete; shown on hover and keyboard focus. */
  function buildActions(m, mine, isGroup, isFile) {
    const bar = el('div', 'message-actions');
    bar.setAttribute('role', 'toolbar');
    bar.setAttribute('aria-label', 'Message actions');
    bar.dataset.testid = 'message-actions';
    bar.append(actionButton('Reply', 'reply', 'Reply', () => startReply(m.id)));
    const react = actionButton('Add a reaction', 'react', '☺+', () => {
      state.picker = state.picker === m.id ? null : m.id;
      renderMessages();
      const first = $('message-list').querySelector(`li[data-id="${m.id}"] .reaction-picker button`);
      if (first) first.focus();
    });
    react.setAttribute('aria-haspopup', 'true');
    react.setAttribute('aria-expanded', String(state.picker === m.id));
    bar.append(react);
    if (mine && !isFile && sameUser(m.sender, state.me)) {
      bar.append(actionButton('Edit', 'edit', 'Edit', () => startEdit(m.id)));
    }
    if (canDelete(m, isGroup)) {
      const confirming = state.confirmDelete === m.id;
      const del = actionButton(
        confirming ? 'Confirm: delete this message for everyone' : 'Delete',
        'delete',
        confirming ? 'Delete for everyone?' : 'Delete',
        () => {
          if (state.confirmDelete === m.id) {
            deleteMessage(m.id);
          } else {
            state.confirmDelete = m.id;
            renderMessages();
            const again = $('message-list').querySelector(`li[data-id="${m.id}"] [data-action="delete"]`);
            if (again) again.focus();
            setTimeout(() => {
              if (state.confirmDelete === m.id) {
                state.confirmDelete = null;
                renderMessages();
              }
            }, 5000);
          }
        },
      );
      del.classList.add('danger');
      if (confirming) del.dataset.confirm = 'true';
      bar.append(del);
    }
    if (state.picker === m.id) {
      const picker = el('div', 'reaction-picker');
      picker.setAttribute('role', 'group');
      picker.setAttribute('aria-label', 'Pick a reaction');
      picker.dataset.testid = 'reaction-picker';
      for (const emoji of REACTION_CHOICES) {
        const b = el('button', 'reaction-choice', emoji);
        b.type = 'button';
        b.dataset.emoji = emoji;
        b.dataset.testid = 'reaction-choice';
        b.setAttribute('aria-label', `React with ${emoji}`);
        b.addEventListener('click', () => setReaction(m.id, emoji));
        picker.append(b);
      }
      picker.addEventListener('keydown', (ev) => {
        if (ev.key === 'Escape') {
          state.picker = null;
          renderMessages();
        }
      });
      bar.append(picker);
      bar.classList.add('open');
    }
    return bar;
  }

  function renderTyping() {
    const node = $('typing-indicator');
    const key = activeKey();
    const t = key && state.typing.get(key);
    const now = Date.now();
    const names = [];
    if (t) {
      for (const [k, v] of t) {
        if (v.until > now) names.push(v.name);
        else t.delete(k);
      }
    }
    if (!names.length) {
      node.textContent = '';
      node.dataset.active = 'false';
      return;
    }
    node.dataset.active = 'true';
    node.textContent =
      names.length === 1
        ? `${names[0]} is typing…`
        : names.length === 2
          ? `${names[0]} and ${names[1]} are typing…`
          : `${names.length} people are typing…`;
  }

  // ---- search -----------------------------------------------------------------------

  const SEARCH_PAGE = 20;

  async function onSearchSubmit(ev) {
    ev.preventDefault();
    const q = $('search-input').value.trim();
    if (!q) {
      closeSearch();
      return;
    }
    // `before` pins the ranking, so later pages do not shift as messages arrive.
    state.search = { q, before: state.maxId + 1, offset: 0, results: [], more: false, loading: false };
    await loadSearchPage();
  }

  async function loadSearchPage() {
    const s = state.search;
    if (!s || s.loading) return;
    s.loading = true;
    renderSearch();
    const params = new URLSearchParams({ q: s.q, limit: String(SEARCH_PAGE), offset: String(s.offset) });
    if (s.before > 1) params.set('before', String(s.before));
    try {
      const page = await api('GET', `/search?${params}`);
      if (state.search !== s) return;
      s.results.push(...(page.results || []));
      s.offset += (page.results || []).length;
      s.more = !!page.more;
    } catch (err) {
      if (state.search === s) s.error = err instanceof ApiError ? err.message : String(err);
      showApiError(err, 'Could not search');
    } finally {
      s.loading = false;
      if (state.search === s) renderSearch();
    }
  }

  function closeSearch() {
    state.search = null;
    const panel = $('search-panel');
    if (panel) panel.hidden = true;
  }

  /** The words of `q` as the server reads them: runs of letters and digits. */
  function searchWords(q) {
    return (q.match(/[\p{L}\p{N}]+/gu) || []).map((w) => w.toLowerCase());
  }

  /** `text` with the searched words in <mark>, built from text nodes only. */
  function markWords(text, words) {
    const frag = document.createDocumentFragment();
    const parts = text.split(/([\p{L}\p{N}]+)/u);
    for (const part of parts) {
      if (!part) continue;
      if (words.includes(part.toLowerCase())) frag.append(el('mark', null, part));
      else frag.append(document.createTextNode(part));
    }
    return frag;
  }

  function renderSearch() {
    const s = state.search;
    const panel = $('search-panel');
    if (!s) {
      panel.hidden = true;
      return;
    }
    panel.hidden = false;
    $('search-heading').textContent = `Results for “${s.q}”`;
    const words = searchWords(s.q);
    const list = $('search-results');
    list.replaceChildren(
      ...s.results.map((r) => {
        const li = el('li');
        const btn = el('button', 'search-hit');
        btn.type = 'button';
        btn.dataset.testid = 'search-result';
        btn.dataset.id = String(r.id);
        const isGroup = r.group_id != null;
        const g = isGroup ? state.groups.get(r.group_id) : null;
        const where = isGroup ? `# ${g ? g.name : `group ${r.group_id}`}` : sameUser(r.sender, state.me) ? r.recipient : r.sender;
        if (isGroup) btn.dataset.groupId = String(r.group_id);
        else btn.dataset.username = where;
        const head = el('span', 'search-hit-head');
        head.append(
          el('span', 'search-hit-where', where),
          el('span', 'search-hit-sender', sameUser(r.sender, state.me) ? 'You' : r.sender),
          el('time', 'search-hit-time', formatTime(r.timestamp)),
        );
        const file = fileInfo(r);
        const body = el('span', 'search-hit-text');
        body.dataset.testid = 'search-result-text';
        const text = file ? `File: ${file.filename}` : String(r.content).replace(/\s+/g, ' ');
        body.append(markWords(text.length > 200 ? `${text.slice(0, 200)}…` : text, words));
        btn.append(head, body);
        btn.setAttribute('aria-label', `${where}, ${r.sender}: ${text.slice(0, 120)}. Show in the conversation`);
        btn.addEventListener('click', () => openSearchResult(r));
        li.append(btn);
        return li;
      }),
    );
    const status = $('search-status');
    if (s.loading) status.textContent = 'Searching…';
    else if (s.error && !s.results.length) status.textContent = 'The search failed.';
    else if (!s.results.length) status.textContent = 'No messages found.';
    else status.textContent = `${s.results.length}${s.more ? '+' : ''} message${s.results.length === 1 ? '' : 's'} found`;
    const more = $('search-more');
    more.hidden = !s.more;
    more.disabled = s.loading;
  }

  /** Opens the result's conversation and scrolls to the message, highlighted. */
  async function openSearchResult(r) {
    closeSearch();
    let target;
    if (r.group_id != null) {
      if (!state.groups.has(r.group_id)) {
        notify('You are no longer a member of that group.', 'info');
        return;
      }
      target = { kind: 'group', id: r.group_id };
    } else {
      const other = sameUser(r.sender, state.me) ? r.recipient : r.sender;
      target = { kind: 'user', name: ensureContact(other, true).name };
    }
    if (activeKey() !== (target.kind === 'user' ? keyOfUser(target.name) : keyOfGroup(target.id))) openConversation(target);
    await jumpToMessage(r.id);
  }

  // ---- wiring ----------------------------------------------------------------------

  function init() {
    $('tab-login').addEventListener('click', () => setAuthMode('login'));
    $('tab-register').addEventListener('click', () => setAuthMode('register'));
    $('auth-form').addEventListener('submit', onAuthSubmit);
    $('logout-button').addEventListener('click', () => signOut(undefined, true));
    $('new-conversation-form').addEventListener('submit', onNewConversation);
    $('new-group-form').addEventListener('submit', onNewGroup);
    $('add-member-form').addEventListener('submit', onAddMember);
    $('composer').addEventListener('submit', onComposerSubmit);
    $('composer-input').addEventListener('keydown', onComposerKey);
    $('composer-input').addEventListener('input', onComposerInput);
    $('attach-button').addEventListener('click', () => $('file-input').click());
    $('reply-cancel').addEventListener('click', cancelReply);
    $('search-form').addEventListener('submit', onSearchSubmit);
    $('search-more').addEventListener('click', loadSearchPage);
    $('search-close').addEventListener('click', () => {
      closeSearch();
      $('search-input').focus();
    });
    document.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape' && state.search && ($('search-panel').contains(ev.target) || ev.target === $('search-input'))) {
        closeSearch();
        $('search-input').focus();
      }
    });
    $('reply-bar-quote').addEventListener('click', () => {
      const id = state.active && state.replyTo.get(activeKey());
      if (id) jumpToMessage(id);
    });
    $('file-input').addEventListener('change', onFileChosen);
    $('load-older-button').addEventListener('click', () => {
      const c = state.active && state.convs.get(activeKey());
      if (c && c.hasOlder) loadHistory(c, true);
    });
    $('message-scroller').addEventListener('scroll', () => {
      const s = $('message-scroller');
      const c = state.active && state.convs.get(activeKey());
      if (s.scrollTop < 40 && c && c.loaded && c.hasOlder && !c.loading && s.scrollHeight > s.clientHeight) {
        loadHistory(c, true);
      }
    });
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible' && state.me) {
        const g = state.active && state.active.kind === 'group' && state.groups.get(state.active.id);
        if (g) g.unread = 0;
        markVisibleRead();
        // Read elsewhere while this page was hidden: the server's counts.
        scheduleListRefresh();
      }
    });

    setAuthMode('login');
    const token = sessionStorage.getItem(TOKEN_KEY);
    const claims = token ? tokenClaims(token) : {};
    if (token && (!claims.exp || claims.exp * 1000 > Date.now())) {
      startSession(token, sessionStorage.getItem(USER_KEY) || '');
    } else {
      sessionStorage.removeItem(TOKEN_KEY);
      $('auth-view').hidden = false;
      $('auth-username').focus();
    }
  }

  init();
})();
