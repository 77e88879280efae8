// The aqsep page: open a song, choose a query, separate, listen, download.
// Plain browser JavaScript served by the aqsep package; it talks only to the server it came from.
"use strict";

const $ = (id) => document.getElementById(id);

const state = {
  session: null,
  config: null,
  song: null,          // {id, name, seconds, sample_rate, channels}
  region: null,        // {start, end} in seconds
  clips: [],           // [{id, name, seconds}]
  job: null,           // the job shown in the progress bar
  result: null,        // the result being listened to
  source: "mixture",   // "target" | "rest" | "mixture"
  urls: {},            // object URLs of the audio being listened to, by source
  overviews: {},       // overview JSON of "song", promises of it by "<result>/<source>"
  shown: null,         // the overview drawn now
  lastQuery: null,     // the request of the last separation (for the slider)
  jobToken: 0,         // counts separation requests: only the latest one is shown
  songToken: 0,        // counts song loads: a load that is no longer the latest stops
  viewToken: 0,        // counts view changes: only the latest one draws and sets the player
  looping: false,      // whether the player loops the region
  blobs: new Map(),    // object URLs of fetched result audio by "<result>/<source>", newest last
  view: null,          // {start, end}: the seconds the waveform shows (null: the whole song)
  detail: null,        // {key, view, overview}: the shown view drawn at full detail
  history: [],         // [{result, request, pair}]: this song's results, in the order first heard
  clipAudio: new Audio(),  // plays a query clip in a loop, before separating
  clipPlaying: null,   // the id of the clip playing
};
const MIN_VIEW = 0.5;  // the shortest span the waveform zooms to, in seconds
const KEEP_BLOBS = 24;  // fetched stops kept in the browser's memory
// The Blob behind each object URL of result audio (fetching a blob: URL back would need the
// Content-Security-Policy to allow it).
const blobsByUrl = new Map();
function revokeBlob(url) {
  URL.revokeObjectURL(url);
  blobsByUrl.delete(url);
}

// ---- talking to the server --------------------------------------------------------------

class PageError extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.session) headers["X-Session"] = state.session;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(options.json);
  }
  let response;
  try {
    response = await fetch(path, { method: options.method || "GET", headers, body: options.body });
  } catch (_) {
    throw new PageError("the aqsep server does not answer: is it still running? Reload the page once it is");
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && body.error) message = body.error;
    } catch (_) { /* not JSON */ }
    if (response.status === 401) {
      await openSession();
      message += ": the server was restarted or the session expired; open the song again";
    }
    throw new PageError(message);
  }
  if (options.raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

// Each error line sits next to the controls that cause it: "song-error" (opening a song),
// "error" (the query and Separate), "player-error" (listening and downloads).
const ERROR_LINES = ["song-error", "error", "player-error"];

function showError(err, where = "error") {
  const text = err instanceof PageError ? err.message : `unexpected problem: ${err && err.message ? err.message : err}`;
  for (const id of ERROR_LINES) $(id).textContent = "";
  const line = $(where);
  line.textContent = text.split("\n")[0];
  const box = line.getBoundingClientRect();
  if (box.top < 0 || box.bottom > window.innerHeight) line.scrollIntoView({ block: "center" });
}

function clearError(where = "error") { $(where).textContent = ""; }

function guarded(fn, where = "error") {
  return async (...args) => {
    clearError(where);
    try { await fn(...args); } catch (err) { showError(err, where); }
  };
}

async function openSession() {
  state.session = null;
  const config = await api("/api/session", { method: "POST" });
  state.session = config.session;
  state.config = config;
  $("model-name").textContent = `model: ${config.model}`;
  $("refine").max = config.max_refine;
  const stops = config.blend_positions.length;
  $("blend").step = stops > 1 ? 1 / (stops - 1) : 1;
  $("example").disabled = !config.example;
  state.song = null;
  state.songToken += 1;
  state.clips = [];
  state.overviews = {};
  stopClip();
  resetResult();
  setHistory([]);
  clearSong("No song yet.");
  renderClips();
  fillQueryMenus();
}

// The views while no song is ready: nothing drawn, nothing to play, nothing to separate.
function clearSong(label) {
  state.viewToken += 1;
  state.shown = null;
  state.region = null;
  $("separate").disabled = true;
  $("cancel").disabled = true;
  $("progress").value = 0;
  $("progress-text").textContent = "";
  for (const button of document.querySelectorAll(".ab button")) button.disabled = true;
  for (const link of document.querySelectorAll("[data-download]")) link.setAttribute("aria-disabled", "true");
  const player = $("player");
  player.pause();
  player.removeAttribute("src");
  player.load();
  player.dataset.source = "";
  player.dataset.result = "";
  $("wave").dataset.shown = "";
  $("song-name").textContent = label;
  $("views").setAttribute("aria-busy", label === "No song yet." ? "false" : "true");
  setView(null);
  draw(label === "No song yet." ? null : label);
}

window.addEventListener("pagehide", () => {
  if (!state.session) return;
  const body = new Blob([JSON.stringify({ session: state.session })], { type: "application/json" });
  navigator.sendBeacon("/api/session/end", body);
});

// ---- the song ----------------------------------------------------------------------------

async function uploadFile(path, file) {
  if (state.config && file.size > state.config.max_upload) {
    throw new PageError(`${file.name} is larger than the upload limit of ${state.config.max_upload / 1e6} MB`);
  }
  return api(path, { method: "POST", body: file, headers: { "X-Filename": encodeURIComponent(file.name) } });
}

// Open a song: ``load`` (a promise of the server's song) is awaited with the views cleared and
// saying so; a later load makes this one stop where it is.
async function openSong(label, load) {
  const token = ++state.songToken;
  const previous = state.song;
  state.song = null;
  state.job = null;
  resetResult();
  clearSong(label);
  let song;
  try {
    song = await load();
  } catch (err) {
    if (token === state.songToken) {
      // the server kept the previous song: show it again
      if (previous) await songOpened(previous, token);
      else clearSong("No song yet.");
    }
    throw err;
  }
  if (token === state.songToken) await songOpened(song, token);
}

async function songOpened(song, token) {
  state.song = song;
  state.region = null;
  state.overviews = {};
  state.job = null;  // the server dropped the previous song's jobs
  state.jobToken += 1;
  state.lastQuery = null;
  $("progress").value = 0;
  $("progress-text").textContent = "";
  $("cancel").disabled = true;
  resetResult();
  setHistory([]);
  $("song-name").textContent = `${song.name}: ${song.seconds.toFixed(2)} s, ${song.sample_rate} Hz, ${song.channels === 1 ? "mono" : song.channels + " channels"}`;
  $("region-start").max = $("region-end").max = song.seconds.toFixed(2);
  setRegion(null);
  $("separate").disabled = true;
  $("views").setAttribute("aria-busy", "true");
  const overview = await api(`/api/song/${song.id}/overview?columns=${overviewColumns()}`);
  if (token !== state.songToken) return;
  state.overviews.song = overview;
  await loadSource("mixture", `/api/song/${song.id}/audio`);
  if (token !== state.songToken) return;
  await selectSource("mixture");
  if (token !== state.songToken) return;
  $("views").setAttribute("aria-busy", "false");
  $("separate").disabled = false;
  setView(null);
  fillQueryMenus();
}

function overviewColumns() {
  return Math.max(200, Math.min(2000, Math.round($("wave").clientWidth * (window.devicePixelRatio || 1))));
}

$("song-open").addEventListener("click", () => $("song-file").click());

const openSongFile = guarded(async (file) => {
  await openSong(`loading ${file.name}...`, () => uploadFile("/api/song", file));
}, "song-error");

$("song-file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  event.target.value = "";
  if (file) openSongFile(file);
});

