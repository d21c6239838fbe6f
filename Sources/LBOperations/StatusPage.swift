import LBKit

/// The live status page at `GET /` on the admin endpoint: one self-contained HTML document (no CDN,
/// no fonts, nothing fetched but `/ui.json` from the same endpoint), which polls `/ui.json` every
/// second and redraws the instance, the backends' table, two five-minute charts and the last
/// events without reloading. Plain HTML, CSS and JavaScript, readable on a phone.
public enum StatusPage {
    public static let html = #"""
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>l4lb status</title>
        <style>
        :root { color-scheme: light dark; --line: #8884; --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700; }
        body { font: 14px/1.4 system-ui, sans-serif; margin: 0 auto; padding: 12px; max-width: 1100px; }
        h1 { font-size: 20px; margin: 0 0 4px; }
        .meta { display: flex; flex-wrap: wrap; gap: 6px 18px; margin-bottom: 12px; color: #666; }
        .meta b { color: inherit; }
        .wrap { overflow-x: auto; }
        table { border-collapse: collapse; width: 100%; min-width: 560px; }
        th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
        td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
        .state { font-weight: 600; }
        tr[data-state="healthy"] .state { color: var(--ok); }
        tr[data-state="retired"] .state { color: var(--bad); }
        .charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 12px; margin: 16px 0; }
        figure { margin: 0; border: 1px solid var(--line); border-radius: 6px; padding: 8px; }
        figcaption { font-weight: 600; margin-bottom: 4px; }
        svg { width: 100%; height: 140px; display: block; }
        .legend span { display: inline-block; margin-right: 10px; font-size: 12px; }
        .legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px; border-radius: 2px; }
        ol { padding-left: 20px; margin: 4px 0; font-size: 13px; }
        .health { color: var(--warn); }
        #error { color: var(--bad); }
        </style>
        </head>
        <body>
        <h1>l4lb <span id="instance"></span></h1>
        <div class="meta">
          <span>up <b id="uptime">-</b></span>
          <span>policy <b id="policy">-</b></span>
          <span>Redis <b id="redis">-</b></span>
          <span id="shadow"></span>
          <span id="panic"></span>
          <span id="error"></span>
        </div>
        <div class="wrap"><table>
          <thead><tr><th>backend</th><th>region</th><th class="n">weight</th><th>state</th>
          <th class="n">open</th><th class="n">connections</th><th class="n">bytes</th><th class="n">failures</th>
          <th class="n" title="share of sampled clients the shadow policy would send here">shadow</th></tr></thead>
          <tbody id="backends"></tbody>
        </table></div>
        <div class="charts">
          <figure><figcaption>new connections/s, last 5 minutes</figcaption><svg id="connections" viewBox="0 0 300 100" preserveAspectRatio="none"></svg><div class="legend" id="legend-connections"></div></figure>
          <figure><figcaption>bytes/s, last 5 minutes</figcaption><svg id="bytes" viewBox="0 0 300 100" preserveAspectRatio="none"></svg><div class="legend" id="legend-bytes"></div></figure>
        </div>
        <h2 style="font-size:16px">Last events</h2>
        <ol id="events"></ol>
        <script>
        "use strict";
        const colors = ["#0969da", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#1b7c83", "#57606a"];
        const text = (id, value) => { document.getElementById(id).textContent = value; };
        function age(seconds) {
          const h = Math.floor(seconds / 3600), m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
          return h ? h + "h" + String(m).padStart(2, "0") + "m" : m ? m + "m" + String(s).padStart(2, "0") + "s" : s + "s";
        }
        function bytes(n) {
          const units = ["B", "KB", "MB", "GB", "TB"]; let i = 0;
          while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
          return (i ? n.toFixed(1) : n) + " " + units[i];
        }
        const percent = (part, whole) => whole ? (100 * part / whole).toFixed(1) + "%" : "-";
        function cell(row, value, numeric) {
          const td = row.insertCell(); td.textContent = value; if (numeric) td.className = "n"; return td;
        }
        function chart(id, series, key) {
          const svg = document.getElementById(id), legend = document.getElementById("legend-" + id);
          svg.replaceChildren(); legend.replaceChildren();
          const top = Math.max(1, ...series.flatMap(s => s[key]));
          series.forEach((s, i) => {
            const values = s[key], color = colors[i % colors.length];
            const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
            line.setAttribute("points", values.map((v, x) => (300 - values.length + 1 + x) + "," + (100 - 96 * v / top).toFixed(1)).join(" "));
            line.setAttribute("fill", "none"); line.setAttribute("stroke", color); line.setAttribute("stroke-width", "1.5");
            line.setAttribute("vector-effect", "non-scaling-stroke"); line.dataset.backend = s.backend;
            svg.appendChild(line);
            const item = document.createElement("span"); const swatch = document.createElement("i");
            swatch.style.background = color; item.append(swatch, s.backend); legend.appendChild(item);
          });
        }
        async function refresh() {
          try {
            const response = await fetch("/ui.json", { cache: "no-store" });
            const ui = await response.json(), status = ui.status;
            text("instance", status.instance); text("uptime", age(status.uptime_seconds)); text("policy", status.policy);
            text("redis", status.redis_connected === undefined || status.redis_connected === null ? "not used" : status.redis_connected ? "connected" : "disconnected");
            text("panic", status.panic ? "PANIC: every backend is retired" : ""); text("error", "");
            const shadow = status.shadow, shadowPicks = new Map((shadow ? shadow.backends : []).map(b => [b.address, b.picks]));
            text("shadow", shadow ? "shadow " + shadow.policy + ": agrees on " + percent(shadow.agreed, shadow.sampled)
              + " of " + shadow.sampled + (shadow.dropped ? " (dropped after a fault)" : "") : "");
            const body = document.getElementById("backends"); body.replaceChildren();
            for (const b of status.backends) {
              const row = body.insertRow(); row.dataset.backend = b.address; row.dataset.state = b.state;
              cell(row, b.address); cell(row, b.region || "-"); cell(row, b.weight, true);
              const state = cell(row, b.state); state.className = "state";
              if (b.reason) state.title = b.reason;
              if (b.reason && b.state !== "healthy") state.textContent = b.state + " (" + b.reason + ")";
              cell(row, b.active_connections, true); cell(row, b.total_connections, true);
              cell(row, bytes((b.bytes_from_clients || 0) + (b.bytes_to_clients || 0)), true); cell(row, b.connect_failures, true);
              cell(row, shadow ? percent(shadowPicks.get(b.address) || 0, shadow.sampled) : "-", true).className = "n shadow";
            }
            chart("connections", ui.history, "connections"); chart("bytes", ui.history, "bytes");
            const events = document.getElementById("events"); events.replaceChildren();
            for (const e of ui.events.slice().reverse()) {
              const li = document.createElement("li"); li.className = e.kind;
              li.textContent = e.time.replace("T", " ").replace(/\.\d+Z$/, "Z") + " " + e.text; events.appendChild(li);
            }
          } catch (error) {
            text("error", "cannot reach l4lb: " + error);
          }
        }
        refresh();
        setInterval(refresh, 1000);
        </script>
        </body>
        </html>
        """#
}

/// What `/ui.json` holds: the instance's status, the traffic history and the last events.
public struct StatusPageData: Encodable, Sendable {
    public var status: InstanceStatus.Document
    public var history: [TrafficHistory.Series]
    public var events: [RecentEvents.Event]

    public init(status: InstanceStatus.Document, history: [TrafficHistory.Series], events: [RecentEvents.Event]) {
        self.status = status
        self.history = history
        self.events = events
    }
}
