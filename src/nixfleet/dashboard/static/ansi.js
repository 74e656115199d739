// A small parser for the ANSI escape codes build tools write (Nix colours `error:` red and
// bold). SGR ("ESC [ … m") becomes CSS classes; every other control sequence is dropped, so
// nothing a build prints can reach the page as anything but text in a span.
"use strict";

window.NF = window.NF || {};

(function (NF) {
  const NAMES = ["black", "red", "green", "yellow", "blue", "magenta", "cyan", "white"];
  // xterm's 16 colours as RGB, to map 256-colour and true-colour codes onto the nearest
  // class (a class keeps the theme's contrast; an inline colour would not).
  const RGB16 = [[0, 0, 0], [205, 0, 0], [0, 205, 0], [205, 205, 0], [0, 0, 238], [205, 0, 205],
    [0, 205, 205], [229, 229, 229], [127, 127, 127], [255, 0, 0], [0, 255, 0], [255, 255, 0],
    [92, 92, 255], [255, 0, 255], [0, 255, 255], [255, 255, 255]];

  function colourName(n) { return n < 8 ? NAMES[n] : `bright-${NAMES[n - 8]}`; }

  function nearest16(r, g, b) {
    let best = 0, bestD = Infinity;
    RGB16.forEach(([R, G, B], i) => {
      const d = (r - R) ** 2 + (g - G) ** 2 + (b - B) ** 2;
      if (d < bestD) { best = i; bestD = d; }
    });
    return best;
  }

  function rgb256(n) {
    if (n < 16) return RGB16[n];
    if (n >= 232) { const v = 8 + (n - 232) * 10; return [v, v, v]; }
    const i = n - 16, steps = [0, 95, 135, 175, 215, 255];
    return [steps[Math.floor(i / 36)], steps[Math.floor(i / 6) % 6], steps[i % 6]];
  }

  function fresh() { return { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false, inverse: false }; }

  // Reads an extended colour (38;5;n or 38;2;r;g;b) at params[i]; returns [colour, next i].
  function extended(params, i) {
    if (params[i + 1] === 5 && params.length > i + 2) {
      const n = params[i + 2];
      return [n < 16 ? n : nearest16(...rgb256(Math.min(255, n))), i + 3];
    }
    if (params[i + 1] === 2 && params.length > i + 4) {
      return [nearest16(params[i + 2], params[i + 3], params[i + 4]), i + 5];
    }
    return [null, params.length];
  }

  function applySgr(state, params) {
    const s = { ...state };
    if (params.length === 0) params = [0];
    for (let i = 0; i < params.length;) {
      const p = params[i];
      if (p === 0) Object.assign(s, fresh());
      else if (p === 1) s.bold = true;
      else if (p === 2) s.dim = true;
      else if (p === 3) s.italic = true;
      else if (p === 4) s.underline = true;
      else if (p === 7) s.inverse = true;
      else if (p === 22) { s.bold = false; s.dim = false; }
      else if (p === 23) s.italic = false;
      else if (p === 24) s.underline = false;
      else if (p === 27) s.inverse = false;
      else if (p >= 30 && p <= 37) s.fg = p - 30;
      else if (p === 39) s.fg = null;
      else if (p >= 40 && p <= 47) s.bg = p - 40;
      else if (p === 49) s.bg = null;
      else if (p >= 90 && p <= 97) s.fg = p - 90 + 8;
      else if (p >= 100 && p <= 107) s.bg = p - 100 + 8;
      else if (p === 38 || p === 48) {
        const [colour, next] = extended(params, i);
        if (p === 38) s.fg = colour; else s.bg = colour;
        i = next; continue;
      }
      i += 1;
    }
    return s;
  }

  function classes(s) {
    const out = [];
    let fg = s.fg, bg = s.bg;
    if (s.inverse) { [fg, bg] = [bg === null ? 0 : bg, fg === null ? 7 : fg]; }
    if (fg !== null) out.push(`ansi-${colourName(fg)}`);
    if (bg !== null) out.push(`ansi-bg-${colourName(bg)}`);
    if (s.bold) out.push("ansi-bold");
    if (s.dim) out.push("ansi-dim");
    if (s.italic) out.push("ansi-italic");
    if (s.underline) out.push("ansi-underline");
    return out.join(" ");
  }

  // Return {segments: [{text, cls}], state}: the line's text split where its style
  // changes, and the style in force at its end (a colour may run on into the next line).
  function parse(text, state = fresh()) {
    const segments = [];
    let current = state, buf = "";
    const flush = () => {
      if (!buf) return;
      const cls = classes(current);
      const last = segments[segments.length - 1];
      if (last && last.cls === cls) last.text += buf; else segments.push({ text: buf, cls });
      buf = "";
    };
    // A carriage return rewrites the line on a terminal: keep what was written last.
    const cr = text.lastIndexOf("\r");
    if (cr >= 0 && cr < text.length - 1) text = text.slice(cr + 1);
    for (let i = 0; i < text.length; i++) {
      const ch = text.charCodeAt(i);
      if (ch === 0x1b) {
        const next = text[i + 1];
        if (next === "[") {
          let j = i + 2;
          while (j < text.length && /[0-9;:?<=>]/.test(text[j])) j++;
          const final = text[j];
          if (final === "m") {
            flush();
            const params = text.slice(i + 2, j).split(/[;:]/).filter((x) => x !== "").map(Number)
              .filter((n) => Number.isFinite(n));
            current = applySgr(current, params.slice(0, 32));
          }
          i = final === undefined ? text.length : j; // any other CSI (cursor, erase) is dropped
        } else if (next === "]") {
          // OSC (titles, hyperlinks): up to BEL or ESC \ — dropped, its text too.
          let j = i + 2;
          while (j < text.length && text.charCodeAt(j) !== 7 && !(text[j] === "\x1b" && text[j + 1] === "\\")) j++;
          i = text.charCodeAt(j) === 7 ? j : j + 1;
        } else {
          i += 1; // a two-character escape
        }
      } else if (ch < 0x20 && ch !== 9) {
        continue; // other control characters (BEL, backspace, \r) are not text
      } else {
        buf += text[i];
      }
    }
    flush();
    return { segments, state: current };
  }

  function strip(text) { return parse(text).segments.map((s) => s.text).join(""); }

  NF.ansi = { parse, strip, fresh };
})(window.NF);
