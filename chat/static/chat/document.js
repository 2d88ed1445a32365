// The document page: bring the cited passage into view (the #passage fragment alone lands it at
// the top edge, under the bar).
(function () {
  "use strict";
  var mark = document.getElementById("passage");
  if (mark) mark.scrollIntoView({block: "center"});
})();
