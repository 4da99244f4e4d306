// buildgrid's pages work without this script. It adds copy buttons, live updates of running
// builds and deploys (server-sent events), following the log's tail and loading earlier log
// lines in place.
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  var MAX_LINES = 5000;

  function selectText(element) {
    var range = document.createRange();
    range.selectNodeContents(element);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  function copy(button) {
    var target = document.getElementById(button.getAttribute("data-copy"));
    if (!target) return;
    var label = button.textContent;
    var copied = function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = label; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(target.textContent).then(copied, function () { selectText(target); });
    } else {
      selectText(target);
      try { if (document.execCommand("copy")) copied(); } catch (e) { /* the text stays selected */ }
    }
  }

  function replaceById(id, html) {
    var old = document.getElementById(id);
    if (old && html) old.outerHTML = html;
  }

  function nearBottom() {
    return window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 120;
  }

  function loadEarlier(link) {
    var log = document.getElementById("log");
    fetch(link.getAttribute("data-fragment")).then(function (response) {
      if (!response.ok) throw new Error(response.statusText);
      return response.json();
    }).then(function (data) {
      var height = document.documentElement.scrollHeight;
      log.insertAdjacentHTML("afterbegin", data.html);
      window.scrollBy(0, document.documentElement.scrollHeight - height);
      if (data.fragment) {
        link.setAttribute("data-fragment", data.fragment);
        link.setAttribute("href", data.href);
      } else {
        link.hidden = true;
      }
    }).catch(function () { window.location = link.href; });
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-copy]");
    if (button) copy(button);
    var earlier = event.target.closest("a[data-fragment]");
    if (earlier) {
      event.preventDefault();
      loadEarlier(earlier);
    }
  });

  // "Lines 4001–5000 of 5000" from the lines the page holds and the log's length.
  function updateCount(total) {
    var count = document.getElementById("log-count");
    var log = document.getElementById("log");
    if (!count || !log || typeof total !== "number" || !log.firstElementChild) return;
    var text = "Lines " + log.firstElementChild.id.slice(1) + "\u2013" +
      log.lastElementChild.id.slice(1) + " of " + total;
    if (count.hasAttribute("data-filtered")) text += ", filtered";
    count.textContent = text;
  }

  // The build's header as the stream says it is now: state, duration, steps, lines.
  function updateHeader(data) {
    replaceById("build-status", data.status);
    replaceById("build-facts", data.facts);
    replaceById("build-steps", data.steps);
    updateCount(data.total);
  }

  function followLog(log) {
    var source = new EventSource(log.getAttribute("data-events"));
    source.addEventListener("lines", function (event) {
      var follow = nearBottom();
      log.insertAdjacentHTML("beforeend", JSON.parse(event.data).html);
      var extra = log.children.length - MAX_LINES;
      if (extra > 0) {
        for (var i = 0; i < extra; i++) log.removeChild(log.firstElementChild);
        var earlier = document.getElementById("earlier");
        var first = log.firstElementChild.id.slice(1);
        if (earlier) {
          earlier.hidden = false;
          earlier.href = earlier.getAttribute("data-base") + "before=" + first;
          earlier.setAttribute("data-fragment", earlier.getAttribute("data-fragment-base") + "before=" + first);
        }
      }
      if (follow) window.scrollTo(0, document.documentElement.scrollHeight);
    });
    source.addEventListener("state", function (event) {
      updateHeader(JSON.parse(event.data));
    });
    source.addEventListener("end", function (event) {
      source.close();
      var data = JSON.parse(event.data);
      updateHeader(data);
      replaceById("build-end", data.end);
      var live = document.getElementById("live");
      if (live) live.hidden = true;
    });
  }

  function followTimeline(list) {
    var source = new EventSource(list.getAttribute("data-events"));
    source.addEventListener("build", function (event) {
      var data = JSON.parse(event.data);
      var row = document.getElementById("b" + data.id);
      if (row) {
        row.outerHTML = data.html;
      } else {
        list.insertAdjacentHTML("afterbegin", data.html);
        var empty = document.getElementById("no-builds");
        if (empty) empty.hidden = true;
      }
    });
    // A deploy changed which build runs: the rows shown get their new buttons and badges.
    source.addEventListener("row", function (event) {
      var data = JSON.parse(event.data);
      replaceById("b" + data.id, data.html);
    });
    source.addEventListener("operations", function (event) {
      replaceById("operations", JSON.parse(event.data).html);
    });
  }

  function followDeploy(log) {
    var source = new EventSource(log.getAttribute("data-events"));
    source.addEventListener("lines", function (event) {
      var follow = nearBottom();
      log.insertAdjacentHTML("beforeend", JSON.parse(event.data).html);
      var empty = document.getElementById("no-lines");
      if (empty) empty.hidden = true;
      if (follow) window.scrollTo(0, document.documentElement.scrollHeight);
    });
    source.addEventListener("end", function (event) {
      source.close();
      var data = JSON.parse(event.data);
      replaceById("deploy-status", data.status);
      replaceById("deploy-reason", data.reason);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var deployLog = document.getElementById("deploy-log");
    if (deployLog && deployLog.getAttribute("data-events")) followDeploy(deployLog);
    var log = document.getElementById("log");
    // The newest lines open at the log's end, unless the address names a line.
    if (log && log.hasAttribute("data-tail") && !window.location.hash) {
      window.scrollTo(0, document.documentElement.scrollHeight);
    }
    if (log && log.getAttribute("data-events")) followLog(log);
    var timeline = document.getElementById("timeline");
    if (timeline && timeline.getAttribute("data-events")) followTimeline(timeline);
  });
})();

// ---- Relative times: every <time data-ago> says how long ago, kept current. ----
// The text is the server's "5 min ago" at first; this re-renders it every few seconds from the
// element's datetime, on the server's clock (the page's data-rendered minus the browser's time
// when the page loaded), so cards added later by the live streams stay in step with older ones.
(function relativeTimes() {
  "use strict";
  var loaded = Date.now() / 1000;

  function age(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    if (seconds < 10) return "just now";
    if (seconds < 60) return seconds + " s ago";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min ago";
    if (seconds < 86400) return Math.floor(seconds / 3600) + " h ago";
    if (seconds < 172800) return "yesterday";
    return Math.floor(seconds / 86400) + " days ago";
  }

  function update() {
    var rendered = Number(document.body && document.body.getAttribute("data-rendered"));
    var offset = rendered ? rendered - loaded : 0;
    var now = Date.now() / 1000 + offset;
    var times = document.querySelectorAll("time[data-ago]");
    for (var i = 0; i < times.length; i++) {
      var then = Date.parse(times[i].getAttribute("datetime")) / 1000;
      if (isNaN(then)) continue;
      var text = age(now - then);
      if (times[i].textContent !== text) times[i].textContent = text;
    }
  }

  window.buildgridRelativeTimes = update;
  document.addEventListener("DOMContentLoaded", function () {
    update();
    window.setInterval(update, 5000);
  });
})();
