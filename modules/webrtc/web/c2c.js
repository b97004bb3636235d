/* Switchboard click-to-call loader. MIT OR Apache-2.0.
 * <script src="https://SWITCH/c2c.js" data-merchant="acme" data-link="sales"
 *         data-session="..." data-token="..." async></script>
 * Optional: data-target (CSS selector of an element to put the button in), data-label,
 * data-color, data-background, data-destination, data-processing="off" (no echo
 * cancellation / noise suppression / gain control: for tests with tones), data-cookies and
 * data-fields (names of cookies / form fields sent as context: the merchant's config must
 * opt in to each name, or the call is refused), data-window="popup" (the call in a window of
 * its own: pages the agent pushes open in this one, the call window stays).
 * The button carries the facts before any click; the click opens a panel and fetches the
 * media client (versioned URL, cached for good), which places the call. A call survives the
 * tab's navigation: the next page's button of the same link takes it back. */
(function () {
  "use strict";
  var me = document.currentScript;
  if (!me || !me.src) return;
  var base = new URL(me.src).origin;
  var CLIENT = base + "__CLIENT_URL__";
  var TRAIL = "sb-c2c-trail";
  var LIVE = "sb-c2c-live";

  // The session's recent pages (kept in this tab only), for the call center's context.
  function trail() {
    var t = [];
    try { t = JSON.parse(sessionStorage.getItem(TRAIL) || "[]"); } catch (e) { t = []; }
    if (t[t.length - 1] !== location.href) t.push(location.href);
    t = t.slice(-10);
    try { sessionStorage.setItem(TRAIL, JSON.stringify(t)); } catch (e) { /* private mode */ }
    return t;
  }
  trail();

  function css(doc) {
    doc = doc || document;
    if (doc.getElementById("sb-c2c-css")) return;
    var s = doc.createElement("style");
    s.id = "sb-c2c-css";
    s.textContent =
      ".sb-c2c-btn{font:600 15px/1.2 system-ui,sans-serif;padding:.7em 1.2em;border:0;border-radius:2em;cursor:pointer}" +
      ".sb-c2c-btn:focus-visible{outline:3px solid #fb0;outline-offset:2px}" +
      ".sb-c2c-panel{position:fixed;right:1em;bottom:1em;z-index:2147483000;width:17em;background:#fff;color:#222;" +
      "border-radius:.8em;box-shadow:0 4px 24px rgba(0,0,0,.3);font:14px/1.4 system-ui,sans-serif;padding:1em}" +
      ".sb-c2c-panel button{font:inherit;margin:.15em;padding:.5em .8em;border:1px solid #bbb;border-radius:.4em;background:#f6f6f6;cursor:pointer}" +
      ".sb-c2c-panel button:focus-visible{outline:3px solid #fb0}" +
      ".sb-c2c-pad{display:grid;grid-template-columns:repeat(3,1fr)}" +
      ".sb-c2c-status{font-weight:600;margin-bottom:.5em}.sb-c2c-notice{margin:.5em 0;min-height:1.2em}.sb-c2c-notice button{margin-left:.5em}.sb-c2c-hang{background:#c22!important;color:#fff}" +
      ".sb-c2c-window .sb-c2c-panel{position:static;width:auto;box-shadow:none}" +
      ".sb-c2c-chat{border-top:1px solid #ddd;margin-top:.5em;padding-top:.5em}.sb-c2c-chat-head{font-weight:600}" +
      ".sb-c2c-chat-log{max-height:10em;overflow-y:auto;margin:.3em 0}.sb-c2c-chat-note{color:#555;min-height:1.2em}" +
      ".sb-c2c-m{width:fit-content;max-width:85%;margin:.2em 0;padding:.25em .5em;border-radius:.5em;background:#eef1f6;white-space:pre-wrap;overflow-wrap:anywhere}" +
      ".sb-c2c-m-caller{margin-left:auto;background:#e3f4ea}.sb-c2c-mark{color:#0a6b3d}" +
      ".sb-c2c-chat-form{display:flex;gap:.2em}.sb-c2c-chat-form input{flex:1;min-width:0;font:inherit;padding:.4em;border:1px solid #888;border-radius:.4em}" +
      ".sb-c2c-chat-form input:focus-visible{outline:3px solid #fb0}" +
      ".sb-c2c-sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}";
    doc.head.appendChild(s);
  }

  function names(list) {
    return (list || "").split(",").map(function (n) { return n.trim(); }).filter(Boolean);
  }

  // Only what the tag names: cookies and form fields, at click time.
  function context(d) {
    var c = { trail: trail(), cookies: {}, fields: {} };
    var jar = {};
    document.cookie.split(";").forEach(function (kv) {
      var i = kv.indexOf("=");
      if (i > 0) jar[kv.slice(0, i).trim()] = decodeURIComponent(kv.slice(i + 1).trim());
    });
    names(d.cookies).forEach(function (n) { if (n in jar) c.cookies[n] = jar[n]; });
    names(d.fields).forEach(function (n) {
      var f = document.querySelector('[name="' + n.replace(/["\\]/g, "") + '"]');
      if (f && typeof f.value === "string" && f.value) c.fields[n] = f.value;
    });
    return c;
  }

  var loading = null;
  function loadClient(w) {
    if (w) return inject(w);
    if (window.SwitchboardClient) return Promise.resolve(window.SwitchboardClient);
    if (loading) return loading;
    loading = inject(window).catch(function (e) { loading = null; throw e; });
    return loading;
  }

  function inject(w) {
    return new Promise(function (ok, fail) {
      if (w.SwitchboardClient) return ok(w.SwitchboardClient);
      var s = w.document.createElement("script");
      s.src = CLIENT;
      s.async = true;
      s.onload = function () { ok(w.SwitchboardClient); };
      s.onerror = function () { fail(new Error("could not load the call client")); };
      w.document.head.appendChild(s);
    });
  }

  /* data-window="popup": the call in a small window of its own (the seed's call window),
   * so a pushed page navigates this window and the call window stays. */
  function callWindow(label) {
    var w = window.open("", "sb-c2c-call", "popup,width=340,height=520");
    if (!w) return null;
    var doc = w.document;
    if (!doc.body) doc.write("<!doctype html><html><head></head><body></body></html>");
    doc.title = label;
    doc.body.className = "sb-c2c-window";
    doc.body.textContent = "";
    css(doc);
    return w;
  }

  function panel(label, doc) {
    doc = doc || document;
    var p = doc.createElement("div");
    p.className = "sb-c2c-panel";
    p.setAttribute("role", "dialog");
    p.setAttribute("aria-label", label);
    var st = document.createElement("div");
    st.className = "sb-c2c-status";
    st.setAttribute("role", "status");
    st.setAttribute("aria-live", "polite");
    st.textContent = "Connecting\u2026";
    p.appendChild(st);
    doc.body.appendChild(p);
    return p;
  }

  function button(s) {
    var d = s.dataset;
    var b = document.createElement("button");
    b.type = "button";
    b.className = "sb-c2c-btn";
    b.textContent = d.label || "Call us";
    b.style.background = d.background || "#0a7";
    b.style.color = d.color || "#fff";
    // The facts ride on the button before any click.
    b.dataset.merchant = d.merchant || "";
    b.dataset.link = d.link || "";
    if (d.session) b.dataset.session = d.session;
    if (d.destination) b.dataset.destination = d.destination;
    b.open = function (resume) {
      if (b.getAttribute("aria-busy") === "true") return;
      css();
      // A call window (when the browser lets us open one), else the panel in this page.
      var w = d.window === "popup" && !resume ? callWindow(b.textContent) : null;
      if (w && w.SwitchboardClient && w.SwitchboardClient.calls.some(function (c) { return !c.ended; })) {
        return w.focus();
      }
      b.setAttribute("aria-busy", "true");
      b.popup = w;
      var p = panel(b.textContent, w && w.document);
      var opts = {
        resume: resume,
        // Where a pushed page opens: this (the merchant's) window.
        target: w ? window : null,
        window: w ? "popup" : "page",
        // The merchant's page, not the call window's.
        page_url: location.href,
        referrer: document.referrer,
        base: base,
        merchant: d.merchant || "",
        link: d.link || "",
        session: d.session || "",
        token: d.token || "",
        destination: d.destination || "",
        processing: d.processing !== "off",
        context: context(d),
        onEnd: function () { b.removeAttribute("aria-busy"); }
      };
      loadClient(w).then(function (c) { c.start(p, opts); }, function (e) {
        p.firstChild.textContent = "The call could not start: " + e.message;
        b.removeAttribute("aria-busy");
        setTimeout(function () { p.remove(); }, 4000);
      });
    };
    b.addEventListener("click", function () { b.open(null); });
    return b;
  }

  // A call that was live when the last page of this tab went away (a link, a page the agent
  // pushed): this page's button of the same link takes it back.
  function live(d) {
    var c = null;
    try { c = JSON.parse(sessionStorage.getItem(LIVE) || "null"); } catch (e) { c = null; }
    if (!c || c.merchant !== d.merchant || c.link !== d.link || Date.now() - c.at > 15000) return null;
    sessionStorage.removeItem(LIVE);
    return c;
  }

  function mount() {
    css();
    var b = button(me);
    var t = me.dataset.target && document.querySelector(me.dataset.target);
    if (t) t.appendChild(b);
    else me.parentNode.insertBefore(b, me.nextSibling);
    var c = live(me.dataset);
    if (c) b.open(c);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", mount);
  else mount();
})();
