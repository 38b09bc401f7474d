// The rater's side of the preference study: fetch a trial, show both images, time the answer, post the vote.
// The page knows trials only by id; which method is on which side stays on the server.
"use strict";

const RATER_KEY = "inverseg-study-rater";
const $ = (id) => document.getElementById(id);

let trial = null;      // the trial on screen
let shownAt = null;    // performance.now() when both images were visible; null until then
let hideTimer = null;
let sending = false;

function randomRater() {
  // crypto.getRandomValues also works on plain-http LAN addresses, unlike crypto.randomUUID
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return "r-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function currentRater() {
  const fromUrl = new URLSearchParams(location.search).get("rater");
  if (fromUrl) localStorage.setItem(RATER_KEY, fromUrl);
  let rater = localStorage.getItem(RATER_KEY);
  if (!rater) {
    rater = randomRater();
    localStorage.setItem(RATER_KEY, rater);
  }
  return rater;
}

function say(text, isError = false) {
  $("message").textContent = text;
  $("message").className = isError ? "error" : "";
}

function setButtons(enabled) {
  $("left-button").disabled = !enabled;
  $("right-button").disabled = !enabled;
}

// "loading": nothing shown; "shown": the images; "gone": the time limit has passed
function setImages(state) {
  for (const side of ["left", "right"]) {
    $(side + "-image").hidden = state !== "shown";
    $(side + "-gone").hidden = state !== "gone";
  }
}

function showProgress(data) {
  $("progress").textContent = `${data.completed} of ${data.total} rated`;
}

async function api(path, options) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (e) { /* not JSON: reported below */ }
  if (!response.ok) throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  return body;
}

function loaded(img) {
  return new Promise((resolve, reject) => {
    if (img.complete && img.naturalWidth > 0) return resolve();
    img.onload = () => resolve();
    img.onerror = () => reject(new Error("an image failed to load"));
  });
}

async function nextTrial() {
  clearTimeout(hideTimer);
  setButtons(false);
  trial = null;
  shownAt = null;
  const data = await api(`/api/next?rater=${encodeURIComponent(currentRater())}`);
  showProgress(data);
  if (data.done) {
    $("study").hidden = true;
    $("done").hidden = false;
    return;
  }
  $("done").hidden = true;
  $("study").hidden = false;
  setImages("loading");
  const left = $("left-image"), right = $("right-image");
  left.removeAttribute("src");
  right.removeAttribute("src");
  left.src = data.left;
  right.src = data.right;
  await Promise.all([loaded(left), loaded(right)]);
  trial = data;
  setImages("shown");
  shownAt = performance.now();
  document.body.dataset.trial = data.trial;  // lets tests wait for the next trial
  if (data.time_limit_ms) {
    hideTimer = setTimeout(() => setImages("gone"), data.time_limit_ms);
  }
  setButtons(true);
}

async function vote(choice) {
  if (!trial || shownAt === null || sending) return;
  sending = true;
  setButtons(false);
  const ms = Math.round(performance.now() - shownAt);
  try {
    await api("/api/vote", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ trial: trial.trial, choice, ms, rater: trial.rater }),
    });
    say("");
    await nextTrial();
  } catch (error) {
    say(`Could not continue: ${error.message}`, true);
    setButtons(trial !== null);
  } finally {
    sending = false;
  }
}

function start() {
  $("rater").textContent = currentRater();
  $("left-button").addEventListener("click", () => vote("left"));
  $("right-button").addEventListener("click", () => vote("right"));
  document.addEventListener("keydown", (event) => {
    if (event.target instanceof HTMLInputElement) return;
    if (event.key === "ArrowLeft") { event.preventDefault(); vote("left"); }
    if (event.key === "ArrowRight") { event.preventDefault(); vote("right"); }
  });
  $("rater-form").addEventListener("submit", (event) => {
    event.preventDefault();
    localStorage.setItem(RATER_KEY, $("rater-input").value.trim());
    location.href = location.pathname;  // reload as the new rater (dropping any ?rater=)
  });
  api("/api/config").then((config) => {
    document.title = config.title;
    $("title").textContent = config.title;
    if (config.time_limit_ms) {
      $("time-seconds").textContent = (config.time_limit_ms / 1000).toString();
      $("time-note").hidden = false;
    }
  }).catch(() => {});
  nextTrial().catch((error) => say(`Could not load the next pair: ${error.message}`, true));
}

start();
