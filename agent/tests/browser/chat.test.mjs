// Real-browser test of the chat panel.
//
//   NODE_TOOLS=<dir with node_modules> node chat.test.mjs <base-url> <screenshot-dir> [model|no-model]
//
// With a model (a local fake that streams, see agent/tests/it/web_page.rs): the answer's text
// appears piece by piece before the turn ends (intermediate DOM states are recorded, not only
// the last), a tool card appears, a render's progress bar moves and its image loads, Stop ends
// a turn, and a reload keeps the conversation. Without one: the panel says so and the input is
// off. Prints a one-line JSON summary on stdout; exits non-zero on any failure.
import { createRequire } from 'node:module';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const { chromium } = createRequire(path.join(process.env.NODE_TOOLS || process.cwd(), 'package.json'))(
  'playwright-core',
);

const WAIT_MS = 30_000;
const OVERALL_MS = 150_000;
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

const [baseArg, outArg, modeArg = 'model'] = process.argv.slice(2);
if (!baseArg || !outArg) {
  console.error('usage: node chat.test.mjs <base-url> <screenshot-dir> [model|no-model]');
  process.exit(2);
}
const base = new URL(baseArg);
const outDir = path.resolve(outArg);
mkdirSync(outDir, { recursive: true });

const watchdog = setTimeout(() => {
  console.error(`FAIL: test did not finish within ${OVERALL_MS / 1000} s`);
  process.exit(3);
}, OVERALL_MS);

class CheckError extends Error {}
function check(cond, message) {
  if (!cond) throw new CheckError(message);
}

const userDataDir = mkdtempSync(path.join(tmpdir(), 'chat-test-'));
const summary = {};
const pageErrors = [];
const consoleErrors = [];
const foreignRequests = [];
let context;
let page;
let step = 'launch';

async function waitFor(fn, arg, what) {
  try {
    await page.waitForFunction(fn, arg, { timeout: WAIT_MS, polling: 50 });
  } catch {
    const log = await page.evaluate(() => document.getElementById('chat-log')?.innerText).catch(() => null);
    throw new CheckError(`${what} (waited ${WAIT_MS} ms; the conversation shows: ${JSON.stringify(log)})`);
  }
}

async function shot(name) {
  await page.screenshot({ path: path.join(outDir, name), fullPage: true, animations: 'disabled' });
}

// Records every text the last assistant bubble shows while it is streaming.
async function recordStreaming() {
  await page.evaluate(() => {
    window.__texts = [];
    const log = document.getElementById('chat-log');
    const rec = () => {
      const bubbles = log.querySelectorAll('.chat-assistant');
      const last = bubbles[bubbles.length - 1];
      if (!last) return;
      const text = last.querySelector('.chat-text')?.textContent || '';
      const streaming = last.classList.contains('streaming');
      const prev = window.__texts[window.__texts.length - 1];
      if (!prev || prev.text !== text || prev.streaming !== streaming) {
        window.__texts.push({ text, streaming, cards: last.querySelectorAll('.tool-card').length });
      }
    };
    new MutationObserver(rec).observe(log, { childList: true, subtree: true, characterData: true, attributes: true });
  });
}

async function say(text) {
  await page.fill('#chat-input', text);
  await page.press('#chat-input', 'Enter');
}

const lastBubbleDone = () => {
  const bubbles = document.querySelectorAll('#chat-log .chat-assistant');
  const last = bubbles[bubbles.length - 1];
  return last && !last.classList.contains('streaming') && !document.getElementById('chat-send').disabled;
};

