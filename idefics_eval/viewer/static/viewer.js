// The sample and diff pages: filter the page's index (every row's "wrong" flag and filter values),
// load the data files that hold the rows of the page shown (script elements: fetch() is blocked
// under file://), draw those rows only. The state lives in the address's #fragment, so that a view
// can be bookmarked: #page=2&wrong=1&answer_type=yes%2Fno.
"use strict";
var viewer = (function () {
  var PAGE_ROWS = 50;
  var name, meta, shownPage = 1, loading = {};

  function state() {
    var found = { page: 1, wrong: false, filters: {} };
    new URLSearchParams(location.hash.slice(1)).forEach(function (value, key) {
      if (key === "page") found.page = Math.max(1, parseInt(value, 10) || 1);
      else if (key === "wrong") found.wrong = value === "1";
      else found.filters[key] = value;
    });
    return found;
  }

  function setState(next) {
    var params = new URLSearchParams();
    if (next.page > 1) params.set("page", next.page);
    if (next.wrong) params.set("wrong", "1");
    Object.keys(next.filters).forEach(function (key) { params.set(key, next.filters[key]); });
    location.hash = params.toString();
  }

  function selected(current) {
    var wanted = meta.filters.map(function (f) {
      var value = current.filters[f.key];
      return value === undefined ? -1 : f.values.indexOf(value);
    });
    var rows = [];
    meta.index.forEach(function (entry, i) {
      if (current.wrong && !entry[0]) return;
      for (var j = 0; j < wanted.length; j++) if (wanted[j] !== -1 && entry[j + 1] !== wanted[j]) return;
      rows.push(i);
    });
    return rows;
  }

  function load(chunk, done) {
    if (window.VIEW_CHUNKS && window.VIEW_CHUNKS[chunk]) return done();
    if (!loading[chunk]) {
      loading[chunk] = [];
      var script = document.createElement("script");
      script.src = "data/" + name + "_" + chunk + ".js";
      script.onload = function () { loading[chunk].forEach(function (f) { f(); }); };
      document.head.appendChild(script);
    }
    loading[chunk].push(done);
  }

  function element(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function image(picture, caption) {
    var figure = element("figure", "image");
    if (picture && picture.thumb) {
      var img = element("img");
      img.src = picture.thumb;
      img.alt = picture.key;
      img.title = picture.key;
      figure.appendChild(img);
    } else {
      figure.appendChild(element("div", "no-image", picture && picture.key ? "not a file: " + picture.key : "no image"));
    }
    if (caption) figure.appendChild(element("figcaption", null, caption));
    return figure;
  }

  function field(parent, label, value) {
    if (value === undefined || value === null || value === "") return;
    var row = element("div", "field");
    row.appendChild(element("span", "label", label));
    row.appendChild(element("span", "value", typeof value === "object" ? JSON.stringify(value) : value));
    parent.appendChild(row);
  }

  function score(value) {
    return value === null || value === undefined ? "-" : Math.round(value * 1000) / 1000;
  }

  function sampleRow(record) {
    var row = element("article", "sample" + (record.score !== undefined && record.score < 1 ? " wrong" : ""));
    row.dataset.id = record.id;
    var pictures = element("div", "images");
    (record.shots || []).forEach(function (shot, i) {
      var similarity = shot.similarity === null || shot.similarity === undefined ? "" : " (" + score(shot.similarity) + ")";
      pictures.appendChild(image(shot.image, "shot " + (i + 1) + similarity + ": " + shot.answer)).classList.add("shot");
    });
    (record.images || []).forEach(function (picture) { pictures.appendChild(image(picture, "query")).classList.add("query"); });
    row.appendChild(pictures);
    var text = element("div", "text");
    field(text, "id", record.id);
    field(text, "score", score(record.score));
    field(text, "error", record.error);
    Object.keys(record.inputs || {}).forEach(function (key) { field(text, key, record.inputs[key]); });
    field(text, "prediction", record.prediction);
    if (record.raw_prediction !== undefined && record.raw_prediction !== record.prediction) field(text, "generated", record.raw_prediction);
    field(text, "references", (record.answers || []).join(" | "));
    field(text, "best candidates", (record.top || []).join(" | "));
    if (record.scores) field(text, record.scores.length === 4 ? "scores c0i0 c0i1 c1i0 c1i1" : "scores", record.scores.map(score).join("  "));
    field(text, "metadata", record.metadata);
    field(text, "tokens", record.prompt_tokens);
    if (record.dropped_shots) field(text, "dropped shots", record.dropped_shots);
    if (record.prompt) {
      var details = element("details", "prompt");
      details.appendChild(element("summary", null, "prompt"));
      details.appendChild(element("pre", null, record.prompt));
      text.appendChild(details);
    }
    row.appendChild(text);
    return row;
  }

  function diffRow(record) {
    var row = element("article", "sample diff");
    row.dataset.id = record.id;
    var pictures = element("div", "images");
    (record.images || []).forEach(function (picture) { pictures.appendChild(image(picture, "query")).classList.add("query"); });
    row.appendChild(pictures);
    var text = element("div", "text");
    field(text, "id", record.id);
    Object.keys(record.inputs || {}).forEach(function (key) { field(text, key, record.inputs[key]); });
    field(text, "references", (record.answers || []).join(" | "));
    var sides = element("div", "sides");
    ["a", "b"].forEach(function (side) {
      var column = element("div", "side side-" + side);
      column.appendChild(element("h3", null, side.toUpperCase()));
      field(column, "prediction", record[side].prediction);
      field(column, "score", score(record[side].score));
      field(column, "error", record[side].error);
      sides.appendChild(column);
    });
    text.appendChild(sides);
    row.appendChild(text);
    return row;
  }

  function controls(current, total) {
    var pages = Math.max(1, Math.ceil(total / PAGE_ROWS));
    document.getElementById("wrong").checked = current.wrong;
    document.getElementById("position").textContent =
      "page " + current.page + " of " + pages + " (" + total + " of " + meta.rows + " rows)";
    document.getElementById("previous").disabled = current.page <= 1;
    document.getElementById("next").disabled = current.page >= pages;
    meta.filters.forEach(function (f) {
      document.getElementById("filter-" + f.key).value = current.filters[f.key] || "";
    });
  }

  function render() {
    var current = state();
    var rows = selected(current);
    current.page = Math.min(current.page, Math.max(1, Math.ceil(rows.length / PAGE_ROWS)));  // past the end: the last page
    shownPage = current.page;
    controls(current, rows.length);
    var shown = rows.slice((current.page - 1) * PAGE_ROWS, current.page * PAGE_ROWS);
    var chunks = shown.map(function (i) { return Math.floor(i / meta.chunk); })
      .filter(function (c, i, all) { return all.indexOf(c) === i; });
    var waiting = chunks.length;
    var draw = function () {
      if (--waiting > 0) return;
      var container = document.getElementById("rows");
      container.replaceChildren();
      shown.forEach(function (i) {
        var record = window.VIEW_CHUNKS[Math.floor(i / meta.chunk)][i % meta.chunk];
        container.appendChild(meta.kind === "diff" ? diffRow(record) : sampleRow(record));
      });
      if (!shown.length) container.appendChild(element("p", "note", "No rows match."));
      container.dataset.ready = "1";
    };
    if (!chunks.length) { waiting = 1; draw(); }
    chunks.forEach(function (c) { load(c, draw); });
  }

  function filterControls() {
    var holder = document.getElementById("filters");
    meta.filters.forEach(function (f) {
      var label = element("label", null, f.key + " ");
      var select = element("select");
      select.id = "filter-" + f.key;
      select.appendChild(element("option", null, "all")).value = "";
      f.values.forEach(function (value) { select.appendChild(element("option", null, value || "(none)")).value = value; });
      select.onchange = function () {
        var next = state();
        if (select.value) next.filters[f.key] = select.value; else delete next.filters[f.key];
        next.page = 1;
        setState(next);
      };
      label.appendChild(select);
      holder.appendChild(label);
    });
  }

  function start(dataName) {
    name = dataName;
    meta = window.VIEW_INDEX;
    filterControls();
    if (meta.rows && !meta.scored) {  // a corpus-level metric (CIDEr) gives no query a score of its own
      document.getElementById("wrong").disabled = true;
      document.getElementById("wrong").parentNode.title = "no per-query score: this task's metric is computed over the corpus";
    }
    document.getElementById("wrong").onchange = function (event) {
      var next = state();
      next.wrong = event.target.checked;
      next.page = 1;
      setState(next);
    };
    document.getElementById("previous").onclick = function () { var next = state(); next.page = shownPage - 1; setState(next); };
    document.getElementById("next").onclick = function () { var next = state(); next.page = shownPage + 1; setState(next); };
    window.addEventListener("hashchange", render);
    render();
  }

  return { start: start, PAGE_ROWS: PAGE_ROWS };
})();
