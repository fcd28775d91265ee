// The page at /: one more client of the public /v2 API, as any program would be. Per file it
// creates a job (POST /v2/jobs), uploads the file to the job's server with upload progress,
// polls the job until it ends, then links each output. The form's options are built from
// GET /v2/conversions; a 400 is shown next to the field it names. The API key stays in this
// browser's local storage and travels in the X-Oc-Api-Key header, never in a URL.
"use strict";

const KEY_STORAGE = "audio-conversion.api-key";
const POLL_MS = 1000;
const JOBS_REFRESH_MS = 3000;
const ENDED = new Set(["completed", "failed", "canceled"]);

const byId = (id) => document.getElementById(id);
const form = byId("convert-form");
const keyField = byId("api-key");
const fileField = byId("audio-file");
const targetField = byId("target-format");
const optionsBox = byId("options");

let catalog = new Map();  // target -> its options, as GET /v2/conversions describes them

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `The service answered ${status}.`);
    this.status = status;
    this.errors = (body && body.errors) || {};
  }
}

// A new element: attributes (skipped when null, undefined or false), "text" for its text.
function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children);
  return node;
}

// The path of a URL the API gives: the page talks to the service that served it.
function here(url) {
  const parsed = new URL(url, location.href);
  return parsed.pathname + parsed.search;
}

async function api(method, path, body, extraHeaders = {}) {
  const headers = {"X-Oc-Api-Key": keyField.value.trim(), ...extraHeaders};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
  const text = await response.text();
  let answer = null;
  try { answer = text ? JSON.parse(text) : null; } catch (error) { answer = null; }
  if (!response.ok) throw new ApiError(response.status, answer);
  return answer;
}

// Errors ---------------------------------------------------------------------------------

function showError(id, message) {
  const slot = byId(`${id}-error`);
  const field = byId(id);
  if (slot) slot.textContent = message || "";
  if (field && field.matches("input, select")) field.setAttribute("aria-invalid", message ? "true" : "false");
}

function clearErrors() {
  for (const slot of form.querySelectorAll(".error")) slot.textContent = "";
  for (const field of form.querySelectorAll("[aria-invalid]")) field.setAttribute("aria-invalid", "false");
}

// A 400's errors go next to the fields they name ("conversion.0.options.frequency"); the rest,
// and any other failure, above the Convert button; the first field named takes the focus.
function showApiError(error) {
  if (error.status === 401) {
    const why = Object.values(error.errors).flat().join(" ");  // missing or wrong
    showError("api-key", why ? `${error.message}: ${why}.` : error.message);
    keyField.focus();
    return;
  }
  const unplaced = [];
  for (const [path, messages] of Object.entries(error.errors)) {
    const option = path.match(/options\.([a-z_]+)$/);
    const id = option ? `option-${option[1]}` : path.endsWith(".target") ? "target-format" : null;
    if (id && byId(id)) {
      if (option) byId("options-panel").open = true;
      showError(id, messages.join(" "));
    } else {
      unplaced.push(`${path}: ${messages.join(" ")}`);
    }
  }
  byId("form-error").textContent = [error.message, ...unplaced].join(" ");
  const first = form.querySelector('[aria-invalid="true"]');
  if (first) first.focus();
}

// The form ---------------------------------------------------------------------------------

async function loadCatalog() {
  const conversions = await api("GET", "/v2/conversions");
  catalog = new Map(conversions.map((conversion) => [conversion.target, conversion.options]));
  targetField.replaceChildren(...[...catalog.keys()].map((target) => element("option", {value: target, text: target})));
  targetField.value = catalog.has("flac") ? "flac" : targetField.value;
  buildOptions();
}

function optionInput(name, spec) {
  const id = `option-${name}`;
  const described = `${id}-help ${id}-error`;
  if (spec.enum || spec.type === "boolean") {
    const values = spec.enum || [true, false];
    const unset = spec.default === undefined ? "default" : `default (${spec.default})`;
    return element("select", {id, name, "aria-describedby": described},
      element("option", {value: "", text: unset}),
      ...values.map((value) => element("option", {value: JSON.stringify(value), text: String(value)})));
  }
  if (spec.type === "integer" || spec.type === "number") {
    return element("input", {id, name, type: "number", min: spec.minimum, max: spec.maximum,
      step: spec.type === "integer" ? 1 : "any", placeholder: spec.default, "aria-describedby": described});
  }
  return element("input", {id, name, type: "text", pattern: spec.pattern, placeholder: spec.default,
    spellcheck: "false", "aria-describedby": described});
}

