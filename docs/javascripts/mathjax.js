// MathJax configuration for pymdownx.arithmatex (generic mode). MathJax itself is served by
// the site (javascripts/mathjax/tex-chtml.js, added at build time by tools/mkdocs_mathjax.py).
// Every page is a full page load (the theme's instant navigation is off), so MathJax's
// startup typesets each page; re-typesetting on the theme's document$ as well raced with it
// and left the formulas without their glyphs once MathJax loaded from the site.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};
