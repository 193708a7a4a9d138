"""Read-only web dashboard over a run directory: `consortium dashboard RUN_DIR` (docs/dashboard.md).

Needs the `net` extra (starlette, uvicorn); the page's scripts and styles, uPlot included, ship in
`static/`, so viewing needs no network."""
