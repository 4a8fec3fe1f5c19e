// Render page: submit a render spec, follow the job over Server-Sent Events,
// show the resulting image. Plain JS, no dependencies. Every piece of server
// text is inserted with textContent / attributes, never as HTML.
'use strict';

(() => {
  // The examples each kind offers; the first is the one a kind starts with. Each one renders
  // as it is (the browser test renders every one of them).
  const quarters = (name, values) => ({ name, points: values.map((v, i) => ['Q' + (i + 1), v]) });
  const months = (name, values) => ({
    name,
    points: values.map((v, i) => [['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun'][i], v]),
  });
  const EXAMPLES = {
    chart: [
      {
        id: 'bar',
        label: 'Bar: revenue by quarter',
        spec: {
          kind: 'chart',
          width: 800,
          height: 500,
          format: 'png',
          chart: {
            type: 'bar',
            title: 'Quarterly revenue',
            x_label: 'quarter',
            y_label: 'EUR k',
            series: [quarters('2025', [120, 135, 150, 160]), quarters('2026', [130, 149, 171, 190])],
          },
        },
      },
      {
        id: 'line-dates',
        label: 'Line over dates',
        spec: {
          kind: 'chart',
          width: 800,
          height: 500,
          chart: {
            type: 'line',
            title: 'Daily visitors',
            y_label: 'visitors',
            y_format: 'compact',
            series: [
              {
                name: 'web',
                points: [['2026-03-01', 12000], ['2026-03-09', 18500], ['2026-03-17', 15200],
                  ['2026-03-25', 24800], ['2026-04-02', 30100], ['2026-04-10', 27400]],
              },
              { name: 'app', points: [['2026-03-01', 8000], ['2026-03-17', 9100], ['2026-04-10', 21000]] },
            ],
          },
        },
      },
      {
        id: 'area-stacked',
        label: 'Stacked area',
        spec: {
          kind: 'chart',
          width: 800,
          height: 500,
          chart: {
            type: 'area',
            stacked: true,
            title: 'Visits by source',
            y_label: 'visits (k)',
            legend: 'bottom',
            series: [
              months('search', [3, 4, 6, 5, 7, 8]),
              months('direct', [2, 2, 3, 4, 4, 5]),
              months('social', [1, 2, 1, 2, 3, 3]),
            ],
          },
        },
      },
      {
        id: 'pie',
        label: 'Pie: market share',
        spec: {
          kind: 'chart',
          width: 640,
          height: 420,
          chart: {
            type: 'pie',
            title: 'Market share',
            series: [{ name: 'share', points: [['Alpha', 45], ['Beta', 25], ['Gamma', 20], ['Delta', 10]] }],
          },
        },
      },
      {
        id: 'donut-dark',
        label: 'Donut (dark, colour-blind safe)',
        spec: {
          kind: 'chart',
          width: 640,
          height: 420,
          chart: {
            type: 'donut',
            title: 'Where the week goes',
            theme: 'dark',
            palette: 'colorblind',
            legend: 'bottom',
            series: [{ name: 'hours', points: [['Build', 18], ['Review', 8], ['Meetings', 6], ['Support', 4]] }],
          },
        },
      },
      {
        id: 'scatter',
        label: 'Scatter',
        spec: {
          kind: 'chart',
          width: 800,
          height: 500,
          chart: {
            type: 'scatter',
            title: 'Height and weight',
            x_label: 'cm',
            y_label: 'kg',
            series: [
              { name: 'group a', points: [[160, 55], [165, 61], [170, 66], [175, 70], [180, 79]] },
              { name: 'group b', points: [[158, 50], [168, 58], [172, 62], [185, 88]] },
            ],
          },
        },
      },
      {
        id: 'bar-horizontal',
        label: 'Horizontal bar',
        spec: {
          kind: 'chart',
          width: 800,
          height: 500,
          chart: {
            type: 'bar',
            horizontal: true,
            title: 'Downloads by platform',
            x_label: 'platform',
            y_label: 'downloads',
            y_format: 'thousands',
            legend: 'none',
            series: [{
              name: 'downloads',
              points: [['Linux', 18250], ['macOS', 12400], ['Windows', 9800], ['Android', 6100], ['iOS', 4300]],
            }],
          },
        },
      },
    ],
    'vega-lite': [
      {
        id: 'vl-bar-sum',
        label: 'Bar: sum per quarter, by region',
        spec: {
          kind: 'vega-lite',
          width: 800,
          height: 500,
          vega_lite: {
            title: 'Sales by quarter',
            data: {
              values: [
                { quarter: 'Q1', region: 'north', sales: 120 },
                { quarter: 'Q1', region: 'south', sales: 90 },
                { quarter: 'Q2', region: 'north', sales: 135 },
                { quarter: 'Q2', region: 'south', sales: 80 },
                { quarter: 'Q2', region: 'south', sales: 25 },
                { quarter: 'Q3', region: 'north', sales: 150 },
                { quarter: 'Q3', region: 'south', sales: 120 },
                { quarter: 'Q4', region: 'north', sales: 160 },
                { quarter: 'Q4', region: 'south', sales: 140 },
              ],
            },
            mark: 'bar',
            encoding: {
              x: { field: 'quarter', type: 'ordinal', title: 'Quarter' },
              y: { aggregate: 'sum', field: 'sales', type: 'quantitative', title: 'Sales (k€)' },
              color: { field: 'region', type: 'nominal' },
            },
          },
        },
      },
      {
        id: 'vl-line-dates',
        label: 'Line over dates',
        spec: {
          kind: 'vega-lite',
          width: 800,
          height: 500,
          vega_lite: {
            title: 'Closing price',
            data: {
              values: [
                { date: '2026-01-01', price: 101.5, symbol: 'AAA' },
                { date: '2026-02-01', price: 108.2, symbol: 'AAA' },
                { date: '2026-03-01', price: 104.9, symbol: 'AAA' },
                { date: '2026-04-01', price: 115.3, symbol: 'AAA' },
                { date: '2026-01-01', price: 96.0, symbol: 'BBB' },
                { date: '2026-02-01', price: 99.4, symbol: 'BBB' },
                { date: '2026-03-01', price: 103.8, symbol: 'BBB' },
                { date: '2026-04-01', price: 102.1, symbol: 'BBB' },
              ],
            },
            mark: { type: 'line', point: true },
            encoding: {
              x: { field: 'date', type: 'temporal', title: 'Month' },
              y: { field: 'price', type: 'quantitative', scale: { zero: false } },
              color: { field: 'symbol', type: 'nominal' },
            },
          },
        },
      },
      {
        id: 'vl-arc',
        label: 'Arc (pie)',
        spec: {
          kind: 'vega-lite',
          width: 640,
          height: 420,
          vega_lite: {
            title: 'Monthly budget',
            data: {
              values: [
                { category: 'Rent', value: 1200 },
                { category: 'Food', value: 450 },
                { category: 'Transport', value: 180 },
                { category: 'Fun', value: 220 },
              ],
            },
            mark: 'arc',
            encoding: {
              theta: { field: 'value', type: 'quantitative' },
              color: { field: 'category', type: 'nominal' },
            },
          },
        },
      },
    ],
    svg: [
      {
        id: 'svg-shapes',
        label: 'Circle on a square',
        spec: {
          kind: 'svg',
          width: 400,
          height: 300,
          svg: "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 200 150'>" +
            "<rect width='200' height='150' fill='#4e79a7'/>" +
            "<circle cx='100' cy='75' r='50' fill='#f28e2b'/></svg>",
        },
      },
    ],
  };
  const KIND_NAMES = { chart: 'chart', 'vega-lite': 'Vega-Lite chart', svg: 'SVG' };

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
    kinds: Array.from(document.querySelectorAll('input[name="kind"]')),
    exampleField: $('example-field'),
    example: $('example'),
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

  // Per-kind drafts (the text and the example it came from), so switching tabs does not throw
  // away edits.
  const drafts = {};
  for (const [kind, examples] of Object.entries(EXAMPLES)) {
    drafts[kind] = { example: examples[0].id, text: formatJson(examples[0].spec) };
  }
  let currentKind = selectedKind();
  let busy = false;
  let jobSeq = 0; // increments per submission; stale callbacks compare against it
  let eventSource = null;
  let pollTimer = null;

  // ---------- JSON formatting for the examples ----------

  // Pretty-print, but keep whatever fits on one line there (so points read as
  // [["Q1", 120], ["Q2", 135], …] and a data row as {"q": "Q1", "v": 120}).
  function oneLine(value) {
    if (Array.isArray(value)) return '[' + value.map(oneLine).join(', ') + ']';
    if (value !== null && typeof value === 'object') {
      return '{' + Object.keys(value).map((k) => JSON.stringify(k) + ': ' + oneLine(value[k])).join(', ') + '}';
    }
    return JSON.stringify(value);
  }

  function formatJson(value, indent = '') {
    const inner = indent + '  ';
    const flat = oneLine(value);
    if (flat.length + indent.length <= 84 || value === null || typeof value !== 'object') return flat;
    if (Array.isArray(value)) {
      return '[\n' + value.map((v) => inner + formatJson(v, inner)).join(',\n') + '\n' + indent + ']';
    }
    return '{\n' + Object.keys(value).map((k) => inner + JSON.stringify(k) + ': ' + formatJson(value[k], inner))
      .join(',\n') + '\n' + indent + '}';
  }

  // ---------- small UI helpers ----------

  function selectedKind() {
    const checked = els.kinds.find((input) => input.checked);
    return checked && EXAMPLES[checked.value] ? checked.value : 'chart';
  }

  function exampleFor(kind, id) {
    return EXAMPLES[kind].find((example) => example.id === id) || EXAMPLES[kind][0];
  }

  // Fills the picker with `kind`'s examples; a kind with only one has no picker.
  function showExamples(kind) {
    const options = EXAMPLES[kind].map((example) => {
      const option = document.createElement('option');
      option.value = example.id;
      option.textContent = example.label;
      return option;
    });
    els.example.replaceChildren(...options);
    els.example.value = drafts[kind].example;
    els.exampleField.hidden = options.length < 2;
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

  // Tells the page (the recent-renders list) that a job started or ended.
  function announceRenders() {
    window.dispatchEvent(new CustomEvent('renders-changed'));
  }

  function finish(s, token) {
    if (token !== jobSeq) return;
    stopWatching();
    announceRenders();
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
    els.image.alt = 'Rendered ' + KIND_NAMES[currentKind] + ' image';
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
    announceRenders();
    watch(body, token);
  }

  // ---------- wiring ----------

  function onKindChange() {
    const kind = selectedKind();
    if (kind === currentKind) return;
    drafts[currentKind].text = els.spec.value;
    currentKind = kind;
    showExamples(kind);
    els.spec.value = drafts[kind].text;
    if (!busy) setError('');
  }

  function loadExample(id) {
    const example = exampleFor(currentKind, id);
    drafts[currentKind] = { example: example.id, text: formatJson(example.spec) };
    els.spec.value = drafts[currentKind].text;
    if (!busy) setError('');
  }

  for (const input of els.kinds) input.addEventListener('change', onKindChange);

  // Picking an example replaces the spec (that is what picking one asks for); focus stays on
  // the picker so a keyboard user can go on choosing.
  els.example.addEventListener('change', () => loadExample(els.example.value));

  els.reset.addEventListener('click', () => {
    loadExample(drafts[currentKind].example);
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
  showExamples(currentKind);
  els.spec.value = drafts[currentKind].text;
  setProgress(0, 1);
})();

// Recent renders: the sidecar's latest jobs (`list_renders`), each with its state, when it was
// started and, once it succeeded, a thumbnail linking to the image. Read again when a render
// starts or ends here or in the chat (the `renders-changed` event), when the tab comes back
// into view, and on "Refresh"; never on a timer.
(() => {
  const LIST_URL = '/v1/tools/list_renders';
  const LIMIT = 12;
  const REQUEST_TIMEOUT_MS = 15000;
  const REFRESH_DELAY_MS = 150; // gathers a burst of events into one refresh
  const JOB_ID_RE = /^[0-9a-f]{32}$/;
  const STATE_NAMES = {
    queued: 'Queued',
    running: 'Running',
    succeeded: 'Succeeded',
    failed: 'Failed',
    cancelled: 'Cancelled',
  };
  const STATE_MARKS = { queued: '…', running: '…', failed: '✕', cancelled: '–' };

  const $ = (id) => document.getElementById(id);
  const els = { card: $('recent'), list: $('recent-list'), status: $('recent-status'), refresh: $('recent-refresh') };
  if (!els.card) return;

  // What the job list does not say, by job id: when it was created and, once it succeeded,
  // the image. Kept for ended jobs so a refresh asks only about new or unfinished ones.
  const details = new Map();
  const items = new Map(); // job id → {li, key}
  let refreshing = false;
  let again = false;
  let timer = null;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  async function fetchJson(url, init) {
    const opts = Object.assign({ headers: { Accept: 'application/json' }, cache: 'no-store' }, init || {});
    if (typeof AbortSignal !== 'undefined' && typeof AbortSignal.timeout === 'function') {
      opts.signal = AbortSignal.timeout(REQUEST_TIMEOUT_MS);
    }
    const res = await fetch(url, opts);
    let body = null;
    try { body = await res.json(); } catch (_) { /* not JSON */ }
    return { res, body };
  }

  // The agent's /files proxy as a same-origin path (the sidecar's own origin is not reachable
  // from a browser); any other http(s) URL (a signed Cloud Storage URL) as it is.
  function imageUrl(raw) {
    if (typeof raw !== 'string' || raw === '') return null;
    try {
      const u = new URL(raw, window.location.href);
      if (u.pathname.startsWith('/files/')) return u.pathname + u.search;
      return u.protocol === 'https:' || u.protocol === 'http:' ? u.href : null;
    } catch (_) {
      return null;
    }
  }

  function formatTime(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return null;
    const today = d.toDateString() === new Date().toDateString();
    return today ? d.toLocaleTimeString() : d.toLocaleString();
  }

  // The job's task (same id) carries `createdAt` and, once done, the render's result; a
  // sidecar without MCP tasks answers 404, and then the render status gives the image.
  async function fetchDetail(job) {
    const id = encodeURIComponent(job.job_id);
    const detail = { createdAt: null, url: null, contentType: null, bytes: null, expiresAt: null };
    const { res, body } = await fetchJson('/v1/tasks/' + id);
    let output = null;
    if (res.ok && body && typeof body === 'object') {
      if (typeof body.createdAt === 'string') detail.createdAt = body.createdAt;
      output = body.result && body.result.structuredContent;
    }
    if (job.state === 'succeeded' && !(output && output.url)) {
      const status = await fetchJson('/v1/renders/' + id);
      output = status.res.ok && status.body ? status.body.result : null;
    }
    if (job.state === 'succeeded' && output && typeof output === 'object') {
      detail.url = imageUrl(output.url);
      detail.contentType = typeof output.content_type === 'string' ? output.content_type : null;
      detail.bytes = Number.isFinite(output.bytes) ? output.bytes : null;
      detail.expiresAt = typeof output.expires_at === 'string' ? output.expires_at : null;
    }
    return detail;
  }

  function needsDetail(job) {
    const known = details.get(job.job_id);
    if (!known) return true;
    if (job.state === 'succeeded' && !known.url) return true;
    // A link that is about to expire is asked for again (the answer is a freshly signed one).
    return known.expiresAt !== null && Date.parse(known.expiresAt) < Date.now() + 60000;
  }

  function formatBytes(n) {
    if (n === null) return null;
    return n < 1024 ? n + ' bytes' : n < 1024 * 1024 ? (n / 1024).toFixed(1) + ' KB' : (n / 1048576).toFixed(1) + ' MB';
  }

  function thumbnail(job, detail, when) {
    if (detail && detail.url) {
      const link = el('a', 'recent-thumb');
      link.href = detail.url;
      link.target = '_blank';
      link.rel = 'noopener';
      const img = el('img');
      img.loading = 'lazy';
      img.decoding = 'async';
      img.alt = 'Render' + (when ? ' of ' + when : '') + ': open the full image';
      img.addEventListener('error', () => link.classList.add('broken'));
      img.src = detail.url;
      link.appendChild(img);
      return link;
    }
    const box = el('div', 'recent-thumb recent-thumb-empty', STATE_MARKS[job.state] || '?');
    box.setAttribute('aria-hidden', 'true');
    return box;
  }

  function drawItem(job, detail) {
    const li = el('li', 'recent-item');
    li.dataset.jobId = job.job_id;
    li.dataset.state = job.state;
    li.title = 'Job ' + job.job_id;
    const when = detail && detail.createdAt ? formatTime(detail.createdAt) : null;
    li.appendChild(thumbnail(job, detail, when));
    const info = el('div', 'recent-info');
    const head = el('p', 'recent-head-line');
    head.appendChild(el('span', 'recent-state state-' + job.state, STATE_NAMES[job.state] || String(job.state)));
    if (when) {
      const time = el('time', 'recent-time', when);
      time.dateTime = detail.createdAt;
      time.title = 'Started ' + new Date(detail.createdAt).toLocaleString();
      head.appendChild(time);
    }
    info.appendChild(head);
    // Ids share their leading (time-ordered) digits, so the list shows what tells jobs apart:
    // the picture's type and size once done, else where the job is or why it failed.
    const message = detail && detail.url
      ? [detail.contentType, formatBytes(detail.bytes)].filter(Boolean).join(', ')
      : job.state === 'failed' && job.error ? job.error : job.message;
    if (message) info.appendChild(el('p', 'recent-message', message));
    li.appendChild(info);
    return li;
  }

  function setStatus(text) {
    if (els.status.textContent !== text) els.status.textContent = text;
  }

  // Draws `jobs` in order, keeping the items (and their loaded thumbnails) that did not change.
  function draw(jobs) {
    const seen = new Set();
    let previous = null;
    for (const job of jobs) {
      const detail = details.get(job.job_id) || null;
      const key = JSON.stringify([job.state, job.message, job.error, detail]);
      let entry = items.get(job.job_id);
      if (!entry || entry.key !== key) {
        const li = drawItem(job, detail);
        if (entry) entry.li.replaceWith(li);
        entry = { li, key };
        items.set(job.job_id, entry);
      }
      const expected = previous ? previous.nextSibling : els.list.firstChild;
      if (expected !== entry.li) els.list.insertBefore(entry.li, expected);
      previous = entry.li;
      seen.add(job.job_id);
    }
    for (const [id, entry] of items) {
      if (!seen.has(id)) {
        entry.li.remove();
        items.delete(id);
        details.delete(id);
      }
    }
  }

  async function refresh() {
    if (refreshing) {
      again = true;
      return;
    }
    refreshing = true;
    els.card.setAttribute('aria-busy', 'true');
    try {
      const { res, body } = await fetchJson(LIST_URL, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ limit: LIMIT }),
      });
      const listed = body && body.structuredContent && body.structuredContent.jobs;
      if (!res.ok || !Array.isArray(listed)) {
        const why = body && typeof body.error === 'string' ? body.error : 'HTTP ' + res.status;
        setStatus('Could not load the recent renders: ' + why);
        return;
      }
      const jobs = listed
        .filter((job) => job && typeof job.job_id === 'string' && JOB_ID_RE.test(job.job_id))
        .slice(0, LIMIT);
      await Promise.all(jobs.filter(needsDetail).map(async (job) => {
        try {
          // Kept as it is: what a job gains later (its image) is asked for by needsDetail.
          details.set(job.job_id, await fetchDetail(job));
        } catch (_) {
          // Shown without time or picture; asked again on the next refresh.
        }
      }));
      draw(jobs);
      setStatus(jobs.length === 0 ? 'No renders yet.'
        : 'The ' + jobs.length + ' most recent render' + (jobs.length === 1 ? '' : 's') + ', newest first.');
    } catch (err) {
      setStatus('Could not load the recent renders' + (err && err.message ? ' (' + err.message + ')' : '') + '.');
    } finally {
      refreshing = false;
      els.card.setAttribute('aria-busy', 'false');
      if (again) {
        again = false;
        schedule();
      }
    }
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(refresh, REFRESH_DELAY_MS);
  }

  window.addEventListener('renders-changed', schedule);
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') schedule();
  });
  els.refresh.addEventListener('click', () => {
    clearTimeout(timer);
    refresh();
  });
  refresh();
})();