$("example").addEventListener("click", guarded(async () => {
  await openSong("loading the bundled example...", () => api("/api/song/example", { method: "POST" }));
}, "song-error"));

// ---- the query ---------------------------------------------------------------------------

function setRegion(region) {
  state.region = region;
  $("loop-region").disabled = !region;
  if (!region) setLooping(false);
  $("region-start").value = region ? region.start.toFixed(2) : "";
  $("region-end").value = region ? region.end.toFixed(2) : "";
  fillQueryMenus(region ? "range" : undefined);
  draw();
}

// A region typed into the two boxes: taken when it makes sense, else the boxes go back to the
// region in force and the error line says why.
function regionFromInputs() {
  clearError();
  const startText = $("region-start").value, endText = $("region-end").value;
  const start = parseFloat(startText), end = parseFloat(endText);
  const total = seconds();
  let problem = null;
  if (!state.song) problem = "open a song first";
  else if (startText === "" && endText === "") { setRegion(null); return; }
  else if (startText !== "" && !Number.isFinite(start)) problem = `the region's start must be a number of seconds; typed ${startText}`;
  else if (endText !== "" && !Number.isFinite(end)) problem = `the region's end must be a number of seconds; typed ${endText}`;
  else if (start < 0) problem = `the region cannot start before 0 s (typed ${startText})`;
  else if (end > total + 0.005) problem = `the song ends at ${total.toFixed(2)} s; the region cannot end at ${endText} s`;
  if (!problem) {
    // a box left empty is the song's start or end
    const from = startText === "" ? 0 : start, to = endText === "" ? total : end;
    if (to <= from) problem = `the region must end after it starts (${from.toFixed(2)} s); typed ${endText || "nothing"}`;
    else { setRegion({ start: from, end: Math.min(to, total) }); return; }
  }
  setRegion(state.region);
  showError(new PageError(problem));
}
// Loop the region in whatever is playing (the mixture before separating), to hear the query.

function setLooping(on) {
  state.looping = on && !!state.region;
  $("loop-region").setAttribute("aria-pressed", state.looping ? "true" : "false");
  $("loop-region").textContent = state.looping ? "Stop the loop" : "Loop the region";
}
$("loop-region").addEventListener("click", guarded(async () => {
  if (state.looping) { setLooping(false); $("player").pause(); mixerPause(); return; }
  if (!state.region) throw new PageError("choose a region first: drag over the waveform or type it");
  setLooping(true);
  if (mixer.active && mixer.buffers.length) {  // the stems were played last: loop them
    mixerPlay(state.region.start);
    return;
  }
  const player = $("player");
  player.currentTime = state.region.start;
  await player.play();
}));
$("player").addEventListener("timeupdate", () => {
  const player = $("player");
  if (state.looping && state.region && (player.currentTime >= state.region.end || player.currentTime < state.region.start - 0.05)) {
    player.currentTime = state.region.start;
  }
});
$("player").addEventListener("ended", () => {
  if (state.looping && state.region) { $("player").currentTime = state.region.start; $("player").play().catch(() => {}); }
});

$("region-start").addEventListener("change", regionFromInputs);
$("region-end").addEventListener("change", regionFromInputs);

// The model's classes in the words of a musician: the whole stems first, then their parts.
const CLASS_GROUPS = [
  ["Whole stems", {
    vocals: "lead and backing singing",
    drums: "the whole drum kit",
    bass: "bass guitar or any low bass line",
    other: "all but vocals, drums and bass",
    accompaniment: "everything but the vocals",
  }],
  ["Voices", {
    voice: "one singing or speaking voice",
    choir: "many voices singing together",
  }],
  ["Parts of the drum kit", {
    kick: "bass drum",
    snare: "snare drum",
    "hi-hat": "hi-hat, open or closed",
    cymbals: "crash and ride cymbals",
    toms: "tom-toms",
  }],
  ["Instruments", {
    "acoustic guitar": "steel or nylon strings",
    "electric guitar": "clean or distorted",
    piano: "acoustic piano",
    "electric piano": "Rhodes, Wurlitzer and the like",
    organ: "Hammond, church or combo organ",
    synth: "synthesizer leads and plucks",
    "synth pad": "sustained synthesizer chords",
    "synth bass": "synthesizer bass line",
    strings: "violins, violas, cellos",
    brass: "trumpets, trombones, horns",
    woodwinds: "flutes, clarinets, saxophones",
    mallets: "vibraphone, marimba, xylophone",
  }],
];

// The menu's entries as [group, [[value, label], ...]]; the song's own sounds come first.
function queryOptions() {
  const groups = [];
  const own = [];
  if (state.region) {
    own.push(["range", `Sounds like the region ${state.region.start.toFixed(2)}-${state.region.end.toFixed(2)} s`]);
  }
  if (state.clips.length) {
    own.push(["clips", `Sounds like these clips (${state.clips.length})`]);
  }
  if (own.length) groups.push(["From this song and your clips", own]);
  const classes = state.config ? state.config.classes : [];
  const stems = state.config ? state.config.stems : [];
  const placed = new Set();
  for (const [group, described] of CLASS_GROUPS) {
    const entries = classes.filter((name) => name in described)
      .sort((a, b) => Object.keys(described).indexOf(a) - Object.keys(described).indexOf(b))
      .map((name) => { placed.add(name); return [`class:${name}`, `${name}: ${described[name]}`]; });
    if (group === "Whole stems" && stems.length > 1) {
      entries.unshift(["stems", `every stem at once: ${stems.join(", ")} (a mixer and a zip)`]);
    }
    if (entries.length) groups.push([group, entries]);
  }
  const rest = classes.filter((name) => !placed.has(name)).map((name) => [`class:${name}`, name]);
  if (rest.length) groups.push(["More sounds", rest]);
  return groups;
}

