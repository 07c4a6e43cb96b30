// The report preview: size the email's frame to its content, so the page scrolls, not the frame.
(function () {
  "use strict";
  function fit(frame) {
    var doc = frame.contentDocument;
    if (doc && doc.documentElement) {
      frame.style.height = doc.documentElement.scrollHeight + 4 + "px";
    }
  }
  document.addEventListener("DOMContentLoaded", function () {
    var frame = document.getElementById("cc-report-html");
    if (!frame) { return; }
    frame.addEventListener("load", function () { fit(frame); });
    fit(frame);
  });
})();
