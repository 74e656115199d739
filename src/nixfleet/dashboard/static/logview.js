// The build-log viewer: ANSI colours, Nix's error:/warning: lines marked, follow that pauses
// when the reader scrolls up, search, line numbers, stream and time columns, wrap, full
// screen, download. Only the lines in view are in the DOM, so 100,000 lines stay smooth:
// the font is monospace, so a line's height (wrapped or not) follows from its length.
"use strict";

window.NF = window.NF || {};

(function (NF) {
  const { el } = NF;
  const OVERSCAN = 20; // lines drawn above and below the view
  const ERROR_RE = /^\s*(?:>\s*)?error:/;
  const WARNING_RE = /^\s*(?:>\s*)?(?:warning|trace):/;
  const STREAM_WORD = { stdout: "out", stderr: "err", system: "sys" };
  const TOGGLES = [["numbers", "Line numbers", true], ["stream", "Stream", false],
    ["time", "Time", false], ["wrap", "Wrap", false]];

  function expandTabs(s) {
    if (!s.includes("\t")) return s;
    let out = "";
    for (const ch of s) out += ch === "\t" ? " ".repeat(8 - (out.length % 8)) : ch;
    return out;
  }

  class LogView {
    constructor({ title = "Build output", download = null } = {}) {
      this.lines = [];        // contiguous from seq 1
      this.pending = new Map(); // seq -> line that arrived before the ones before it
      this.ansiState = NF.ansi.fresh();
      this.errors = []; this.warnings = [];
      this.opts = Object.fromEntries(TOGGLES.map(([k, , on]) => [k, on]));
      this.follow = true; this.unseen = 0; this.live = true; this.marked = -1;
      this.query = ""; this.hits = []; this.hit = -1;
      this.offsets = null; this.cols = 0;
      this.lastAutoTop = 0;
      this.build(title, download);
    }

    build(title, download) {
      this.toggleButtons = {};
      const toggles = TOGGLES.map(([key, label]) => {
        const b = el("button", { type: "button", class: "toggle", "data-log-toggle": key,
          "aria-pressed": String(this.opts[key]), text: label });
        b.addEventListener("click", () => this.setOption(key, !this.opts[key]));
        this.toggleButtons[key] = b;
        return b;
      });
      this.firstError = el("button", { type: "button", "data-log": "first-error", disabled: true, text: "First error" });
      this.firstError.addEventListener("click", () => { this.marked = this.errors[0]; this.jumpTo(this.errors[0]); });
      this.counts = el("span", { class: "log-counts muted", "data-log": "counts" });
      this.search = el("input", { type: "search", "data-log": "search", placeholder: "Search the log",
        "aria-label": "Search the log", maxlength: "200", autocomplete: "off" });
      this.hitsLabel = el("span", { class: "log-hits muted", "data-log": "hits" });
      const prev = el("button", { type: "button", "data-log": "prev", "aria-label": "Previous match", text: "↑" });
      const next = el("button", { type: "button", "data-log": "next", "aria-label": "Next match", text: "↓" });
      prev.addEventListener("click", () => this.step(-1));
      next.addEventListener("click", () => this.step(1));
      let timer = null;
      this.search.addEventListener("input", () => {
        clearTimeout(timer); timer = setTimeout(() => this.find(this.search.value), 120);
      });
      this.search.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter") { ev.preventDefault(); if (this.search.value !== this.query) this.find(this.search.value); else this.step(ev.shiftKey ? -1 : 1); }
        if (ev.key === "Escape") { this.search.value = ""; this.find(""); }
      });
      this.downloadLink = el("a", { class: "button", "data-log": "download", href: download || "#", download: "", text: "Download" });
      if (!download) this.downloadLink.hidden = true;
      this.fullButton = el("button", { type: "button", class: "toggle", "data-log": "fullscreen", "aria-pressed": "false", text: "Full screen" });
      this.fullButton.addEventListener("click", () => this.setFull(!this.root.classList.contains("full")));

      this.window = el("div", { class: "log-window" });
      this.sizer = el("div", { class: "log-sizer" }, this.window);
      this.scroller = el("div", { class: "log-scroll", tabindex: "0", role: "region", "aria-label": title }, this.sizer);
      this.resume = el("button", { type: "button", class: "log-resume", "data-log": "resume", hidden: true, text: "Resume following" });
      this.resume.addEventListener("click", () => this.setFollow(true));
      this.probe = el("span", { class: "log-probe", "aria-hidden": "true", text: "0".repeat(100) });
      this.titleLabel = el("span", { class: "log-title" });
      const tools = el("div", { class: "log-tools", role: "toolbar", "aria-label": "Log tools" },
        this.titleLabel, this.firstError, this.counts,
        el("span", { class: "log-search" }, this.search, this.hitsLabel, prev, next),
        el("span", { class: "log-toggles" }, ...toggles), this.downloadLink, this.fullButton);
      this.root = el("div", { class: "logview opt-numbers" }, tools, this.scroller, this.resume, this.probe);
      this.scroller.addEventListener("scroll", () => this.onScroll(), { passive: true });
      this.root.addEventListener("keydown", (ev) => {
        if (ev.key === "Escape" && this.root.classList.contains("full")) this.setFull(false);
      });
      new ResizeObserver(() => { this.offsets = null; this.schedule(); }).observe(this.scroller);
    }

    // --- data -------------------------------------------------------------------
    reset() {
      this.lines = []; this.pending.clear(); this.ansiState = NF.ansi.fresh();
      this.errors = []; this.warnings = []; this.hits = []; this.hit = -1; this.marked = -1;
      this.offsets = null; this.follow = true; this.unseen = 0;
      this.resume.hidden = true; this.schedule();
    }

    // Lines may arrive twice (a fetched page and the live stream) or out of order.
    add(lines) {
      const before = this.lines.length;
      for (const ln of lines) if (ln.seq > this.lines.length && !this.pending.has(ln.seq)) this.pending.set(ln.seq, ln);
      while (this.pending.has(this.lines.length + 1)) {
        const seq = this.lines.length + 1;
        this.push(this.pending.get(seq));
        this.pending.delete(seq);
      }
      const added = this.lines.length - before;
      if (!added) return;
      if (this.offsets) this.extendOffsets(before);
      if (!this.follow) { this.unseen += added; this.sayResume(); }
      if (this.query) this.findIn(before);
      this.updateCounts();
      this.schedule();
    }

    push(ln) {
      const { segments, state } = NF.ansi.parse(String(ln.text), this.ansiState);
      this.ansiState = state;
      const segs = segments.map((s) => ({ text: expandTabs(s.text), cls: s.cls }));
      const plain = segs.map((s) => s.text).join("");
      const kind = ERROR_RE.test(plain) ? "error" : WARNING_RE.test(plain) ? "warning" : "";
      const i = this.lines.length;
      if (kind === "error") this.errors.push(i); else if (kind === "warning") this.warnings.push(i);
      this.lines.push({ seq: ln.seq, stream: ln.stream || "stdout", ts: ln.ts ?? null,
        segs, plain, lower: plain.toLowerCase(), kind });
    }

    updateCounts() {
      const e = this.errors.length, w = this.warnings.length;
      this.firstError.disabled = e === 0;
      NF.setText(this.counts, `${this.lines.length} lines · ${e} error${e === 1 ? "" : "s"} · ${w} warning${w === 1 ? "" : "s"}`);
    }

    // --- geometry ---------------------------------------------------------------
    lineHeight() {
      if (!this._lineH) this._lineH = parseFloat(getComputedStyle(this.root).getPropertyValue("--log-line")) || 18;
      return this._lineH;
    }

    columns() {
      // Characters per visual row of the text column (wrap mode only).
      const charW = this.probe.getBoundingClientRect().width / 100 || 7.2;
      const gutter = this.window.querySelector(".ln-row .gutter");
      const gw = gutter ? gutter.getBoundingClientRect().width : 0;
      const pad = 16;
      return Math.max(20, Math.floor((this.scroller.clientWidth - gw - pad) / charW));
    }

    rows(i) { return this.opts.wrap ? Math.max(1, Math.ceil(this.lines[i].plain.length / this.cols)) : 1; }

    buildOffsets() {
      this.cols = this.opts.wrap ? this.columns() : 0;
      this.offsets = new Float64Array(this.lines.length + 1);
      this.extendOffsets(0);
    }

    extendOffsets(from) {
      if (this.offsets.length < this.lines.length + 1) {
        const grown = new Float64Array(Math.max(this.lines.length + 1, this.offsets.length * 2));
        grown.set(this.offsets.subarray(0, from + 1));
        this.offsets = grown;
      }
      for (let i = from; i < this.lines.length; i++) this.offsets[i + 1] = this.offsets[i] + this.rows(i);
    }

    lineAt(row) {
      let lo = 0, hi = this.lines.length - 1;
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if (this.offsets[mid] <= row) lo = mid; else hi = mid - 1;
      }
      return Math.max(0, lo);
    }

    // --- drawing ----------------------------------------------------------------
    schedule() {
      if (this.frame) return;
      this.frame = requestAnimationFrame(() => { this.frame = null; this.render(); });
    }

    render() {
      if (!this.root.isConnected) return;
      if (!this.offsets) this.buildOffsets();
      const lh = this.lineHeight();
      const total = this.offsets[this.lines.length] || 0;
      this.sizer.style.height = `${total * lh}px`;
      if (this.follow) this.toBottom();
      const top = this.scroller.scrollTop / lh;
      const first = Math.max(0, this.lineAt(top) - OVERSCAN);
      const endRow = top + this.scroller.clientHeight / lh;
      let last = this.lineAt(endRow) + OVERSCAN;
      last = Math.min(this.lines.length - 1, last);
      const rows = [];
      for (let i = first; i <= last; i++) rows.push(this.row(i));
      this.window.replaceChildren(...rows);
      this.window.style.transform = `translateY(${(this.offsets[first] || 0) * lh}px)`;
      if (this.opts.wrap && this.cols !== this.columns()) { this.offsets = null; this.schedule(); }
    }

    row(i) {
      const ln = this.lines[i];
      const cls = ["ln-row", ln.stream, ln.kind, this.marked === i ? "jumped" : ""].filter(Boolean).join(" ");
      const gutter = el("span", { class: "gutter", "aria-hidden": "true" });
      if (this.opts.numbers) gutter.append(el("span", { class: "g-num", text: String(ln.seq) }));
      if (this.opts.time) gutter.append(el("span", { class: "g-time", text: ln.ts ? NF.clock(ln.ts) : "--:--:--" }));
      if (this.opts.stream) gutter.append(el("span", { class: `g-stream ${ln.stream}`, text: STREAM_WORD[ln.stream] || ln.stream }));
      const text = el("span", { class: "txt" }, ...this.pieces(ln, i));
      return el("div", { class: cls, "data-seq": String(ln.seq) }, gutter, text);
    }

    // The line's coloured segments, cut where search matches begin and end.
    pieces(ln, i) {
      const ranges = this.query ? this.matchRanges(ln.lower) : [];
      const current = this.hits[this.hit] === i;
      const out = [];
      let pos = 0;
      for (const seg of ln.segs) {
        const end = pos + seg.text.length;
        let at = pos;
        for (const [a, b] of ranges) {
          if (b <= at || a >= end) continue;
          if (a > at) out.push(this.span(seg, at - pos, a - pos));
          const m = el("mark", { class: current ? "hit current" : "hit" });
          m.append(this.span(seg, Math.max(a, at) - pos, Math.min(b, end) - pos));
          out.push(m);
          at = Math.min(b, end);
        }
        if (at < end) out.push(this.span(seg, at - pos, end - pos));
        pos = end;
      }
      return out;
    }

    span(seg, a, b) {
      const text = seg.text.slice(a, b);
      return seg.cls ? el("span", { class: seg.cls, text }) : document.createTextNode(text);
    }

    matchRanges(lower) {
      const out = [], q = this.query;
      for (let at = lower.indexOf(q); at >= 0 && out.length < 200; at = lower.indexOf(q, at + q.length)) out.push([at, at + q.length]);
      return out;
    }

    // --- follow -----------------------------------------------------------------
    toBottom() {
      const top = Math.max(0, this.sizer.offsetHeight - this.scroller.clientHeight);
      this.scroller.scrollTop = top;
      this.lastAutoTop = this.scroller.scrollTop;
    }

    onScroll() {
      const s = this.scroller;
      const atBottom = s.scrollHeight - s.scrollTop - s.clientHeight < this.lineHeight();
      if (this.follow && !atBottom && s.scrollTop < this.lastAutoTop - 1) this.setFollow(false);
      else if (!this.follow && atBottom && this.unseen === 0 && this.lines.length) this.setFollow(true);
      this.schedule();
    }

    setFollow(on) {
      this.follow = on;
      this.root.classList.toggle("paused", !on);
      if (on) { this.unseen = 0; this.toBottom(); }
      this.sayResume();
      this.schedule();
    }

    sayResume() {
      this.resume.hidden = this.follow;
      const text = !this.live ? "Jump to the end"
        : this.unseen ? `Resume following (${this.unseen} new lines)` : "Resume following";
      NF.setText(this.resume, text);
    }

    // What the command is (shown in full screen) and whether more lines can still come.
    describe(title, live) {
      NF.setText(this.titleLabel, title);
      if (this.live !== live) { this.live = live; this.sayResume(); }
    }

    // --- search and jumps ---------------------------------------------------------
    find(q) {
      this.query = q.trim().toLowerCase().slice(0, 200);
      this.hits = []; this.hit = -1;
      if (this.query) this.findIn(0);
      if (this.hits.length) { this.hit = 0; this.jumpTo(this.hits[0]); }
      this.sayHits(); this.schedule();
    }

    findIn(from) {
      for (let i = from; i < this.lines.length; i++) if (this.lines[i].lower.includes(this.query)) this.hits.push(i);
      this.sayHits();
    }

    sayHits() {
      const text = !this.query ? "" : this.hits.length ? `${this.hit + 1} of ${this.hits.length}` : "no match";
      NF.setText(this.hitsLabel, text);
    }

    step(d) {
      if (!this.hits.length) return;
      this.hit = (this.hit + d + this.hits.length) % this.hits.length;
      this.jumpTo(this.hits[this.hit]);
      this.sayHits();
    }

    jumpTo(i) {
      if (i === undefined) return;
      this.setFollow(false);
      if (!this.offsets) this.buildOffsets();
      const lh = this.lineHeight();
      this.scroller.scrollTop = Math.max(0, this.offsets[i] * lh - this.scroller.clientHeight / 3);
      this.render();
    }

    setOption(key, on) {
      this.opts[key] = on;
      this.root.classList.toggle(`opt-${key}`, on);
      this.toggleButtons[key].setAttribute("aria-pressed", String(on));
      const anchor = this.follow ? null : this.lineAt(this.scroller.scrollTop / this.lineHeight());
      this.offsets = null;
      this.render();
      if (anchor !== null && this.offsets) this.scroller.scrollTop = this.offsets[anchor] * this.lineHeight();
      this.schedule();
    }

    setFull(on) {
      this.root.classList.toggle("full", on);
      this.fullButton.setAttribute("aria-pressed", String(on));
      NF.setText(this.fullButton, on ? "Exit full screen" : "Full screen");
      this.offsets = null; this.schedule();
    }
  }

  NF.LogView = LogView;

  // Return the command after handing every stored line to onPage, page by page: the
  // command comes with its first page and `output_next`, the rest from /output.
  NF.loadOutput = async function loadOutput(commandId, onPage, isCurrent = () => true) {
    const base = `/api/commands/${encodeURIComponent(commandId)}`;
    const cmd = await NF.api(base);
    if (cmd.output && cmd.output.length) onPage(cmd.output);
    let next = cmd.output_next ?? null;
    for (let page = 0; next !== null && page < 10000 && isCurrent(); page++) {
      const data = await NF.api(`${base}/output?after_seq=${next}&limit=5000`);
      if (data.lines && data.lines.length) onPage(data.lines);
      next = data.next ?? null;
    }
    return cmd;
  };
})(window.NF);