function fillQueryMenus(prefer) {
  const groups = queryOptions();
  for (const [id, blank] of [["query-a", null], ["query-b", "nothing (no slider)"]]) {
    const menu = $(id);
    const previous = menu.value;
    menu.textContent = "";
    if (blank) menu.append(new Option(blank, ""));
    for (const [group, options] of groups) {
      const box = document.createElement("optgroup");
      box.label = group;
      for (const [value, label] of options) box.append(new Option(label, value));
      menu.append(box);
    }
    const values = Array.from(menu.options).map((o) => o.value);
    if (id === "query-a" && prefer && values.includes(prefer)) menu.value = prefer;
    else if (values.includes(previous)) menu.value = previous;
    else if (id === "query-a" && values.includes("class:vocals")) menu.value = "class:vocals";
  }
  $("blend").disabled = !$("query-b").value;
}

$("query-b").addEventListener("change", () => { $("blend").disabled = !$("query-b").value; });

function querySpec(value) {
  if (!value) return null;
  if (value === "range") {
    if (!state.region) throw new PageError("drag over the waveform to choose a region first");
    return { kind: "range", start: state.region.start, end: state.region.end };
  }
  if (value === "clips") return { kind: "clips", clips: state.clips.map((c) => c.id) };
  if (value === "stems") return { kind: "stems" };
  return { kind: "class", name: value.slice("class:".length) };
}

function renderClips() {
  const list = $("clips");
  list.textContent = "";
  for (const clip of state.clips) {
    const item = document.createElement("li");
    item.dataset.clip = clip.id;
    const play = document.createElement("button");
    play.type = "button";
    play.className = "play-clip";
    const on = state.clipPlaying === clip.id;
    play.textContent = on ? "\u25a0" : "\u25b6";
    play.setAttribute("aria-pressed", on ? "true" : "false");
    play.setAttribute("aria-label", on ? `Stop ${clip.name}` : `Play ${clip.name} in a loop`);
    play.addEventListener("click", guarded(() => toggleClip(clip)));
    item.append(play, `${clip.name} (${clip.seconds.toFixed(1)} s)`);
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "\u00d7";
    remove.title = `remove ${clip.name}`;
    remove.addEventListener("click", guarded(async () => {
      if (state.clipPlaying === clip.id) stopClip();
      await api(`/api/clips/${clip.id}`, { method: "DELETE" });
      state.clips = state.clips.filter((c) => c.id !== clip.id);
      renderClips();
      fillQueryMenus();
    }));
    item.append(remove);
    list.append(item);
  }
}

$("clip-open").addEventListener("click", () => $("clip-files").click());

// A query clip heard in a loop before separating (from the server, as WAV: every browser plays it).
async function toggleClip(clip) {
  if (state.clipPlaying === clip.id) { stopClip(); return; }
  stopClip();
  if (!clip.url) {
    const response = await api(`/api/clips/${clip.id}/audio`, { raw: true });
    clip.url = URL.createObjectURL(await response.blob());
  }
  $("player").pause();
  mixerPause();
  const audio = state.clipAudio;
  audio.loop = true;
  audio.src = clip.url;
  state.clipPlaying = clip.id;
  renderClips();
  await audio.play();
}

function stopClip() {
  state.clipAudio.pause();
  if (state.clipPlaying === null) return;
  state.clipPlaying = null;
  renderClips();
}

const addClips = guarded(async (files) => {
  const limit = state.config ? state.config.max_clips : Infinity;
  try {
    for (const file of files) {
      if (state.clips.length >= limit) {
        throw new PageError(`at most ${limit} query clips; remove one before adding ${file.name}`);
      }
      state.clips.push(await uploadFile("/api/clips", file));
      renderClips();
    }
  } finally {
    // the menu counts the clips held, whether or not every file was taken
    fillQueryMenus(files.length && state.clips.length ? "clips" : undefined);
  }
});

$("clip-files").addEventListener("change", (event) => {
  const files = Array.from(event.target.files);
  event.target.value = "";
  addClips(files);
});

// ---- drag and drop -----------------------------------------------------------------------

// Files dropped on the query panel are query clips; dropped anywhere else, a song.
const hasFiles = (event) => event.dataTransfer && Array.from(event.dataTransfer.types || []).includes("Files");

document.addEventListener("dragover", (event) => {
  if (!hasFiles(event)) return;
  event.preventDefault();
  event.dataTransfer.dropEffect = "copy";
  const clips = !!event.target.closest && !!event.target.closest("#query-panel");
  $("query-panel").classList.toggle("dropping", clips);
  $("song-panel").classList.toggle("dropping", !clips);
});

for (const type of ["dragleave", "dragend"]) {
  document.addEventListener(type, () => {
    $("query-panel").classList.remove("dropping");
    $("song-panel").classList.remove("dropping");
  });
}

document.addEventListener("drop", (event) => {
  if (!hasFiles(event)) return;
  event.preventDefault();
  $("query-panel").classList.remove("dropping");
  $("song-panel").classList.remove("dropping");
  const files = Array.from(event.dataTransfer.files);
  if (!files.length) return;
  if (event.target.closest && event.target.closest("#query-panel")) {
    addClips(files);
  } else if (files.length > 1) {
    showError(new PageError(`drop one song at a time (${files.length} files were dropped); drop query clips on the query panel`), "song-error");
  } else {
    openSongFile(files[0]);
  }
});

// ---- separating --------------------------------------------------------------------------

