// Chat panel: talk to the agent's model, watch its answer stream in, each tool call as a card,
// a render's progress and its image inline. Plain JS, no dependencies; every piece of server
// or model text goes in with textContent / attributes, never as HTML.
//
// The conversation lives in this browser (localStorage), not on the server: Cloud Run
// instances come and go, and the agent stays stateless.
'use strict';

(() => {
  const CHAT_URL = '/v1/chat';
  const STORAGE_KEY = 'agent-chat-v1';
  const MAX_STORED_MESSAGES = 200;

  const $ = (id) => document.getElementById(id);
  const els = {
    panel: $('chat'),
    notice: $('chat-notice'),
    log: $('chat-log'),
    form: $('chat-form'),
    input: $('chat-input'),
    send: $('chat-send'),
    stop: $('chat-stop'),
    clear: $('chat-clear'),
  };
  if (!els.panel) return;

  // The transcript: what the model is sent ({role, content}) plus what the page shows for
  // assistant turns (tool cards), so a reload draws the same conversation.
  let transcript = load();
  let controller = null;

  function load() {
    try {
      const parsed = JSON.parse(localStorage.getItem(STORAGE_KEY) || '[]');
      return Array.isArray(parsed) ? parsed.filter((m) => m && typeof m.content === 'string') : [];
    } catch (_) {
      return [];
    }
  }

  function save() {
    try {
      localStorage.setItem(STORAGE_KEY, JSON.stringify(transcript.slice(-MAX_STORED_MESSAGES)));
    } catch (_) {
      // Storage full or disabled: the chat still works, it just won't survive a reload.
    }
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function scrollToEnd() {
    els.log.scrollTop = els.log.scrollHeight;
  }

  // A same-origin link for the agent's /files proxy (the sidecar is not reachable from a
  // browser); any other http(s) URL (a signed Cloud Storage URL) as it is.
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

  function pretty(value) {
    try {
      return JSON.stringify(value, null, 2);
    } catch (_) {
      return String(value);
    }
  }

  // ---------- drawing ----------

  function addMessage(role, text) {
    const item = el('li', 'chat-msg chat-' + role);
    item.appendChild(el('span', 'visually-hidden', role === 'user' ? 'You: ' : 'Agent: '));
    const body = el('div', 'chat-body');
    const textNode = el('p', 'chat-text', text || '');
    body.appendChild(textNode);
    item.appendChild(body);
    els.log.appendChild(item);
    scrollToEnd();
    return { item, body, textNode };
  }

  // A collapsible card for one tool call; returns its parts so events can fill it in.
  function addToolCard(bubble, call) {
    const card = el('details', 'tool-card');
    card.dataset.callId = call.id || '';
    const summary = el('summary', 'tool-summary');
    summary.appendChild(el('span', 'tool-name', call.name || 'tool'));
    const state = el('span', 'tool-state', 'running…');
    summary.appendChild(state);
    card.appendChild(summary);
    card.appendChild(el('p', 'tool-label', 'Arguments'));
    card.appendChild(el('pre', 'tool-json', pretty(call.arguments)));
    const progress = el('progress', 'tool-progress');
    progress.hidden = true;
    progress.setAttribute('aria-label', 'Progress of ' + (call.name || 'the tool'));
    const progressText = el('p', 'tool-progress-text');
    progressText.hidden = true;
    const result = el('div', 'tool-result');
    card.appendChild(progress);
    card.appendChild(progressText);
    card.appendChild(result);
    // Cards sit before the answer's text.
    bubble.body.insertBefore(card, bubble.textNode);
    scrollToEnd();
    return { card, state, progress, progressText, result };
  }

  function showProgress(parts, message) {
    parts.progress.hidden = false;
    parts.progressText.hidden = false;
    parts.progressText.textContent = message;
    // "[2/4] rasterizing" → 2 of 4.
    const m = /^\[(\d+)\/(\d+)\]/.exec(message || '');
    if (m && Number(m[2]) > 0) {
      parts.progress.max = Number(m[2]);
      parts.progress.value = Math.min(Number(m[1]), Number(m[2]));
    }
    scrollToEnd();
  }

  function showResult(parts, result) {
    const failed = result && typeof result === 'object' && 'error' in result;
    parts.state.textContent = failed ? 'failed' : 'done';
    parts.card.classList.toggle('tool-failed', failed);
    parts.result.replaceChildren();
    parts.result.appendChild(el('p', 'tool-label', 'Result'));
    parts.result.appendChild(el('pre', 'tool-json', pretty(result)));
    const url = result && typeof result.content_type === 'string' &&
      result.content_type.startsWith('image/') ? imageUrl(result.url) : null;
    if (url) {
      parts.progress.value = parts.progress.max || 1;
      const figure = el('figure', 'chat-figure');
      const img = el('img', 'chat-image');
      img.alt = 'Rendered image';
      img.src = url;
      img.addEventListener('load', scrollToEnd);
      const link = el('a', 'download', 'Download');
      link.href = url;
      link.download = (result.job_id || 'render') + '.png';
      figure.appendChild(img);
      const caption = el('figcaption');
      caption.appendChild(link);
      figure.appendChild(caption);
      // The picture shows outside the (collapsed) card, in the conversation itself.
      parts.card.after(figure);
    }
    scrollToEnd();
  }

  function redraw() {
    els.log.replaceChildren();
    for (const message of transcript) {
      const bubble = addMessage(message.role, message.content);
      for (const call of message.tools || []) {
        const parts = addToolCard(bubble, call);
        if (call.result === undefined) parts.state.textContent = 'stopped';
        else showResult(parts, call.result);
      }
      if (message.error) bubble.item.appendChild(el('p', 'chat-error', message.error));
    }
  }

  // ---------- the stream ----------

  // Reads `text/event-stream` from a fetch body: calls onEvent(name, data) per event.
  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
      let cut;
      while ((cut = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = 'message';
        const data = [];
        for (const line of block.split('\n')) {
          if (line.startsWith('event:')) name = line.slice(6).trim();
          else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
        }
        if (data.length === 0) continue; // keep-alive comments
        let parsed;
        try {
          parsed = JSON.parse(data.join('\n'));
        } catch (_) {
          continue;
        }
        onEvent(name, parsed);
      }
    }
  }

  function setBusy(busy) {
    els.send.disabled = busy;
    els.input.disabled = busy;
    els.stop.hidden = !busy;
    els.panel.setAttribute('aria-busy', String(busy));
  }

  async function send(text) {
    transcript.push({ role: 'user', content: text });
    save();
    addMessage('user', text);
    const bubble = addMessage('assistant', '');
    bubble.item.classList.add('streaming');
    const turn = { role: 'assistant', content: '', tools: [] };
    const cards = new Map();
    controller = new AbortController();
    setBusy(true);
    let ended = false;
    const finish = (error) => {
      ended = true;
      bubble.item.classList.remove('streaming');
      for (const { call, parts } of cards.values()) {
        if (call.result === undefined) parts.state.textContent = 'stopped';
      }
      if (error) {
        turn.error = error;
        bubble.item.appendChild(el('p', 'chat-error', error));
      }
      // Only a turn that produced something is kept for the model's next turn.
      if (turn.content || turn.tools.length) transcript.push(turn);
      else transcript.pop();
      save();
      scrollToEnd();
    };
    try {
      const messages = transcript.map(({ role, content }) => ({ role, content }));
      const response = await fetch(CHAT_URL, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
        body: JSON.stringify({ messages }),
        signal: controller.signal,
      });
      if (!response.ok) {
        let message = 'The agent answered HTTP ' + response.status + '.';
        try {
          const body = await response.json();
          if (body && typeof body.error === 'string') message = body.error;
        } catch (_) { /* not JSON */ }
        finish(message);
        return;
      }
      await readEvents(response, (name, data) => {
        if (name === 'delta' && typeof data.text === 'string') {
          turn.content += data.text;
          bubble.textNode.textContent = turn.content;
          scrollToEnd();
        } else if (name === 'tool_call') {
          const call = { id: data.id, name: data.name, arguments: data.arguments };
          turn.tools.push(call);
          cards.set(data.id, { call, parts: addToolCard(bubble, call) });
        } else if (name === 'progress') {
          const entry = cards.get(data.id);
          if (entry) showProgress(entry.parts, String(data.message || ''));
        } else if (name === 'tool_result') {
          const entry = cards.get(data.id);
          if (entry) {
            entry.call.result = data.result;
            showResult(entry.parts, data.result);
          }
          // A render's job started, moved or ended: the page's recent-renders list reads again.
          if (data.result && typeof data.result.job_id === 'string') {
            window.dispatchEvent(new CustomEvent('renders-changed'));
          }
        } else if (name === 'done') {
          if (typeof data.reply === 'string') {
            turn.content = data.reply;
            bubble.textNode.textContent = data.reply;
          }
          finish(null);
        } else if (name === 'error') {
          finish(typeof data.error === 'string' ? data.error : 'The chat failed.');
        }
      });
      if (!ended) finish('The connection to the agent closed before the answer was complete.');
    } catch (error) {
      if (!ended) {
        finish(error && error.name === 'AbortError'
          ? 'Stopped.'
          : 'Could not reach the agent: ' + (error && error.message ? error.message : error));
      }
    } finally {
      controller = null;
      setBusy(false);
      els.input.focus();
    }
  }

  // ---------- wiring ----------

  els.form.addEventListener('submit', (event) => {
    event.preventDefault();
    const text = els.input.value.trim();
    if (!text || controller) return;
    els.input.value = '';
    send(text);
  });
  els.input.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      els.form.requestSubmit();
    }
  });
  els.stop.addEventListener('click', () => {
    if (controller) controller.abort();
  });
  els.clear.addEventListener('click', () => {
    if (controller) controller.abort();
    transcript = [];
    save();
    redraw();
    els.input.focus();
  });

  redraw();
  setBusy(false);
  fetch(CHAT_URL, { headers: { accept: 'application/json' } })
    .then((response) => response.json())
    .then((status) => {
      if (status && status.configured) {
        els.notice.hidden = true;
        return;
      }
      els.notice.hidden = false;
      els.notice.textContent = 'No model is configured, so the chat is off. ' +
        (status && typeof status.message === 'string' ? status.message : '') +
        ' The render form works without one.';
      els.input.disabled = true;
      els.send.disabled = true;
    })
    .catch(() => {
      els.notice.hidden = false;
      els.notice.textContent = 'Could not ask the agent whether a model is configured.';
    });
})();
