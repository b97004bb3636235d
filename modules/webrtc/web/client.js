/* Switchboard media client: the call itself. Loaded by c2c.js on the first click and cached
 * for good (its URL carries its version). MIT OR Apache-2.0.
 * Protocol: docs/webrtc.md (JSON over the WebSocket at /ws). */
(function () {
  "use strict";
  var WORDS = {
    connecting: "Connecting\u2026",
    ringing: "Ringing\u2026",
    early: "Connecting you\u2026",
    connected: "Connected",
    reconnecting: "Reconnecting\u2026"
  };

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text) e.textContent = text;
    return e;
  }

  function Call(panel, opts) {
    this.panel = panel;
    this.opts = opts;
    this.state = "connecting";
    this.ended = false;
    this.events = [];
    this.t0 = performance.now();
    this.times = {}; // ms from the click to each message (benchmarks, diagnostics)
    this.actions = []; // what the agent's keypad asked for, and what came of it
    this.volume = 100;
    this.micLevel = 100;
    this.chat = []; // with the agent: {id, from, text, delivered}
    this.chatOpen = false;
    this.chatN = (opts.resume && opts.resume.chatN) || 0; // ids unique across the tab's pages
    this.ui();
  }

  Call.prototype.ui = function () {
    var self = this, p = this.panel;
    this.status = p.querySelector(".sb-c2c-status") || p.appendChild(el("div", "sb-c2c-status"));
    this.timer = p.appendChild(el("div", "sb-c2c-timer", ""));
    this.timer.setAttribute("aria-label", "call duration");
    var pad = p.appendChild(el("div", "sb-c2c-pad"));
    pad.setAttribute("aria-label", "dial pad");
    "123456789*0#".split("").forEach(function (d) {
      var b = pad.appendChild(el("button", "sb-c2c-key", d));
      b.type = "button";
      b.setAttribute("aria-label", "key " + d);
      b.addEventListener("click", function () { self.dtmf(d); });
    });
    var row = p.appendChild(el("div", "sb-c2c-row"));
    this.muteBtn = row.appendChild(el("button", "sb-c2c-mute", "Mute"));
    this.muteBtn.type = "button";
    this.muteBtn.setAttribute("aria-pressed", "false");
    this.muteBtn.addEventListener("click", function () { self.mute(); });
    this.hangBtn = row.appendChild(el("button", "sb-c2c-hang", "Hang up"));
    this.hangBtn.type = "button";
    this.hangBtn.addEventListener("click", function () { self.hangup(); });
    this.notice = p.appendChild(el("div", "sb-c2c-notice"));
    this.notice.setAttribute("role", "status");
    this.notice.setAttribute("aria-live", "polite");
    this.audio = p.appendChild(el("audio"));
    this.audio.autoplay = true;
    p.addEventListener("keydown", function (e) {
      if (e.target.tagName === "INPUT") return; // the chat: no DTMF, no Escape
      if (e.key === "Escape") self.hangup();
      else if (/^[0-9*#]$/.test(e.key)) self.dtmf(e.key);
    });
    this.hangBtn.focus();
    this.show(WORDS.connecting);
  };

  Call.prototype.show = function (text) { this.status.textContent = text; };

  Call.prototype.start = async function () {
    var self = this, o = this.opts;
    // Made during the click, so the browser lets it play (volume, echo suppression).
    try { this.graph(); } catch (e) { /* no WebAudio: those actions will fail in words */ }
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: o.processing, noiseSuppression: o.processing, autoGainControl: o.processing },
        video: false
      });
    } catch (e) {
      return this.finish("failed", "The microphone is needed for the call (" + e.name + ").");
    }
    var pc = this.pc = new RTCPeerConnection({ bundlePolicy: "max-bundle", rtcpMuxPolicy: "require" });
    var track = this.track = this.stream.getAudioTracks()[0];
    this.sender = pc.addTrack(track, this.stream);
    pc.ontrack = function (e) { self.audio.srcObject = e.streams[0] || new MediaStream([e.track]); };
    pc.onconnectionstatechange = function () {
      if (pc.connectionState === "failed" && !self.ended) self.hangup("failed");
    };
    await pc.setLocalDescription(await pc.createOffer());
    if (o.resume) {
      // The call of the previous page: the switch swaps this peer in, leg B notices nothing.
      this.callId = o.resume.call;
      this.key = o.resume.key;
      this.show(WORDS.reconnecting);
      return this.connect(JSON.stringify({
        type: "resume", call: o.resume.call, key: o.resume.key, sdp: pc.localDescription.sdp,
        page_url: o.page_url || location.href
      }));
    }
    this.connect(JSON.stringify({
      type: "call", merchant: o.merchant, link: o.link, session: o.session, token: o.token,
      destination: o.destination, page_url: o.page_url || location.href,
      referrer: o.page_url ? o.referrer : document.referrer,
      context: o.context || { trail: [], cookies: {}, fields: {} },
      sdp: pc.localDescription.sdp
    }));
  };

  Call.prototype.connect = function (first) {
    var self = this;
    var ws = this.ws = new WebSocket(this.opts.base.replace(/^http/, "ws") + "/ws");
    ws.onopen = function () { ws.send(first); };
    ws.onmessage = function (m) {
      var msg;
      try { msg = JSON.parse(m.data); } catch (e) { return; }
      self.events.push(msg.type);
      if (!(msg.type in self.times)) self.times[msg.type] = performance.now() - self.t0;
      self.on(msg);
    };
    ws.onclose = function () {
      if (self.ended || self.ws !== ws) return;
      if (self.callId && (self.retries = (self.retries || 0) + 1) <= 5) {
        // The switch keeps the call for a grace period: take it back.
        self.show(WORDS.reconnecting);
        setTimeout(function () {
          if (!self.ended) self.connect(JSON.stringify({ type: "resume", call: self.callId, key: self.key }));
        }, 500 * self.retries);
      } else {
        self.finish("failed", "The connection to the call service was lost.");
      }
    };
  };

  Call.prototype.on = async function (msg) {
    switch (msg.type) {
      case "accepted":
        this.callId = msg.call;
        this.key = msg.key;
        await this.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
        break;
      case "ringing": this.state = "ringing"; this.show(WORDS.ringing); break;
      case "early_media": this.state = "early"; this.show(WORDS.early); break;
      case "answered":
        this.retries = 0;
        if (this.state !== "connected") {
          this.state = "connected";
          this.show(WORDS.connected);
          this.tick();
        }
        break;
      case "hangup": this.finish(msg.reason, msg.message); break;
      case "error":
        if (msg.code === "chat_limit" || msg.code === "chat_refused") this.chatSay(msg.message);
        else this.finish("failed", msg.message);
        break;
      case "action": this.action(msg); break;
      case "chat_open": this.chatUi(msg.agent); break;
      case "chat": this.chatIn(msg); break;
      case "delivered": this.chatMark(msg.id); break;
      case "chat_closed": this.chatEnd(); break;
    }
  };

  Call.prototype.send = function (m) {
    if (!this.ws || this.ws.readyState !== 1) return false;
    this.ws.send(JSON.stringify(m));
    return true;
  };

  /* The chat with the agent (docs/console.md): text only. */
  var chatIds = 0;
  Call.prototype.chatUi = function (agent) {
    var self = this;
    this.chatOpen = true;
    this.agentName = agent || "the agent";
    if (!this.chatBox) {
      var box = this.chatBox = this.panel.insertBefore(el("div", "sb-c2c-chat"), this.audio);
      this.chatHead = box.appendChild(el("div", "sb-c2c-chat-head"));
      this.chatLog = box.appendChild(el("div", "sb-c2c-chat-log"));
      this.chatLog.setAttribute("role", "log");
      this.chatLog.setAttribute("aria-live", "polite");
      this.chatMarks = {};
      var f = box.appendChild(el("form", "sb-c2c-chat-form"));
      var lab = f.appendChild(el("label", "sb-c2c-sr", "Message to the agent"));
      var inp = this.chatInput = f.appendChild(el("input"));
      inp.id = lab.htmlFor = "sb-c2c-chat-in" + ++chatIds;
      inp.maxLength = 1000;
      inp.autocomplete = "off";
      inp.placeholder = "Message";
      this.chatBtn = f.appendChild(el("button", "", "Send"));
      f.addEventListener("submit", function (e) {
        e.preventDefault();
        if (self.chatOut(inp.value)) inp.value = "";
      });
      this.chatNote = box.appendChild(el("div", "sb-c2c-chat-note"));
    }
    this.chatHead.textContent = "Chat with " + this.agentName;
    this.chatInput.disabled = this.chatBtn.disabled = false;
    this.chatNote.textContent = "";
  };

  Call.prototype.chatAdd = function (r) {
    this.chat.push(r);
    var d = this.chatLog.appendChild(el("div", "sb-c2c-m sb-c2c-m-" + r.from));
    d.appendChild(el("b", "", r.from === "agent" ? this.agentName : "You"));
    d.appendChild(document.createTextNode(" " + r.text));
    if (r.from === "caller") this.chatMarks[r.id] = d.appendChild(el("span", "sb-c2c-mark"));
    this.chatLog.scrollTop = this.chatLog.scrollHeight;
  };

  Call.prototype.chatIn = function (msg) {
    var from = msg.from === "caller" ? "caller" : "agent";
    if (this.chat.some(function (r) { return r.id === msg.id && r.from === from; })) return;
    if (!this.chatBox) this.chatUi();
    this.chatAdd({ id: msg.id, from: from, text: msg.text == null ? "" : String(msg.text), delivered: true });
    if (from === "agent") this.send({ type: "chat_read", id: msg.id });
  };

  Call.prototype.chatOut = function (text) {
    text = String(text).slice(0, 1000);
    if (!this.chatOpen || this.ended || !text.trim()) return false;
    var id = "c" + ++this.chatN;
    if (!this.send({ type: "chat", id: id, text: text })) return this.chatSay("Not sent: no connection.");
    this.chatAdd({ id: id, from: "caller", text: text, delivered: false });
    return true;
  };

  Call.prototype.chatMark = function (id) {
    this.chat.forEach(function (r) { if (r.from === "caller" && r.id === id) r.delivered = true; });
    var m = this.chatMarks && this.chatMarks[id];
    if (m) { m.textContent = " \u2713"; m.title = "delivered"; }
  };

  Call.prototype.chatEnd = function () {
    this.chatOpen = false;
    if (!this.chatBox) return;
    this.chatInput.disabled = this.chatBtn.disabled = true;
    this.chatNote.textContent = "The chat has ended.";
  };

  Call.prototype.chatSay = function (words) {
    (this.chatBox ? this.chatNote : this.notice).textContent = words || "";
    return false;
  };

  /* Actions the agent's keypad asks for (docs/webrtc.md): each is answered with
   * action_result and said in plain words in the panel; media changes can be undone. */
  var NAMES = { push_page: 1, volume: 1, mic_gain: 1, echo_cancellation: 1, echo_suppression: 1 };

  Call.prototype.action = async function (msg) {
    var ws = this.ws, detail, ok = true, error = "";
    try {
      if (!NAMES[msg.action]) throw new Error("unknown action " + msg.action);
      detail = await this["do_" + msg.action](msg);
    } catch (e) {
      ok = false;
      error = (e && e.message) || String(e);
    }
    this.actions.push({ id: msg.id, action: msg.action, ok: ok, detail: detail, error: error });
    if (ws && ws.readyState === 1) {
      ws.send(JSON.stringify({ type: "action_result", id: msg.id, ok: ok, error: error, detail: detail || "" }));
    }
    if (ok && msg.action === "push_page") this.go(msg.url);
  };

  Call.prototype.say = function (words, undo) {
    var self = this, n = this.notice;
    n.textContent = words;
    if (undo) {
      var b = n.appendChild(el("button", "sb-c2c-undo", "Undo"));
      b.type = "button";
      b.addEventListener("click", function () {
        n.textContent = "";
        undo.call(self);
      });
    }
  };

  function clamp(v) { return Math.max(0, Math.min(200, Math.round(v))); }
  function level(cur, msg) { return clamp(msg.set != null ? msg.set : cur + (msg.step || 0)); }

  Call.prototype.graph = function () {
    if (this.ac) return this.ac;
    var ac = this.ac = new (window.AudioContext || window.webkitAudioContext)();
    if (ac.state === "suspended") ac.resume();
    return ac;
  };

  /* The agent's voice through a gain (the element stays muted: Chromium only feeds a remote
   * stream to WebAudio while an element plays it). */
  Call.prototype.output = function () {
    if (this.outGain) return this.outGain;
    var ac = this.graph();
    this.outGain = ac.createGain();
    ac.createMediaStreamSource(this.audio.srcObject).connect(this.outGain);
    this.outGain.connect(ac.destination);
    this.audio.muted = true;
    return this.outGain;
  };

  /* The caller's microphone through a gain and a ducker, into the call. */
  Call.prototype.input = function () {
    if (this.micGain) return this.micGain;
    var ac = this.graph();
    this.micGain = ac.createGain();
    this.duckGain = ac.createGain();
    this.micDest = ac.createMediaStreamDestination();
    this.micGain.connect(this.duckGain).connect(this.micDest);
    this.plug();
    this.sender.replaceTrack(this.micDest.stream.getAudioTracks()[0]);
    return this.micGain;
  };

  Call.prototype.plug = function () {
    if (this.micSrc) this.micSrc.disconnect();
    this.micSrc = this.ac.createMediaStreamSource(new MediaStream([this.track]));
    this.micSrc.connect(this.micGain);
  };

  Call.prototype.setVolume = function (v) {
    this.volume = v;
    this.output().gain.value = v / 100;
    return "Volume " + v + " %";
  };

  Call.prototype.do_volume = function (msg) {
    var before = this.volume, words = this.setVolume(level(before, msg));
    this.say(words, function () { this.say(this.setVolume(before)); });
    return words;
  };

  Call.prototype.setMic = function (v) {
    this.micLevel = v;
    this.input().gain.value = v / 100;
    return "Microphone " + v + " %";
  };

  Call.prototype.do_mic_gain = function (msg) {
    var before = this.micLevel, words = this.setMic(level(before, msg));
    this.say(words, function () { this.say(this.setMic(before)); });
    return words;
  };

  /* Echo cancellation: the track's own constraint, else a new microphone track with it,
   * swapped in without dropping the call. */
  Call.prototype.setEcho = async function (on) {
    if (this.track.getSettings().echoCancellation !== on) {
      try { await this.track.applyConstraints({ echoCancellation: on }); } catch (e) { /* re-acquire below */ }
    }
    if (this.track.getSettings().echoCancellation !== on) {
      var p = this.opts.processing;
      var s = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: on, noiseSuppression: p, autoGainControl: p }, video: false
      });
      var old = this.track, t = s.getAudioTracks()[0];
      t.enabled = old.enabled;
      this.track = t;
      this.stream = s;
      if (this.micGain) this.plug(); else await this.sender.replaceTrack(t);
      old.stop();
    }
    var got = this.track.getSettings().echoCancellation;
    if (got !== on) throw new Error("the browser kept echo cancellation " + (got ? "on" : "off"));
    this.echo = on;
    return "Echo cancellation " + (on ? "on" : "off");
  };

  Call.prototype.do_echo_cancellation = async function (msg) {
    var before = this.track.getSettings().echoCancellation !== false;
    var words = await this.setEcho(msg.on);
    this.say(words, async function () { this.say(await this.setEcho(before)); });
    return words;
  };

  /* Echo suppression: half duplex, as speakerphones did — the microphone ducks while the
   * agent's audio is loud, and comes back a moment after it stops. */
  Call.prototype.setDuck = function (on) {
    var self = this;
    this.input();
    clearInterval(this.ducker);
    this.duckGain.gain.value = 1;
    this.ducking = on;
    if (on) {
      var an = this.graph().createAnalyser(), buf = new Float32Array(512), until = 0;
      an.fftSize = 512;
      this.graph().createMediaStreamSource(this.audio.srcObject).connect(an);
      this.ducker = setInterval(function () {
        an.getFloatTimeDomainData(buf);
        var sum = 0;
        for (var i = 0; i < buf.length; i++) sum += buf[i] * buf[i];
        var now = performance.now();
        if (Math.sqrt(sum / buf.length) > 0.02) until = now + 300;
        self.duckGain.gain.value = now < until ? 0.1 : 1;
      }, 20);
    }
    return "Echo suppression " + (on ? "on" : "off");
  };

  Call.prototype.do_echo_suppression = function (msg) {
    var before = !!this.ducking, words = this.setDuck(msg.on);
    this.say(words, function () { this.say(this.setDuck(before)); });
    return words;
  };

  Call.prototype.do_push_page = function (msg) {
    var name = msg.page ? msg.page.charAt(0).toUpperCase() + msg.page.slice(1).replace(/[-_]/g, " ") : msg.url;
    this.say("The agent opened: " + name);
    return msg.url;
  };

  /* A pushed page: the merchant's window goes there (the answer is sent first). */
  Call.prototype.go = function (url) {
    var w = this.opts.target || window;
    // This page goes: say so now (a browser may close the WebSocket before pagehide).
    if (w === window && this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify({ type: "moving" }));
    setTimeout(function () {
      try { w.location.assign(url); } catch (e) { window.location.assign(url); }
    }, 50);
  };

  Call.prototype.tick = function () {
    var self = this, t0 = Date.now();
    this.clock = setInterval(function () {
      var s = Math.floor((Date.now() - t0) / 1000);
      self.timer.textContent = Math.floor(s / 60) + ":" + ("0" + (s % 60)).slice(-2);
    }, 1000);
  };

  Call.prototype.dtmf = function (d) {
    var t = this.sender && this.sender.dtmf;
    // A browser that agreed no telephone-event cannot send digits: say so, never throw.
    if (!t || this.state !== "connected") return;
    if (t.canInsertDTMF === false) {
      this.say("Keys cannot be sent on this call.");
      return;
    }
    try { t.insertDTMF(d, 120, 80); } catch (e) { this.say("Keys cannot be sent on this call."); }
  };

  Call.prototype.mute = function () {
    if (!this.track) return;
    this.track.enabled = !this.track.enabled;
    this.muteBtn.textContent = this.track.enabled ? "Mute" : "Unmute";
    this.muteBtn.setAttribute("aria-pressed", String(!this.track.enabled));
  };

  Call.prototype.hangup = function () {
    if (this.ended) return this.close();
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify({ type: "hangup" }));
    this.finish("normal", "Call ended.");
  };

  Call.prototype.finish = function (reason, words) {
    if (this.ended) return;
    this.ended = true;
    this.reason = reason;
    clearInterval(this.clock);
    clearInterval(this.ducker);
    if (this.ac) this.ac.close();
    this.chatEnd();
    this.show(words || "Call ended.");
    if (this.pc) this.pc.close();
    if (this.stream) this.stream.getTracks().forEach(function (t) { t.stop(); });
    if (this.ws && this.ws.readyState <= 1) this.ws.close();
    this.hangBtn.textContent = "Close";
    var self = this;
    if (this.opts.onEnd) this.opts.onEnd(reason);
    this.closer = setTimeout(function () { self.close(); }, 8000);
  };

  Call.prototype.close = function () {
    clearTimeout(this.closer);
    this.panel.remove();
  };

  /* The page goes away (a link, a pushed page): the call waits for the next page of the
   * tab to take it back (c2c.js), for the switch's grace period. */
  Call.prototype.move = function () {
    if (this.ended) return;
    var o = this.opts;
    // A call window closed is a hang-up; so is a page left before the call was placed.
    if (o.window === "popup" || !this.callId || this.state === "connecting") return this.hangup();
    try {
      sessionStorage.setItem("sb-c2c-live", JSON.stringify({
        call: this.callId, key: this.key, merchant: o.merchant, link: o.link, at: Date.now(), chatN: this.chatN
      }));
    } catch (e) { return this.hangup(); }
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify({ type: "moving" }));
    this.ended = true;
  };

  var calls = [];
  window.addEventListener("pagehide", function () {
    calls.forEach(function (c) { c.move(); });
  });

  window.SwitchboardClient = {
    calls: calls,
    start: function (panel, opts) {
      var c = new Call(panel, opts);
      calls.push(c);
      c.start().catch(function (e) { c.finish("failed", "The call could not start: " + e.message); });
      return c;
    }
  };
})();