function currentRequest() {
  if (!state.song) throw new PageError("open a song first");
  const other = querySpec($("query-b").value);
  const refineText = $("refine").value.trim() || "0";
  const refine = Number(refineText);
  const most = state.config ? state.config.max_refine : 4;
  if (!Number.isInteger(refine) || refine < 0 || refine > most) {
    throw new PageError(`refine steps must be a whole number from 0 to ${most}; typed ${refineText}`);
  }
  return {
    song: state.song.id,
    query: querySpec($("query-a").value),
    other,
    alpha: other ? parseFloat($("blend").value) : 0,
    refine,
  };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function runJob(request) {
  const mine = ++state.jobToken;  // a later request replaces this one, even one answered first
  let job = await api("/api/jobs", { method: "POST", json: request });
  if (mine !== state.jobToken) return;
  state.job = job;
  state.lastQuery = request;
  $("cancel").disabled = false;
  while (job.state === "queued" || job.state === "running") {
    showProgress(job);
    await sleep(150);
    if (mine !== state.jobToken) return;  // replaced by a newer request
    job = await api(`/api/jobs/${job.id}`);
    if (mine !== state.jobToken) return;
    state.job = job;
  }
  showProgress(job);
  $("cancel").disabled = true;
  if (job.state === "error") throw new PageError(job.error);
  if (job.state === "done") {
    addHistory(job.result, request);
    await showResult(job.result);
  }
}

function showProgress(job) {
  $("progress").value = job.progress;
  const pct = `${Math.round(job.progress * 100)} %`;
  const texts = {
    queued: "waiting for the worker",
    running: `${job.stage} ${pct}`,
    done: job.cached ? "done (computed ahead)" : `done in ${job.result ? job.result.elapsed.toFixed(2) : "?"} s`,
    cancelled: "cancelled",
    error: "failed: see below",
  };
  $("progress-text").textContent = texts[job.state] || job.state;
}

$("separate").addEventListener("click", guarded(async () => {
  await runJob(currentRequest());
}));

$("cancel").addEventListener("click", guarded(async () => {
  if (!state.job) return;
  const job = await api(`/api/jobs/${state.job.id}/cancel`, { method: "POST" });
  showProgress(job);
}));

$("blend").addEventListener("input", () => { $("blend-value").textContent = parseFloat($("blend").value).toFixed(2); });
$("blend").addEventListener("change", guarded(async () => {
  $("blend-value").textContent = parseFloat($("blend").value).toFixed(2);
  if (state.result && state.lastQuery && state.lastQuery.other) await runJob(currentRequest());
}));

// ---- listening ---------------------------------------------------------------------------

function resetResult() {
  state.result = null;
  mixerClose();
  for (const url of state.blobs.values()) revokeBlob(url);
  state.blobs.clear();
  delete state.urls.target;
  delete state.urls.rest;
  if (!state.song && state.urls.mixture) {
    URL.revokeObjectURL(state.urls.mixture);
    delete state.urls.mixture;
  }
  listenControls(null);
}

// What the Listen panel offers for ``result`` (null: the song alone): A/B and downloads of the
// estimate and the rest for one sound, the stem mixer and its zips for every stem.
function listenControls(result) {
  const one = !!result && !result.stems;
  for (const button of document.querySelectorAll(".ab button")) {
    button.disabled = button.dataset.source === "mixture" ? !state.song : !one;
  }
  for (const link of document.querySelectorAll("[data-download]")) {
    const ready = link.dataset.download === "mixture" ? !!state.song : one;
    link.setAttribute("aria-disabled", ready ? "false" : "true");
  }
  $("mixer").hidden = !(result && result.stems);
  renderHistory();
}

async function loadSource(source, path) {
  const response = await api(path, { raw: true });
  const blob = await response.blob();
  if (state.urls[source]) URL.revokeObjectURL(state.urls[source]);
  state.urls[source] = URL.createObjectURL(blob);
}

// A result's audio as an object URL: fetched once, then played from the browser's memory.
async function resultBlob(resultId, source) {
  const key = `${resultId}/${source}`;
  let url = state.blobs.get(key);
  if (url) {
    state.blobs.delete(key);  // newest last
  } else {
    const response = await api(`/api/results/${resultId}/${encodeURIComponent(source)}`, { raw: true });
    const blob = await response.blob();
    url = URL.createObjectURL(blob);
    blobsByUrl.set(url, blob);
    if (state.blobs.has(key)) revokeBlob(state.blobs.get(key));
  }
  state.blobs.set(key, url);
  const inUse = new Set(Object.values(state.urls));
  for (const [old, oldUrl] of state.blobs) {
    if (state.blobs.size <= KEEP_BLOBS) break;
    if (old === key || inUse.has(oldUrl)) continue;
    revokeBlob(oldUrl);
    state.blobs.delete(old);
    delete state.overviews[old];
  }
  return url;
}

async function showResult(result) {
  const token = ++state.viewToken;
  const songToken = state.songToken;
  const stale = () => token !== state.viewToken || songToken !== state.songToken;
  if (result.stems) {
    const said = $("progress-text").textContent;
    $("progress-text").textContent = "decoding the stems...";
    const playable = state.song.seconds <= mixer.maxSeconds;
    const urls = playable ? await Promise.all(result.files.map((name) => resultBlob(result.id, name))) : [];
    if (stale()) return;
    if (!await mixerLoad(result, urls, stale)) return;
    state.result = result;
    delete state.urls.target;
    delete state.urls.rest;
    listenControls(result);
    $("progress-text").textContent = said;
    await selectSource("mixture");
    return;
  }
  const fresh = !state.result || state.result.stems;
  const side = state.source === "mixture" && fresh ? "target" : state.source;
  if (side !== "mixture") resultOverview(result.id, side).catch(() => {});  // while the audio comes
  const [target, rest] = await Promise.all([resultBlob(result.id, "target"), resultBlob(result.id, "rest")]);
  // a newer result, view or song took over while these were fetched
  if (stale()) return;
  mixerClose();
  state.result = result;
  state.urls.target = target;
  state.urls.rest = rest;
  listenControls(result);
  await selectSource(side);
}

// Switch what the player plays, keeping the playback position and whether it plays.
// Only the latest call changes the player and the picture, so both always show the same stop.
const selectSource = guarded(async (source) => {
  const token = ++state.viewToken;
  const player = $("player");
  const url = state.urls[source];
  const result = source === "mixture" || !state.result ? null : state.result;
  if (!url) return;
  const position = player.currentTime || 0;
  const playing = !player.paused && !player.ended;
  state.source = source;
  for (const button of document.querySelectorAll(".ab button")) {
    button.setAttribute("aria-pressed", button.dataset.source === source ? "true" : "false");
  }
  $("showing").textContent = { target: "estimate", rest: "rest", mixture: "mixture" }[source];
  if (player.src !== url) {
    player.src = url;
    await new Promise((resolve) => {
      player.addEventListener("loadedmetadata", resolve, { once: true });
      player.addEventListener("error", resolve, { once: true });
    });
    if (token !== state.viewToken) return;
    if (Number.isFinite(player.duration)) player.currentTime = Math.min(position, player.duration);
    if (playing) await player.play().catch(() => {});
  }
  if (token !== state.viewToken) return;
  const key = result ? `${result.id}/${source}` : "song";
  const overview = result ? await resultOverview(result.id, source) : state.overviews.song;
  if (token !== state.viewToken) return;
  // what the player holds and the picture shows now, for anyone waiting on it (the browser test does)
  player.dataset.source = source;
  player.dataset.result = result ? result.id : "";
  state.shown = overview || null;
  $("wave").dataset.shown = key;
  draw();
  requestDetail();
  // the picture of the other side of the A/B switch, asked for now that this one is drawn
  if (result && !result.stems) resultOverview(result.id, source === "target" ? "rest" : "target").catch(() => {});
}, "player-error");

// The overview of a result's source: asked for once, shared by whoever waits for it.
function resultOverview(resultId, source) {
  const key = `${resultId}/${source}`;
  if (!state.overviews[key]) {
    const path = `/api/results/${resultId}/${encodeURIComponent(source)}/overview?columns=${overviewColumns()}`;
    state.overviews[key] = api(path).catch((err) => { delete state.overviews[key]; throw err; });
  }
  return state.overviews[key];
}

for (const button of document.querySelectorAll(".ab button")) {
  button.addEventListener("click", () => selectSource(button.dataset.source));
}

// Save what ``path`` answers under the name the server gives it.
async function download(path, fallback) {
  const response = await api(path, { raw: true });
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename="?([^";]+)"?/.exec(disposition);
  const blob = await response.blob();
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = match ? match[1] : fallback;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

