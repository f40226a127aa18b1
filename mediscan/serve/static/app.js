"use strict";
// mediscan web page: upload an image, show the prediction and its Grad-CAM overlay.
// Talks only to this server (/api/*); no external requests.

const $ = (id) => document.getElementById(id);

function headers() {
  const token = $("token").value.trim();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function apiError(response) {
  if (response.status === 401) {
    $("token-box").hidden = false;
    return "This server needs an access token: enter it above and try again.";
  }
  try {
    return (await response.json()).detail || response.statusText;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

function percent(p) {
  return `${(100 * p).toFixed(1)}%`;
}

function showBars(probabilities, predicted) {
  const list = $("bars");
  list.replaceChildren();
  for (const [name, p] of Object.entries(probabilities)) {
    const item = document.createElement("li");
    const label = document.createElement("span");
    label.className = "bar-label";
    label.textContent = `${name} ${percent(p)}`;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("aria-label", `Probability of ${name}`);
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    bar.setAttribute("aria-valuenow", (100 * p).toFixed(1));
    const fill = document.createElement("span");
    fill.className = name === predicted ? "fill top" : "fill";
    fill.style.width = percent(p);
    bar.append(fill);
    item.append(label, bar);
    list.append(item);
  }
}

function showResult(result) {
  $("predicted-class").textContent = result.class;
  $("probability").textContent = `(${percent(result.probability)})`;
  $("uncertain").hidden = !result.uncertain;
  $("outside").hidden = result.outside !== true;
  showBars(result.probabilities, result.class);
  $("image").src = `data:image/png;base64,${result.image_png}`;
  $("overlay").src = `data:image/png;base64,${result.overlay_png}`;
  setOpacity();
  $("result").hidden = false;
}

function setOpacity() {
  $("overlay").style.opacity = String($("opacity").value / 100);
}

async function analyse(file) {
  if (!file) return;
  setStatus(`Analysing ${file.name}…`);
  const form = new FormData();
  form.append("file", file);
  try {
    const response = await fetch("/api/explain", { method: "POST", body: form, headers: headers() });
    if (!response.ok) {
      setStatus(await apiError(response), true);
      return;
    }
    showResult(await response.json());
    setStatus(`Done: ${file.name}`);
  } catch (error) {
    setStatus(`The server could not be reached (${error.message}).`, true);
  }
}

function addCardEntry(term, value) {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  dd.textContent = value;
  $("card").append(dt, dd);
}

function formatMetrics(metrics) {
  if (!metrics) return "not evaluated";
  return Object.entries(metrics)
    .filter(([, m]) => m && typeof m === "object" && m.value !== null && m.value !== undefined)
    .map(([name, m]) => {
      const ci = m.ci ? ` (95% CI ${percent(m.ci[0])}–${percent(m.ci[1])})` : "";
      return `${name.replaceAll("_", " ")} ${percent(m.value)}${ci}`;
    })
    .join("; ") + (metrics.test_images ? ` on ${metrics.test_images} test images` : "");
}

async function loadModel() {
  const response = await fetch("/api/model", { headers: headers() });
  if (!response.ok) {
    setStatus(await apiError(response), true);
    return;
  }
  const model = await response.json();
  $("model-name").textContent = `· ${model.name}`;
  $("card").replaceChildren();
  addCardEntry("Intended use", model.model_card.intended_use);
  addCardEntry("Warning", model.model_card.warning);
  addCardEntry("Classes", model.classes.join(", "));
  addCardEntry("Architecture", `${model.architecture}, ${model.input_size} px input`);
  addCardEntry("Test metrics", formatMetrics(model.metrics));
  addCardEntry("Out-of-distribution check", model.ood
    ? `feature distance above ${model.ood.threshold.toFixed(2)} (the ${Math.round(100 * model.ood.quantile)}th ` +
      "percentile of validation images) is flagged as outside what this model knows"
    : "none: this model was trained before out-of-distribution statistics were recorded");
  addCardEntry("Limitations", model.model_card.limitations.join(" "));
  addCardEntry("Created", model.created || "unknown");
}

function setUpDrop() {
  const drop = $("drop");
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => {
      event.preventDefault();
      drop.classList.add("active");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("active"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    analyse(event.dataTransfer.files[0]);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setUpDrop();
  $("file").addEventListener("change", (event) => analyse(event.target.files[0]));
  $("opacity").addEventListener("input", setOpacity);
  $("token").addEventListener("change", loadModel);
  loadModel();
});
