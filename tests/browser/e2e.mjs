// End-to-end test of Parley's bundled web client: two people (alice and bob)
// in two separate browser contexts of headless Chromium, against a real
// server. Run it through run.sh, which starts the server and sets:
//   PARLEY_URL      base URL of the server (http://127.0.0.1:<port>)
//   CHROMIUM        Chromium binary (default /usr/bin/chromium)
//   SCREENSHOT_DIR  where NN-step-name.png files go (default target/browser)
//
// Each step asserts something a person would see, waits at most TIMEOUT ms
// for it, and saves a screenshot. The run prints one line per step and ends
// with "N passed, N failed".

import { chromium } from 'playwright-core';
import { mkdirSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { randomBytes, createHash } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BASE = process.env.PARLEY_URL || 'http://127.0.0.1:8080';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = process.env.SCREENSHOT_DIR || path.resolve(HERE, '../../target/browser');
const TIMEOUT = 10_000;
const WHOLE_RUN_LIMIT = 110_000;
const PASSWORD_A = 'correct horse battery';
const PASSWORD_B = 'battery staple horse';

mkdirSync(SHOTS, { recursive: true });
// Screenshots of an earlier run would be mistaken for this one's.
for (const f of readdirSync(SHOTS)) if (/^\d\d-.*\.png$/.test(f)) rmSync(path.join(SHOTS, f));

// ---- tiny assertion kit ----------------------------------------------------

class StepFailure extends Error {}

/** Polls `check` until it returns a truthy value or `timeout` passes. */
async function until(check, message, timeout = TIMEOUT) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      const cause = last ? ` (last error: ${String(last.message || last).split('\n')[0]})` : '';
      throw new StepFailure(`${message} — not true after ${timeout / 1000} s${cause}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function visible(locator, what, timeout = TIMEOUT) {
  try {
    await locator.first().waitFor({ state: 'visible', timeout });
  } catch (_) {
    throw new StepFailure(`expected ${what} to be visible within ${timeout / 1000} s`);
  }
}

async function textOf(locator) {
  return ((await locator.first().textContent({ timeout: 1000 })) || '').trim();
}

async function hasText(locator, text, what) {
  await until(async () => (await textOf(locator)).includes(text), `expected ${what} to show “${text}”`);
}

let stepNo = 0;
let passed = 0;
let failed = 0;
const pages = {};

async function shot(page, name) {
  const file = path.join(SHOTS, `${String(stepNo).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file });
  return file;
}

/** Runs one numbered step; on failure saves screenshots of both people and stops. */
async function step(name, fn) {
  stepNo += 1;
  const started = Date.now();
  try {
    await fn();
    passed += 1;
    console.log(`ok ${String(stepNo).padStart(2, '0')} ${name} (${Date.now() - started} ms)`);
  } catch (err) {
    failed += 1;
    console.log(`FAILED ${String(stepNo).padStart(2, '0')} ${name}: ${err.message}`);
    if (!(err instanceof StepFailure)) console.log(err.stack);
    for (const [who, page] of Object.entries(pages)) {
      try {
        const slug = name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
        const file = path.join(SHOTS, `${String(stepNo).padStart(2, '0')}-${slug}-FAILED-${who}.png`);
        await page.screenshot({ path: file });
        console.log(`   screenshot: ${file}`);
      } catch (_) {
        /* the page may be gone */
      }
    }
    throw err;
  }
}

// ---- the people ---------------------------------------------------------------

const errors = [];

/**
 * Installed before the client's script: tracks its WebSockets so the test
 * can drop them (as a network failure would) and refuse new ones for a
 * while, and records the frames the client sends and receives.
 */
function socketProbe() {
  const Native = window.WebSocket;
  window.__sockets = [];
  window.__sentFrames = [];
  window.__receivedFrames = [];
  window.__blockSockets = false;
  class ProbedWebSocket extends Native {
    constructor(url, protocols) {
      // While blocked, dial a closed loopback port: the connection fails at once.
      super(window.__blockSockets ? 'ws://127.0.0.1:9/blocked' : url, protocols);
      window.__sockets.push(this);
      this.addEventListener('message', (ev) => window.__receivedFrames.push(String(ev.data)));
    }
    send(data) {
      window.__sentFrames.push(String(data));
      return super.send(data);
    }
  }
  window.WebSocket = ProbedWebSocket;
}

async function person(browser, name) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
  await context.addInitScript(socketProbe);
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('pageerror', (err) => errors.push(`${name}: page error: ${err.message}`));
  page.on('console', (msg) => {
    // Failed requests the scenario provokes (401, 404, the blocked socket) log
    // errors too; show them but judge only uncaught script errors.
    if (msg.type() === 'error') console.log(`   (${name}'s console: ${msg.text()})`);
  });
  pages[name] = page;
  return { name, context, page, t: (id) => page.locator(`[data-testid="${id}"]`) };
}

async function register(p, username, password) {
  const { page, t } = p;
  await page.goto(BASE + '/');
  await visible(t('auth-view'), `${username}'s sign-in screen`);
  await t('tab-register').click();
  await visible(t('auth-email'), 'the email field of the register form');
  await t('auth-username').fill(username);
  await t('auth-email').fill(`${username}@example.com`);
  await t('auth-password').fill(password);
}

