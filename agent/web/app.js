// Render page: submit a render spec, follow the job over Server-Sent Events,
// show the resulting image. Plain JS, no dependencies. Every piece of server
// text is inserted with textContent / attributes, never as HTML.
'use strict';

(() => {
  const EXAMPLES = {
    chart: {
      kind: 'chart',
      width: 800,
      height: 500,
      format: 'png',
      chart: {
        type: 'bar',
        title: 'Quarterly revenue',
        x_label: 'quarter',
        y_label: 'EUR k',
        series: [
          { name: '2025', points: [[1, 120], [2, 135], [3, 150], [4, 160]] },
          { name: '2026', points: [[1, 130], [2, 149], [3, 171], [4, 190]] },
        ],
      },
    },
    svg: {
      kind: 'svg',
      width: 400,
      height: 300,
      svg: "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 200 150'>" +
        "<rect width='200' height='150' fill='#4e79a7'/>" +
        "<circle cx='100' cy='75' r='50' fill='#f28e2b'/></svg>",
    },
  };

  const RENDERS_URL = '/v1/renders';
  const REQUEST_TIMEOUT_MS = 30000;
  const POLL_INTERVAL_MS = 1000;
  const POLL_MAX_ATTEMPTS = 600; // ~10 minutes of fallback polling
  const JOB_ID_RE = /^[0-9a-f]{32}$/;
  const STATE_LABELS = {
    queued: 'Queued, waiting for a worker…',
    running: 'Rendering…',
    succeeded: 'Done.',
    failed: 'Failed.',
    cancelled: 'Cancelled.',
  };

  const $ = (id) => document.getElementById(id);
  const els = {
    form: $('render-form'),
    kindChart: $('kind-chart'),
    kindSvg: $('kind-svg'),
    spec: $('spec'),
    reset: $('reset-example'),
    submit: $('submit'),
    output: $('output'),
    error: $('error'),
    progress: $('progress'),
    status: $('status'),
    result: $('result'),
    image: $('result-image'),
    download: $('download'),
    meta: $('result-meta'),
  };

  // Per-kind drafts, so switching tabs does not throw away edits.
  const drafts = { chart: formatJson(EXAMPLES.chart), svg: formatJson(EXAMPLES.svg) };
  let currentKind = selectedKind();
  let busy = false;
  let jobSeq = 0; // increments per submission; stale callbacks compare against it
  let eventSource = null;
  let pollTimer = null;

  // ---------- JSON formatting for the examples ----------

  // Pretty-print, but keep short arrays of scalars/arrays on one line
  // (so points read as [[1, 120], [2, 135], …] instead of one number per line).
  function formatJson(value, indent = '') {
    const inner = indent + '  ';
    if (Array.isArray(value)) {
      if (value.length === 0) return '[]';
      const flat = JSON.stringify(value);
      if (flat.length <= 72 && !flat.includes('{')) {
        return flat.replace(/,/g, ', ');
      }
      return '[\n' + value.map((v) => inner + formatJson(v, inner)).join(',\n') + '\n' + indent + ']';
    }
    if (value !== null && typeof value === 'object') {
      const keys = Object.keys(value);
      if (keys.length === 0) return '{}';
      return '{\n' + keys.map((k) => inner + JSON.stringify(k) + ': ' + formatJson(value[k], inner)).join(',\n') +
        '\n' + indent + '}';
    }
    return JSON.stringify(value);
  }

  // ---------- small UI helpers ----------

  function selectedKind() {
    return els.kindSvg.checked ? 'svg' : 'chart';
  }

  function setError(message) {
    els.error.textContent = message || '';
    els.error.hidden = !message;
  }

  function setStatus(message) {
    els.status.textContent = message;
  }

  function setBusy(value) {
    busy = value;
    els.submit.disabled = value;
    els.submit.textContent = value ? 'Rendering…' : 'Render';
    els.output.setAttribute('aria-busy', String(value));
  }

  function setProgress(stage, total) {
    if (Number.isFinite(total) && total > 0 && Number.isFinite(stage)) {
      els.progress.max = total;
      els.progress.value = Math.max(0, Math.min(stage, total));
    } else {
      els.progress.removeAttribute('value'); // indeterminate
    }
  }

  function hideResult() {
    els.result.hidden = true;
    els.image.onload = null;
    els.image.onerror = null;
    els.image.removeAttribute('src');
    els.image.alt = '';
    els.download.removeAttribute('href');
    els.download.textContent = 'Download';
    els.meta.textContent = '';
  }

  function formatBytes(n) {
    if (!Number.isFinite(n) || n < 0) return 'unknown size';
    if (n < 1024) return n + (n === 1 ? ' byte' : ' bytes');
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + ' KB';
    return (n / (1024 * 1024)).toFixed(1) + ' MB';
  }

  function extensionFor(contentType) {
    const ct = String(contentType || '').split(';')[0].trim().toLowerCase();
    return { 'image/png': 'png', 'image/svg+xml': 'svg', 'image/jpeg': 'jpg', 'image/webp': 'webp' }[ct] || 'bin';
  }

  function describeError(err) {
    if (err === undefined || err === null || err === '') return '';
    if (typeof err === 'string') return err;
    if (typeof err === 'object' && typeof err.message === 'string') return err.message;
    if (typeof err === 'object' && typeof err.error === 'string') return err.error;
    try { return JSON.stringify(err); } catch (_) { return String(err); }
  }

  // Only follow http(s) URLs for results; only same-origin paths for API links.
  function safeResultUrl(raw) {
    if (typeof raw !== 'string' || raw === '') return null;
    try {
      const u = new URL(raw, window.location.href);
      return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : null;
    } catch (_) {
      return null;
    }
  }

  function sameOriginUrl(raw) {
    if (typeof raw !== 'string' || raw === '') return null;
    try {
      const u = new URL(raw, window.location.href);
      return u.origin === window.location.origin ? u.href : null;
    } catch (_) {
      return null;
    }
  }

  function parseJson(text) {
    try { return JSON.parse(text); } catch (_) { return null; }
  }

  async function fetchJson(url, init) {
    const opts = Object.assign({ headers: { Accept: 'application/json' }, cache: 'no-store' }, init || {});
    if (typeof AbortSignal !== 'undefined' && typeof AbortSignal.timeout === 'function') {
      opts.signal = AbortSignal.timeout(REQUEST_TIMEOUT_MS);
    }
    const res = await fetch(url, opts);
    const text = await res.text();
    return { res, body: parseJson(text) };
  }

  function networkErrorMessage(err) {
    if (err && (err.name === 'TimeoutError' || err.name === 'AbortError')) {
      return 'The render service did not answer in time. Please try again.';
    }
    return 'Could not reach the render service' + (err && err.message ? ' (' + err.message + ')' : '') + '.';
  }

  function httpErrorMessage(res, body) {
    const serverMsg = body && typeof body === 'object' ? describeError(body.error) : '';
    const detail = serverMsg || ('HTTP ' + res.status + (res.statusText ? ' ' + res.statusText : ''));
    switch (res.status) {
      case 400:
      case 422:
        return 'The server rejected the spec: ' + detail;
      case 413:
        return 'The spec is too large: ' + detail;
      case 429:
        return 'Too many renders right now: ' + detail;
      case 503:
        return 'The render service is unavailable right now: ' + detail;
      case 504:
        return 'The render timed out: ' + detail;
      default:
        return 'The server returned an error (HTTP ' + res.status + '): ' + detail;
    }
  }

  // ---------- job lifecycle ----------

  function stopWatching() {
    if (eventSource) {
      eventSource.close();
      eventSource = null;
    }
    if (pollTimer) {
      clearTimeout(pollTimer);
      pollTimer = null;
    }
  }

  function applyStatus(s) {
    if (!s || typeof s !== 'object') return;
    setProgress(Number(s.stage), Number(s.total_stages));
    const msg = typeof s.message === 'string' && s.message ? s.message : STATE_LABELS[s.state] || 'Working…';
    setStatus(msg);
  }

  function isTerminal(s) {
    return s && (s.state === 'succeeded' || s.state === 'failed' || s.state === 'cancelled');
  }

  function fail(message, statusText) {
    stopWatching();
    setError(message);
    setStatus(statusText || 'Not rendered.');
    setBusy(false);
  }

  function finish(s, token) {
    if (token !== jobSeq) return;
    stopWatching();
    applyStatus(s);
    if (s.state === 'failed') {
      const why = describeError(s.error) || 'no reason was given';
      fail('The render failed: ' + why, 'Failed.');
      return;
    }
    if (s.state === 'cancelled') {
      fail('The render was cancelled before it finished.', 'Cancelled.');
      return;
    }
    if (s.state !== 'succeeded') {
      fail('The job ended in an unexpected state (' + String(s.state) + ').');
      return;
    }
    const result = s.result && typeof s.result === 'object' ? s.result : null;
    const url = result && safeResultUrl(result.url);
    if (!url) {
      fail('The render finished, but the server sent no usable image link.');
      return;
    }
    const total = Number(s.total_stages);
    if (Number.isFinite(total) && total > 0) setProgress(total, total);
    setBusy(false);
    setStatus('Loading the image…');
    showResult(s.job_id, result, url, token);
  }

  function showResult(jobId, result, url, token) {
    const contentType = typeof result.content_type === 'string' ? result.content_type : 'unknown type';
    const ext = extensionFor(contentType);
    const bytes = Number(result.bytes);

    els.image.onload = () => {
      if (token !== jobSeq) return;
      els.result.hidden = false;
      setStatus('Done: ' + els.image.naturalWidth + ' × ' + els.image.naturalHeight + ' px.');
    };
    els.image.onerror = () => {
      if (token !== jobSeq) return;
      setError('The render finished, but the image could not be loaded (the link may have expired). ' +
        'You can still try the download link.');
      els.result.hidden = false;
      setStatus('Done, but the image did not load.');
    };
    els.image.alt = 'Rendered ' + (currentKind === 'svg' ? 'SVG' : 'chart') + ' image';
    els.image.src = url;

    els.download.href = url;
    els.download.setAttribute('download', 'render-' + String(jobId || 'image').slice(0, 8) + '.' + ext);
    els.download.textContent = 'Download ' + ext.toUpperCase() + ' (' + contentType + ', ' + formatBytes(bytes) + ')';

    const meta = [];
    if (typeof result.expires_at === 'string' && result.expires_at) {
      const d = new Date(result.expires_at);
      meta.push('Link expires ' + (Number.isNaN(d.getTime()) ? result.expires_at : d.toLocaleString()));
    }
    if (typeof result.sha256 === 'string' && result.sha256) {
      meta.push('SHA-256 ' + result.sha256.slice(0, 12) + '…');
      els.meta.title = 'SHA-256 ' + result.sha256;
    } else {
      els.meta.removeAttribute('title');
    }
    els.meta.textContent = meta.join(' · ');
  }

  // Fallback when the event stream breaks: poll GET /v1/renders/<id>.
  function poll(jobId, selfUrl, token, attempt, failures) {
    if (token !== jobSeq) return;
    if (attempt >= POLL_MAX_ATTEMPTS) {
      fail('Stopped waiting for the job after a long time. It may still finish; try again later.');
      return;
    }
    fetchJson(selfUrl).then(({ res, body }) => {
      if (token !== jobSeq) return;
      if (!res.ok) {
        fail(httpErrorMessage(res, body), 'Lost track of the job.');
        return;
      }
      if (!body || typeof body !== 'object') {
        fail('The server sent an unreadable job status.', 'Lost track of the job.');
        return;
      }
      if (isTerminal(body)) {
        finish(body, token);
        return;
      }
      applyStatus(body);
      setStatus(els.status.textContent + ' (live updates unavailable; checking every second)');
      pollTimer = setTimeout(() => poll(jobId, selfUrl, token, attempt + 1, 0), POLL_INTERVAL_MS);
    }, (err) => {
      if (token !== jobSeq) return;
      if (failures + 1 >= 3) {
        fail(networkErrorMessage(err), 'Lost track of the job.');
        return;
      }
      pollTimer = setTimeout(() => poll(jobId, selfUrl, token, attempt + 1, failures + 1), POLL_INTERVAL_MS);
    });
  }

  function watch(job, token) {
    const jobId = job.job_id;
    const links = job.links && typeof job.links === 'object' ? job.links : {};
    const eventsUrl = sameOriginUrl(links.events) || RENDERS_URL + '/' + jobId + '/events';
    const selfUrl = sameOriginUrl(links.self) || RENDERS_URL + '/' + jobId;

    if (typeof window.EventSource !== 'function') {
      poll(jobId, selfUrl, token, 0, 0);
      return;
    }

    const es = new EventSource(eventsUrl);
    eventSource = es;

    es.addEventListener('progress', (e) => {
      if (token !== jobSeq) return;
      const s = parseJson(e.data);
      if (!s) return;
      applyStatus(s);
      if (s.state === 'running' || s.state === 'queued') setError('');
    });

    es.addEventListener('done', (e) => {
      if (token !== jobSeq) return;
      es.close();
      if (eventSource === es) eventSource = null;
      const s = parseJson(e.data);
      if (s && isTerminal(s)) {
        finish(s, token);
      } else {
        // Unexpected payload: ask the status endpoint instead.
        poll(jobId, selfUrl, token, 0, 0);
      }
    });

    // Fires on connection problems (and for a server-sent "event: error").
    // EventSource would silently reconnect; instead we close it, say so in
    // plain words and fall back to polling the status endpoint.
    es.addEventListener('error', (e) => {
      if (token !== jobSeq || eventSource !== es) return;
      es.close();
      eventSource = null;
      const s = e && typeof e.data === 'string' ? parseJson(e.data) : null;
      const serverMsg = s ? describeError(s.error || s.message) : '';
      setStatus('The live progress stream was interrupted' + (serverMsg ? ' (' + serverMsg + ')' : '') +
        '; checking the job status instead…');
      poll(jobId, selfUrl, token, 0, 0);
    });
  }

  async function submit() {
    if (busy) return;
    stopWatching();
    const token = ++jobSeq;
    setError('');
    hideResult();
    setProgress(0, 1);

    let spec;
    try {
      spec = JSON.parse(els.spec.value);
    } catch (err) {
      setError('The spec is not valid JSON: ' + (err && err.message ? err.message : String(err)));
      setStatus('Fix the JSON and try again. Nothing was sent.');
      els.spec.focus();
      return;
    }
    if (spec === null || typeof spec !== 'object' || Array.isArray(spec)) {
      setError('The spec must be a JSON object (starting with "{"), like the examples.');
      setStatus('Fix the spec and try again. Nothing was sent.');
      els.spec.focus();
      return;
    }

    setBusy(true);
    setProgress(NaN, NaN);
    setStatus('Submitting…');

    let res;
    let body;
    try {
      ({ res, body } = await fetchJson(RENDERS_URL, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ spec }),
      }));
    } catch (err) {
      if (token === jobSeq) fail(networkErrorMessage(err));
      return;
    }
    if (token !== jobSeq) return;
    if (!res.ok) {
      setProgress(0, 1);
      fail(httpErrorMessage(res, body));
      return;
    }
    if (!body || typeof body !== 'object' || typeof body.job_id !== 'string' || !JOB_ID_RE.test(body.job_id)) {
      setProgress(0, 1);
      fail('The server accepted the request but sent an unexpected reply.');
      return;
    }
    applyStatus(body);
    watch(body, token);
  }

  // ---------- wiring ----------

  function onKindChange() {
    const kind = selectedKind();
    if (kind === currentKind) return;
    drafts[currentKind] = els.spec.value;
    currentKind = kind;
    els.spec.value = drafts[kind];
    if (!busy) setError('');
  }

  els.kindChart.addEventListener('change', onKindChange);
  els.kindSvg.addEventListener('change', onKindChange);

  els.reset.addEventListener('click', () => {
    drafts[currentKind] = formatJson(EXAMPLES[currentKind]);
    els.spec.value = drafts[currentKind];
    els.spec.focus();
  });

  els.form.addEventListener('submit', (e) => {
    e.preventDefault();
    submit();
  });

  els.spec.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      if (!busy) submit();
    }
  });

  // Initial state (the browser may have restored the radio after a reload).
  els.spec.value = drafts[currentKind];
  setProgress(0, 1);
})();