function buildOptions() {
  const options = catalog.get(targetField.value) || {};
  byId("options-legend").textContent = `Options for ${targetField.value}`;
  for (const old of optionsBox.querySelectorAll(".field")) old.remove();
  for (const [name, spec] of Object.entries(options)) {
    const range = spec.minimum !== undefined ? ` From ${spec.minimum} to ${spec.maximum}.` : "";
    optionsBox.append(element("div", {class: "field"},
      element("label", {for: `option-${name}`, text: name}),
      optionInput(name, spec),
      element("small", {id: `option-${name}-help`, text: `${spec.type}. ${spec.description || ""}${range}`}),
      element("span", {id: `option-${name}-error`, class: "error", role: "alert"})));
  }
}

// The options the person set: selects hold JSON, numbers are numbers, text is text.
function chosenOptions() {
  const chosen = {};
  for (const field of optionsBox.querySelectorAll("input, select")) {
    if (field.value === "") continue;
    if (field.tagName === "SELECT") chosen[field.name] = JSON.parse(field.value);
    else if (field.type === "number") chosen[field.name] = Number(field.value);
    else chosen[field.name] = field.value;
  }
  return chosen;
}

// One file -----------------------------------------------------------------------------------

function formatBytes(size) {
  if (size >= 1048576) return `${(size / 1048576).toFixed(1)} MB`;
  return size >= 1024 ? `${(size / 1024).toFixed(1)} KB` : `${size} bytes`;
}

function loudnessText(loudness) {
  if (loudness.type === "ebu") return `${loudness.integrated_lufs} LUFS, true peak ${loudness.true_peak_dbtp} dBTP`;
  if (loudness.type === "rms") return `${loudness.rms_dbfs} dBFS RMS`;
  return `${loudness.peak_dbfs} dBFS peak`;
}

function downloadLink(output) {
  const metadata = output.metadata || {};
  const facts = [formatBytes(output.size)];
  if (metadata.duration !== undefined) facts.push(`${Number(metadata.duration).toFixed(2)} s`);
  if (metadata.sample_rate) facts.push(`${metadata.sample_rate} Hz`);
  if (metadata.loudness) facts.push(`loudness ${loudnessText(metadata.loudness)}`);
  return element("li", {},
    element("a", {href: here(output.uri), download: output.filename, text: `Download ${output.filename}`}),
    ` (${facts.join(", ")})`);
}

// What one dropped or chosen file shows: its upload's progress, then its job's, then downloads.
function fileCard(file) {
  const n = document.querySelectorAll("#files > li").length + 1;
  const card = {
    upload: element("progress", {id: `upload-${n}`, max: 100, value: 0}),
    conversion: element("progress", {id: `conversion-${n}`, max: 100, value: 0}),
    status: element("p", {"aria-live": "polite", text: "Waiting to upload."}),
    downloads: element("ul", {}),
  };
  byId("files").prepend(element("li", {},
    element("h3", {text: file.name}),
    element("div", {class: "field"}, element("label", {for: card.upload.id}, "Upload",
      element("span", {class: "visually-hidden", text: ` of ${file.name}`})), card.upload),
    element("div", {class: "field"}, element("label", {for: card.conversion.id}, "Conversion",
      element("span", {class: "visually-hidden", text: ` of ${file.name}`})), card.conversion),
    card.status, card.downloads));
  return card;
}

function upload(job, file, card) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", `${here(job.server)}/upload-file/${encodeURIComponent(job.id)}`);
    request.setRequestHeader("X-Oc-Api-Key", keyField.value.trim());
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) card.upload.value = Math.round((event.loaded / event.total) * 100);
    };
    request.onload = () => {
      let answer = null;
      try { answer = JSON.parse(request.responseText); } catch (error) { answer = null; }
      if (request.status >= 200 && request.status < 300) resolve(answer);
      else reject(new ApiError(request.status, answer));
    };
    request.onerror = () => reject(new Error("The upload could not reach the service."));
    const body = new FormData();
    body.append("file", file, file.name);
    request.send(body);
  });
}