for (const link of document.querySelectorAll("[data-download]")) {
  link.addEventListener("click", guarded(async (event) => {
    event.preventDefault();
    const source = link.dataset.download;
    if (link.getAttribute("aria-disabled") === "true") throw new PageError(source === "mixture" ? "open a song first" : "separate first");
    const format = link.dataset.format;
    let path;
    if (source === "mixture") {
      if (!state.song) throw new PageError("open a song first");
      path = `/api/song/${state.song.id}/audio?format=${format}`;
    } else {
      if (!state.result) throw new PageError("separate first");
      path = `/api/results/${state.result.id}/${source}?format=${format}`;
    }
    await download(path, `${source}.${format}`);
  }, "player-error"));
}

for (const link of document.querySelectorAll("[data-zip]")) {
  link.addEventListener("click", guarded(async (event) => {
    event.preventDefault();
    if (!state.result) throw new PageError("separate first");
    await download(`/api/results/${state.result.id}/all.zip?format=${link.dataset.zip}`, "stems.zip");
  }, "player-error"));
}

// ---- the stem mixer ----------------------------------------------------------------------

// Every stem decoded into the browser's memory and played by Web Audio: one buffer source per
// stem, all started at the same instant of the audio clock, each through its own gain (mute,
// solo, volume), so the stems stay sample-aligned whatever is muted.
const mixer = {
  ctx: null,
  result: null,
  names: [],
  buffers: [],
  gains: [],
  sources: [],
  settings: {},       // by stem name: {mute, solo, volume}, kept from one result to the next
  playing: false,
  startedAt: 0,       // the audio clock's time at which the playback started from ``offset``
  offset: 0,          // the song's second playing at ``startedAt`` (or where it was paused)
  active: false,      // the mixer, not the player, was played last (its time is the playhead)
  // The longest song the mixer plays: it holds every stem decoded, about 85 MB a minute of
  // 44.1 kHz stereo for four stems (a longer song's stems are downloaded instead).
  maxSeconds: 600,
};

async function mixerLoad(result, urls, stale) {
  mixerClose();
  const rate = state.song.sample_rate;
  if (!mixer.ctx || mixer.ctx.sampleRate !== rate) {
    if (mixer.ctx) mixer.ctx.close();
    mixer.ctx = new AudioContext({ sampleRate: rate });  // no resampling: the stems' own samples
  }
  const blobs = await Promise.all(urls.map(blobOf));
  const buffers = await Promise.all(blobs.map(async (b) => mixer.ctx.decodeAudioData(await b.arrayBuffer())));
  if (stale()) return false;
  mixer.result = result;
  mixer.names = result.files.slice();
  mixer.buffers = buffers;
  mixer.gains = buffers.map(() => {
    const gain = mixer.ctx.createGain();
    gain.connect(mixer.ctx.destination);
    return gain;
  });
  for (const name of mixer.names) {
    if (!mixer.settings[name]) mixer.settings[name] = { mute: false, solo: false, volume: 1 };
  }
  mixer.offset = 0;
  renderMixer();
  applyGains();
  return true;
}

function blobOf(url) { return blobsByUrl.get(url); }

function mixerClose() {
  mixerPause();
  for (const gain of mixer.gains) gain.disconnect();
  mixer.result = null;
  mixer.names = [];
  mixer.buffers = [];
  mixer.gains = [];
  mixer.active = false;
  $("mixer").hidden = true;
  $("stems").textContent = "";
}

function mixerDuration() { return mixer.buffers.length ? Math.max(...mixer.buffers.map((b) => b.duration)) : 0; }

function mixerPosition() {
  if (!mixer.playing) return mixer.offset;
  return Math.max(mixer.offset, mixer.offset + mixer.ctx.currentTime - mixer.startedAt);
}

function mixerPlay(at) {
  if (!mixer.buffers.length) return;
  mixerHalt();
  const ctx = mixer.ctx;
  ctx.resume();
  at = Math.min(Math.max(0, at), mixerDuration());
  const when = ctx.currentTime + 0.05;  // every source starts at this instant
  mixer.sources = mixer.buffers.map((buffer, i) => {
    const source = ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(mixer.gains[i]);
    source.start(when, at);
    return source;
  });
  mixer.startedAt = when;
  mixer.offset = at;
  mixer.playing = true;
  mixer.active = true;
  $("player").pause();
  stopClip();
  mixerButton();
}

// Stop the sources where they are (the position is kept in ``offset``).
function mixerHalt() {
  const position = mixerPosition();
  for (const source of mixer.sources) {
    source.onended = null;
    try { source.stop(); } catch (_) { /* never started */ }
    source.disconnect();
  }
  mixer.sources = [];
  mixer.offset = position;
  mixer.playing = false;
}

function mixerPause() {
  if (!mixer.playing) return;
  mixerHalt();
  mixerButton();
  draw();
}

function mixerSeek(at) {
  if (mixer.playing) mixerPlay(at);
  else mixer.offset = Math.min(Math.max(0, at), mixerDuration());
}

