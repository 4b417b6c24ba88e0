//! The HTML report's inline stylesheet and script. The script only filters the timeline (it
//! reads and hides existing rows, never writes markup); the page's Content-Security-Policy
//! admits it by hash, so editing it needs nothing else.

pub(super) const CSS: &str = r#"
:root{--fg:#1d2330;--dim:#6b7385;--line:#e3e6ec;--bg:#f6f7f9;--card:#fff;--zebra:#f9fafb;
--accent:#2f5bd3;--good:#1a7f37;--good-bg:#e6f4ea;--bad:#b42318;--bad-bg:#fdecea;--warn:#9a6700;
--warn-bg:#fff4d6;--mono:ui-monospace,"SFMono-Regular","DejaVu Sans Mono",Menlo,Consolas,monospace}
*{box-sizing:border-box}
html{background:var(--bg)}
body{margin:0;color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,"Noto Sans","Liberation Sans",sans-serif}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
.mono,pre,code{font-family:var(--mono);font-size:12.5px}
.dim{color:var(--dim)}
header.top{background:#141a29;color:#e8ebf2;padding:22px 32px 18px}
header.top .brand{font-size:12px;letter-spacing:.12em;text-transform:uppercase;color:#8f9bb8}
header.top h1{margin:4px 0 8px;font-size:22px;font-weight:600;color:#fff}
.result{display:inline-block;padding:3px 10px;border-radius:999px;font-weight:600;font-size:13px}
.result.good{background:#1f4d2e;color:#b8f0c8}.result.bad{background:#5c1d19;color:#ffc9c2}
.result.warn{background:#5a4410;color:#ffe39a}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:3px 16px;margin:14px 0 16px;
max-width:1100px}
dl.meta dt{color:#8f9bb8}dl.meta dd{margin:0;overflow-wrap:anywhere}
dl.meta .mono{color:#e8ebf2}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{display:flex;flex-direction:column;min-width:116px;padding:9px 14px;border-radius:8px;
background:#1f2740;color:#e8ebf2;border:1px solid #2c3654}
.card:hover{text-decoration:none;border-color:#50608c}
.card b{font-size:22px;line-height:1.1}.card span{font-size:12px;color:#9aa6c2}
.card.alert{background:#4a1c1a;border-color:#7d2e28}.card.alert span{color:#ffb4aa}
ul.warnings{margin:14px 0 0;padding:10px 14px 10px 30px;background:#3d3212;color:#ffe39a;
border-radius:8px;max-width:1100px}
nav{position:sticky;top:0;z-index:2;display:flex;flex-wrap:wrap;gap:2px;padding:6px 28px;
background:#fff;border-bottom:1px solid var(--line);box-shadow:0 1px 3px rgba(20,26,41,.06)}
nav a{padding:5px 10px;border-radius:6px;color:var(--fg);font-size:13px}
nav a:hover{background:var(--bg);text-decoration:none}
main{padding:8px 32px 32px}
section{margin-top:22px}
h2{font-size:16px;font-weight:600;margin:0 0 8px;display:flex;align-items:center;gap:8px}
h2 .count{font-size:12px;font-weight:600;color:var(--dim);background:#e9ecf2;border-radius:999px;
padding:1px 8px}
p.empty{margin:0;color:var(--dim);font-style:italic}
.scroll{overflow-x:auto;background:var(--card);border:1px solid var(--line);border-radius:8px}
table{border-collapse:collapse;width:100%}
th{text-align:left;font-size:11.5px;letter-spacing:.04em;text-transform:uppercase;color:var(--dim);
font-weight:600;background:#fbfbfc;padding:7px 10px;border-bottom:1px solid var(--line);
white-space:nowrap}
td{padding:6px 10px;border-bottom:1px solid #eef0f4;vertical-align:top}
tbody tr:nth-child(even){background:var(--zebra)}
tbody tr:hover{background:#eef3ff}
tbody tr:last-child td{border-bottom:0}
td.num,th.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
td .mono{overflow-wrap:anywhere}
td .url{word-break:break-all}
td .host,td .fp,td .path{white-space:nowrap}
td .argv{white-space:pre-wrap;word-break:break-all}
.pill{display:inline-block;padding:0 8px;border-radius:999px;font-size:12px;font-weight:600;
white-space:nowrap}
.pill.good{background:var(--good-bg);color:var(--good)}
.pill.bad{background:var(--bad-bg);color:var(--bad)}
.pill.warn{background:var(--warn-bg);color:var(--warn)}
.pill.dim{background:#eef0f4;color:var(--dim)}
p.kinds,p.note{color:var(--dim);margin:6px 2px 0}
.filters{display:flex;gap:8px;align-items:center;margin:0 0 8px}
.filters input,.filters select{font:inherit;padding:5px 9px;border:1px solid #cfd4de;
border-radius:6px;background:#fff}
.filters input{width:320px}
#tl td{padding:4px 10px}
#tl details summary{cursor:pointer;font-family:var(--mono);font-size:12.5px;
overflow-wrap:anywhere;list-style-position:outside}
#tl details pre{margin:6px 0 4px;padding:10px;background:#0f1422;color:#d7dcea;border-radius:6px;
white-space:pre-wrap;word-break:break-all;max-height:420px;overflow:auto}
#tl tr:target{background:#fff6cc}
.k{display:inline-block;min-width:68px;text-align:center;padding:0 7px;border-radius:4px;
font-size:11.5px;font-weight:600;font-family:var(--mono);background:#eef0f4;color:#3d4557}
.k-http{background:#e3ecff;color:#1f47b8}.k-dns{background:#dff5f2;color:#0d6b5e}
.k-tcp,.k-udp{background:#eceff5;color:#4a5368}.k-tls{background:#efe7ff;color:#5b32b4}
.k-file{background:#e6f4ea;color:#1a7f37}.k-denied,.k-bad{background:#fdecea;color:#b42318}
.k-exec{background:#fff0e0;color:#a14a00}.k-exit{background:#f1f1f1;color:#5e6472}
.k-notice{background:#fff4d6;color:#9a6700}
.k-run_start,.k-run_end,.k-net_setup{background:#e2e5ee;color:#1d2330}
footer{padding:16px 32px 28px;color:var(--dim);font-size:12px}
"#;

pub(super) const SCRIPT: &str = r#"
(function () {
  var q = document.getElementById('tl-q');
  var kind = document.getElementById('tl-kind');
  var shown = document.getElementById('tl-shown');
  if (!q || !kind || !shown) return;
  var rows = Array.prototype.slice.call(document.querySelectorAll('#tl tbody tr'));
  var text = rows.map(function (r) {
    var s = r.querySelector('summary');
    return (s ? s.textContent : '').toLowerCase();
  });
  function apply() {
    var needle = q.value.toLowerCase(), k = kind.value, n = 0;
    rows.forEach(function (r, i) {
      var ok = (!k || r.getAttribute('data-kind') === k) && (!needle || text[i].indexOf(needle) >= 0);
      r.hidden = !ok;
      if (ok) n++;
    });
    shown.textContent = n + ' of ' + rows.length + ' events shown';
  }
  q.addEventListener('input', apply);
  kind.addEventListener('change', apply);
  apply();
})();
"#;
