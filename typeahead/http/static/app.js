// The typeahead demo page: an ARIA 1.2 combobox over /v1/suggest, instant results, and a
// Generate button that streams a grounded summary over server-sent events.
// Every string from the server is rendered with textContent / text nodes, never as HTML.
"use strict";

(() => {
  const DEBOUNCE_MS = 80;
  const K = 8;
  const byId = (id) => document.getElementById(id);
  const input = byId("q");
  const list = byId("suggestions");
  const status = byId("status");
  const resultsSection = byId("results-section");
  const results = byId("results");
  const generateSection = byId("generate-section");
  const generateButton = byId("generate");
  const answer = byId("answer");
  const summary = byId("summary");
  const sourcesTitle = byId("sources-title");
  const sources = byId("sources");

  let items = [];
  let active = -1;
  let timer = 0;
  let inflight = null;
  let seq = 0;
  let current = null; // the last suggest answer shown
  let stream = null;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function setStatus(text, isError) {
    status.textContent = text;
    status.classList.toggle("error", Boolean(isError));
  }

  // matches are [start, end) spans in code points (the server's string indices).
  function highlighted(text, matches) {
    const chars = Array.from(text);
    const spans = (Array.isArray(matches) ? matches : [])
      .map((m) => [Math.max(0, Number(m[0]) | 0), Math.min(chars.length, Number(m[1]) | 0)])
      .filter(([s, e]) => e > s)
      .sort((a, b) => a[0] - b[0]);
    const frag = document.createDocumentFragment();
    let pos = 0;
    for (const [s, e] of spans) {
      if (s < pos) continue;
      if (s > pos) frag.append(document.createTextNode(chars.slice(pos, s).join("")));
      frag.append(el("mark", null, chars.slice(s, e).join("")));
      pos = e;
    }
    if (pos < chars.length) frag.append(document.createTextNode(chars.slice(pos).join("")));
    return frag;
  }

  // --- the listbox ---------------------------------------------------------------------------

  function openList(open) {
    const show = open && items.length > 0;
    list.hidden = !show;
    input.setAttribute("aria-expanded", String(show));
    if (!show) setActive(-1);
  }

  function setActive(index) {
    active = index;
    list.querySelectorAll("[role=option]").forEach((node, i) => {
      node.setAttribute("aria-selected", String(i === index));
    });
    if (index < 0) {
      input.removeAttribute("aria-activedescendant");
      return;
    }
    const node = byId(`suggestion-${index}`);
    input.setAttribute("aria-activedescendant", node.id);
    node.scrollIntoView({ block: "nearest" });
  }

  function renderSuggestions(suggestions, open) {
    items = Array.isArray(suggestions) ? suggestions : [];
    list.replaceChildren();
    items.forEach((s, i) => {
      const li = el("li");
      li.id = `suggestion-${i}`;
      li.setAttribute("role", "option");
      li.setAttribute("aria-selected", "false");
      const text = el("span", "text");
      text.append(highlighted(String(s.text), s.matches));
      const source = el("span", "source", String(s.source || ""));
      source.setAttribute("aria-hidden", "true");
      li.append(text, source);
      // mousedown, not click: the input must not lose focus (and close the list) first.
      li.addEventListener("mousedown", (event) => {
        event.preventDefault();
        choose(i);
      });
      list.append(li);
    });
    active = -1;
    openList(open);
  }

  function choose(index) {
    const chosen = items[index];
    if (!chosen) return;
    input.value = String(chosen.text);
    openList(false);
    lookup(input.value, false);
  }

  // --- instant results, intent, the Generate button ------------------------------------------

  function renderResults(docs) {
    results.replaceChildren();
    const shown = Array.isArray(docs) ? docs : [];
    for (const doc of shown) {
      const li = el("li");
      li.append(el("span", "title", String(doc.title || doc.id || "")));
      li.append(el("span", "snippet", String(doc.snippet || "")));
      results.append(li);
    }
    resultsSection.hidden = shown.length === 0;
  }

  function render(body, open) {
    current = body;
    renderSuggestions(body.suggestions, open);
    renderResults(body.results);
    const intent = body.intent ? `${body.intent.label} (${body.intent.confidence})` : "n/a";
    setStatus(`${items.length} suggestions · intent ${intent} · ${body.took_us} µs`, false);
    const offer = body.offer_generate === true;
    generateSection.hidden = !offer;
    generateButton.disabled = false;
    if (answer.dataset.query !== body.query) hideAnswer();
  }

  async function lookup(query, open) {
    if (inflight) inflight.abort();
    const mine = ++seq;
    if (!query.trim()) {
      current = null;
      renderSuggestions([], false);
      renderResults([]);
      generateSection.hidden = true;
      setStatus("", false);
      return;
    }
    inflight = new AbortController();
    try {
      const params = new URLSearchParams({ q: query, k: String(K) });
      const resp = await fetch(`/v1/suggest?${params}`, { signal: inflight.signal });
      const body = await resp.json();
      if (mine !== seq) return; // a newer keystroke won
      if (!resp.ok) {
        renderSuggestions([], false);
        setStatus(errorText(body, resp.status), true);
        return;
      }
      render(body, open);
    } catch (err) {
      if (err.name !== "AbortError" && mine === seq) setStatus("search failed: " + err, true);
    }
  }

  function errorText(body, statusCode) {
    const message = body && body.error && body.error.message;
    return message ? String(message) : `request failed (HTTP ${statusCode})`;
  }

  // --- generation ----------------------------------------------------------------------------

  function closeStream() {
    if (stream) stream.close();
    stream = null;
  }

  function hideAnswer() {
    closeStream();
    answer.hidden = true;
    delete answer.dataset.query;
  }

  function showSources(given) {
    sources.replaceChildren();
    const docs = Array.isArray(given) ? given : [];
    docs.forEach((src, i) => {
      const li = el("li");
      li.append(el("span", "n", `[${src.n || i + 1}]`));
      li.append(el("strong", null, String(src.title || src.id || "")));
      if (src.snippet) {
        li.append(document.createTextNode(" — "), el("span", "snippet", String(src.snippet)));
      }
      sources.append(li);
    });
    sourcesTitle.hidden = docs.length === 0;
  }

  function finish(result) {
    closeStream();
    summary.textContent = String(result.summary || "");
    summary.setAttribute("aria-busy", "false");
    showSources(result.sources);
    generateButton.disabled = false;
    setStatus(result.cached ? "summary from the cache" : "summary complete", false);
  }

  function fail(message) {
    closeStream();
    summary.setAttribute("aria-busy", "false");
    generateButton.disabled = false;
    setStatus(message, true);
  }

  function follow(url) {
    let text = document.createTextNode("");
    summary.replaceChildren(text);
    stream = new EventSource(url);
    stream.addEventListener("token", (event) => text.appendData(event.data));
    stream.addEventListener("reset", () => {
      text = document.createTextNode("");
      summary.replaceChildren(text);
    });
    stream.addEventListener("done", (event) => {
      try {
        finish(JSON.parse(event.data));
      } catch (err) {
        fail("the summary arrived malformed");
      }
    });
    stream.addEventListener("error", (event) => {
      if (typeof event.data === "string") fail("generation failed: " + event.data);
      else if (stream && stream.readyState === EventSource.CLOSED) fail("the stream was lost");
      // otherwise the browser reconnects by itself and resumes from the last event id
    });
  }

  async function generate() {
    if (!current) return;
    hideAnswer();
    answer.hidden = false;
    answer.dataset.query = current.query;
    summary.replaceChildren();
    summary.setAttribute("aria-busy", "true");
    showSources([]);
    generateButton.disabled = true;
    setStatus("generating…", false);
    try {
      const resp = await fetch("/v1/generate", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ query: current.query }),
      });
      const body = await resp.json();
      if (resp.status === 200) finish(body);
      else if (resp.status === 202) follow(body.stream_url);
      else fail(errorText(body, resp.status));
    } catch (err) {
      fail("generation request failed: " + err);
    }
  }

  // --- events --------------------------------------------------------------------------------

  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => lookup(input.value, true), DEBOUNCE_MS);
  });

  input.addEventListener("keydown", (event) => {
    const open = !list.hidden;
    switch (event.key) {
      case "ArrowDown":
        event.preventDefault();
        if (!items.length) return;
        if (!open) openList(true);
        setActive(active + 1 >= items.length ? 0 : active + 1);
        break;
      case "ArrowUp":
        event.preventDefault();
        if (!items.length) return;
        if (!open) openList(true);
        setActive(active <= 0 ? items.length - 1 : active - 1);
        break;
      case "Enter":
        event.preventDefault();
        clearTimeout(timer);
        if (open && active >= 0) choose(active);
        else {
          openList(false);
          lookup(input.value, false);
        }
        break;
      case "Escape":
        if (open) openList(false);
        else input.value = "";
        break;
      default:
    }
  });

  input.addEventListener("blur", () => openList(false));
  input.addEventListener("focus", () => {
    if (items.length && current && current.query === input.value) openList(true);
  });
  generateButton.addEventListener("click", generate);
})();
