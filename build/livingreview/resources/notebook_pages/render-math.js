// Typesets the math of the notebook pages with the KaTeX copied next to this file.
// Sphinx loads this file where it would load MathJax (config: mathjax_path).
(function () {
  if (window.livingreviewMath) return; // Sphinx may include the loader twice
  window.livingreviewMath = true;
  var here = document.currentScript.src.replace(/[^/]*$/, "");
  var css = document.createElement("link");
  css.rel = "stylesheet";
  css.href = here + "katex.min.css";
  document.head.appendChild(css);

  function load(src, then) {
    var script = document.createElement("script");
    script.src = here + src;
    script.onload = then;
    document.head.appendChild(script);
  }

  function render() {
    renderMathInElement(document.body, {
      delimiters: [
        { left: "\\[", right: "\\]", display: true },
        { left: "\\(", right: "\\)", display: false },
        { left: "$$", right: "$$", display: true },
        { left: "$", right: "$", display: false },
      ],
      ignoredClasses: ["highlight", "output"],
      throwOnError: false,
    });
    document.documentElement.setAttribute("data-math", "rendered");
  }

  load("katex.min.js", function () {
    load("contrib/auto-render.js", function () {
      if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", render);
      else render();
    });
  });
})();
