// The FaceMask web console: plain JavaScript talking to the same routes as any client (/v1/...).
// Nothing is fetched from anywhere but this server.
"use strict";

const KEY_STORAGE = "facemask-api-key";

function $(id) { return document.getElementById(id); }

function apiHeaders() {
  const key = $("api-key").value.trim();
  return key ? { "X-API-Key": key } : {};
}

async function callApi(method, path, body) {
  const response = await fetch(path, { method: method, headers: apiHeaders(), body: body });
  let payload = null;
  try { payload = await response.json(); } catch (e) { payload = null; }
  if (!response.ok) {
    const error = payload && payload.error ? payload.error : { code: String(response.status), message: response.statusText };
    throw new Error(error.message + " (" + error.code + ", HTTP " + response.status + ")");
  }
  return payload;
}

function showMessage(id, text, isError) {
  const element = $(id);
  element.textContent = text;
  element.classList.toggle("error", Boolean(isError));
}

function faceLine(face, index) {
  const item = document.createElement("li");
  const name = document.createElement("span");
  const known = face.identity && face.identity !== "unknown";
  name.className = known ? "identity" : "identity unknown";
  name.textContent = known ? face.identity : "unknown";
  item.appendChild(name);
  const similarity = typeof face.similarity === "number" ? face.similarity.toFixed(3) : "–";
  const details = document.createElement("span");
  details.textContent = " · similarity " + similarity + " · detector score " + face.det_score.toFixed(3) +
    " · face " + (index + 1);
  item.appendChild(details);
  return item;
}

async function identifyFile(file) {
  if (!file) { return; }
  showMessage("identify-message", "identifying " + file.name + "…", false);
  const form = new FormData();
  form.append("image", file, file.name);
  form.append("annotate", "true");
  try {
    const result = await callApi("POST", "v1/identify", form);
    const faces = $("faces");
    faces.replaceChildren(...result.faces.map(faceLine));
    const image = $("annotated");
    image.src = result.annotated_image;
    image.hidden = false;
    const count = result.faces.length;
    showMessage("identify-message", file.name + ": " + (count === 0 ? "no face found" :
      count + (count === 1 ? " face" : " faces")), false);
  } catch (error) {
    showMessage("identify-message", file.name + ": " + error.message, true);
  }
}

async function enrol(event) {
  event.preventDefault();
  const identity = $("enrol-identity").value.trim();
  const files = $("enrol-files").files;
  const form = new FormData();
  form.append("identity", identity);
  for (const file of files) { form.append("images", file, file.name); }
  showMessage("enrol-message", "enrolling " + identity + "…", false);
  try {
    const result = await callApi("POST", "v1/gallery/identities", form);
    showMessage("enrol-message", "enrolled " + result.identity + ": " + result.enrolled + " photo(s); gallery holds " +
      result.size + " face(s)", false);
    await refreshGallery();
  } catch (error) {
    showMessage("enrol-message", identity + ": " + error.message, true);
  }
}

async function removeIdentity(identity) {
  try {
    await callApi("DELETE", "v1/gallery/identities/" + encodeURIComponent(identity));
    await refreshGallery();
  } catch (error) {
    showMessage("gallery-summary", identity + ": " + error.message, true);
  }
}

function galleryRow(entry) {
  const row = document.createElement("tr");
  const name = document.createElement("td");
  name.textContent = entry.identity;
  const count = document.createElement("td");
  count.textContent = String(entry.images);
  const action = document.createElement("td");
  const button = document.createElement("button");
  button.textContent = "delete";
  button.addEventListener("click", () => removeIdentity(entry.identity));
  action.appendChild(button);
  row.append(name, count, action);
  return row;
}

async function refreshGallery() {
  try {
    const info = await callApi("GET", "v1/gallery");
    $("gallery-rows").replaceChildren(...info.identities.map(galleryRow));
    showMessage("gallery-summary", info.identities.length + (info.identities.length === 1 ? " identity, " : " identities, ") + info.size + " face(s); threshold " +
      info.threshold, false);
  } catch (error) {
    $("gallery-rows").replaceChildren();
    showMessage("gallery-summary", error.message, true);
  }
}

async function checkReady() {
  const status = $("status");
  try {
    const response = await fetch("readyz");
    status.dataset.state = response.ok ? "ready" : "error";
    status.textContent = response.ok ? "ready" : "loading the model…";
    if (!response.ok) { setTimeout(checkReady, 1000); }
  } catch (error) {
    status.dataset.state = "error";
    status.textContent = "server unreachable";
  }
}

function setUpDropZone() {
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    identifyFile(event.dataTransfer.files[0]);
  });
}

window.addEventListener("DOMContentLoaded", () => {
  $("api-key").value = localStorage.getItem(KEY_STORAGE) || "";
  $("api-key").addEventListener("change", () => {
    localStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
    refreshGallery();
  });
  $("identify-file").addEventListener("change", (event) => identifyFile(event.target.files[0]));
  $("enrol-form").addEventListener("submit", enrol);
  setUpDropZone();
  checkReady();
  refreshGallery();
});
