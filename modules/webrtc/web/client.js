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
    this.audio = p.appendChild(el("audio"));
    this.audio.autoplay = true;
    p.addEventListener("keydown", function (e) {
      if (e.key === "Escape") self.hangup();
      else if (/^[0-9*#]$/.test(e.key) && e.target.tagName !== "INPUT") self.dtmf(e.key);
    });
    this.hangBtn.focus();
    this.show(WORDS.connecting);
  };

  Call.prototype.show = function (text) { this.status.textContent = text; };

  Call.prototype.start = async function () {
    var self = this, o = this.opts;
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
    this.connect(JSON.stringify({
      type: "call", merchant: o.merchant, link: o.link, session: o.session, token: o.token,
      destination: o.destination, page_url: location.href, referrer: document.referrer,
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
      case "error": this.finish("failed", msg.message); break;
    }
  };

  Call.prototype.tick = function () {
    var self = this, t0 = Date.now();
    this.clock = setInterval(function () {
      var s = Math.floor((Date.now() - t0) / 1000);
      self.timer.textContent = Math.floor(s / 60) + ":" + ("0" + (s % 60)).slice(-2);
    }, 1000);
  };

  Call.prototype.dtmf = function (d) {
    if (this.sender && this.sender.dtmf && this.state === "connected") {
      this.sender.dtmf.insertDTMF(d, 120, 80);
    }
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

  var calls = [];
  window.addEventListener("pagehide", function () {
    calls.forEach(function (c) { if (!c.ended) c.hangup(); });
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
