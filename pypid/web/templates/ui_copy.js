document.querySelectorAll("button[data-copy]").forEach(function (button) {
  var target = document.getElementById(button.getAttribute("data-copy"));
  var status = document.getElementById(button.getAttribute("aria-describedby"));
  function say(text) { if (status) { status.textContent = text; } }
  button.hidden = false;
  button.addEventListener("click", function () {
    var line = target.textContent;
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(line).then(function () { say("Copied."); },
        function () { say("Could not copy: select the line and copy it."); });
      return;
    }
    var range = document.createRange();
    range.selectNodeContents(target);
    window.getSelection().removeAllRanges();
    window.getSelection().addRange(range);
    say(document.execCommand("copy") ? "Copied." : "Selected: press Ctrl+C to copy.");
  });
});