function mixerButton() {
  $("mixer-play").textContent = mixer.playing ? "Pause the stems" : "Play the stems";
  $("mixer-play").setAttribute("aria-pressed", mixer.playing ? "true" : "false");
}

// Mute silences a stem; once any stem is soloed, only the soloed ones play.
function applyGains() {
  const soloing = mixer.names.some((name) => mixer.settings[name].solo);
  mixer.names.forEach((name, i) => {
    const s = mixer.settings[name];
    if (!mixer.gains[i]) return;  // not decoded (a song too long for the mixer)
    mixer.gains[i].gain.value = s.mute || (soloing && !s.solo) ? 0 : s.volume;
  });
}

function renderMixer() {
  const list = $("stems");
  list.textContent = "";
  const playable = mixer.buffers.length > 0;
  $("mixer-play").disabled = !playable;
  $("mixer-note").textContent = playable ? "" : `the mixer plays songs of up to ${+(mixer.maxSeconds / 60).toFixed(1)} minutes (it holds every stem in memory): download the stems below`;
  for (const name of mixer.names) {
    const s = mixer.settings[name];
    const item = document.createElement("li");
    item.dataset.stem = name;
    const label = document.createElement("span");
    label.className = "stem-name";
    label.textContent = name;
    const toggle = (what, text) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = `small toggle ${what}`;
      button.textContent = text;
      button.setAttribute("aria-pressed", s[what] ? "true" : "false");
      button.setAttribute("aria-label", `${text} ${name}`);
      button.addEventListener("click", () => {
        s[what] = !s[what];
        button.setAttribute("aria-pressed", s[what] ? "true" : "false");
        applyGains();
      });
      return button;
    };
    const volume = document.createElement("input");
    volume.type = "range";
    volume.min = "0";
    volume.max = "1.5";
    volume.step = "0.01";
    volume.value = String(s.volume);
    volume.className = "volume";
    volume.setAttribute("aria-label", `Volume of ${name}`);
    volume.addEventListener("input", () => { s.volume = parseFloat(volume.value); applyGains(); });
    const links = document.createElement("span");
    for (const format of ["wav", "flac"]) {
      const link = document.createElement("a");
      link.href = "#";
      link.textContent = format.toUpperCase();
      link.dataset.stem = name;
      link.dataset.format = format;
      link.setAttribute("aria-label", `Download ${name} as ${format.toUpperCase()}`);
      link.addEventListener("click", guarded(async (event) => {
        event.preventDefault();
        await download(`/api/results/${mixer.result.id}/${encodeURIComponent(name)}?format=${format}`, `${name}.${format}`);
      }, "player-error"));
      links.append(link, " ");
    }
    item.append(label, toggle("mute", "Mute"), toggle("solo", "Solo"), volume, links);
    list.append(item);
  }
  mixerButton();
}

$("mixer-play").addEventListener("click", () => {
  if (mixer.playing) { mixerPause(); return; }
  const from = mixer.offset >= mixerDuration() - 0.01 ? 0 : mixer.offset;
  mixerPlay(state.looping && state.region ? state.region.start : from);
});

$("player").addEventListener("play", () => { mixerPause(); mixer.active = false; stopClip(); });

// ---- history -----------------------------------------------------------------------------

// A result joins the history when it is heard; moving the slider between the same two queries
// updates its entry (the stop heard last) rather than adding one per stop.
function addHistory(result, request) {
  const pair = JSON.stringify(Object.assign({}, request, { alpha: 0 }));
  const entry = { result, request, pair };
  const at = state.history.findIndex((h) => h.pair === pair);
  if (at >= 0) state.history[at] = entry;
  else state.history.push(entry);
  renderHistory();
}

function setHistory(entries) {
  state.history = entries;
  renderHistory();
}

function renderHistory() {
  const list = $("history");
  list.textContent = "";
  $("history-row").hidden = state.history.length === 0;
  state.history.forEach((entry, i) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "small";
    button.dataset.result = entry.result.id;
    button.textContent = `${i + 1}. ${entry.result.label}`;
    const current = !!state.result && state.result.id === entry.result.id;
    button.setAttribute("aria-pressed", current ? "true" : "false");
    button.setAttribute("aria-label", `Listen again to result ${i + 1}: ${entry.result.label}`);
    button.addEventListener("click", guarded(async () => {
      state.lastQuery = entry.request;
      if (entry.request.other) {
        $("blend").value = String(entry.request.alpha);
        $("blend-value").textContent = entry.request.alpha.toFixed(2);
      }
      await showResult(entry.result);
    }, "player-error"));
    item.append(button);
    list.append(item);
  });
}

// ---- drawing -----------------------------------------------------------------------------

// A dark-to-light colour ramp for the spectrogram (levels 0..255).
const RAMP = [[0, 0, 4], [59, 15, 112], [140, 41, 129], [222, 73, 104], [254, 159, 109], [252, 253, 191]];
const COLOURS = (() => {
  const table = new Uint8ClampedArray(256 * 3);
  for (let i = 0; i < 256; i++) {
    const x = (i / 255) * (RAMP.length - 1);
    const k = Math.min(RAMP.length - 2, Math.floor(x));
    const f = x - k;
    for (let c = 0; c < 3; c++) table[i * 3 + c] = RAMP[k][c] * (1 - f) + RAMP[k + 1][c] * f;
  }
  return table;
})();

const bitmaps = new WeakMap();  // each overview's spectrogram as a canvas, made once

function fitCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
  const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  return ratio;
}

function seconds() { return state.song ? state.song.seconds : 0; }

// ---- zoom and scroll ---------------------------------------------------------------------

// The seconds the waveform and the spectrogram show now.
function viewSpan() {
  const total = seconds();
  return state.view ? state.view : { start: 0, end: total };
}

// Show ``start`` to ``end`` (null: the whole song), kept inside the song and at least MIN_VIEW long.
function setView(start, end) {
  const total = seconds();
  if (start === null || !total) {
    state.view = null;
  } else {
    const width = Math.min(total, Math.max(Math.min(MIN_VIEW, total), end - start));
    const from = Math.min(Math.max(0, start), total - width);
    state.view = width >= total - 1e-9 ? null : { start: from, end: from + width };
  }
  const v = viewSpan();
  const whole = !state.view;
  $("zoom-in").disabled = !total || v.end - v.start <= Math.min(MIN_VIEW, total) + 1e-9;
  $("zoom-out").disabled = $("zoom-all").disabled = whole;
  const scroll = $("scroll");
  scroll.disabled = whole;
  scroll.value = whole ? "0" : String(v.start / (total - (v.end - v.start)));
  $("view-range").textContent = whole ? "" : `${clock(v.start)} to ${clock(v.end)}`;
  $("wave").dataset.view = whole ? "" : `${v.start.toFixed(3)}-${v.end.toFixed(3)}`;
  draw();
  requestDetail();
}

