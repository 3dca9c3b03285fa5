// Static files of the web UI, served by the Worker under /ui/static/ (never from a CDN): htmx from
// the htmx.org npm package (imported as text, see wrangler.toml [[rules]]), a small stylesheet and
// one script. The CSP allows scripts and styles from this origin only, so none are inline.
import htmx from "htmx.org/dist/htmx.min.js";

const CSS = `
:root { --fg:#1b1f24; --muted:#57606a; --line:#d0d7de; --bg:#fff; --accent:#0a5bd3; --warn:#9a6700; --warnbg:#fff8c5; --bad:#b42318; --ok:#1a7f37; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
header.top { display:flex; gap:1.5rem; align-items:center; padding:.6rem 1.2rem; border-bottom:1px solid var(--line); background:#f6f8fa; flex-wrap:wrap; }
header.top .brand { font-weight:700; color:var(--fg); text-decoration:none; }
header.top nav a { margin-right:1rem; color:var(--accent); text-decoration:none; }
header.top nav a[aria-current=page] { font-weight:700; color:var(--fg); }
header.top .who { margin-left:auto; color:var(--muted); display:flex; gap:.6rem; align-items:center; }
main { padding: 1rem 1.2rem 3rem; max-width: 1200px; }
.banner { background: var(--warnbg); color: var(--warn); border-bottom:1px solid #d4a72c; padding:.5rem 1.2rem; font-weight:600; }
.flash { padding:.5rem .8rem; border-radius:6px; margin:.5rem 0 1rem; }
.flash.error { background:#ffebe9; color:var(--bad); border:1px solid #ff8182; }
.flash.ok { background:#dafbe1; color:var(--ok); border:1px solid #4ac26b; }
table { border-collapse: collapse; width:100%; margin: .5rem 0 1rem; }
th, td { text-align:left; padding:.35rem .6rem; border-bottom:1px solid var(--line); vertical-align: top; }
th { background:#f6f8fa; font-weight:600; }
code, pre, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 13px; }
pre { background:#f6f8fa; border:1px solid var(--line); padding:.6rem; overflow:auto; max-height: 32rem; }
.cards { display:grid; grid-template-columns: repeat(auto-fill, minmax(200px,1fr)); gap: .8rem; margin: .5rem 0 1.2rem; }
.card { border:1px solid var(--line); border-radius:8px; padding:.7rem .9rem; }
.card .n { font-size: 1.5rem; font-weight:700; }
.card .l { color: var(--muted); }
form.inline { display:inline; }
label { display:block; margin:.4rem 0 .15rem; font-weight:600; }
label.check { display:inline-flex; gap:.3rem; font-weight:400; margin-right:.8rem; }
input[type=text], input[type=password], input[type=search], input[type=number], select, textarea { font: inherit; padding:.35rem .5rem; border:1px solid var(--line); border-radius:6px; min-width: 16rem; }
textarea { width:100%; min-height: 12rem; font-family: ui-monospace, monospace; font-size:13px; }
button, .button { font: inherit; padding:.35rem .8rem; border:1px solid var(--line); border-radius:6px; background:#f6f8fa; cursor:pointer; color: var(--fg); text-decoration:none; display:inline-block; }
button.primary { background: var(--accent); color:#fff; border-color: var(--accent); }
button.danger { background: var(--bad); color:#fff; border-color: var(--bad); }
:focus-visible { outline: 3px solid #4493f8; outline-offset: 2px; }
.muted { color: var(--muted); }
.tag { display:inline-block; padding:0 .4rem; border-radius: 1rem; border:1px solid var(--line); font-size: 12px; margin-right:.2rem; }
.allowed { color: var(--ok); font-weight:700; }
.denied { color: var(--bad); font-weight:700; }
.row { display:flex; gap:1rem; flex-wrap:wrap; align-items:flex-end; }
.copy { display:flex; gap:.4rem; align-items:center; }
.copy input { flex:1; font-family: ui-monospace, monospace; }
section { margin-bottom: 1.6rem; }
ul.tree { list-style: none; padding-left: 1rem; border-left: 2px solid var(--line); }
.pager { display:flex; gap:1rem; }
#tail { max-height: 20rem; overflow:auto; }
.sr { position:absolute; width:1px; height:1px; overflow:hidden; clip:rect(0 0 0 0); white-space:nowrap; }
`;

// Progressive enhancement only: every page works without it.
//  - [data-copy=ID]: copies the value of #ID to the clipboard.
//  - [data-confirm=TEXT] on a form: asks before submitting (the server also asks when JS is off).
//  - #tail[data-src=URL]: live tail of the audit log over server-sent events.
const APP_JS = `
(function () {
  "use strict";
  document.addEventListener("click", function (e) {
    var b = e.target.closest ? e.target.closest("[data-copy]") : null;
    if (!b) return;
    var el = document.getElementById(b.getAttribute("data-copy"));
    if (!el) return;
    var text = el.value !== undefined ? el.value : el.textContent;
    var done = function () { b.textContent = "Copied"; setTimeout(function () { b.textContent = "Copy"; }, 1500); };
    if (navigator.clipboard && navigator.clipboard.writeText) navigator.clipboard.writeText(text).then(done, function () { el.select && el.select(); document.execCommand("copy"); done(); });
    else { el.select && el.select(); document.execCommand("copy"); done(); }
  });
  document.addEventListener("submit", function (e) {
    var f = e.target;
    var msg = f.getAttribute && f.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) e.preventDefault();
  }, true);
  var tail = document.getElementById("tail");
  if (tail && window.EventSource) {
    var status = document.getElementById("tail-status");
    var es = new EventSource(tail.getAttribute("data-src"));
    es.addEventListener("ready", function () { if (status) status.textContent = "live: waiting for new events"; });
    es.addEventListener("audit", function (m) {
      var ev; try { ev = JSON.parse(m.data); } catch (_) { return; }
      var tr = document.createElement("tr");
      var t = ev.target || {};
      [ev.time, ev.actor && ev.actor.principal, ev.action, [t.repository, t.tag, t.digest].filter(Boolean).join(" "), ev.outcome && ev.outcome.status].forEach(function (v) {
        var td = document.createElement("td"); td.textContent = v == null ? "" : String(v); tr.appendChild(td);
      });
      tail.querySelector("tbody").prepend(tr);
      if (status) status.textContent = "live: " + tail.querySelectorAll("tbody tr").length + " new event(s)";
    });
    es.onerror = function () { if (status) status.textContent = "live tail disconnected; reconnecting"; };
  }
})();
`;

export const ASSETS: Record<string, { type: string; body: string }> = {
  "htmx.min.js": { type: "text/javascript; charset=utf-8", body: htmx },
  "app.js": { type: "text/javascript; charset=utf-8", body: APP_JS },
  "ui.css": { type: "text/css; charset=utf-8", body: CSS },
};