async function withModel() {
  // ---- 1. the answer streams in, after a tool card ----
  step = 'streamed answer';
  await recordStreaming();
  await say('What is 2 + 3?');
  await waitFor(() => {
    const bubbles = document.querySelectorAll('#chat-log .chat-assistant');
    const last = bubbles[bubbles.length - 1];
    return last && last.classList.contains('streaming') && (last.querySelector('.chat-text')?.textContent || '') !== '';
  }, null, 'the first piece of the answer did not appear while streaming');
  await shot('chat-streaming.png');
  await waitFor(lastBubbleDone, null, 'the answer did not finish');
  const texts = await page.evaluate(() => window.__texts);
  const partial = texts.filter((t) => t.streaming && t.text !== '' && t.text !== '2 + 3 = 5');
  check(partial.length >= 1, `no partial answer was shown before the end: ${JSON.stringify(texts)}`);
  const final = await page.evaluate(() => {
    const bubbles = document.querySelectorAll('#chat-log .chat-assistant');
    const last = bubbles[bubbles.length - 1];
    return {
      text: last.querySelector('.chat-text').textContent,
      tool: last.querySelector('.tool-card .tool-name')?.textContent,
      state: last.querySelector('.tool-card .tool-state')?.textContent,
    };
  });
  check(final.text === '2 + 3 = 5', `final answer: ${JSON.stringify(final)}`);
  check(final.tool === 'add' && final.state === 'done', `tool card: ${JSON.stringify(final)}`);
  summary.partial_texts = partial.map((t) => t.text);
  await shot('chat-answered.png');

  // ---- 2. a render: progress bar, then the image inline ----
  step = 'render in chat';
  await page.evaluate(() => {
    window.__progress = [];
    const log = document.getElementById('chat-log');
    new MutationObserver(() => {
      for (const p of log.querySelectorAll('.tool-progress')) {
        if (!p.hidden) {
          const entry = `${p.value}/${p.max}`;
          if (window.__progress[window.__progress.length - 1] !== entry) window.__progress.push(entry);
        }
      }
    }).observe(log, { childList: true, subtree: true, attributes: true, characterData: true });
  });
  await say('Please render a blurred picture');
  await waitFor(() => {
    const img = document.querySelector('#chat-log .chat-assistant:last-child .chat-image');
    return img && img.complete && img.naturalWidth > 0;
  }, null, 'the rendered image did not load in the conversation');
  await waitFor(lastBubbleDone, null, 'the render turn did not finish');
  const progress = await page.evaluate(() => window.__progress);
  check(progress.length >= 2, `the progress bar did not move: ${JSON.stringify(progress)}`);
  summary.render_progress = progress;
  summary.image_width = await page.evaluate(
    () => document.querySelector('#chat-log .chat-assistant:last-child .chat-image').naturalWidth,
  );
  const link = await page.evaluate(
    () => document.querySelector('#chat-log .chat-assistant:last-child .chat-figure a')?.getAttribute('href'),
  );
  check(link && link.startsWith('/files/'), `download link: ${link}`);
  await shot('chat-render.png');

  // ---- 2b. "a pie chart of …": the pie inline, and in Recent renders ----
  step = 'pie in chat';
  await say('Draw a pie chart of apples 3, pears 5');
  await waitFor(() => {
    const img = document.querySelector('#chat-log .chat-assistant:last-child .chat-image');
    return img && img.complete && img.naturalWidth > 0;
  }, null, 'the pie did not load in the conversation');
  await waitFor(lastBubbleDone, null, 'the pie turn did not finish');
  const pie = await page.evaluate(() => {
    const last = document.querySelector('#chat-log .chat-assistant:last-child');
    return {
      width: last.querySelector('.chat-image').naturalWidth,
      href: last.querySelector('.chat-figure a')?.getAttribute('href') || '',
      args: last.querySelector('.tool-card .tool-json')?.textContent || '',
      text: last.querySelector('.chat-text').textContent,
    };
  });
  const pieJob = (/^\/files\/([0-9a-f]{32})/.exec(pie.href) || [])[1];
  check(pie.width === 480 && /"pie"/.test(pie.args) && pieJob, `pie: ${JSON.stringify(pie)}`);
  check(pie.text.includes(pieJob), `the answer names the image's URL: ${pie.text}`);
  summary.pie_image_width = pie.width;
  // chat.js told the page a render ended; the list read again and shows the pie.
  const recent = `#recent-list li[data-job-id="${pieJob}"][data-state="succeeded"] img`;
  await waitFor((sel) => document.querySelector(sel), recent, 'the pie is not in Recent renders');
  await page.locator(recent).scrollIntoViewIfNeeded();
  await waitFor((sel) => {
    const img = document.querySelector(sel);
    return img.complete && img.naturalWidth > 0;
  }, recent, 'the pie thumbnail did not load');
  await page.locator('#chat-log .chat-assistant:last-child .chat-image').scrollIntoViewIfNeeded();
  await shot('chat-pie.png');

  // ---- 3. Stop ends the turn (the server cancels its render) ----
  step = 'stop';
  await say('Render something slow');
  await waitFor(() => document.querySelector('#chat-log .chat-assistant:last-child .tool-card'), null,
    'the slow render did not start');
  check(await page.locator('#chat-stop').isVisible(), 'Stop is not offered during a turn');
  await page.click('#chat-stop');
  await waitFor(() => {
    const last = document.querySelector('#chat-log .chat-assistant:last-child');
    return last && /Stopped/.test(last.querySelector('.chat-error')?.textContent || '');
  }, null, 'Stop did not end the turn');
  check(await page.locator('#chat-stop').isHidden(), 'Stop still shown after the turn ended');
  await shot('chat-stopped.png');

  // ---- 4. a reload keeps the conversation ----
  step = 'reload';
  const before = await page.evaluate(() => document.querySelectorAll('#chat-log .chat-msg').length);
  await page.reload({ waitUntil: 'load' });
  await waitFor((n) => document.querySelectorAll('#chat-log .chat-msg').length === n, before,
    'the conversation did not survive the reload');
  await waitFor(() => {
    const img = document.querySelector('#chat-log .chat-image');
    return img && img.complete && img.naturalWidth > 0;
  }, null, 'the image did not come back after the reload');
  summary.messages_after_reload = before;
  await shot('chat-reloaded.png');

  // ---- 5. keyboard only: focus the box, type, Enter ----
  step = 'keyboard';
  await page.focus('#chat-input');
  await page.keyboard.type('What is 2 + 3?');
  await page.keyboard.press('Enter');
  await waitFor(lastBubbleDone, null, 'a keyboard-sent message was not answered');
}