function zoomBy(factor, around) {
  const v = viewSpan();
  const centre = around === undefined ? (v.start + v.end) / 2 : around;
  const share = (centre - v.start) / (v.end - v.start);
  const width = (v.end - v.start) * factor;
  setView(centre - share * width, centre - share * width + width);
}

$("zoom-in").addEventListener("click", () => zoomBy(0.5));
$("zoom-out").addEventListener("click", () => zoomBy(2));
$("zoom-all").addEventListener("click", () => setView(null));
$("scroll").addEventListener("input", () => {
  const v = viewSpan(), width = v.end - v.start;
  const start = parseFloat($("scroll").value) * (seconds() - width);
  setView(start, start + width);
});

// The zoomed view at full detail: asked for once the view stops changing, drawn in the whole
// song's colours; until it comes, the whole song's picture is drawn stretched.
let detailTimer = null;
function requestDetail() {
  clearTimeout(detailTimer);
  detailTimer = setTimeout(() => fetchDetail().catch((err) => showError(err, "song-error")), 120);
}

async function fetchDetail() {
  const key = $("wave").dataset.shown;
  const view = state.view, whole = state.shown;
  if (!view || !whole || !key || !state.song) { state.detail = null; return; }
  if (state.detail && state.detail.key === key && state.detail.view === view) return;
  const base = key === "song" ? `/api/song/${state.song.id}` : `/api/results/${key}`;
  const query = `columns=${overviewColumns()}&start=${view.start.toFixed(3)}&end=${view.end.toFixed(3)}&top_db=${whole.spectrogram.top_db}`;
  const detail = await api(`${base}/overview?${query}`);
  if (key !== $("wave").dataset.shown || view !== state.view) return;  // moved on meanwhile
  state.detail = { key, view, overview: detail };
  draw();
}

// The picture to draw: the view's detail when it has come, else the whole song's.
function picture() {
  const d = state.detail;
  if (d && d.view === state.view && d.key === $("wave").dataset.shown) return d.overview;
  return state.shown;
}

function xOf(t, w) {
  const v = viewSpan();
  return ((t - v.start) / (v.end - v.start)) * w;
}

function clock(t) {
  const m = Math.floor(t / 60), s = t - 60 * m;
  return `${m}:${s.toFixed(1).padStart(4, "0")}`;
}

// ---- drawing the views -------------------------------------------------------------------

function drawWave(message) {
  const canvas = $("wave");
  const ratio = fitCanvas(canvas);
  const g = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  g.clearRect(0, 0, w, h);
  const ov = picture();
  const axis = 16 * ratio;
  const mid = (h - axis) / 2;
  const v = viewSpan();
  if (state.region && seconds() > 0) {
    const x0 = xOf(state.region.start, w), x1 = xOf(state.region.end, w);
    g.fillStyle = getComputedStyle(document.documentElement).getPropertyValue("--region") || "rgba(47,111,219,0.22)";
    g.fillRect(x0, 0, x1 - x0, h - axis);
    // the handles: a line and a tab at each edge, to drag
    g.fillStyle = "#2f6fdb";
    for (const x of [x0, x1]) {
      g.fillRect(x - ratio, 0, 2 * ratio, h - axis);
      g.fillRect(x - 4 * ratio, 0, 8 * ratio, 14 * ratio);
    }
  }
  if (ov) {
    const n = ov.columns;
    const span = ov.end - ov.start;
    const top = Math.max(1e-6, ...state.shown.peaks.map(Math.abs));  // the whole song's scale
    const scale = (mid * 0.95) / top;
    g.fillStyle = state.source === "mixture" ? "#44546a" : (state.source === "target" ? "#2f6fdb" : "#8a5a00");
    for (let x = 0; x < w; x++) {
      const t = v.start + ((x + 0.5) / w) * (v.end - v.start);
      const c = Math.floor(((t - ov.start) / span) * n);
      if (c < 0 || c >= n) continue;
      const lo = ov.peaks[2 * c], hi = ov.peaks[2 * c + 1];
      const y0 = mid - hi * scale, y1 = mid - lo * scale;
      g.fillRect(x, y0, 1, Math.max(1, y1 - y0));
    }
  } else {
    g.fillStyle = "#98a2b3";
    g.font = `${13 * ratio}px sans-serif`;
    g.fillText(message || "Open a song or the bundled example to see it here.", 12 * ratio, mid);
  }
  // time axis
  g.fillStyle = "#667085";
  g.font = `${11 * ratio}px sans-serif`;
  g.fillRect(0, h - axis, w, 1);
  const total = seconds();
  if (total > 0) {
    const shown = v.end - v.start;
    const steps = [0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300];
    const step = steps.find((s) => (shown / s) * 60 * ratio < w) || 600;
    for (let t = Math.ceil(v.start / step - 1e-9) * step; t <= v.end + 1e-9; t += step) {
      const x = xOf(t, w);
      g.fillRect(x, h - axis, 1, 4 * ratio);
      const label = total >= 120 ? clock(t) : `${+t.toFixed(2)} s`;
      if (x + 2 * ratio + g.measureText(label).width < w) g.fillText(label, x + 2 * ratio, h - 3 * ratio);
    }
  }
  drawPlayhead(g, w, h - axis);
}

function spectrogramBitmap(ov) {
  let bitmap = bitmaps.get(ov);
  if (bitmap) return bitmap;
  const s = ov.spectrogram;
  const bytes = Uint8Array.from(atob(s.data), (ch) => ch.charCodeAt(0));
  const image = new ImageData(s.width, s.height);
  for (let i = 0; i < bytes.length; i++) {
    const v = bytes[i] * 3;
    image.data[4 * i] = COLOURS[v];
    image.data[4 * i + 1] = COLOURS[v + 1];
    image.data[4 * i + 2] = COLOURS[v + 2];
    image.data[4 * i + 3] = 255;
  }
  bitmap = document.createElement("canvas");
  bitmap.width = s.width;
  bitmap.height = s.height;
  bitmap.getContext("2d").putImageData(image, 0, 0);
  bitmaps.set(ov, bitmap);
  return bitmap;
}

