// Real-browser test of the render page.
//
//   NODE_TOOLS=<dir with node_modules> node web_page.test.mjs <base-url> <screenshot-dir>
//
// Drives Debian's /usr/bin/chromium (headless) through playwright-core, which is loaded from
// the test tools' node_modules (.tools/node, installed by scripts/install-test-tools).
// Prints a one-line JSON summary on stdout; exits non-zero on any failure.
import { createRequire } from 'node:module';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const { chromium } = createRequire(path.join(process.env.NODE_TOOLS || process.cwd(), 'package.json'))(
  'playwright-core',
);

const WAIT_MS = 30_000; // bound for every individual wait
const OVERALL_MS = 240_000; // hard cap for the whole run
const PHONE = { width: 390, height: 844 };
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

const [baseArg, outArg] = process.argv.slice(2);
if (!baseArg || !outArg) {
  console.error('usage: node web_page.test.mjs <base-url> <screenshot-dir>');
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
function withTimeout(promise, ms, what) {
  let t;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      t = setTimeout(() => reject(new CheckError(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

const userDataDir = mkdtempSync(path.join(tmpdir(), 'web-page-test-'));
const timing = {};
const summary = {};
let context;
let page;
let step = 'launch';

// Observed traffic / problems.
const foreignRequests = [];
const apiRequests = []; // {method, path}
const assetTypes = {};
const pageErrors = [];
const consoleErrors = [];

async function pageText(selector) {
  return page.evaluate((sel) => {
    const el = document.querySelector(sel);
    return el ? el.textContent.trim() : null;
  }, selector);
}

async function uiState() {
  try {
    return await withTimeout(page.evaluate(() => ({
      status: document.getElementById('status')?.textContent,
      error: document.getElementById('error')?.textContent,
      errorHidden: document.getElementById('error')?.hidden,
      submitDisabled: document.getElementById('submit')?.disabled,
    })), 5000, 'reading UI state');
  } catch {
    return null;
  }
}

// Wait for a predicate in the page; on timeout, fail with what the page shows.
async function waitFor(fn, arg, what) {
  try {
    await page.waitForFunction(fn, arg, { timeout: WAIT_MS, polling: 50 });
  } catch (err) {
    throw new CheckError(`${what} (waited ${WAIT_MS} ms; page state: ${JSON.stringify(await uiState())})`);
  }
}

async function setSpec(text) {
  await page.fill('#spec', text);
}

async function readSpec() {
  return JSON.parse(await page.inputValue('#spec'));
}

const isRenderPost = (r) => r.method === 'POST' && r.path === '/v1/renders';

// Submits the form with `submit` and waits until that job's image has loaded; its id and
// the image's natural size.
async function renderAndWait(what, submit = () => page.click('#submit')) {
  const respPromise = page.waitForResponse(
    (r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/v1/renders', { timeout: WAIT_MS });
  await submit();
  const resp = await respPromise;
  check(resp.ok(), `${what}: POST /v1/renders answered ${resp.status()}: ${await resp.text()}`);
  const jobId = (await resp.json()).job_id;
  await waitFor((id) => {
    const img = document.getElementById('result-image');
    const loaded = !document.getElementById('result').hidden && img.complete && img.naturalWidth > 0 &&
      img.src.includes(id);
    return loaded || !document.getElementById('error').hidden;
  }, jobId, `${what}: the image did not load`);
  check(await page.locator('#error').isHidden(), `${what}: ${await pageText('#error')}`);
  await waitFor(() => !document.getElementById('submit').disabled, null, `${what}: #submit not re-enabled`);
  const size = await page.evaluate(() => {
    const img = document.getElementById('result-image');
    return { width: img.naturalWidth, height: img.naturalHeight };
  });
  // A finished render refreshes the recent-renders list.
  await waitForRecent(page, jobId, 'succeeded', `${what}: recent renders`, { thumbnail: false });
  return { jobId, ...size };
}

// Waits until the recent-renders list of `p` shows job `jobId` in `state`; with a thumbnail
// (scrolled to, as it loads lazily) that has loaded when the job succeeded.
async function waitForRecent(p, jobId, state, what, { thumbnail = true } = {}) {
  const item = `#recent-list li[data-job-id="${jobId}"][data-state="${state}"]`;
  try {
    await p.waitForSelector(item, { timeout: WAIT_MS });
    if (state === 'succeeded' && thumbnail) {
      await p.locator(`${item} img`).scrollIntoViewIfNeeded();
      await p.waitForFunction((sel) => {
        const img = document.querySelector(sel);
        return img && img.complete && img.naturalWidth > 0;
      }, `${item} img`, { timeout: WAIT_MS, polling: 50 });
    }
  } catch {
    const shown = await p.evaluate(() => ({
      status: document.getElementById('recent-status')?.textContent,
      items: [...document.querySelectorAll('#recent-list li')].map((li) => `${li.dataset.jobId}:${li.dataset.state}`),
    })).catch(() => null);
    throw new CheckError(`${what}: job ${jobId} not shown as ${state} in Recent renders (shows ${JSON.stringify(shown)})`);
  }
  return p.evaluate((sel) => {
    const li = document.querySelector(sel);
    const img = li.querySelector('img');
    return {
      time: li.querySelector('time')?.getAttribute('datetime') || null,
      text: li.innerText,
      thumb: img ? { width: img.naturalWidth, lazy: img.loading === 'lazy', href: li.querySelector('a')?.getAttribute('href') } : null,
    };
  }, item);
}

function watchProblems(p) {
  p.on('pageerror', (err) => pageErrors.push(String(err && err.message ? err.message : err)));
  p.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const text = msg.text();
    // 4xx/5xx API answers are expected in the error scenarios; anything else
    // (CSP violations, MIME refusals, script errors) is a failure.
    if (/Failed to load resource: the server responded with a status of (4|5)\d\d/.test(text)) return;
    consoleErrors.push(text);
  });
}

async function timed(name, fn) {
  step = name.replace(/_ms$/, '');
  const t0 = performance.now();
  await fn();
  timing[name] = Math.round(performance.now() - t0);
}

async function run() {
  await timed('launch_ms', async () => {
    context = await chromium.launchPersistentContext(userDataDir, {
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
      viewport: { width: 1280, height: 900 },
      timeout: WAIT_MS,
    });
    context.setDefaultTimeout(WAIT_MS);
    context.setDefaultNavigationTimeout(WAIT_MS);
    page = context.pages()[0] || (await context.newPage());
  });

  page.on('request', (req) => {
    const u = new URL(req.url());
    if (u.protocol === 'data:' || u.protocol === 'blob:') return;
    if (u.origin !== base.origin) foreignRequests.push(req.url());
    else if (u.pathname.startsWith('/v1/')) apiRequests.push({ method: req.method(), path: u.pathname });
  });
  page.on('response', (res) => {
    const u = new URL(res.url());
    if (u.origin === base.origin && u.pathname.startsWith('/assets/')) {
      assetTypes[u.pathname] = res.headers()['content-type'] || '';
    }
  });
  watchProblems(page);

  // ---- 1. Chart render succeeds, progress advances ----
  await timed('success_ms', async () => {
    const resp = await page.goto(new URL('/', base).href, { waitUntil: 'load' });
    check(resp && resp.ok(), `GET / answered ${resp && resp.status()}`);
    for (const id of ['#kind-chart', '#kind-vega-lite', '#kind-svg', '#example', '#spec', '#submit', '#progress',
      '#status', '#error', '#recent-list', '#recent-refresh']) {
      check(await page.locator(id).count() === 1, `element ${id} missing`);
    }
    check(await page.locator('#error').isHidden(), '#error should be hidden when empty');

    await page.check('#kind-svg');
    const svgSpec = await readSpec();
    check(svgSpec.kind === 'svg', `SVG tab should prefill an svg spec, got kind=${svgSpec.kind}`);
    await page.check('#kind-chart');
    const chartSpec = await readSpec();
    check(chartSpec.kind === 'chart' && chartSpec.width === 800, 'Chart tab should prefill the chart example');

    // Record every change of the progress bar / status text / submit state.
    await page.evaluate(() => {
      const p = document.getElementById('progress');
      const s = document.getElementById('status');
      const b = document.getElementById('submit');
      window.__seen = [];
      window.__submitDisabledSeen = false;
      const rec = () => {
        const entry = {
          value: p.hasAttribute('value') ? p.value : null,
          max: p.max,
          status: s.textContent,
        };
        const last = window.__seen[window.__seen.length - 1];
        if (!last || last.value !== entry.value || last.max !== entry.max || last.status !== entry.status) {
          window.__seen.push(entry);
        }
        if (b.disabled) window.__submitDisabledSeen = true;
      };
      const mo = new MutationObserver(rec);
      mo.observe(p, { attributes: true });
      mo.observe(s, { childList: true, characterData: true, subtree: true });
      mo.observe(b, { attributes: true });
    });

    const postsBefore = apiRequests.filter(isRenderPost).length;
    await page.click('#submit');
    await waitFor(() => {
      const img = document.getElementById('result-image');
      const fig = document.getElementById('result');
      return img && fig && !fig.hidden && img.complete && img.naturalWidth > 0 && img.offsetWidth > 0;
    }, null, '#result-image did not appear and load');
    await waitFor(() => !document.getElementById('submit').disabled, null, '#submit not re-enabled after the job');

    check(apiRequests.filter(isRenderPost).length === postsBefore + 1, 'expected one POST /v1/renders');
    check(apiRequests.some((r) => /^\/v1\/renders\/[0-9a-f]{32}\/events$/.test(r.path)),
      'expected the page to open /v1/renders/<id>/events');

    const seen = await page.evaluate(() => window.__seen);
    const states = [];
    for (const e of seen) {
      if (e.value === null) continue;
      const key = `${e.value}/${e.max}`;
      if (!states.includes(key)) states.push(key);
    }
    const messages = [...new Set(seen.map((e) => e.status))];
    const reachedFull = seen.some((e) => e.value !== null && e.max > 0 && e.value >= e.max);
    summary.progress_seen = states;
    summary.messages_seen = messages;
    check(states.length >= 2 || reachedFull,
      `progress bar never advanced (seen: ${JSON.stringify(seen)})`);
    check(await page.evaluate(() => window.__submitDisabledSeen), '#submit was never disabled while the job ran');

    const img = await page.evaluate(() => {
      const i = document.getElementById('result-image');
      return { w: i.naturalWidth, h: i.naturalHeight, src: i.src, alt: i.alt };
    });
    summary.image_width = img.w;
    summary.image_height = img.h;
    check(img.w > 0, 'image has naturalWidth 0');
    check(img.alt !== '', '#result-image has no alt text');

    const dl = await page.evaluate(() => {
      const a = document.getElementById('download');
      return { href: a.href, download: a.hasAttribute('download'), text: a.textContent.trim(), visible: a.offsetWidth > 0 };
    });
    check(dl.href && dl.href === img.src, `#download href (${dl.href}) should be the image url (${img.src})`);
    check(dl.download, '#download lacks the download attribute');
    check(dl.visible, '#download is not visible');
    check(/image\//.test(dl.text), `#download text should show the content type, got "${dl.text}"`);
    summary.download_text = dl.text;
    check(await page.locator('#error').isHidden(), `#error shown after success: ${await pageText('#error')}`);

    await page.screenshot({ path: path.join(outDir, 'render-success.png'), fullPage: true, animations: 'disabled' });
  });

  // ---- 1b. Every example of Chart and Vega-Lite renders ----
  await timed('examples_ms', async () => {
    const rendered = {};
    for (const kind of ['chart', 'vega-lite']) {
      await page.check(`#kind-${kind}`);
      check(await page.locator('#example').isVisible(), `${kind}: the example picker is not shown`);
      const ids = await page.$$eval('#example option', (options) => options.map((o) => o.value));
      for (const id of ids) {
        await page.selectOption('#example', id);
        const spec = await readSpec();
        check(spec.kind === kind, `example ${id} loaded a spec of kind ${spec.kind}, not ${kind}`);
        const { jobId, width, height } = await renderAndWait(`example ${id}`);
        rendered[id] = `${width}x${height}`;
        summary.last_job = jobId;
        if (id === 'pie') {
          check(width === spec.width && height === spec.height, `pie: ${width}x${height}`);
          await page.screenshot({ path: path.join(outDir, 'render-pie.png'), fullPage: true, animations: 'disabled' });
        }
        if (id === 'vl-bar-sum') {
          await page.screenshot({
            path: path.join(outDir, 'render-vega-lite.png'), fullPage: true, animations: 'disabled',
          });
        }
      }
    }
    summary.examples_rendered = rendered;
    const names = Object.keys(rendered);
    for (const id of ['bar', 'line-dates', 'area-stacked', 'pie', 'donut-dark', 'scatter', 'bar-horizontal',
      'vl-bar-sum', 'vl-line-dates', 'vl-arc']) {
      check(names.includes(id), `example ${id} was not offered (offered: ${names.join(', ')})`);
    }
    await page.check('#kind-svg');
    check(await page.locator('#example').isHidden(), 'SVG has one example: no picker');
  });

  // ---- 1c. Recent renders: the last job with its thumbnail, here and in a second tab ----
  await timed('recent_ms', async () => {
    const here = await waitForRecent(page, summary.last_job, 'succeeded', 'this tab');
    check(here.thumb && here.thumb.lazy && here.thumb.width > 0, `thumbnail: ${JSON.stringify(here)}`);
    check(here.thumb.href.startsWith('/files/'), `the thumbnail links to the image: ${here.thumb.href}`);
    check(here.time !== null && !Number.isNaN(Date.parse(here.time)), `no start time shown: ${here.text}`);
    const count = await page.locator('#recent-list li').count();
    check(count >= 11 && count <= 12, `expected the 12 most recent renders, got ${count}`);
    const first = await page.evaluate(() => document.querySelector('#recent-list li')?.dataset.jobId);
    check(first === summary.last_job, `newest first: the first item is ${first}, not ${summary.last_job}`);
    summary.recent_item = here.text;
    await page.locator('#recent').screenshot({ path: path.join(outDir, 'recent-renders.png'), animations: 'disabled' });

    const second = await context.newPage();
    watchProblems(second);
    try {
      const resp = await second.goto(new URL('/', base).href, { waitUntil: 'load' });
      check(resp && resp.ok(), `second tab: GET / answered ${resp && resp.status()}`);
      const there = await waitForRecent(second, summary.last_job, 'succeeded', 'second tab');
      summary.recent_second_tab = there.thumb.width > 0;
    } finally {
      await second.close();
    }
  });

  // ---- 1d. Keyboard: arrows switch the kind, Tab reaches the picker, Ctrl+Enter renders ----
  await timed('keyboard_ms', async () => {
    await page.check('#kind-chart');
    await page.selectOption('#example', 'bar');
    await page.focus('#kind-chart');
    await page.keyboard.press('ArrowRight');
    check(await page.isChecked('#kind-vega-lite'), 'ArrowRight on Chart did not choose Vega-Lite');
    check((await readSpec()).kind === 'vega-lite', 'the Vega-Lite tab did not load its spec');
    await page.keyboard.press('ArrowLeft');
    check(await page.isChecked('#kind-chart') && (await readSpec()).kind === 'chart', 'ArrowLeft did not go back');
    await page.keyboard.press('Tab');
    const focused = await page.evaluate(() => document.activeElement?.id);
    check(focused === 'example', `Tab from the kind went to #${focused}, not the example picker`);
    await page.focus('#spec');
    const { width } = await renderAndWait('Ctrl+Enter', () => page.keyboard.press('Control+Enter'));
    check(width === 800, `Ctrl+Enter rendered ${width} px wide`);
  });

  // ---- 2. Server-side validation error (width 0) ----
  await timed('server_error_ms', async () => {
    const current = await page.inputValue('#spec');
    check(/"width":\s*800/.test(current), 'expected "width": 800 in the chart spec');
    await setSpec(current.replace(/"width":\s*800/, '"width": 0'));
    const respPromise = page.waitForResponse(
      (r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/v1/renders', { timeout: WAIT_MS });
    await page.click('#submit');
    const resp = await respPromise;
    check(resp.status() >= 400 && resp.status() < 500, `expected a 4xx for width 0, got ${resp.status()}`);
    await waitFor(() => {
      const e = document.getElementById('error');
      return e && !e.hidden && e.textContent.trim() !== '';
    }, null, '#error did not show the server error');
    const err = await pageText('#error');
    check(/width/i.test(err), `#error should mention "width", got "${err}"`);
    let serverMsg = null;
    try { serverMsg = (await resp.json()).error; } catch { /* checked below */ }
    check(typeof serverMsg === 'string' && err.includes(serverMsg),
      `#error should contain the server's message "${serverMsg}", got "${err}"`);
    check(await page.locator('#result').isHidden(), 'old result should be hidden after a failed submit');
    await waitFor(() => !document.getElementById('submit').disabled, null, '#submit not re-enabled after the error');
    summary.error_shown = err;
    await page.screenshot({ path: path.join(outDir, 'render-error.png'), fullPage: true, animations: 'disabled' });
  });

  // ---- 3. Invalid JSON: message shown, nothing sent ----
  await timed('invalid_json_ms', async () => {
    const before = apiRequests.filter(isRenderPost).length;
    await setSpec('{"kind": "chart", "width": 800,');
    await page.click('#submit');
    await waitFor(() => {
      const e = document.getElementById('error');
      return e && !e.hidden && /JSON/.test(e.textContent);
    }, null, '#error did not show a JSON parse message');
    await page.waitForTimeout(500); // give a (wrong) request the chance to show up
    check(apiRequests.filter(isRenderPost).length === before, 'invalid JSON must not reach the server');
    summary.json_error_shown = await pageText('#error');
  });

  // ---- 4. Job that fails during rendering (invalid SVG) ----
  await timed('job_failure_ms', async () => {
    await page.check('#kind-svg');
    const spec = await readSpec();
    check(spec.kind === 'svg', 'SVG tab should load the svg example');
    spec.svg = spec.svg.replace('</svg>', '<g></svg>');
    await setSpec(JSON.stringify(spec, null, 2));
    const respPromise = page.waitForResponse(
      (r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/v1/renders', { timeout: WAIT_MS });
    await page.click('#submit');
    const failedJob = (await (await respPromise).json()).job_id;
    await waitFor(() => {
      const e = document.getElementById('error');
      return e && !e.hidden && /render failed/i.test(e.textContent);
    }, null, '#error did not report the failed job');
    const err = await pageText('#error');
    check(/svg/i.test(err), `failure message should mention the SVG, got "${err}"`);
    check(await page.locator('#result').isHidden(), 'no image should be shown for a failed job');
    await waitFor(() => !document.getElementById('submit').disabled, null, '#submit not re-enabled after failure');
    summary.failure_shown = err;
    const listed = await waitForRecent(page, failedJob, 'failed', 'failed job');
    check(/svg/i.test(listed.text), `the failed item should say why: ${listed.text}`);
    await page.screenshot({ path: path.join(outDir, 'render-failed.png'), fullPage: true, animations: 'disabled' });
  });

  // ---- 5. A phone: 390 px wide, nothing wider than the screen, a pie still renders ----
  await timed('phone_ms', async () => {
    await page.setViewportSize(PHONE);
    await page.reload({ waitUntil: 'load' });
    await page.check('#kind-chart');
    await page.selectOption('#example', 'pie');
    await renderAndWait('phone pie');
    const overflow = await page.evaluate(() => {
      const wide = [...document.querySelectorAll('body *')]
        .filter((node) => node.getBoundingClientRect().right > window.innerWidth + 1 && node.offsetParent !== null)
        .map((node) => node.id || node.className || node.tagName);
      return { scrollWidth: document.documentElement.scrollWidth, wide: wide.slice(0, 5) };
    });
    check(overflow.scrollWidth <= PHONE.width && overflow.wide.length === 0,
      `the page is wider than a ${PHONE.width} px phone: ${JSON.stringify(overflow)}`);
    await page.screenshot({ path: path.join(outDir, 'page-phone.png'), fullPage: true, animations: 'disabled' });
  });

  // ---- global checks ----
  step = 'global checks';
  check(foreignRequests.length === 0, `page made non-same-origin requests: ${foreignRequests.join(', ')}`);
  const jsType = assetTypes['/assets/app.js'] || '';
  const cssType = assetTypes['/assets/style.css'] || '';
  check(/javascript/.test(jsType), `/assets/app.js served as "${jsType}", expected text/javascript`);
  check(/^text\/css/.test(cssType), `/assets/style.css served as "${cssType}", expected text/css`);
  check(pageErrors.length === 0, `uncaught page errors: ${pageErrors.join(' | ')}`);
  check(consoleErrors.length === 0, `console errors: ${consoleErrors.join(' | ')}`);
}

let exitCode = 0;
const t0 = performance.now();
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
    try {
      await withTimeout(page.screenshot({ path: path.join(outDir, 'failure.png'), fullPage: true }), 10_000, 'screenshot');
      console.error(`failure screenshot: ${path.join(outDir, 'failure.png')}`);
    } catch { /* best effort */ }
  }
} finally {
  if (context) {
    try { await withTimeout(context.close(), 10_000, 'closing the browser'); } catch { /* ignore */ }
  }
  try { rmSync(userDataDir, { recursive: true, force: true }); } catch { /* ignore */ }
}
const { checks, ...rest } = summary;
console.log(JSON.stringify({ ...rest, timing_ms: { ...timing, total: Math.round(performance.now() - t0) }, checks }));
clearTimeout(watchdog);
process.exit(exitCode);