async function tokenOf(p) {
  return p.page.evaluate(() => sessionStorage.getItem('parley.token'));
}

async function apiAs(token, method, route, body) {
  const res = await fetch(BASE + route, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new StepFailure(`${method} ${route} answered ${res.status}: ${text}`);
  return text ? JSON.parse(text) : null;
}

/** The last message element in `p`'s open conversation. */
const lastMessage = (p) => p.t('message-list').locator('[data-testid="message"]').last();
const messageWithText = (p, text) =>
  p.t('message-list').locator('[data-testid="message"]', { hasText: text });
const messageById = (p, id) => p.t('message-list').locator(`[data-testid="message"][data-id="${id}"]`);
const contentOf = (msg) => msg.locator('[data-testid="message-content"]');
/** The chip for `emoji` under a message, and the count it shows ('' when there is none). */
const chipOf = (msg, emoji) => msg.locator(`[data-testid="reaction-chip"][data-emoji="${emoji}"]`);
async function chipCount(msg, emoji) {
  const chip = chipOf(msg, emoji);
  return (await chip.count()) ? textOf(chip.locator('[data-testid="reaction-count"]')) : '';
}

/** Drops `p`'s sockets as a network failure would, and refuses new ones until restoreNetwork. */
async function dropNetwork(p) {
  await p.page.evaluate(() => {
    window.__blockSockets = true;
    window.__sentFrames.length = 0;
    for (const ws of window.__sockets) if (ws.readyState <= 1) ws.close(1000, 'test: network drop');
  });
  await until(async () => (await p.t('conn-status').getAttribute('data-state')) === 'offline', `${p.name}’s client to show it is offline`);
  await hasText(p.t('conn-status'), 'reconnecting', `the reconnecting notice in ${p.name}’s status`);
}

async function restoreNetwork(p) {
  await p.page.evaluate(() => {
    window.__blockSockets = false;
  });
  await until(async () => (await p.t('conn-status').getAttribute('data-state')) === 'online', `${p.name}’s client to reconnect`, 20_000);
}

/** The frames `p` sent since its network was last dropped (or its page opened), once a `sync` is among them. */
async function syncFrames(p) {
  // The list and history come over REST, so they can be on screen before
  // the socket has opened and sent its sync: wait for one (every caller
  // expects one), then let the caller judge it or report what was sent.
  let frames = [];
  try {
    await until(async () => {
      frames = await p.page.evaluate(() => window.__sentFrames.map((f) => JSON.parse(f)));
      return frames.some((f) => f.type === 'sync');
    }, 'a sync frame sent');
  } catch (err) {
    if (!(err instanceof StepFailure)) throw err;
  }
  return { frames, syncs: frames.filter((f) => f.type === 'sync') };
}

// ---- the scenario -------------------------------------------------------------------

async function main() {
  const runTimer = setTimeout(() => {
    console.log(`FAILED: the whole run took longer than ${WHOLE_RUN_LIMIT / 1000} s`);
    process.exit(1);
  }, WHOLE_RUN_LIMIT);

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });

  const alice = await person(browser, 'alice');
  const bob = await person(browser, 'bob');
  let groupId;
  const fileBytes = Buffer.concat([Buffer.from('Parley test file\n'), randomBytes(3000), Buffer.from([0, 255, 10, 13])]);
  const fileHash = createHash('sha256').update(fileBytes).digest('hex');

  try {
    await step('alice registers', async () => {
      await register(alice, 'alice', PASSWORD_A);
      await shot(alice.page, 'register-form');
      await alice.t('auth-submit').click();
      await visible(alice.t('chat-view'), "alice's chat view after registering");
      await hasText(alice.t('me'), 'alice', 'the signed-in user name');
      await hasText(alice.t('conn-status'), 'Online', "alice's connection status");
    });

    await step('alice signs out and signs in again', async () => {
      const oldToken = await tokenOf(alice);
      await alice.t('logout-button').click();
      await visible(alice.t('auth-view'), 'the sign-in screen after signing out');
      if (await tokenOf(alice)) throw new StepFailure('the token is still in sessionStorage after signing out');
      // Signing out revokes the token on the server (POST /auth/logout).
      await until(
        async () => (await fetch(BASE + '/groups', { headers: { Authorization: `Bearer ${oldToken}` } })).status === 401,
        'the signed-out token to be refused (401)',
      );
      await alice.t('tab-login').click();
      await alice.t('auth-username').fill('alice');
      await alice.t('auth-password').fill('wrong password!');
      await alice.t('auth-submit').click();
      await hasText(alice.t('notice'), 'invalid username or password', 'the error notice for a wrong password');
      await shot(alice.page, 'login-error-notice');
      await alice.t('notice-dismiss').first().click();
      await until(async () => (await alice.t('notice').count()) === 0, 'the dismissed notice to disappear');
      await alice.t('auth-password').fill(PASSWORD_A);
      await alice.t('auth-submit').click();
      await visible(alice.t('chat-view'), "alice's chat view after signing in");
      await hasText(alice.t('me'), 'alice', 'the signed-in user name');
      await hasText(alice.t('conn-status'), 'Online', "alice's connection status");
    });

    await step('bob registers in a second browser context', async () => {
      await register(bob, 'bob', PASSWORD_B);
      await bob.t('auth-submit').click();
      await visible(bob.t('chat-view'), "bob's chat view");
      await hasText(bob.t('me'), 'bob', "bob's signed-in user name");
      await hasText(bob.t('conn-status'), 'Online', "bob's connection status");
      // Marker that survives only as long as bob's page is not reloaded.
      await bob.page.evaluate(() => {
        window.__noReload = true;
      });
      await shot(bob.page, 'bob-signed-in');
    });

    await step('an unknown user shows a dismissable error', async () => {
      await alice.t('new-conversation-input').fill('nobody_here');
      await alice.t('new-conversation-button').click();
      await hasText(alice.t('notice'), 'nobody_here', 'the “no such user” notice');
      await shot(alice.page, 'unknown-user-notice');
      await alice.t('notice-dismiss').first().click();
      await until(async () => (await alice.t('notice').count()) === 0, 'the dismissed notice to disappear');
    });

    await step('alice starts a conversation with bob and sends a message', async () => {
      await alice.t('new-conversation-input').fill('bob');
      await alice.t('new-conversation-button').click();
      await hasText(alice.t('conversation-title'), 'bob', 'the conversation title');
      await visible(alice.t('contact-bob'), 'bob in alice’s contact list');
      await alice.t('composer-input').fill('Hello Bob! <b>not bold</b> 👋');
      await alice.page.keyboard.press('Enter');
      const mine = messageWithText(alice, 'Hello Bob!');
      await visible(mine, 'alice’s message in her conversation');
      // Acked and pushed to bob's open socket: delivered.
      await until(
        async () => (await mine.locator('[data-testid="message-status"]').getAttribute('data-status')) === 'delivered',
        'alice’s message to show ✓✓ delivered',
      );
      await hasText(mine.locator('[data-testid="message-status"]'), '✓✓', 'the delivered tick');
      await shot(alice.page, 'alice-sent-message');
    });

    await step('bob sees the message live, without reloading', async () => {
      const contact = bob.t('contact-alice');
      await visible(contact, 'alice in bob’s contact list');
      await hasText(contact.locator('[data-testid="unread"]'), '1', 'the unread count on alice in bob’s list');
      await shot(bob.page, 'bob-sees-new-conversation');
      await contact.click();
      const msg = messageWithText(bob, 'Hello Bob!');
      await visible(msg, 'alice’s message in bob’s conversation view');
      // User content is text, never markup.
      await hasText(msg.locator('[data-testid="message-content"]'), '<b>not bold</b>', 'the escaped message text');
      if ((await msg.locator('b').count()) !== 0) throw new StepFailure('message content was rendered as HTML');
      if (!(await bob.page.evaluate(() => window.__noReload === true))) throw new StepFailure('bob’s page was reloaded');
      await until(async () => (await contact.locator('[data-testid="unread"]').count()) === 0, 'bob’s unread badge to clear once he reads');
      await shot(bob.page, 'bob-reads-message');
    });

    await step('alice sees the read receipt', async () => {
      const status = messageWithText(alice, 'Hello Bob!').locator('[data-testid="message-status"]');
      await until(async () => (await status.getAttribute('data-status')) === 'read', 'alice’s message to be marked read');
      await hasText(status, 'Read', 'the read receipt label');
      await shot(alice.page, 'alice-sees-read-receipt');
    });

    await step('bob types and alice sees “bob is typing…”', async () => {
      await bob.t('composer-input').click();
      await bob.t('composer-input').pressSequentially('Hi alice, got it', { delay: 40 });
      await hasText(alice.t('typing-indicator'), 'bob is typing…', 'alice’s typing indicator');
      await shot(alice.page, 'alice-sees-typing');
      await bob.page.keyboard.press('Enter');
      await visible(messageWithText(alice, 'Hi alice, got it'), 'bob’s reply in alice’s view');
      await until(async () => (await textOf(alice.t('typing-indicator'))) === '', 'the typing indicator to clear after the message');
      // alice is looking at the conversation, so bob sees his reply read.
      const status = messageWithText(bob, 'Hi alice, got it').locator('[data-testid="message-status"]');
      await until(async () => (await status.getAttribute('data-status')) === 'read', 'bob’s reply to be marked read by alice');
    });

    await step('alice sends a file and bob downloads identical bytes', async () => {
      await alice.t('file-input').setInputFiles({ name: 'notes.bin', mimeType: 'application/octet-stream', buffer: fileBytes });
      const aliceFile = alice.t('message-list').locator('[data-testid="file-download"][data-filename="notes.bin"]');
      await visible(aliceFile, 'the file message in alice’s view');
      await until(async () => !(await aliceFile.first().isDisabled()), 'alice’s file message to finish uploading');
      const link = bob.t('message-list').locator('[data-testid="file-download"][data-filename="notes.bin"]');
      await visible(link, 'the download link in bob’s view');
      await hasText(link, 'notes.bin', 'the file name on the link');
      await shot(bob.page, 'bob-sees-file');
      const [download] = await Promise.all([bob.page.waitForEvent('download', { timeout: TIMEOUT }), link.first().click()]);
      if (download.suggestedFilename() !== 'notes.bin') {
        throw new StepFailure(`the download is named ${download.suggestedFilename()}, expected notes.bin`);
      }
      const saved = await download.path();
      const got = readFileSync(saved);
      const gotHash = createHash('sha256').update(got).digest('hex');
      if (gotHash !== fileHash) {
        throw new StepFailure(`downloaded ${got.length} bytes (sha256 ${gotHash}), expected ${fileBytes.length} bytes (sha256 ${fileHash})`);
      }
    });

    await step('alice creates a group and adds bob', async () => {
      await alice.t('new-group-name').fill('Project X');
      await alice.t('new-group-description').fill('Planning the launch');
      await alice.t('new-group-button').click();
      await hasText(alice.t('conversation-title'), 'Project X', 'the new group’s title');
      const groupButton = alice.t('conversation-list').locator('[data-group-name="Project X"]');
      await visible(groupButton, 'the group in alice’s group list');
      groupId = Number((await groupButton.getAttribute('data-testid')).replace('group-', ''));
      await visible(alice.t('add-member-input'), 'the add-member form');
      await alice.t('add-member-input').fill('bob');
      await alice.t('add-member-button').click();
      await hasText(alice.t('notice'), 'bob was added', 'the “bob was added” notice');
      await hasText(alice.t('conversation-subtitle'), 'bob', 'the member list in the group header');
      await shot(alice.page, 'alice-created-group');
    });

    await step('bob sees the new group at once, before anyone writes there', async () => {
      // The member_added event, not a message, brings it into his list.
      await visible(bob.t(`group-${groupId}`), 'the group in bob’s list as soon as he is added');
    });

    await step('a group message reaches bob live with an unread count', async () => {
      await alice.t('composer-input').fill('Welcome to Project X, everyone');
      await alice.page.keyboard.press('Enter');
      await visible(messageWithText(alice, 'Welcome to Project X'), 'the group message in alice’s view');
      const group = bob.t(`group-${groupId}`);
      await visible(group, 'the group in bob’s list (he was added while online)');
      await hasText(group.locator('[data-testid="unread"]'), '1', 'the group’s unread count in bob’s list');
      await alice.t('composer-input').fill('Agenda: ship it');
      await alice.page.keyboard.press('Enter');
      await hasText(group.locator('[data-testid="unread"]'), '2', 'the group’s unread count after a second message');
      await shot(bob.page, 'bob-group-unread');
    });

    await step('bob opens the group and its unread count clears', async () => {
      const group = bob.t(`group-${groupId}`);
      await group.click();
      await hasText(bob.t('conversation-title'), 'Project X', 'the group title in bob’s view');
      await visible(messageWithText(bob, 'Welcome to Project X'), 'the first group message in bob’s view');
      await visible(messageWithText(bob, 'Agenda: ship it'), 'the second group message in bob’s view');
      await until(async () => (await group.locator('[data-testid="unread"]').count()) === 0, 'the group’s unread badge to clear');
      // The server agrees: bob's read cursor moved.
      const token = await tokenOf(bob);
      await until(async () => {
        const groups = await apiAs(token, 'GET', '/groups');
        const g = groups.find((x) => x.id === groupId);
        return g && g.unread === 0;
      }, 'GET /groups to report 0 unread for bob');
      await bob.t('composer-input').fill('Thanks for adding me!');
      await bob.page.keyboard.press('Enter');
      await visible(messageWithText(alice, 'Thanks for adding me!'), 'bob’s group reply in alice’s view');
      await shot(bob.page, 'bob-reads-group');
    });

    // Both have the group open from here on.
    let bobsId; // bob's "Thanks for adding me!"
    let deletedId;
    await step('alice replies to bob’s message and bob sees the quote', async () => {
      const original = messageWithText(alice, 'Thanks for adding me!').first();
      bobsId = Number(await original.getAttribute('data-id'));
      await original.hover();
      await original.locator('[data-testid="action-reply"]').click();
      await visible(alice.t('reply-bar'), 'the “Replying to” bar above alice’s composer');
      await hasText(alice.t('reply-bar'), 'Replying to bob', 'the reply bar');
      await hasText(alice.t('reply-bar-text'), 'Thanks for adding me!', 'the quoted snippet in the reply bar');
      await alice.t('composer-input').fill('Glad to have you, bob');
      await shot(alice.page, 'alice-replying');
      await alice.page.keyboard.press('Enter');
      await until(async () => !(await alice.t('reply-bar').isVisible()), 'the reply bar to close after sending');
      const mine = messageWithText(alice, 'Glad to have you, bob');
      await hasText(mine.locator('[data-testid="reply-quote"]'), 'Thanks for adding me!', 'the quote on alice’s sent reply');
      // bob gets the reply live, quoting his message; the quote leads to the original.
      const reply = messageWithText(bob, 'Glad to have you, bob');
      await visible(reply, 'alice’s reply in bob’s view');
      const quote = reply.locator('[data-testid="reply-quote"]');
      await hasText(quote, 'Thanks for adding me!', 'the quoted original in bob’s view');
      if (Number(await quote.getAttribute('data-reply-to')) !== bobsId) {
        throw new StepFailure(`the quote points at ${await quote.getAttribute('data-reply-to')}, expected ${bobsId}`);
      }
      await quote.click();
      await until(async () => (await messageById(bob, bobsId).getAttribute('data-highlight')) === 'true', 'the original to be highlighted after clicking the quote');
      await shot(bob.page, 'bob-sees-reply');
    });

    await step('bob edits his message and alice sees the new text, “edited”, live', async () => {
      const mine = messageById(bob, bobsId);
      // bob is a plain member: he edits his own message but deletes nobody else's.
      const alices = messageWithText(bob, 'Agenda: ship it');
      await alices.hover();
      if ((await alices.locator('[data-testid="action-edit"]').count()) !== 0) throw new StepFailure('bob may edit alice’s message');
      if ((await alices.locator('[data-testid="action-delete"]').count()) !== 0) throw new StepFailure('bob, a member, may delete alice’s message');
      await mine.hover();
      await mine.locator('[data-testid="action-edit"]').click();
      const box = mine.locator('[data-testid="edit-input"]');
      await visible(box, 'the inline editor');
      await box.fill('Thanks for adding me, all!');
      await box.press('Enter');
      await hasText(contentOf(mine), 'Thanks for adding me, all!', 'bob’s edited message');
      await visible(mine.locator('[data-testid="message-edited"]'), '“edited” on bob’s message');
      const seen = messageById(alice, bobsId);
      await hasText(contentOf(seen), 'Thanks for adding me, all!', 'the edit in alice’s view');
      await hasText(seen.locator('[data-testid="message-edited"]'), 'edited', '“edited” in alice’s view');
      if ((await messageById(alice, bobsId).count()) !== 1) throw new StepFailure('the edited message is shown twice');
      // The reply's quote follows the original.
      await hasText(messageWithText(alice, 'Glad to have you, bob').locator('[data-testid="reply-quote"]'), 'Thanks for adding me, all!', 'the quote after the edit');
      // alice owns the group: she may delete bob's message, not edit it.
      await seen.hover();
      if ((await seen.locator('[data-testid="action-edit"]').count()) !== 0) throw new StepFailure('alice may edit bob’s message');
      await visible(seen.locator('[data-testid="action-delete"]'), 'Delete on bob’s message for alice, the owner');
      await shot(alice.page, 'alice-sees-edit');
    });

    await step('alice reacts, bob sees the chip with its count, and alice takes it back', async () => {
      const target = messageById(alice, bobsId);
      await target.hover();
      await target.locator('[data-testid="action-react"]').click();
      await visible(target.locator('[data-testid="reaction-picker"]'), 'the reaction picker');
      await target.locator('[data-testid="reaction-choice"][data-emoji="👍"]').click();
      await until(async () => (await chipCount(target, '👍')) === '1', 'alice’s 👍 chip with 1');
      if ((await chipOf(target, '👍').getAttribute('aria-pressed')) !== 'true') throw new StepFailure('alice’s own chip is not highlighted');
      const seen = messageById(bob, bobsId);
      await until(async () => (await chipCount(seen, '👍')) === '1', 'the 👍 chip with 1 in bob’s view');
      if ((await chipOf(seen, '👍').getAttribute('aria-pressed')) !== 'false') throw new StepFailure('bob sees alice’s reaction as his own');
      // bob joins in by clicking the chip: 2 for both.
      await chipOf(seen, '👍').click();
      await until(async () => (await chipCount(seen, '👍')) === '2', 'the chip to count 2 in bob’s view');
      await until(async () => (await chipCount(target, '👍')) === '2', 'the chip to count 2 in alice’s view');
      await shot(bob.page, 'bob-sees-reactions');
      // Clicking her own chip takes alice's reaction back.
      await chipOf(target, '👍').click();
      await until(async () => (await chipCount(seen, '👍')) === '1', 'the chip to fall back to 1 in bob’s view');
      await until(async () => (await chipOf(target, '👍').getAttribute('aria-pressed')) === 'false', 'alice’s chip to be hers no longer');
      await chipOf(seen, '👍').click();
      await until(async () => (await chipOf(target, '👍').count()) === 0, 'the chip to disappear once nobody reacts');
    });

    await step('bob deletes a message and alice sees the tombstone', async () => {
      await bob.t('composer-input').fill('Oops, wrong chat');
      await bob.page.keyboard.press('Enter');
      const seen = messageWithText(alice, 'Oops, wrong chat');
      await visible(seen, 'bob’s new message in alice’s view');
      deletedId = Number(await seen.getAttribute('data-id'));
      const mine = messageById(bob, deletedId);
      await until(async () => (await mine.count()) === 1, 'bob’s message to be acked');
      await mine.hover();
      await mine.locator('[data-testid="action-delete"]').click();
      // The first click asks; the second deletes.
      await hasText(mine.locator('[data-testid="action-delete"]'), 'Delete for everyone?', 'the delete confirmation');
      await mine.locator('[data-testid="action-delete"]').click();
      await until(async () => (await mine.getAttribute('data-deleted')) === 'true', 'bob’s message to become a tombstone');
      const tomb = messageById(alice, deletedId);
      await until(async () => (await tomb.getAttribute('data-deleted')) === 'true', 'the tombstone in alice’s view');
      await hasText(contentOf(tomb), 'message deleted', 'the tombstone text');
      if ((await messageWithText(alice, 'Oops, wrong chat').count()) !== 0) throw new StepFailure('the deleted text is still shown');
      if ((await tomb.locator('[data-testid="message-actions"]').count()) !== 0) throw new StepFailure('a tombstone offers actions');
      await shot(alice.page, 'alice-sees-tombstone');
    });

    await step('alice reconnects and sees an edit bob made while she was offline', async () => {
      // The deletion was the last thing alice saw live, so her sync cursor must
      // be its change_id (above every message id she has), not the message's id.
      const received = await alice.page.evaluate(() => window.__receivedFrames.map((f) => JSON.parse(f)));
      const tombstone = received.filter((f) => f.type === 'message_updated').pop();
      if (!tombstone || tombstone.id !== deletedId || !tombstone.deleted || !(tombstone.change_id > deletedId)) {
        throw new StepFailure(`expected the last update alice got to be the deletion, with a change_id: ${JSON.stringify(tombstone)}`);
      }
      await dropNetwork(alice);
      const edited = await apiAs(await tokenOf(bob), 'PATCH', `/messages/${bobsId}`, { content: 'Thanks for adding me, everyone!' });
      await hasText(contentOf(messageById(bob, bobsId)), 'Thanks for adding me, everyone!', 'the edit in bob’s own view');
      await new Promise((r) => setTimeout(r, 300));
      if ((await textOf(contentOf(messageById(alice, bobsId)))) !== 'Thanks for adding me, all!') {
        throw new StepFailure('alice saw the edit while her socket was closed');
      }
      await restoreNetwork(alice);
      const seen = messageById(alice, bobsId);
      await hasText(contentOf(seen), 'Thanks for adding me, everyone!', 'the missed edit after the reconnect');
      if ((await messageById(alice, bobsId).count()) !== 1) throw new StepFailure('the replayed edit was shown twice');
      const { frames, syncs } = await syncFrames(alice);
      const sync = syncs[0];
      if (!sync || sync.since !== tombstone.change_id) {
        throw new StepFailure(
          `expected a sync frame with since = ${tombstone.change_id} (the deletion's change_id; the edit is ${edited.change_id}), sent: ${JSON.stringify(frames)}`,
        );
      }
      await shot(alice.page, 'alice-sees-missed-edit');
    });

    await step('bob reconnects after losing the network and catches up', async () => {
      await dropNetwork(bob);
      const sent = await apiAs(await tokenOf(alice), 'POST', `/groups/${groupId}/messages`, {
        content: 'Sent while bob was offline',
      });
      await new Promise((r) => setTimeout(r, 300));
      if ((await messageWithText(bob, 'Sent while bob was offline').count()) !== 0) {
        throw new StepFailure('bob received a message while his socket was closed');
      }
      await shot(bob.page, 'bob-offline');
      await restoreNetwork(bob);
      await visible(messageWithText(bob, 'Sent while bob was offline'), 'the missed message after the reconnect');
      const { frames, syncs } = await syncFrames(bob);
      const sync = syncs[0];
      if (!sync || !(sync.since > 0 && sync.since < sent.id)) {
        throw new StepFailure(`expected a sync frame with 0 < since < ${sent.id} after reconnecting, sent: ${JSON.stringify(frames)}`);
      }
    });

    await step('alice reloads and sees the history, 50 at a time', async () => {
      // 60 more messages through the REST API, so history needs two pages.
      const token = await tokenOf(alice);
      for (let i = 1; i <= 60; i += 1) {
        await apiAs(token, 'POST', '/messages/private', { recipient: 'bob', content: `Bulk message ${i} of 60` });
      }
      await alice.page.reload();
      await visible(alice.t('chat-view'), 'alice still signed in after the reload');
      await hasText(alice.t('me'), 'alice', 'the signed-in user after reload');
      await visible(alice.t('contact-bob'), 'bob in alice’s contact list after reload');
      await visible(alice.t(`group-${groupId}`), 'the group in alice’s list after reload');
      await alice.t('contact-bob').click();
      await hasText(alice.t('conversation-title'), 'bob', 'the conversation title after reload');
      await visible(messageWithText(alice, 'Bulk message 60 of 60'), 'the newest message');
      const items = alice.t('message-list').locator('[data-testid="message"]');
      await until(async () => (await items.count()) === 50, `the first page to hold 50 messages`);
      if ((await messageWithText(alice, 'Hello Bob!').count()) !== 0) {
        throw new StepFailure('the oldest message is shown before “load older” was used');
      }
      await visible(alice.t('load-older-button'), 'the “Load older messages” button');
      await shot(alice.page, 'alice-history-after-reload');
      // 60 bulk + 2 typed + 1 file = 63 messages: the second page has 13.
      await alice.t('load-older-button').click();
      await visible(messageWithText(alice, 'Hello Bob!'), 'the first message after loading older ones');
      await until(async () => (await items.count()) === 63, 'all 63 messages after loading older ones');
      await visible(alice.t('history-start'), 'the “beginning of the conversation” marker');
      const texts = await alice.t('message-list').locator('[data-testid="message-content"]').allTextContents();
      const bulk = texts.filter((x) => x.startsWith('Bulk message')).map((x) => Number(x.split(' ')[2]));
      if (bulk.length !== 60 || bulk.some((n, i) => n !== i + 1)) {
        throw new StepFailure(`bulk messages are not all there in order: ${bulk.join(',')}`);
      }
      await alice.t('message-scroller').evaluate((s) => {
        s.scrollTop = 0;
      });
      await shot(alice.page, 'alice-older-history');
    });

    await step('a search finds an old message and jumps to it', async () => {
      // alice opens the group and reloads: bob's conversation is not loaded at all.
      await alice.t(`group-${groupId}`).click();
      await hasText(alice.t('conversation-title'), 'Project X', 'the group title');
      await alice.page.reload();
      await visible(alice.t('chat-view'), 'alice still signed in after the reload');
      await hasText(alice.t('conversation-title'), 'Project X', 'the group reopened after the reload');
      const results = alice.t('search-results').locator('[data-testid="search-result"]');
      // A deleted message is found by nothing.
      await alice.t('search-input').fill('wrong chat');
      await alice.t('search-input').press('Enter');
      await hasText(alice.t('search-status'), 'No messages found', 'the empty search');
      await alice.t('search-input').fill('not bold');
      await alice.t('search-input').press('Enter');
      await until(async () => (await results.count()) === 1 && (await textOf(alice.t('search-status'))).startsWith('1 '), 'exactly one result for “not bold”');
      const hit = results.first();
      await hasText(hit, 'Hello Bob!', 'the found message');
      if ((await hit.getAttribute('data-username')) !== 'bob') throw new StepFailure('the result is not shown as bob’s conversation');
      const marked = (await hit.locator('mark').allTextContents()).join(' ');
      if (marked !== 'not bold') throw new StepFailure(`the searched words are not marked: “${marked}”`);
      if ((await hit.locator('b').count()) !== 0) throw new StepFailure('a search result was rendered as HTML');
      const id = Number(await hit.getAttribute('data-id'));
      await shot(alice.page, 'alice-search-results');
      // The message is beyond the newest page: the client loads older pages to reach it.
      await hit.click();
      await hasText(alice.t('conversation-title'), 'bob', 'the conversation of the result');
      const found = messageById(alice, id);
      await visible(found, 'the found message in its conversation');
      await until(async () => (await found.getAttribute('data-highlight')) === 'true', 'the found message to be highlighted');
      await until(
        () =>
          found.evaluate((node) => {
            const box = node.closest('[data-testid="message-scroller"]').getBoundingClientRect();
            const r = node.getBoundingClientRect();
            return r.top >= box.top && r.bottom <= box.bottom;
          }),
        'the found message to be scrolled into view',
      );
      if (!(await alice.t('search-panel').isHidden())) throw new StepFailure('the results still cover the conversation');
      await shot(alice.page, 'alice-search-jump');
    });

    await step('bob’s unread count follows the bulk messages', async () => {
      // bob has the group open; the 60 private messages arrived live.
      await hasText(bob.t('contact-alice').locator('[data-testid="unread"]'), '60', 'bob’s unread count for alice');
      await shot(bob.page, 'bob-unread-bulk');
    });

    await step('bob signs in on a new device and his conversations are rebuilt', async () => {
      // A fresh context has nothing stored: the list comes from GET
      // /conversations, and the socket replays only what came after it.
      const phone = await person(browser, 'bob-new-device');
      await phone.page.goto(BASE + '/');
      await visible(phone.t('auth-view'), 'the sign-in screen on the new device');
      await phone.t('auth-username').fill('BOB'); // usernames are case-insensitive
      await phone.t('auth-password').fill(PASSWORD_B);
      await phone.t('auth-submit').click();
      await visible(phone.t('chat-view'), 'the chat view on the new device');
      await hasText(phone.t('me'), 'bob', 'the name as registered');
      const contact = phone.t('contact-alice');
      await visible(contact, 'alice in the rebuilt contact list');
      await hasText(contact.locator('[data-testid="unread"]'), '60', 'the unread count from the server');
      await visible(phone.t(`group-${groupId}`), 'the group on the new device');
      await hasText(phone.t(`group-${groupId}`), 'Project X', 'the group name on the new device');
      const { frames, syncs } = await syncFrames(phone);
      if (!syncs.length || !(syncs[0].since > 0)) {
        throw new StepFailure(`expected the first sync to start after the list (since > 0), sent: ${JSON.stringify(frames)}`);
      }
      await shot(phone.page, 'bob-new-device');
      await phone.context.close();
      delete pages['bob-new-device'];
    });

    await step('bob reloads with unread messages: the list shows the server’s counts, newest first', async () => {
      // bob opens a group of his own, so neither conversation with news is open.
      await bob.t('new-group-name').fill('Notes');
      await bob.t('new-group-button').click();
      await hasText(bob.t('conversation-title'), 'Notes', 'bob’s own group');
      const notes = bob.t('conversation-list').locator('[data-group-name="Notes"]');
      const notesId = (await notes.getAttribute('data-testid')).replace('group-', '');
      const aliceToken = await tokenOf(alice);
      await apiAs(aliceToken, 'POST', '/messages/private', { recipient: 'bob', content: 'Are you still there, bob?' });
      await apiAs(aliceToken, 'POST', `/groups/${groupId}/messages`, { content: 'News for the group' });
      const gone = await apiAs(aliceToken, 'POST', `/groups/${groupId}/messages`, { content: 'A second thought' });
      await apiAs(aliceToken, 'DELETE', `/messages/${gone.id}`);
      const badgeOf = (t) => t.locator('[data-testid="unread"]');
      const group = bob.t(`group-${groupId}`);
      const contact = bob.t('contact-alice');
      // Live first: the new messages counted (a deleted one is never unread),
      // the tombstone as the group's snippet.
      await hasText(badgeOf(group), '1', 'the group’s live unread count');
      await hasText(badgeOf(contact), '61', 'alice’s live unread count');
      await hasText(group.locator('[data-testid="conv-preview"]'), 'message deleted', 'the tombstone as the group’s last message');

      await bob.page.reload();
      await visible(bob.t('chat-view'), 'bob still signed in after the reload');
      await hasText(bob.t('conversation-title'), 'Notes', 'bob’s own group reopened');
      const order = async () =>
        (await bob.t('conversation-list').locator('.conv-item').evaluateAll((items) => items.map((b) => b.dataset.testid))).join(' ');
      const wanted = `group-${groupId} contact-alice group-${notesId}`;
      await until(async () => (await order()) === wanted, `the list to read “${wanted}” (newest first)`);
      await hasText(badgeOf(group), '1', 'the group’s unread count from the server');
      await hasText(badgeOf(contact), '61', 'alice’s unread count from the server');
      if ((await badgeOf(notes).count()) !== 0) throw new StepFailure('bob’s own group shows an unread badge');
      await hasText(group.locator('[data-testid="conv-preview"]'), 'message deleted', 'the tombstone after the reload');
      if ((await textOf(group.locator('[data-testid="conv-preview"]'))).includes('A second thought')) {
        throw new StepFailure('the deleted text is shown in the list');
      }
      await hasText(contact.locator('[data-testid="conv-preview"]'), 'Are you still there, bob?', 'alice’s last message');
      for (const item of [group, contact, notes]) {
        if (!(await textOf(item.locator('[data-testid="conv-time"]')))) throw new StepFailure('a conversation shows no time of last activity');
      }
      // The socket replays only what came after the list: its cursor starts at the newest message listed.
      const { frames, syncs } = await syncFrames(bob);
      if (!syncs.length || !(syncs[0].since >= gone.id)) {
        throw new StepFailure(`expected the first sync after the reload to start at ${gone.id} or later, sent: ${JSON.stringify(frames)}`);
      }
      await shot(bob.page, 'bob-list-after-reload');

      // Opening the group clears its badge, and the server agrees.
      await group.click();
      await hasText(bob.t('conversation-title'), 'Project X', 'the group opened from the list');
      await until(async () => (await badgeOf(group).count()) === 0, 'the group’s badge to clear once it is open');
      const token = await tokenOf(bob);
      await until(async () => {
        const list = await apiAs(token, 'GET', '/conversations');
        const g = list.conversations.find((x) => x.kind === 'group' && x.group_id === groupId);
        return g && g.unread === 0;
      }, 'GET /conversations to report 0 unread in the group');
      // Back to Notes, so the reload does not reopen the group: the list alone decides.
      await notes.click();
      await hasText(bob.t('conversation-title'), 'Notes', 'bob’s own group again');
      await bob.page.reload();
      await visible(bob.t('chat-view'), 'bob still signed in after the second reload');
      await hasText(bob.t('conversation-title'), 'Notes', 'Notes reopened after the second reload');
      await until(async () => (await order()) === wanted, 'the same order after the second reload');
      await hasText(badgeOf(contact), '61', 'alice’s unread count after the second reload');
      if ((await badgeOf(group).count()) !== 0) throw new StepFailure('the group’s badge came back after the reload');
      if ((await group.getAttribute('data-unread')) !== '0') throw new StepFailure('the group is listed with unread messages');
      await shot(bob.page, 'bob-badge-stays-cleared');
    });

    if (errors.length) {
      await step('no uncaught script errors in either page', async () => {
        throw new StepFailure(errors.join('\n'));
      });
    }
  } finally {
    clearTimeout(runTimer);
    await browser.close().catch(() => {});
  }
}

const started = Date.now();
main()
  .then(() => {
    console.log(`browser e2e finished in ${((Date.now() - started) / 1000).toFixed(1)} s; screenshots in ${SHOTS}`);
    console.log(`${passed} passed, ${failed} failed`);
    process.exit(0);
  })
  .catch((err) => {
    if (!(err instanceof StepFailure) && stepNo === 0) console.log(err.stack || String(err));
    console.log(`${passed} passed, ${failed === 0 ? 1 : failed} failed`);
    process.exit(1);
  });