// Polls the job until it ends. A poll the service could not answer (a restart, an outage:
// 5xx or no answer) is tried again; the job goes on without the page.
async function follow(job, card) {
  for (;;) {
    try {
      // Each poll may wait a second for the job's end (not the 4 s the service allows by
      // default), so the progress bar still moves.
      job = await api("GET", `/v2/jobs/${encodeURIComponent(job.id)}`, undefined, {"Prefer": "wait=1"});
      if (job.progress === null || job.progress === undefined) card.conversion.removeAttribute("value");
      else card.conversion.value = job.progress;
      card.status.textContent = `${job.status.code}: ${job.status.info}`;
      if (ENDED.has(job.status.code)) return job;
    } catch (error) {
      if (error instanceof ApiError && error.status < 500) throw error;
      card.status.textContent = `Waiting for the service: ${error.message}`;
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

function createJob(conversion) {
  return api("POST", "/v2/jobs", {process: true, conversion: [conversion]});
}

// `job` made already (the first file's), or made here with the same conversion.
async function convert(file, job, conversion) {
  const card = fileCard(file);
  try {
    job = job || await createJob(conversion);
    card.status.textContent = "Uploading.";
    await upload(job, file, card);
    card.upload.value = 100;
    const ended = await follow(job, card);
    if (ended.status.code === "completed") {
      card.conversion.value = 100;
      card.downloads.replaceChildren(...ended.output.map(downloadLink));
    } else {
      const reasons = (ended.errors || []).map((error) => error.message).join(" ");
      card.status.textContent = `${ended.status.code}: ${reasons || ended.status.info}`;
    }
  } catch (error) {
    card.status.textContent = `Not converted: ${error.message}`;
  }
  refreshJobs();
}

async function onConvert(event) {
  event.preventDefault();
  clearErrors();
  const files = [...fileField.files];
  if (!keyField.value.trim()) return showError("api-key", "Enter your API key.");
  if (files.length === 0) return showError("audio-file", "Choose or drop at least one audio file.");
  const conversion = {target: targetField.value, options: chosenOptions()};
  let first;
  try {
    first = await createJob(conversion);  // a 400 here is about the form: nothing is uploaded
  } catch (error) {
    if (error instanceof ApiError) showApiError(error);
    else byId("form-error").textContent = error.message;
    return;
  }
  fileField.value = "";
  byId("audio-file-status").textContent = "";
  await Promise.all(files.map((file, index) => convert(file, index === 0 ? first : null, conversion)));
}

// Recent jobs ------------------------------------------------------------------------------

let shownJobs = "";

function jobRow(job) {
  const targets = job.conversion.map((conversion) => conversion.target).join(", ");
  const progress = ENDED.has(job.status.code) || job.progress === null ? "" : ` ${job.progress}%`;
  const named = (job.input.length > 0 && job.input[0].filename) || job.id;
  const remove = element("button", {type: "button", class: "quiet", text: "Delete",
    "aria-label": `Delete the job of ${named}`});
  remove.addEventListener("click", async () => {
    remove.disabled = true;
    try { await api("DELETE", `/v2/jobs/${encodeURIComponent(job.id)}`); } catch (error) { remove.disabled = false; }
    refreshJobs();
  });
  return element("tr", {},
    element("td", {}, element("time", {datetime: job.created_at, text: new Date(job.created_at).toLocaleString()})),
    element("td", {text: targets}),
    element("td", {text: job.status.code + progress}),
    element("td", {}, element("ul", {}, ...job.output.map(downloadLink))),
    element("td", {}, remove));
}

// The key's jobs, newest first; a deleted job (its files gone, status canceled) is not shown.
async function refreshJobs() {
  const note = byId("jobs-note");
  const table = byId("jobs");
  if (!keyField.value.trim()) {
    table.hidden = true;
    note.textContent = "Enter your API key to see its recent jobs.";
    return;
  }
  try {
    const jobs = (await api("GET", "/v2/jobs")).filter((job) => job.status.code !== "canceled");
    const seen = JSON.stringify(jobs);
    if (seen === shownJobs) return;
    shownJobs = seen;
    table.tBodies[0].replaceChildren(...jobs.map(jobRow));
    table.hidden = jobs.length === 0;
    note.textContent = jobs.length === 0 ? "No jobs yet." : "";
  } catch (error) {
    table.hidden = true;
    shownJobs = "";
    note.textContent = error.status === 401 ? "This API key is not known to the service." : error.message;
  }
}

// Start ---------------------------------------------------------------------------------------

function takeDroppedFiles() {
  let depth = 0;
  document.addEventListener("dragenter", (event) => {
    event.preventDefault();
    depth += 1;
    document.body.classList.add("dragging");
  });
  document.addEventListener("dragleave", () => {
    depth -= 1;
    if (depth <= 0) document.body.classList.remove("dragging");
  });
  document.addEventListener("dragover", (event) => event.preventDefault());
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    depth = 0;
    document.body.classList.remove("dragging");
    if (event.dataTransfer && event.dataTransfer.files.length > 0) {
      fileField.files = event.dataTransfer.files;
      showError("audio-file", "");
      byId("audio-file-status").textContent = `${fileField.files.length} file(s) ready: press Convert.`;
    }
  });
}

keyField.value = localStorage.getItem(KEY_STORAGE) || "";
keyField.addEventListener("change", () => {
  localStorage.setItem(KEY_STORAGE, keyField.value.trim());
  shownJobs = "";
  refreshJobs();
});
targetField.addEventListener("change", buildOptions);
form.addEventListener("submit", onConvert);
takeDroppedFiles();
loadCatalog().catch((error) => { byId("form-error").textContent = `The formats could not be loaded: ${error.message}`; });
refreshJobs();
setInterval(refreshJobs, JOBS_REFRESH_MS);
