/* Switchboard agent console: log in, ring, answer in the browser, screen pop, chat, actions.
 * Protocol: docs/console.md. Served at /agent/console.js; no build step. MIT OR Apache-2.0.
 * Every text from the network goes in as text (textContent), never as markup. */
(function () {
  "use strict";
  // Maps keyed by the network's strings (call and message ids) have no prototype.
  function map() { return Object.create(null); }
  var SB = window.SwitchboardConsole = { events: [], calls: map(), state: null, ws: null, pcs: map() };
  var ui = map(), csrf = "", live = false, ws = null, tries = 0, timer = 0, selected = null;
  var chatN = 0, uid = 0, status = "away", actx = null, ring = null;
  var VIA = { answered: "Answered here", code: "Bound by your channel code", ani: "Bound by caller ID" };
  var GONE = { answered_elsewhere: "Answered elsewhere", cancelled: "Caller hung up" };

  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text, attrs) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null && text !== "") e.textContent = String(text);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    return e;
  }
  function add(p, c) { p.appendChild(typeof c === "string" ? document.createTextNode(c) : c); return c; }
  function button(cls, text, call, fn, type) {
    var b = el("button", cls, text, { type: type || "button", "data-call": call });
    if (fn) b.addEventListener("click", fn);
    return b;
  }
  function each(list, fn) { Array.prototype.forEach.call(list, fn); }
  function say(t) { $("sb-msg").textContent = t || ""; }
  function send(m) {
    if (!ws || ws.readyState !== 1) return false;
    ws.send(JSON.stringify(m));
    return true;
  }
  function call(id) {
    ui[id] = ui[id] || {};
    return SB.calls[id] || (SB.calls[id] = { pop: {}, chat: [], ended: false, pc: null });
  }

  function api(method, path, body) {
    var h = {};
    if (body) h["Content-Type"] = "application/json";
    if (method !== "GET" && csrf) h["X-CSRF-Token"] = csrf;
    return fetch(path, { method: method, credentials: "same-origin", headers: h, body: body ? JSON.stringify(body) : undefined })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (j) {
          return { status: r.status, json: j || {}, retry: r.headers.get("Retry-After") };
        });
      });
  }

  /* A URL as a link only when it is http(s); anything else stays text. */
  function link(url) {
    url = url == null ? "" : String(url);
    if (!/^https?:/i.test(url)) return document.createTextNode(url || "\u2014");
    return el("a", "", url, { href: url, target: "_blank", rel: "noopener noreferrer" });
  }
  function mmss(ms) {
    var s = Math.max(0, Math.floor(ms / 1000)), m = Math.floor(s / 60);
    return (m < 10 ? "0" : "") + m + ":" + ("0" + (s % 60)).slice(-2);
  }
  function tick() {
    var now = Date.now();
    each(document.querySelectorAll(".sb-wait"), function (w) {
      var c = SB.calls[w.getAttribute("data-call")];
      if (c && !c.ended && c.pop && c.pop.started_at) w.textContent = mmss(now - c.pop.started_at);
    });
  }
  setInterval(tick, 1000);

  /* The ring: 440 + 480 Hz, 1 s on, 2 s off. The AudioContext is made on a user gesture
   * when there is one (browsers keep it silent otherwise); without WebAudio, no sound. */
  function unlock() {
    try {
      if (!actx) actx = new (window.AudioContext || window.webkitAudioContext)();
      if (actx.state === "suspended") actx.resume();
    } catch (e) { actx = null; }
  }
  function ringOn() {
    if (ring) return;
    unlock();
    if (!actx) return;
    try {
      var g = actx.createGain(), n = 0;
      g.gain.value = 0;
      g.connect(actx.destination);
      var o = [440, 480].map(function (f) {
        var x = actx.createOscillator();
        x.frequency.value = f;
        x.connect(g);
        x.start();
        return x;
      });
      var beat = function () { g.gain.setTargetAtTime(n++ % 6 < 2 ? 0.08 : 0, actx.currentTime, 0.01); };
      beat();
      ring = { g: g, o: o, t: setInterval(beat, 500) };
    } catch (e) { ring = null; }
  }
  function ringOff() {
    if (!ring) return;
    clearInterval(ring.t);
    ring.o.forEach(function (x) { try { x.stop(); } catch (e) { /* stopped */ } });
    ring.g.disconnect();
    ring = null;
  }
  function ringCheck() {
    var n = Object.keys(ui).filter(function (k) { return ui[k].li && !ui[k].answering; }).length;
    if (n) ringOn(); else ringOff();
    document.title = (n ? "(" + n + ") Ringing \u2014 " : "") + "Switchboard agent console";
    $("sb-no-ring").hidden = !!$("sb-ringing").children.length;
    $("sb-no-calls").hidden = !!$("sb-tabs").children.length;
  }

  /* ---- Logging in and out ---- */
  function enter(j) {
    csrf = j.csrf || "";
    live = true;
    tries = 0;
    $("sb-login").hidden = true;
    $("sb-app").hidden = $("sb-me").hidden = false;
    $("sb-name").textContent = (j.agent && (j.agent.name || j.agent.id)) || "";
    say("Connecting\u2026");
    connect();
  }

  function showLogin(msg) {
    live = false;
    clearTimeout(timer);
    if (ws) { var w = ws; ws = SB.ws = null; try { w.close(); } catch (e) { /* closed */ } }
    ringOff();
    Object.keys(SB.calls).forEach(function (k) { stopMedia(k); delete SB.calls[k]; delete SB.pcs[k]; });
    ui = map();
    selected = null;
    SB.state = null;
    $("sb-ringing").textContent = $("sb-tabs").textContent = $("sb-panes").textContent = "";
    $("sb-app").hidden = $("sb-me").hidden = $("sb-retry").hidden = true;
    $("sb-login").hidden = false;
    $("sb-login-error").textContent = msg || "";
    say("");
    $("sb-login-id").focus();
  }

  function login(e) {
    e.preventDefault();
    unlock();
    var id = $("sb-login-id").value.trim(), pw = $("sb-login-password"), b = $("sb-login-submit");
    var err = $("sb-login-error");
    if (!id || !pw.value) { err.textContent = "Enter your agent ID and password."; return; }
    b.disabled = true;
    err.textContent = "";
    api("POST", "/agent/login", { id: id, password: pw.value }).then(function (r) {
      b.disabled = false;
      if (r.status === 200 && r.json.agent) { pw.value = ""; return enter(r.json); }
      var t = r.json.error || "Logging in failed (" + r.status + ").";
      if (r.status === 429 && r.retry) t += " Try again in " + r.retry + (/^\d+$/.test(r.retry) ? " s." : ".");
      err.textContent = t;
      pw.focus();
    }, function () {
      b.disabled = false;
      err.textContent = "The switch could not be reached.";
    });
  }

  function logout() {
    var done = function () { showLogin("You are logged out."); };
    live = false;
    api("POST", "/agent/logout").then(done, done);
  }

  /* ---- The WebSocket ---- */
  function connect() {
    clearTimeout(timer);
    $("sb-retry").hidden = true;
    var w;
    try {
      w = ws = SB.ws = new WebSocket((location.protocol === "https:" ? "wss:" : "ws:") + "//" + location.host + "/agent/ws");
    } catch (e) { ws = SB.ws = null; return lost(); }
    w.onopen = function () { w.send(JSON.stringify({ type: "hello", csrf: csrf })); };
    w.onmessage = function (m) {
      var msg;
      try { msg = JSON.parse(m.data); } catch (e) { return; }
      if (!msg || typeof msg.type !== "string") return;
      SB.events.push(msg.type);
      if (w !== ws || !H.hasOwnProperty(msg.type)) return;
      try { H[msg.type](msg); } catch (e) { say("Could not show a " + msg.type + " message: " + e.message); }
    };
    w.onclose = function () {
      if (w !== ws || !live) return;
      ws = SB.ws = null;
      lost();
    };
  }

  /* Closed while logged in: is the session still there? Then reconnect (backoff, 5 tries). */
  function lost() {
    if (++tries > 5) {
      say("Lost the connection to the switch.");
      $("sb-retry").hidden = false;
      return;
    }
    say("Connection lost; reconnecting\u2026");
    timer = setTimeout(function () {
      api("GET", "/agent/api/me").then(function (r) {
        if (!live) return;
        if (r.status === 401) return showLogin("Your session has ended. Please log in again.");
        if (r.json.csrf) csrf = r.json.csrf;
        connect();
      }, function () { if (live) lost(); });
    }, 500 * Math.pow(2, tries - 1));
  }

  /* ---- Ringing ---- */
  function ringing(m) {
    var id = m.call, c = call(id), u = ui[id];
    c.pop = m.pop || c.pop;
    if (u.pane || c.ended) return;
    if (!u.li) {
      u.li = add($("sb-ringing"), el("li", "sb-ring", "", { "data-call": id }));
      u.sum = add(u.li, el("div", "sb-sum"));
      var row = add(u.li, el("div", "sb-line"));
      u.ans = add(row, button("sb-answer", "Answer", id, function () { answer(id); }));
      u.dec = add(row, button("sb-decline", "Decline", id, function () { decline(id); }));
      u.note = add(u.li, el("p", "sb-note", "", { role: "status" }));
      say("Incoming call" + (c.pop.merchant ? " for " + c.pop.merchant : "") + ".");
    }
    summary(id);
    ringCheck();
  }

  function summary(id) {
    var p = SB.calls[id].pop || {}, s = ui[id].sum;
    s.textContent = "";
    add(s, el("strong", "", p.merchant || "Call"));
    add(s, (p.link ? " \u00b7 " + p.link : "") + " \u00b7 waiting ");
    add(s, el("span", "sb-wait", "", { "data-call": id }));
    add(add(s, el("div", "sb-ring-page")), link(p.page_url));
    tick();
  }

  function ringGone(id, text) {
    var u = ui[id], li = u && u.li;
    if (!li) return;
    u.li = null;
    li.classList.add("sb-gone");
    u.ans.disabled = u.dec.disabled = true;
    u.note.textContent = text;
    setTimeout(function () { li.remove(); ringCheck(); }, 2500);
    ringCheck();
  }

  function decline(id) {
    send({ type: "decline", call: id });
    ringGone(id, "Declined");
  }

  function gathered(pc) {
    return new Promise(function (ok) {
      if (pc.iceGatheringState === "complete") return ok();
      var t = setTimeout(ok, 1000);
      pc.addEventListener("icegatheringstatechange", function () {
        if (pc.iceGatheringState === "complete") { clearTimeout(t); ok(); }
      });
    });
  }

  /* Answer: the console's offer (no ICE servers: the switch is ICE-lite on this host). */
  function answer(id) {
    var c = SB.calls[id], u = ui[id], pc;
    if (!c || !u || c.pc || c.ended || !u.li) return Promise.resolve(false);
    unlock();
    u.answering = true;
    u.ans.disabled = u.dec.disabled = true;
    u.note.textContent = "Answering\u2026";
    ringCheck();
    return navigator.mediaDevices.getUserMedia({ audio: true }).then(function (s) {
      c.stream = s;
      pc = c.pc = SB.pcs[id] = new RTCPeerConnection({});
      s.getTracks().forEach(function (t) { pc.addTrack(t, s); });
      c.audio = add($("sb-audio"), el("audio", "", "", { autoplay: "" }));
      c.audio.autoplay = true;
      pc.ontrack = function (e) { if (c.audio) c.audio.srcObject = e.streams[0] || new MediaStream([e.track]); };
      pc.onconnectionstatechange = function () {
        var v = ui[id];
        if (v && v.state && !c.ended) v.state.textContent = VIA.answered + " \u00b7 audio " + pc.connectionState;
      };
      return pc.createOffer();
    }).then(function (o) {
      return pc.setLocalDescription(o);
    }).then(function () {
      return gathered(pc);
    }).then(function () {
      if (c.ended || !u.li || pc.signalingState === "closed") throw new Error("the call stopped ringing");
      if (!send({ type: "answer", call: id, sdp: pc.localDescription.sdp })) throw new Error("not connected to the switch");
      c.answered = true;
      if (u.li) u.note.textContent = "Connecting\u2026";
      return true;
    }).catch(function (e) {
      stopMedia(id);
      c.pc = null;
      u.answering = false;
      if (u.li) {
        u.ans.disabled = u.dec.disabled = false;
        u.note.textContent = "Could not answer: " + (e.message || e.name);
      }
      ringCheck();
      return false;
    });
  }

  function stopMedia(id) {
    var c = SB.calls[id];
    if (!c) return;
    if (c.pc) { try { c.pc.close(); } catch (e) { /* closed */ } }
    if (c.stream) c.stream.getTracks().forEach(function (t) { t.stop(); });
    if (c.audio) { c.audio.srcObject = null; c.audio.remove(); }
    c.stream = c.audio = null;
  }

  /* ---- A bound call: screen pop, chat, actions ---- */
  function pane(id) {
    var c = SB.calls[id], u = ui[id], f = "sb-f" + (++uid);
    var tab = u.tabLi = add($("sb-tabs"), el("li"));
    u.tab = add(tab, button("sb-tab", "", id, function () { select(id); }));
    u.tabText = add(u.tab, el("span"));
    u.badge = add(u.tab, el("span", "sb-badge"));
    var p = u.pane = add($("sb-panes"), el("section", "sb-card sb-call", "", { "data-call": id, "aria-labelledby": f + "h" }));
    var bar = add(p, el("div", "sb-bar"));
    u.title = add(bar, el("h3", "", "", { id: f + "h", tabindex: "-1" }));
    u.state = add(bar, el("span", "sb-state"));
    u.hang = add(bar, button("sb-hangup", "Hang up", id, function () {
      u.hang.disabled = true;
      send({ type: "hangup", call: id });
      stopMedia(id);
    }));
    u.dismiss = add(bar, button("sb-dismiss", "Remove", id, function () { dismiss(id); }));
    u.dismiss.hidden = true;
    u.err = add(p, el("p", "sb-err", "", { role: "alert" }));
    var cols = add(p, el("div", "sb-cols"));
    u.pop = add(cols, el("div", "sb-pop", "", { "data-call": id }));

    var chat = add(cols, el("div", "sb-chat"));
    add(chat, el("h4", "", "Chat with the caller"));
    u.log = add(chat, el("div", "sb-chat-log", "", { role: "log", "aria-live": "polite", "data-call": id, tabindex: "0", "aria-label": "Chat transcript" }));
    u.marks = map();
    var form = u.form = add(chat, el("form", "sb-line"));
    add(form, el("label", "sb-sr", "Message to the caller", { for: f + "c" }));
    u.input = add(form, el("input", "sb-chat-input", "", { id: f + "c", maxlength: "1000", autocomplete: "off", "data-call": id, placeholder: "Message to the caller" }));
    add(form, button("sb-chat-send sb-go", "Send", id, null, "submit"));
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      if (sendChat(id, u.input.value)) u.input.value = "";
    });
    u.closed = add(chat, el("p", "sb-note", "The call has ended; the chat is closed.", { tabindex: "-1" }));
    u.closed.hidden = true;
    c.chat.forEach(function (r) { addMsg(id, r); });

    var acts = add(p, el("div", "sb-actions", "", { role: "group", "aria-labelledby": f + "a" }));
    add(acts, el("h4", "", "In the caller's browser", { id: f + "a" }));
    var l1 = add(acts, el("div", "sb-line"));
    add(l1, el("label", "", "Page", { for: f + "p" }));
    u.pages = add(l1, el("select", "sb-page-select", "", { id: f + "p", "data-call": id }));
    u.push = add(l1, button("sb-push-page", "Push page", id, function () {
      if (u.pages.value) act(id, { action: "push_page", page: u.pages.value });
    }));
    var l2 = add(acts, el("form", "sb-line", "", { novalidate: "" }));
    add(l2, el("label", "", "URL", { for: f + "u" }));
    var url = add(l2, el("input", "sb-url-input", "", { id: f + "u", type: "url", "data-call": id, placeholder: "https://\u2026" }));
    add(l2, button("sb-open-url", "Open URL", id, null, "submit"));
    l2.addEventListener("submit", function (e) {
      e.preventDefault();
      if (url.value.trim()) act(id, { action: "push_page", url: url.value.trim() });
    });
    var l3 = add(acts, el("div", "sb-line"));
    [["Volume +20", "sb-vol-up", "volume", "step", 20], ["Volume \u221220", "sb-vol-down", "volume", "step", -20],
      ["Mic +20", "sb-mic-up", "mic_gain", "step", 20], ["Mic \u221220", "sb-mic-down", "mic_gain", "step", -20],
      ["Echo cancellation on", "sb-ec-on", "echo_cancellation", "on", true], ["Echo cancellation off", "sb-ec-off", "echo_cancellation", "on", false],
      ["Echo suppression on", "sb-es-on", "echo_suppression", "on", true], ["Echo suppression off", "sb-es-off", "echo_suppression", "on", false]
    ].forEach(function (a) {
      var o = { action: a[2] };
      o[a[3]] = a[4];
      add(l3, button("sb-act " + a[1], a[0], id, function () { act(id, o); }));
    });
    u.result = add(acts, el("p", "sb-result", "", { role: "status" }));
  }

  function renderPop(id) {
    var c = SB.calls[id], u = ui[id], p = c.pop || {}, box = u.pop;
    box.textContent = "";
    add(box, el("h4", "", "Screen pop"));
    var dl = add(box, el("dl"));
    var row = function (label, val, cls) {
      add(dl, el("dt", "", label));
      var dd = add(dl, el("dd", cls));
      if (val && val.nodeType) dd.appendChild(val);
      else dd.textContent = val == null || val === "" ? "\u2014" : String(val);
    };
    var pairs = function (o) {
      var keys = o && typeof o === "object" ? Object.keys(o) : [];
      if (!keys.length) return "none";
      var d = el("dl");
      keys.forEach(function (k) { add(d, el("dt", "", k)); add(d, el("dd", "", o[k] == null ? "" : o[k])); });
      return d;
    };
    var trail = el("ol");
    (Array.isArray(p.trail) ? p.trail : []).forEach(function (t) { add(add(trail, el("li")), link(t)); });
    row("Merchant", p.merchant, "sb-pop-merchant");
    row("Link", p.link, "sb-pop-link");
    row("Session", p.session, "sb-pop-session");
    row("Page now", link(p.page_url), "sb-pop-page");
    row("Referrer", link(p.referrer), "sb-pop-referrer");
    row("Trail", trail.children.length ? trail : "none", "sb-pop-trail");
    row("Cookies", pairs(p.cookies), "sb-pop-cookies");
    row("Fields", pairs(p.fields), "sb-pop-fields");
    row("Caller ID (ANI)", p.ani, "sb-pop-ani");
    row("Caller IP", p.caller_ip, "sb-pop-ip");
    row("Waiting", el("span", "sb-wait", "", { "data-call": id }), "sb-pop-wait");
    var name = (p.merchant || "Call") + " \u00b7 " + (p.ani || p.session || id);
    u.title.textContent = name;
    u.tabText.textContent = name;
    var sel = u.pages, keep = sel.value, pages = Array.isArray(p.pages) ? p.pages.map(String) : [];
    sel.textContent = "";
    pages.forEach(function (n) { add(sel, el("option", "", n, { value: n })); });
    if (pages.indexOf(keep) >= 0) sel.value = keep;
    u.push.disabled = sel.disabled = c.ended || !pages.length;
    tick();
  }

  function select(id) {
    selected = id;
    Object.keys(ui).forEach(function (k) {
      var u = ui[k];
      if (!u.pane) return;
      u.pane.hidden = k !== id;
      if (k === id) {
        u.tab.setAttribute("aria-current", "true");
        u.unread = 0;
        u.badge.textContent = "";
      } else u.tab.removeAttribute("aria-current");
    });
  }

  function dismiss(id) {
    var u = ui[id];
    u.pane.remove();
    u.tabLi.remove();
    delete ui[id];
    delete SB.calls[id];
    delete SB.pcs[id];
    var rest = Object.keys(ui).filter(function (k) { return ui[k].pane; });
    if (rest.length) { select(rest[rest.length - 1]); ui[rest[rest.length - 1]].tab.focus(); }
    ringCheck();
  }

  function act(id, action) {
    var u = ui[id];
    if (send({ type: "action", call: id, action: action })) u.result.textContent = "Asking the caller's browser\u2026";
    else u.result.textContent = "Not connected to the switch.";
  }

  /* ---- Chat ---- */
  function addMsg(id, r) {
    var u = ui[id];
    if (!u || !u.log) return;
    var d = add(u.log, el("div", "sb-m sb-m-" + r.from));
    add(d, el("span", "sb-who", r.from === "caller" ? "Caller" : "You"));
    add(d, el("span", "sb-t", r.text));
    if (r.from === "agent") u.marks[r.id] = add(d, el("span", "sb-mark", r.delivered ? "\u2713 delivered" : "sending\u2026"));
    if (r.at) d.title = new Date(r.at).toLocaleTimeString();
    u.log.scrollTop = u.log.scrollHeight;
  }

  function sendChat(id, text) {
    var c = SB.calls[id], u = ui[id];
    text = String(text == null ? "" : text).slice(0, 1000);
    if (!c || c.ended || !text.trim()) return null;
    var mid = "a" + (++chatN);
    if (!send({ type: "chat", call: id, id: mid, text: text })) {
      if (u && u.err) u.err.textContent = "Not connected to the switch; the message was not sent.";
      return null;
    }
    var r = { id: mid, from: "agent", text: text, delivered: false };
    if (u.err) u.err.textContent = "";
    c.chat.push(r);
    addMsg(id, r);
    return mid;
  }

  /* ---- What the switch says ---- */
  var H = {
    state: function (m) {
      SB.state = m;
      if (tries) say("Connected.");
      else if (/^Connecting/.test($("sb-msg").textContent)) say("");
      tries = 0;
      if (m.agent) $("sb-name").textContent = m.agent.name || m.agent.id || "";
      showStatus(m.status);
      var code = $("sb-code");
      code.textContent = "";
      if (m.code) {
        add(code, "Key ");
        add(code, el("strong", "", (m.prefix || "") + m.code + (m.end || "")));
        add(code, " on your phone during a call");
      } else code.textContent = "No channel code yet.";
    },
    ringing: ringing,
    ring_stopped: function (m) {
      var c = SB.calls[m.call];
      ringGone(m.call, GONE[m.reason] || "Stopped ringing");
      // Lost the race after answering: drop the media unless the call is bound after all.
      if (c && c.pc) setTimeout(function () { if (!ui[m.call] || !ui[m.call].pane) stopMedia(m.call); }, 5000);
    },
    accepted: function (m) {
      var c = SB.calls[m.call];
      if (!c || !c.pc || c.pc.signalingState === "closed") return;
      c.pc.setRemoteDescription({ type: "answer", sdp: m.sdp }).catch(function (e) {
        H.error({ call: m.call, message: "The audio could not connect: " + e.message });
      });
    },
    bound: function (m) {
      var id = m.call, c = call(id), u = ui[id], a = document.activeElement;
      if (m.pop) c.pop = m.pop;
      c.via = m.via;
      var focus = !u.pane && (a === document.body || (u.li && u.li.contains(a)));
      if (u.li) { u.li.remove(); u.li = null; }
      u.answering = false;
      if (!u.pane) pane(id);
      renderPop(id);
      u.state.textContent = VIA[m.via] || "Bound";
      u.hang.hidden = !(c.pc || m.via === "answered");
      if (m.via === "ani") $("sb-ani").value = "";
      select(id);
      if (focus) u.input.focus();
      say((VIA[m.via] || "Bound") + ": " + u.title.textContent);
      ringCheck();
    },
    pop: function (m) {
      var c = SB.calls[m.call], u = ui[m.call];
      if (!c || !m.pop) return;
      c.pop = m.pop;
      if (u.pane) renderPop(m.call);
      else if (u.li) summary(m.call);
    },
    chat: function (m) {
      var id = m.call, c = SB.calls[id], u = ui[id];
      if (!c) return;
      var from = m.from === "caller" ? "caller" : "agent";
      if (c.chat.some(function (r) { return r.id === m.id && r.from === from; })) return;
      var r = { id: m.id, from: from, text: m.text == null ? "" : String(m.text), delivered: from === "caller", at: m.at };
      c.chat.push(r);
      addMsg(id, r);
      if (from !== "caller") return;
      send({ type: "read", call: id, id: m.id });
      if (selected !== id && u.badge) u.badge.textContent = " (" + (u.unread = (u.unread || 0) + 1) + " new)";
    },
    delivered: function (m) {
      var c = SB.calls[m.call], u = ui[m.call];
      if (!c) return;
      c.chat.forEach(function (r) { if (r.from === "agent" && r.id === m.id) r.delivered = true; });
      if (u.marks && u.marks[m.id]) u.marks[m.id].textContent = "\u2713 delivered";
    },
    action_result: function (m) {
      var u = ui[m.call];
      if (u && u.result) u.result.textContent = (m.ok ? "Done" : "Not done") + (m.detail || m.error ? ": " + (m.detail || m.error) : ".");
    },
    ended: function (m) {
      var id = m.call, c = SB.calls[id], u = ui[id];
      if (!c) return;
      c.ended = true;
      c.reason = m.reason;
      stopMedia(id);
      ringGone(id, "Caller hung up");
      if (u.pane) {
        var had = u.pane.contains(document.activeElement);
        u.pane.classList.add("sb-ended");
        u.tab.classList.add("sb-ended");
        each(u.pane.querySelectorAll("button,input,select"), function (e) { e.disabled = true; });
        u.hang.hidden = true;
        u.dismiss.hidden = u.dismiss.disabled = false;
        u.closed.hidden = false;
        u.state.textContent = "Ended" + (m.reason ? " (" + m.reason + ")" : "");
        if (had) u.closed.focus();
      }
      ringCheck();
    },
    error: function (m) {
      var id = m.call, c = id && SB.calls[id], u = id && ui[id], t = m.message || m.error || "Something went wrong.";
      if (u && u.pane) { u.err.textContent = t; return; }
      if (c && c.pc) { stopMedia(id); c.pc = null; }
      if (u && u.li) {
        u.answering = false;
        u.ans.disabled = u.dec.disabled = false;
        u.note.textContent = t;
        ringCheck();
      } else say(t);
    }
  };

  function showStatus(s) {
    status = s === "available" ? "available" : "away";
    var b = $("sb-status");
    b.textContent = "Status: " + (status === "available" ? "Available" : "Away");
    b.className = "sb-" + status;
    b.title = status === "available" ? "Calls ring here. Click to go away." : "Calls do not ring here. Click to be available.";
  }

  function boot() {
    document.addEventListener("pointerdown", unlock, true);
    document.addEventListener("keydown", unlock, true);
    $("sb-login-form").addEventListener("submit", login);
    $("sb-logout").addEventListener("click", logout);
    $("sb-retry").addEventListener("click", function () { tries = 0; connect(); });
    $("sb-status").addEventListener("click", function () {
      var next = status === "available" ? "away" : "available";
      if (send({ type: "status", status: next })) showStatus(next);
      else say("Not connected to the switch.");
    });
    $("sb-ani-form").addEventListener("submit", function (e) {
      e.preventDefault();
      var v = $("sb-ani").value.trim();
      if (!v) return;
      say(send({ type: "bind_ani", ani: v }) ? "Looking for the call\u2026" : "Not connected to the switch.");
    });
    api("GET", "/agent/api/me").then(function (r) {
      if (r.status === 200 && r.json.agent) enter(r.json);
      else showLogin(r.status === 401 ? "" : "The switch answered " + r.status + ".");
    }, function () { showLogin("The switch could not be reached."); });
  }

  SB.answer = answer;
  SB.send = sendChat;
  SB.select = select;
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
  else boot();
})();
