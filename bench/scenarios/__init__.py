"""One module per measured item of docs/benchmarks.md; each returns a JSON-able dict."""
