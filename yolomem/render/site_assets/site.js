// yolomem site: looks figures up in the page's data block and draws them. Every figure is a full
// `yolomem estimate` computed when the page was built; the one rule repeated here is the verdict of
// yolomem.result.fits (the upper figure against the card minus the upper CUDA context and the margin).
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("site-data").textContent);
  const GiB = 1073741824;
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                  "#9c755f", "#bab0ac", "#86bcb6", "#d4a6c8", "#8cd17d", "#499894", "#79706e"];
  const KEYS = ["mode", "task", "model", "imgsz", "batch", "amp", "optimizer", "instances", "format", "precision", "gpu", "gpu_mem"];
  const SETTINGS = { train: ["imgsz", "amp", "optimizer", "instances"], deploy: ["imgsz", "format", "precision"] };
  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, text) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const svg = (tag, attrs, text) => {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const gib = (bytes, digits) => (bytes / GiB).toFixed(digits === undefined ? 3 : digits) + " GiB";
  const short = (x) => (Number.isInteger(x) ? String(x) : String(Math.round(x * 10) / 10));
  const cardName = (name) => name.replace(/-\d+GB$/, "");
  const cardLabel = (name, total) => `${cardName(name)} (${short(total / GiB)} GiB)`;
  const AMP_LABEL = { fp16: "AMP (fp16)", fp32: "FP32", bf16: "AMP (bf16)" };

  // yolomem.result.fits.Budget.capacity_bytes
  function capacity(total) {
    const afterContext = total - DATA.context_upper_bytes;
    return afterContext - Math.trunc(afterContext * DATA.margin);
  }

  function fill(select, values, label, keep) {
    const previous = keep !== undefined ? keep : select.value;
    select.replaceChildren(...values.map((v) => el("option", { value: String(v) }, label ? label(v) : String(v))));
    if (values.map(String).includes(String(previous))) select.value = String(previous);
    return select.value;
  }
  const unique = (values) => [...new Set(values)];

  const mode = () => $("mode").value;
  const allSeries = () => (mode() === "deploy" ? DATA.deploy_series : DATA.series);
  const batchesOf = () => (mode() === "deploy" ? DATA.deploy_batches : DATA.batches);

  function matching(keys) {
    return allSeries().filter((s) => keys.every(([k, v]) => String(s[k]) === String(v)));
  }

  function setupControls(wanted) {
    const modes = DATA.deploy_series.length ? ["train", "deploy"] : ["train"];
    fill($("mode"), modes, (m) => (m === "train" ? "training" : "deployment"), wanted.mode || "train");
    refreshTasks(wanted);
    const cards = DATA.cards.map((c) => c[0]);
    fill($("gpu"), [...cards, "custom"], (name) => (name === "custom" ? "custom size…" : cardLabel(name, cardTotal(name))),
         wanted.gpu_mem ? "custom" : wanted.gpu || "RTX-3060-12GB");
    if (wanted.gpu_mem) $("gpu_mem").value = wanted.gpu_mem;
    $("margin").textContent = `${Math.round(DATA.margin * 100)}%`;
  }

  function refreshTasks(wanted) {
    document.querySelectorAll(".train-only").forEach((node) => { node.hidden = mode() !== "train"; });
    document.querySelectorAll(".deploy-only").forEach((node) => { node.hidden = mode() !== "deploy"; });
    fill($("task"), ["all", ...unique(allSeries().map((s) => s.task))], null, wanted.task);
    refreshModels(wanted);
  }

  function refreshModels(wanted) {
    const task = $("task").value;
    const models = unique(allSeries().filter((s) => task === "all" || s.task === task).map((s) => s.model));
    fill($("model"), models, (m) => m.replace(/\.yaml$/, ""), wanted.model);
    refreshSettings(wanted);
  }

  function refreshSettings(wanted) {
    let chosen = [["model", $("model").value]];
    for (const key of SETTINGS[mode()]) {
      const values = unique(matching(chosen).map((s) => s[key]));
      const label = key === "amp" ? (v) => AMP_LABEL[v] || v : null;
      chosen = [...chosen, [key, fill($(key), values, label, wanted[key])]];
    }
    fill($("batch"), batchesOf(), null, wanted.batch || $("batch").value || 16);
  }

  function cardTotal(name) {
    const card = DATA.cards.find((c) => c[0] === name);
    return card ? card[1] : null;
  }

  // Ultralytics' check_amp turns AMP off on some cards (DATA.cards' third field): an AMP run trains in FP32
  // there, so the page shows that card the FP32 series, as `yolomem estimate gpu=` does
  function ampOffOn(name, s) {
    const card = DATA.cards.find((c) => c[0] === name);
    return Boolean(card && card[2] && s && s.amp === "fp16" && s.framework === "ultralytics");
  }

  function fp32Twin(s) {
    return DATA.series.find((o) => o.model === s.model && o.imgsz === s.imgsz && o.optimizer === s.optimizer &&
                                   o.instances === s.instances && o.amp === "fp32");
  }

  function current() {
    const wanted = Object.fromEntries(KEYS.map((k) => [k, $(k).value]));
    const asked = matching([["model", wanted.model], ...SETTINGS[wanted.mode].map((k) => [k, wanted[k]])])[0];
    const custom = wanted.gpu === "custom";
    const total = custom ? Math.trunc(parseFloat(wanted.gpu_mem) * GiB) : cardTotal(wanted.gpu);
    const ampOff = wanted.mode === "train" && !custom && ampOffOn(wanted.gpu, asked);
    const series = ampOff && fp32Twin(asked) ? fp32Twin(asked) : asked;
    return { wanted, asked, series, ampOff, custom, total,
             index: series ? series.points.batch.indexOf(parseInt(wanted.batch, 10)) : -1 };
  }

  function writeAddress(state) {
    const words = new URLSearchParams();
    const own = ["mode", "task", "model", "batch", "gpu", "gpu_mem", ...SETTINGS[state.wanted.mode]];
    for (const key of own) {
      if (key === "gpu_mem" && !state.custom) continue;
      if (key === "task" && state.wanted.task === "all") continue;
      if (key === "mode" && state.wanted.mode === "train") continue;
      words.set(key, state.wanted[key]);
    }
    try { history.replaceState(null, "", "#" + words.toString()); } catch (error) { /* file:// in some browsers */ }
  }

  function render() {
    const state = current();
    const out = $("result");
    out.replaceChildren();
    $("custom-label").hidden = !state.custom;
    writeAddress(state);
    if (!state.series || state.index < 0) {
      out.append(el("p", { class: "note" }, "No figures for these settings in this page."));
      return;
    }
    (state.wanted.mode === "deploy" ? renderDeploy : renderTraining)(state, out);
    if (state.series.notes.length) {
      const notes = el("ul", { class: "note" });
      state.series.notes.forEach((n) => notes.append(el("li", {}, n)));
      out.append(notes);
    }
  }

  function figureTable() {
    const table = el("table", { class: "figures" });
    table.row = (label, value, key, attrs) => {
      const tr = el("tr");
      tr.append(el("td", {}, label));
      const td = el("td", Object.assign({ class: "num", "data-key": key }, attrs || {}), value);
      tr.append(td);
      table.append(tr);
      return td;
    };
    table.bytes = (label, key, bytes) => table.row(label, gib(bytes), key, { "data-bytes": bytes });
    return table;
  }

  function cardWords(state) {
    return state.custom ? `gpu_mem=${state.wanted.gpu_mem}` : `${state.wanted.mode === "deploy" ? "device" : "gpu"}=${state.wanted.gpu}`;
  }

  function layout(out, figures, partsTitle, parts, chartBox, largestTable) {
    const grid = el("div", { class: "grid" });
    const left = el("div"), right = el("div");
    grid.append(left, right);
    left.append(figures, el("h2", {}, partsTitle), parts);
    right.append(el("h2", {}, "Memory against batch"), chartBox);
    out.append(grid, el("h2", {}, "Largest batch of this page that fits each card"), largestTable);
  }

  function renderTraining(state, out) {
    const s = state.series, i = state.index;
    const at = (name) => s.points[name][i];
    const figures = figureTable();
    out.append(el("h2", {}, `${s.shown} (${s.task}) · batch ${at("batch")} · imgsz ${s.imgsz} · ${s.amp} · ${s.optimizer_used} · ` +
                  `${(s.params / 1e6).toFixed(2)} M params`));
    const gpuMem = figures.row(`Ultralytics GPU_mem column (${s.gpu_mem_unit})`, "", "gpu_mem");
    gpuMem.append(el("span", { class: "big", "data-key": "gpu_mem_printed" }, at("gpu_mem_printed")),
                  document.createTextNode(" expected, "),
                  el("span", { "data-key": "gpu_mem_upper_printed" }, at("gpu_mem_upper_printed")),
                  document.createTextNode(" upper"));
    figures.bytes("nvidia-smi total (reserved + CUDA context)", "device_total_bytes", at("device_total_bytes"));
    figures.bytes("nvidia-smi total, upper (9 runs in 10 stay under)", "device_total_upper_bytes", at("device_total_upper_bytes"));
    figures.bytes("peak reserved", "peak_reserved_bytes", at("peak_reserved_bytes"));
    figures.bytes("peak reserved, upper", "peak_reserved_upper_bytes", at("peak_reserved_upper_bytes"));
    if (state.total) {
      const cap = capacity(state.total);
      const fits = at("peak_reserved_upper_bytes") <= cap;
      const name = state.custom ? "custom" : state.wanted.gpu;
      const td = figures.row(`on ${cardLabel(name, state.total)}, upper figure`, "", "verdict", { "data-fits": String(fits) });
      td.append(el("span", { class: fits ? "fits" : "nofit" }, fits ? "fits" : "does not fit"),
                document.createTextNode(` (${gib(cap, 2)} after the CUDA context and a ${Math.round(DATA.margin * 100)}% margin)`));
    }
    if (state.ampOff) {
      const why = el("p", { class: "note" });
      why.append(el("span", { "data-key": "amp_off" }, `Ultralytics' check_amp turns AMP off on ${state.wanted.gpu}: ` +
        (s !== state.asked ? "the run trains in FP32, and these are the FP32 figures."
          : "the run trains in FP32, which this page has no figures for: these AMP figures are too low.")));
      out.append(why);
    }
    const chartBox = chart(s.points.batch, s.points.peak_reserved_upper_bytes, s.points.peak_reserved_bytes, state, capacity,
      "Solid: reserved memory, upper figure; dotted: expected. Dashed lines: what each card gives a run " +
      "(its memory minus the CUDA context and the margin).");
    const upperOn = (name) => {  // null: the card trains in FP32, which this page has no figures for
      if (!ampOffOn(name, state.asked)) return state.asked.points.peak_reserved_upper_bytes;
      const twin = fp32Twin(state.asked);
      return twin ? twin.points.peak_reserved_upper_bytes : null;
    };
    layout(out, figures, "Where it goes (at the peak)", breakdown(s.points.breakdown, i, DATA.part_labels), chartBox,
           largest(s.points.batch, upperOn, state, capacity));
    out.append(el("h2", {}, "Train it"), el("pre", { "data-key": "train_command" }, state.asked.train_command + at("batch")));
    const words = [`yolomem estimate ${s.model}`, `imgsz=${s.imgsz}`, `batch=${at("batch")}`];
    if (state.asked.amp !== "fp16") words.push(`amp=${state.asked.amp}`);
    if (s.optimizer !== "auto") words.push(`optimizer=${s.optimizer}`);
    if (s.instances !== 8) words.push(`instances=${s.instances}`);
    words.push(...DATA.estimate_words, cardWords(state));
    out.append(el("h2", {}, "The same figures from the command line"), el("pre", { "data-key": "cli" }, words.join(" ")));
  }

  function renderDeploy(state, out) {
    const s = state.series, i = state.index;
    const at = (name) => s.points[name][i];
    const figures = figureTable();
    out.append(el("h2", {}, `${s.shown} (${s.task}) · ${s.format} ${s.precision} · batch ${at("batch")} · imgsz ${s.imgsz} · ` +
                  `${(s.params / 1e6).toFixed(2)} M params`));
    const device = figures.bytes("on the device while running", "runtime_bytes", at("runtime_bytes"));
    device.classList.add("big");
    figures.row("range (every fusion happens .. none does)", `${gib(at("runtime_low_bytes"))} – ${gib(at("runtime_bytes"))}`,
                "runtime_range");
    if (at("build_peak_bytes") !== null) figures.bytes("engine build (yolo export) needs at least", "build_peak_bytes", at("build_peak_bytes"));
    if (at("calibration_peak_bytes") !== null) figures.bytes("INT8 calibration peak", "calibration_peak_bytes", at("calibration_peak_bytes"));
    figures.bytes("host RAM of the process", "host_bytes", at("host_bytes"));
    if (state.total) {  // yolomem.deployment.estimate.Deployment.fits (a discrete card)
      const fits = at("runtime_bytes") <= state.total;
      const name = state.custom ? "custom" : state.wanted.gpu;
      const td = figures.row(`on ${cardLabel(name, state.total)}`, "", "verdict", { "data-fits": String(fits) });
      td.append(el("span", { class: fits ? "fits" : "nofit" }, fits ? "fits" : "does not fit"));
    }
    const chartBox = chart(s.points.batch, s.points.runtime_bytes, s.points.runtime_low_bytes, state, (total) => total,
      "Solid: on the device while running; dotted: the low end. Dashed lines: each card's memory.");
    layout(out, figures, "On the device", breakdown(s.points.terms, i, s.labels), chartBox,
           largest(s.points.batch, () => s.points.runtime_bytes, state, (total) => total));
    const words = [`yolomem deploy ${s.model}`, `format=${s.format}`, `precision=${s.precision}`, `batch=${at("batch")}`,
                   `imgsz=${s.imgsz}`, cardWords(state)];
    out.append(el("h2", {}, "The same figures from the command line"), el("pre", { "data-key": "cli" }, words.join(" ")));
    out.append(el("p", { class: "note" }, "Jetson modules share memory with the OS: yolomem deploy device=Jetson-Orin-Nano-8GB " +
                  "counts the host RAM too."));
  }

  function breakdown(columns, i, labels) {
    const parts = Object.entries(columns).map(([k, v]) => [k, v[i]]).filter(([, v]) => v > 0);
    const total = parts.reduce((a, [, v]) => a + v, 0) || 1;
    const width = 480;
    const bar = svg("svg", { width: width, height: 26, viewBox: `0 0 ${width} 26`, role: "img", "aria-label": "breakdown" });
    const legend = el("div", { class: "legend" });
    let x = 0;
    parts.forEach(([key, bytes], n) => {
      const w = (bytes / total) * width;
      const color = COLORS[n % COLORS.length];
      bar.append(svg("rect", { x: x, y: 0, width: Math.max(w, 0.5), height: 26, fill: color }, undefined));
      x += w;
      const item = el("span", { "data-part": key, "data-bytes": bytes });
      const swatch = svg("svg", { width: 11, height: 11 });
      swatch.append(svg("rect", { width: 11, height: 11, fill: color }));
      item.append(swatch, document.createTextNode(` ${labels[key] || key} ${gib(bytes)}`));
      legend.append(item);
    });
    const box = el("div");
    box.append(bar, legend);
    return box;
  }

  function chart(xs, upper, expected, state, limitOf, caption) {
    const W = 480, H = 300, L = 48, R = 110, T = 10, B = 34;
    const names = unique([...DATA.chart_cards, ...(state.custom ? [] : [state.wanted.gpu])]);
    const lines = names.map((n) => [n, cardTotal(n)]).filter(([, t]) => t);
    if (state.custom && state.total) lines.push(["custom", state.total]);
    const top = Math.max(...upper, ...lines.map(([, t]) => Math.min(limitOf(t), Math.max(...upper) * 1.6))) * 1.05;
    const X = (b) => L + ((b - xs[0]) / Math.max(xs[xs.length - 1] - xs[0], 1)) * (W - L - R);
    const Y = (bytes) => T + (1 - bytes / top) * (H - T - B);
    const box = svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "memory against batch" });
    const step = niceStep(top / GiB / 5);
    for (let v = 0; v <= top / GiB; v += step) {
      box.append(svg("line", { x1: L, x2: W - R, y1: Y(v * GiB), y2: Y(v * GiB), stroke: "#e6e9ec" }));
      box.append(svg("text", { x: L - 6, y: Y(v * GiB) + 4, "text-anchor": "end" }, String(+v.toFixed(3))));
    }
    box.append(svg("text", { x: 4, y: T + 8 }, "GiB"));
    let lastX = -Infinity;  // a batch label only where it does not run into the previous one
    xs.forEach((b) => {
      if (X(b) - lastX < 22) return;
      lastX = X(b);
      box.append(svg("text", { x: X(b), y: H - B + 16, "text-anchor": "middle" }, String(b)));
    });
    box.append(svg("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, "batch"));
    let lastY = Infinity;  // card labels from the bottom up, none on top of another
    lines.sort((a, b) => a[1] - b[1]).forEach(([name, total]) => {
      const cap = limitOf(total);
      if (cap > top) return;
      const selected = state.custom ? name === "custom" : name === state.wanted.gpu;
      box.append(svg("line", { x1: L, x2: W - R, y1: Y(cap), y2: Y(cap), stroke: selected ? "#b42318" : "#8a96a3",
                               "stroke-dasharray": "5 4", "stroke-width": selected ? 1.6 : 1 }));
      if (lastY - Y(cap) >= 12) {
        box.append(svg("text", { x: W - R + 4, y: Y(cap) + 4 }, cardName(name)));
        lastY = Y(cap);
      }
    });
    const path = (values, color, dash) => svg("polyline", {
      points: xs.map((b, k) => `${X(b).toFixed(1)},${Y(values[k]).toFixed(1)}`).join(" "),
      fill: "none", stroke: color, "stroke-width": 2, "stroke-dasharray": dash || "none" });
    box.append(path(expected, "#4e79a7", "3 3"), path(upper, "#4e79a7"));
    xs.forEach((b, k) => box.append(svg("circle", { cx: X(b), cy: Y(upper[k]), r: k === state.index ? 5 : 2.5,
                                                     fill: k === state.index ? "#e15759" : "#4e79a7" })));
    const wrap = el("div");
    wrap.append(box, el("p", { class: "note" }, caption));
    return wrap;
  }

  function niceStep(rough) {
    const power = Math.pow(10, Math.floor(Math.log10(rough)));
    return [1, 2, 5, 10].map((m) => m * power).find((candidate) => candidate >= rough);
  }

  function largest(xs, upperOn, state, limitOf) {
    const table = el("table");
    const head = el("tr");
    ["card", "memory", "largest batch"].forEach((h, k) => head.append(el("th", k ? { class: "num" } : {}, h)));
    table.append(head);
    const cards = DATA.cards.slice();
    if (state.custom && state.total) cards.push(["custom", state.total]);
    cards.forEach(([name, total]) => {
      const cap = limitOf(total), upper = upperOn(name);
      let best = null, k = 0;
      while (upper && k < xs.length && upper[k] <= cap) best = xs[k++];
      const text = !upper ? "trains in FP32 here (check_amp); build the page with amp=true,false for its figures"
        : best === null ? `none (batch ${xs[0]} needs ${gib(upper[0], 2)})`
        : k === xs.length ? `${best} or more` : `${best} (${xs[k]} does not fit)`;
      const selected = state.custom ? name === "custom" : name === state.wanted.gpu;
      const tr = el("tr", selected ? { class: "selected" } : {});
      tr.append(el("td", {}, name), el("td", { class: "num" }, gib(total, 1)),
                el("td", { class: "num", "data-card": name, "data-max-batch": best === null ? "" : best }, text));
      table.append(tr);
    });
    return table;
  }

  function start() {
    const wanted = Object.fromEntries(new URLSearchParams(location.hash.slice(1)));
    setupControls(wanted);
    $("mode").addEventListener("change", () => { refreshTasks({}); render(); });
    $("task").addEventListener("change", () => { refreshModels({}); render(); });
    $("model").addEventListener("change", () => { refreshSettings({}); render(); });
    for (const key of ["imgsz", "batch", "amp", "optimizer", "instances", "format", "precision", "gpu", "gpu_mem"]) {
      $(key).addEventListener("change", render);
      $(key).addEventListener("input", render);
    }
    render();
    // for benchmarks/bench_site.py: milliseconds from navigation to the first figures on screen
    document.documentElement.setAttribute("data-first-render-ms", performance.now().toFixed(0));
  }
  start();
})();
