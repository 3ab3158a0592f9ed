// The live camera page of `python -m hpe_jax.serve` (index.html): the
// camera's frames go to /v1/stream as JPEG, one at a time, and each reply is
// drawn over the frame it answers. window.hpeStats exposes counters for the
// browser test (tests/test_camera_page.py).
'use strict';

(() => {
  const MIN_SCORE = 0.2;  // joints below this are not drawn, nor their limbs
  // Larger frames cost JPEG encoding and bandwidth; the model sees a small
  // crop of them anyway.
  const MAX_SIDE = 640;
  const COLORS = {left: '#3b82f6', right: '#f97316', centre: '#22c55e'};

  const token = new URLSearchParams(location.search).get('token');
  const view = document.getElementById('view');
  const ctx = view.getContext('2d');
  const video = document.getElementById('camera');
  const grab = document.createElement('canvas');  // the frame in flight
  const stats = window.hpeStats = {frames: 0, drawnFrames: 0, people: 0, lastError: null};
  let skeleton = null;
  let socket = null;
  let grabbedAt = 0;  // paces the frames
  let sentAt = 0;  // times the round trip
  // A little under the server's frame limit per connection (--max_fps, 30
  // unless set): taken from /v1/model's max_fps where it says it.
  let maxFps = 25;
  const replyTimes = [];  // when the last few replies came, for frames/s

  // Relative URLs keep the page working behind a reverse proxy's path prefix.
  // The token travels as a query parameter: a browser's WebSocket cannot send
  // an Authorization header.
  function url(path) {
    const u = new URL(path, location.href);
    if (token) u.searchParams.set('token', token);
    return u;
  }

  function showError(message) {
    stats.lastError = message;
    document.getElementById('status').textContent = message;
  }

  function jointColor(name) {
    if (name.startsWith('left_')) return COLORS.left;
    if (name.startsWith('right_')) return COLORS.right;
    return COLORS.centre;
  }

  function drawPerson(person, sx, sy) {
    const k = person.keypoints;
    const names = skeleton ? skeleton.joint_names : [];
    const visible = (i) => 3 * i + 2 < k.length && k[3 * i + 2] > MIN_SCORE;
    const at = (i) => [k[3 * i] * sx, k[3 * i + 1] * sy];
    ctx.lineWidth = 3;
    if (skeleton) {
      const index = new Map(names.map((n, i) => [n, i]));
      for (const [a, b] of skeleton.limbs) {
        const i = index.get(a), j = index.get(b);
        if (i === undefined || j === undefined || !visible(i) || !visible(j)) continue;
        // A limb joining the two sides (hips, shoulders) is a centre limb.
        const ca = jointColor(a), cb = jointColor(b);
        ctx.strokeStyle = ca === cb ? ca : COLORS.centre;
        ctx.beginPath();
        ctx.moveTo(...at(i));
        ctx.lineTo(...at(j));
        ctx.stroke();
      }
    }
    for (let i = 0; 3 * i + 2 < k.length; i++) {
      if (!visible(i)) continue;
      const [x, y] = at(i);
      ctx.fillStyle = jointColor(names[i] || '');
      ctx.beginPath();
      ctx.arc(x, y, 4, 0, 2 * Math.PI);
      ctx.fill();
    }
  }

  async function draw(reply) {
    if (view.width !== grab.width || view.height !== grab.height) {
      view.width = grab.width;
      view.height = grab.height;
    }
    ctx.drawImage(grab, 0, 0);
    // Results are in the pixels of the image the server decoded.
    const [h, w] = reply.image_size || [grab.height, grab.width];
    const sx = view.width / w, sy = view.height / h;
    if (reply.overlay) {
      const overlay = new Image();
      overlay.src = 'data:image/png;base64,' + reply.overlay;
      await overlay.decode();
      ctx.drawImage(overlay, 0, 0, view.width, view.height);
    }
    for (const person of reply.people || []) drawPerson(person, sx, sy);
  }

  function showTimes(now) {
    replyTimes.push(now);
    if (replyTimes.length > 20) replyTimes.shift();
    const span = replyTimes[replyTimes.length - 1] - replyTimes[0];
    if (replyTimes.length > 1 && span > 0) {
      document.getElementById('fps').textContent =
        ((replyTimes.length - 1) * 1000 / span).toFixed(1);
    }
    document.getElementById('latency').textContent = (now - sentAt).toFixed(0);
    document.getElementById('frames').textContent = stats.frames;
  }

  // At most one frame is in flight: the next one is grabbed only once the
  // reply to the previous one has been drawn, so a slow server lowers the
  // frame rate instead of building a queue (and a growing latency). A fast
  // one is not sent more frames a second than it accepts (--max_fps): it
  // would answer the extra ones with errors. Each chain of frames belongs to
  // one socket, so that a reconnection cannot start a second chain.
  async function sendFrame(ws) {
    if (ws !== socket || ws.readyState !== WebSocket.OPEN) return;
    const wait = grabbedAt + 1000 / maxFps - performance.now();
    if (wait > 0 || video.readyState < HTMLMediaElement.HAVE_CURRENT_DATA || !video.videoWidth) {
      setTimeout(() => sendFrame(ws), Math.max(wait, 10));
      return;
    }
    grabbedAt = performance.now();
    const scale = Math.min(1, MAX_SIDE / Math.max(video.videoWidth, video.videoHeight));
    grab.width = Math.round(video.videoWidth * scale);
    grab.height = Math.round(video.videoHeight * scale);
    grab.getContext('2d').drawImage(video, 0, 0, grab.width, grab.height);
    const blob = await new Promise((resolve) => grab.toBlob(resolve, 'image/jpeg', 0.8));
    if (ws.readyState !== WebSocket.OPEN) return;
    sentAt = performance.now();
    ws.send(blob);  // one binary message
  }

  async function onReply(event) {
    const now = performance.now();
    stats.frames += 1;
    try {
      const reply = JSON.parse(event.data);
      if (reply.error) {
        showError(`frame ${reply.frame}: ${reply.error}`);
      } else {
        await draw(reply);
        stats.people = (reply.people || []).length;
        stats.drawnFrames += 1;
      }
    } catch (e) {
      showError(`could not draw a reply: ${e}`);
    } finally {
      showTimes(now);
      sendFrame(event.target);
    }
  }

  function connect() {
    const u = url('v1/stream');
    u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = socket = new WebSocket(u);
    socket.onopen = () => {
      document.getElementById('status').textContent = '';  // reconnected
      sendFrame(ws);
    };
    socket.onmessage = onReply;
    socket.onclose = (event) => {
      showError(`connection closed (code ${event.code}${event.reason ? ': ' + event.reason : ''}); ` +
                'reconnecting in 2 s');
      setTimeout(connect, 2000);
    };
  }

  async function start() {
    try {
      const response = await fetch(url('v1/model'));
      if (!response.ok) throw new Error(`GET v1/model: ${response.status} ${response.statusText}`);
      const model = await response.json();
      skeleton = model.skeleton;
      if (model.max_fps) maxFps = 0.9 * model.max_fps;
      document.getElementById('model').textContent =
        `${model.task} model ${model.model}, input ${model.input_size.join('×')}`;
    } catch (e) {
      showError(`no model description: ${e.message}`);
      return;
    }
    // Browsers hide mediaDevices from pages that are neither on localhost
    // nor served over https.
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      showError('no camera: browsers give the camera only to pages on localhost or https ' +
                '(use an SSH tunnel, see docs/deployment.md)');
      return;
    }
    try {
      video.srcObject = await navigator.mediaDevices.getUserMedia({video: true});
      await video.play();
    } catch (e) {
      showError(`no camera: ${e.name}: ${e.message}`);
      return;
    }
    connect();
  }

  start();
})();