async function withoutModel() {
  step = 'no model';
  await waitFor(() => {
    const notice = document.getElementById('chat-notice');
    return notice && !notice.hidden && /No model is configured/.test(notice.textContent);
  }, null, 'the panel did not say that no model is configured');
  check(await page.locator('#chat-input').isDisabled(), 'the message box should be off without a model');
  check(await page.locator('#submit').isEnabled(), 'the render form must still work');
  summary.notice = await page.evaluate(() => document.getElementById('chat-notice').textContent);
  await shot('chat-no-model.png');
}

async function run() {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1400, height: 1000 },
    timeout: WAIT_MS,
  });
  context.setDefaultTimeout(WAIT_MS);
  page = context.pages()[0] || (await context.newPage());
  page.on('request', (req) => {
    const u = new URL(req.url());
    if (u.protocol !== 'data:' && u.protocol !== 'blob:' && u.origin !== base.origin) foreignRequests.push(req.url());
  });
  page.on('pageerror', (err) => pageErrors.push(String(err && err.message ? err.message : err)));
  page.on('console', (msg) => {
    if (msg.type() === 'error' && !/Failed to load resource/.test(msg.text())) consoleErrors.push(msg.text());
  });
  const resp = await page.goto(new URL('/', base).href, { waitUntil: 'load' });
  check(resp && resp.ok(), `GET / answered ${resp && resp.status()}`);
  if (modeArg === 'no-model') await withoutModel();
  else await withModel();

  step = 'global checks';
  check(foreignRequests.length === 0, `page made non-same-origin requests: ${foreignRequests.join(', ')}`);
  check(pageErrors.length === 0, `uncaught page errors: ${pageErrors.join(' | ')}`);
  check(consoleErrors.length === 0, `console errors (a CSP violation shows here): ${consoleErrors.join(' | ')}`);
}

let exitCode = 0;
try {
  await run();
  summary.checks = 'passed';
} catch (err) {
  exitCode = 1;
  const msg = err instanceof CheckError ? err.message : (err && err.stack) || String(err);
  console.error(`FAIL [${step}]: ${msg}`);
  summary.checks = 'failed';
  summary.failed_step = step;
  summary.failure = err && err.message ? err.message : String(err);
  if (page) {
    try { await shot('chat-failure.png'); } catch { /* best effort */ }
  }
} finally {
  if (context) {
    try { await context.close(); } catch { /* ignore */ }
  }
  try { rmSync(userDataDir, { recursive: true, force: true }); } catch { /* ignore */ }
}
console.log(JSON.stringify(summary));
clearTimeout(watchdog);
process.exit(exitCode);
