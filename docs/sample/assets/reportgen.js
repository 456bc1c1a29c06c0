// reportgen: sort and filter the unit grids of layer pages, search from file://, small accessibility
// fixes to the theme (plain DOM, no dependencies).
(function () {
  function ratio(tile) {
    var value = parseFloat(tile.dataset.ratio);
    return isNaN(value) ? -Infinity : value;
  }

  var FILTERS = {  // data-rg-filter of a checkbox in the controls above the grid: keeps the tile when checked
    dead: function (t) { return t.dataset.dead === "1"; },
    redundant: function (t) { return t.dataset.redundant === "1"; },
    weak: function (t) { return ratio(t) < 1 && ratio(t) > -Infinity; },
    flag: function (t) { return t.dataset.flag === "1"; },
  };

  // The controls are in the page's markup (layer.md.j2), so nothing moves when they come alive.
  function setUp(grid) {
    var bar = grid.previousElementSibling;
    if (grid.dataset.rgReady || !bar || !bar.matches("[data-rg-controls]")) return;
    grid.dataset.rgReady = "1";
    var tiles = Array.prototype.slice.call(grid.querySelectorAll(".rg-tile"));
    var deadShown = tiles.filter(FILTERS.dead).length;
    var sort = bar.querySelector(".rg-sort");
    var boxes = Array.prototype.slice.call(bar.querySelectorAll("input[data-rg-filter]"));
    var dead = bar.querySelector('input[data-rg-filter="dead"]');
    var countLabel = bar.querySelector(".rg-count");
    var key = "reportgen:" + location.pathname;  // the filter survives Back and reloads

    function apply() {
      var order = tiles.slice();
      if (sort.value === "ratio-desc") order.sort(function (a, b) { return ratio(b) - ratio(a); });
      if (sort.value === "ratio-asc") order.sort(function (a, b) { return ratio(a) - ratio(b); });
      var shown = 0;
      order.forEach(function (tile) {
        var hide = boxes.some(function (box) { return box.checked && !FILTERS[box.dataset.rgFilter](tile); });
        tile.hidden = hide;
        if (!hide) shown += 1;
        grid.appendChild(tile);
      });
      var text = shown + " of " + tiles.length + " units";
      var deadTotal = parseInt(grid.dataset.deadTotal || "0", 10);
      if (dead.checked && deadTotal > deadShown) {  // the dead units of the layer that are not shown
        text += " · " + deadTotal + " of the layer's " + grid.dataset.channels + " channels never fire: ";
      }
      countLabel.textContent = text;
      if (dead.checked && deadTotal > deadShown) {
        var link = document.createElement("a");
        link.href = "#dead-and-redundant-units";
        link.textContent = "the list";
        countLabel.appendChild(link);
      }
      try {
        sessionStorage.setItem(key, JSON.stringify({sort: sort.value, boxes: boxes.map(function (b) { return b.checked; })}));
      } catch (e) { /* storage may be off: the filter just does not persist */ }
    }

    try {
      var saved = JSON.parse(sessionStorage.getItem(key) || "null");
      if (saved) {
        sort.value = saved.sort;
        boxes.forEach(function (box, i) { box.checked = !!saved.boxes[i]; });
      }
    } catch (e) { /* a bad entry: start unfiltered */ }
    [sort].concat(boxes).forEach(function (input) { input.addEventListener("change", apply); });
    apply();
  }

  // Search from the file system: the theme's search needs a fetch and a web worker, which browsers
  // refuse on file://, and it hides its search box when they fail. There, the theme loads
  // search/search_index.js (a page-level index written by `reportgen build`) as a script; the box
  // is kept visible and those pages are searched here: every query word must appear in a page's
  // title or text; title matches rank first.
  function fileSearch() {
    var input = document.querySelector(".md-search__input");
    var list = document.querySelector(".md-search-result__list");
    var meta = document.querySelector(".md-search-result__meta");
    var search = document.querySelector(".md-search");
    var config = document.getElementById("__config");
    if (location.protocol !== "file:" || !input || !list || !search || !config || input.dataset.rgFileSearch) return;
    input.dataset.rgFileSearch = "1";
    search.hidden = false;
    new MutationObserver(function () { if (search.hidden) search.hidden = false; })
      .observe(search, {attributes: true, attributeFilter: ["hidden"]});
    var root = new URL(JSON.parse(config.textContent).base + "/", location.href);
    var loading = null;

    function load() {
      if (!loading) {
        loading = new Promise(function (resolve) {
          if (window.__index) return resolve(window.__index.docs);
          var script = document.createElement("script");
          script.src = new URL("search/search_index.js", root).href;
          script.onload = function () { resolve(window.__index ? window.__index.docs : []); };
          script.onerror = function () { resolve([]); };
          document.head.appendChild(script);
        });
      }
      return loading;
    }

    function show(docs, query) {
      var words = query.toLowerCase().split(/\s+/).filter(Boolean);
      var hits = [];
      if (words.length) {
        docs.forEach(function (doc) {
          var title = doc.title.toLowerCase(), text = doc.text.toLowerCase();
          var titleWords = title.split(/[\s·]+/);
          var score = 0;
          for (var i = 0; i < words.length; i++) {
            var w = words[i];
            if (titleWords.indexOf(w) >= 0) score += 10;
            else if (title.indexOf(w) >= 0) score += 5;
            else if (text.indexOf(w) >= 0) score += 1;
            else return;
          }
          hits.push([score, doc]);
        });
      }
      hits.sort(function (a, b) { return b[0] - a[0] || a[1].title.length - b[1].title.length; });
      list.innerHTML = "";
      hits.slice(0, 30).forEach(function (hit) {
        var item = document.createElement("li");
        item.className = "md-search-result__item";
        var link = document.createElement("a");
        link.className = "md-search-result__link";
        link.href = new URL(hit[1].location, root).href;
        var article = document.createElement("article");
        article.className = "md-search-result__article md-typeset";
        var heading = document.createElement("h1");
        heading.textContent = hit[1].title;
        var summary = document.createElement("p");
        summary.textContent = hit[1].text;
        article.appendChild(heading);
        article.appendChild(summary);
        link.appendChild(article);
        item.appendChild(link);
        list.appendChild(item);
      });
      if (meta) meta.textContent = words.length ? hits.length + " matching pages" : "Type to search";
    }

    function open() {  // the theme opens its results panel through this toggle
      var toggle = document.getElementById("__search");
      if (toggle && !toggle.checked) {
        toggle.checked = true;
        toggle.dispatchEvent(new Event("change"));
      }
      list.hidden = false;
      load();
    }

    input.addEventListener("focus", open);
    input.addEventListener("input", function () {
      open();
      var query = input.value;
      load().then(function (docs) { if (input.value === query) show(docs, query); });
    });
  }

  function theme() {
    var dialog = document.querySelector(".md-search[role=dialog]");
    if (dialog && !dialog.hasAttribute("aria-label")) dialog.setAttribute("aria-label", "Search");
    // Unit pages are not in the navigation: highlight the layer they belong to instead.
    if (!document.querySelector(".md-nav__link--active") && document.querySelector(".md-nav")) {
      var parent = new URL("../index.html", location.href).href;
      document.querySelectorAll(".md-sidebar--primary a.md-nav__link").forEach(function (link) {
        if (link.href !== parent) return;
        link.classList.add("md-nav__link--active");
        for (var item = link.closest(".md-nav__item--nested"); item; item = item.parentElement.closest(".md-nav__item--nested")) {
          var toggle = item.querySelector(":scope > input.md-nav__toggle");
          if (toggle) toggle.checked = true;  // open the sections that hold it
        }
      });
    }
  }

  function init() {
    theme();
    fileSearch();
    document.querySelectorAll("[data-rg-sortable]").forEach(setUp);
  }

  if (window.document$ && typeof window.document$.subscribe === "function") {
    window.document$.subscribe(init);  // Material's page-load stream (works with instant loading)
  } else {
    document.addEventListener("DOMContentLoaded", init);
  }
})();