function drawSpec() {
  const canvas = $("spec");
  const ratio = fitCanvas(canvas);
  const g = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  g.fillStyle = "#000004";
  g.fillRect(0, 0, w, h);
  const ov = picture();
  if (!ov) return;
  const bitmap = spectrogramBitmap(ov);
  const v = viewSpan(), span = ov.end - ov.start;
  const sx = ((v.start - ov.start) / span) * bitmap.width;
  const sw = Math.max(1e-3, ((v.end - v.start) / span) * bitmap.width);
  g.imageSmoothingEnabled = true;
  g.drawImage(bitmap, sx, 0, sw, bitmap.height, 0, 0, w, h);
  if (state.region && seconds() > 0) {
    const x0 = xOf(state.region.start, w), x1 = xOf(state.region.end, w);
    g.strokeStyle = "rgba(255,255,255,0.8)";
    g.lineWidth = ratio;
    g.strokeRect(x0, 1, x1 - x0, h - 2);
  }
  // frequency labels (log axis, highest first)
  const s = ov.spectrogram;
  g.fillStyle = "rgba(255,255,255,0.85)";
  g.font = `${11 * ratio}px sans-serif`;
  for (const f of [100, 1000, 10000]) {
    if (f < s.fmin || f > s.fmax) continue;
    const y = (Math.log(s.fmax / f) / Math.log(s.fmax / s.fmin)) * h;
    g.fillRect(0, y, 6 * ratio, 1);
    g.fillText(f >= 1000 ? `${f / 1000} kHz` : `${f} Hz`, 8 * ratio, y + 4 * ratio);
  }
  drawPlayhead(g, w, h);
}

// Where the music is: the mixer's clock when the stems were played last, else the player's.
function playhead() {
  if (mixer.active && mixer.buffers.length) return mixer.playing || mixer.offset ? mixerPosition() : null;
  const player = $("player");
  return player.src ? player.currentTime : null;
}

function drawPlayhead(g, w, h) {
  const t = playhead();
  if (!seconds() || t === null) return;
  const x = xOf(t, w);
  g.fillStyle = "#e8590c";
  g.fillRect(x, 0, Math.max(1, window.devicePixelRatio || 1), h);
}

let waiting = null;  // what the empty waveform says while a song loads

function draw(message) {
  if (message !== undefined) waiting = message;
  drawWave(state.shown ? null : waiting);
  drawSpec();
}

window.addEventListener("resize", () => draw());

// While something plays: redraw, loop the region in the stems too, keep the playhead in view.
function animate() {
  const playing = !$("player").paused || mixer.playing;
  if (mixer.playing) {
    const t = mixerPosition();
    if (state.looping && state.region && t >= state.region.end) mixerPlay(state.region.start);
    else if (t >= mixerDuration()) { mixerHalt(); mixer.offset = 0; mixerButton(); }
    $("mixer-time").textContent = clock(mixerPosition());
  }
  if (playing) {
    const t = playhead();
    const v = viewSpan();
    if (state.view && t !== null && (t > v.end || t < v.start)) setView(t, t + (v.end - v.start));
    draw();
  }
  requestAnimationFrame(animate);
}
requestAnimationFrame(animate);
$("player").addEventListener("seeked", () => draw());
$("player").addEventListener("pause", () => draw());

// On the waveform: drag to choose the query region, drag a region's edge to adjust it, click
// (no drag) to play from there; Ctrl + wheel zooms around the pointer, Shift + wheel scrolls.
(() => {
  const canvas = $("wave");
  const GRAB = 7;  // CSS pixels either side of an edge that grab it
  let from = null, edge = null;
  const timeAt = (event) => {
    const box = canvas.getBoundingClientRect();
    const x = Math.min(Math.max(event.clientX - box.left, 0), box.width);
    const v = viewSpan();
    return { x, t: v.start + (x / box.width) * (v.end - v.start) };
  };
  const edgeAt = (x) => {
    if (!state.region) return null;
    const width = canvas.getBoundingClientRect().width;
    const d0 = Math.abs(xOf(state.region.start, width) - x), d1 = Math.abs(xOf(state.region.end, width) - x);
    if (Math.min(d0, d1) > GRAB) return null;
    return d1 <= d0 ? "end" : "start";
  };
  const showRegion = () => {
    $("region-start").value = state.region.start.toFixed(2);
    $("region-end").value = state.region.end.toFixed(2);
    draw();
  };
  canvas.addEventListener("pointerdown", (event) => {
    if (!state.song) return;
    from = timeAt(event);
    edge = edgeAt(from.x);
    canvas.setPointerCapture(event.pointerId);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!from) {
      canvas.style.cursor = state.song && edgeAt(timeAt(event).x) ? "ew-resize" : "crosshair";
      return;
    }
    const to = timeAt(event);
    if (Math.abs(to.x - from.x) < (edge ? 1 : 4)) return;
    if (edge) {
      const r = state.region, least = 0.05;
      state.region = edge === "start"
        ? { start: Math.max(0, Math.min(to.t, r.end - least)), end: r.end }
        : { start: r.start, end: Math.min(seconds(), Math.max(to.t, r.start + least)) };
    } else {
      state.region = { start: Math.min(from.t, to.t), end: Math.max(from.t, to.t) };
    }
    showRegion();
  });
  canvas.addEventListener("pointerup", (event) => {
    if (!from) return;
    const to = timeAt(event);
    if (edge) {
      setRegion(state.region);
    } else if (Math.abs(to.x - from.x) < 4) {
      const player = $("player");
      if (player.src) player.currentTime = to.t;
      if (mixer.active) mixerSeek(to.t);
      draw();
    } else {
      setRegion({ start: Math.min(from.t, to.t), end: Math.max(from.t, to.t) });
    }
    from = null;
    edge = null;
  });
  canvas.addEventListener("wheel", (event) => {
    if (!state.song) return;
    const sideways = event.shiftKey || Math.abs(event.deltaX) > Math.abs(event.deltaY);
    if (event.ctrlKey || event.metaKey) {
      event.preventDefault();
      zoomBy(event.deltaY > 0 ? 1.25 : 0.8, timeAt(event).t);
    } else if (sideways && state.view) {
      event.preventDefault();
      const v = viewSpan(), width = v.end - v.start;
      const delta = (event.shiftKey && !event.deltaX ? event.deltaY : event.deltaX) / canvas.clientWidth;
      setView(v.start + delta * width, v.start + delta * width + width);
    }
  }, { passive: false });
})();

// ---- start -------------------------------------------------------------------------------

guarded(async () => {
  await openSession();
  draw();
})();
