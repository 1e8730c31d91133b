"""``report.html``: one self-contained, interactive page per run folder, and ``index.html`` for a batch.

The page is one file: every image is an inline base64 PNG, the script and the style sheet are inline,
nothing is fetched (a Content-Security-Policy forbids it, and allows only the page's own script, by its
hash), and no framework is used. It shows the observation, the ground truth when known, the first
solution and the spread map; one slider per explored direction over frames from -eta_max to +eta_max
(:mod:`hvp_explore.exploration.frames`) with each frame's measurement MSE drawn against tau and the
delivered steps marked, and one per walker along its path; the gallery of solutions with their step,
MSE against tau and perceptual distance; the spectra, coupling and correlation figures; the settings
and timings.

Data never runs code: the sliders' data is JSON in a ``<script type="application/json">`` element
with every ``<`` written ``\\u003c`` (so no string can close the element), read with ``JSON.parse``;
every text from a report (labels, paths, the command line) is HTML-escaped.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from hvp_explore.io.atomic import to_jsonable, write_bytes_atomic
from hvp_explore.io.images import load_image, to_uint8

__all__ = ["REPORT_HTML", "INDEX_HTML", "png_data_uri", "write_report_html", "write_batch_index", "json_for_script"]

REPORT_HTML = "report.html"
INDEX_HTML = "index.html"
#: Solutions with their image in the gallery, at most (every one is in solutions/ and report.json).
GALLERY_MAX = 60
#: Solutions shown per row of a batch's index.html.
INDEX_THUMBNAILS = 6
#: Figures of a run folder shown on its page, with their captions, when the run wrote them.
FIGURES = (("spectra.png", "Top eigenvalues of H_Y and H_X (log scale)"),
           ("coupling.png", "Coupling |C| = |U^T V| of the eigenvectors of H_Y and H_X"),
           ("correlation.png", "Cosines of the starting eigenvector and of the final direction with both eigenbases"),
           ("walks.png", "Feasible walks: each walker's path"))
# the chart of a slider, in SVG user units (it scales with the page)
_W, _H, _LEFT, _RIGHT, _TOP, _BOTTOM = 320, 130, 44, 8, 8, 22


def png_data_uri(img: torch.Tensor) -> str:
    """An image (C, H, W) in [-1, 1] (or uint8) as a ``data:image/png;base64,...`` URI of its 8-bit PNG."""
    if img.dim() == 4 and img.shape[0] == 1:
        img = img[0]
    pixels = (img.detach().cpu() if img.dtype == torch.uint8 else to_uint8(img)).permute(1, 2, 0).numpy()
    pil = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels, mode="L" if pixels.shape[2] == 1 else "RGB")
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _file_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def json_for_script(payload: Any) -> str:
    """JSON safe inside a ``<script type="application/json">`` element: ``<`` is written ``\\u003c``, so no string
    can end the element (``</script>``) or open a comment; ``JSON.parse`` reads it back unchanged."""
    text = json.dumps(to_jsonable(payload), ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _exp(x: float | None) -> str:
    """``1.98e-3``: as JavaScript's ``toExponential(2)`` writes it, so the page's first text and its script agree."""
    if x is None or not math.isfinite(x):
        return "n/a"
    mantissa, exponent = f"{x:.2e}".split("e")
    return f"{mantissa}e{int(exponent):+d}"


def _num(x: Any) -> str:
    if isinstance(x, bool) or x is None:
        return "yes" if x is True else "no" if x is False else "—"
    if isinstance(x, float):
        return f"{x:.4g}"
    return _e(x)


# --- sliders ------------------------------------------------------------------------------------------


def _readout(strip, i: int, tau: float) -> str:
    """The readout of frame ``i`` (the script writes the same text)."""
    eta, mse = float(strip.etas[i]), float(strip.measurement_mse[i])
    where = f"step {int(eta)}" if strip.kind == "walk" else f"η = {eta:+.2f}"
    verdict = f"≤ τ = {_exp(tau)}: a solution" if mse <= tau else f"> τ = {_exp(tau)}: not a solution"
    delivered = dict(strip.marks).get(i)
    if delivered is not None:
        where_from = f" (delivered {delivered})"
    else:
        where_from = " (first solution)" if strip.kind == "direction" and eta == 0 else ""
    return f"{where} · MSE {_exp(mse)} {verdict}{where_from}"


def _alt(strip, i: int) -> str:
    what = f"along {strip.label}" if strip.kind == "direction" else f"of {strip.label}'s path"
    return f"Frame {i + 1} of {strip.etas.numel()} {what}"


def _chart(strip, k: int, tau: float) -> tuple[str, list[float]]:
    """The SVG chart of a slider's MSE against tau (log scale), and each frame's x in it (for the cursor)."""
    etas = strip.etas.tolist()
    mses = [max(float(m), 1e-300) for m in strip.measurement_mse]
    lo, hi = min(min(mses), tau) / 1.5, max(max(mses), tau) * 1.5
    x0, x1 = etas[0], etas[-1] if etas[-1] > etas[0] else etas[0] + 1
    width, height = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def X(e: float) -> float:
        return round(_LEFT + (e - x0) / (x1 - x0) * width, 2)

    def Y(m: float) -> float:
        return round(_TOP + (math.log10(hi) - math.log10(max(m, lo))) / (math.log10(hi) - math.log10(lo)) * height, 2)

    xs = [X(e) for e in etas]
    points = " ".join(f"{x},{Y(m)}" for x, m in zip(xs, mses))
    dots = "".join(f'<circle cx="{x}" cy="{Y(m)}" r="2.2" class="{"ok" if m <= tau else "bad"}"/>' for x, m in zip(xs, mses))
    marks = "".join(f'<line x1="{xs[j]}" x2="{xs[j]}" y1="{_TOP}" y2="{_TOP + height}" class="mark"/>' for j, _ in strip.marks)
    xlabel = "step of the walk" if strip.kind == "walk" else "η (step along the direction)"
    left = f"{x0:g}" if strip.kind == "walk" else f"{x0:+.2f}"
    right = f"{x1:g}" if strip.kind == "walk" else f"{x1:+.2f}"
    title = f"Measurement MSE of each frame {'along ' + strip.label if strip.kind == 'direction' else 'of ' + strip.label}, against tau"
    svg = (f'<svg class="chart" viewBox="0 0 {_W} {_H}" role="img" aria-labelledby="chart-title-{k}">'
           f'<title id="chart-title-{k}">{_e(title)}</title>'
           f'<rect x="{_LEFT}" y="{_TOP}" width="{width}" height="{height}" class="plot"/>'
           f'{marks}<line x1="{_LEFT}" x2="{_LEFT + width}" y1="{Y(tau)}" y2="{Y(tau)}" class="tau"/>'
           f'<text x="{_LEFT - 4}" y="{Y(tau) + 3}" class="lab" text-anchor="end">τ</text>'
           f'<text x="{_LEFT - 4}" y="{_TOP + 8}" class="lab" text-anchor="end">{_exp(hi)}</text>'
           f'<text x="{_LEFT - 4}" y="{_TOP + height}" class="lab" text-anchor="end">{_exp(lo)}</text>'
           f'<polyline points="{points}" class="curve"/>{dots}'
           f'<line id="cursor-{k}" x1="{xs[strip.start]}" x2="{xs[strip.start]}" y1="{_TOP}" y2="{_TOP + height}" class="cursor"/>'
           f'<text x="{_LEFT}" y="{_H - 6}" class="lab">{_e(left)}</text>'
           f'<text x="{_LEFT + width}" y="{_H - 6}" class="lab" text-anchor="end">{_e(right)}</text>'
           f'<text x="{_LEFT + width / 2}" y="{_H - 6}" class="lab" text-anchor="middle">{_e(xlabel)}</text></svg>')
    return svg, xs


def _strips(frames, tau: float) -> tuple[str, list[dict]]:
    """The sliders' HTML and their data for the script."""
    parts, data = [], []
    for k, strip in enumerate(frames.strips):
        svg, xs = _chart(strip, k, tau)
        uris = [png_data_uri(img) for img in strip.images]
        F, i = int(strip.etas.numel()), strip.start
        if strip.kind == "direction":
            heading = f"Along ±{strip.label}"
            detail = f"{F} frames from η = −{strip.eta_max:.2f} to +{strip.eta_max:.2f} (η_max of this direction)"
            aria = f"Step along {strip.label}, from minus eta max to plus eta max"
        else:
            heading = f"Path of {strip.label}"
            detail = f"{F} points: its start (an e-GLASS solution), then each step"
            aria = f"Step of the path of {strip.label}"
        buttons = "".join(f'<button type="button" class="jump" data-strip="{k}" data-frame="{j}">{_e(label)}</button>'
                          for j, label in strip.marks)
        if strip.kind == "direction":
            zero = int(strip.start)
            buttons = f'<button type="button" class="jump" data-strip="{k}" data-frame="{zero}">first solution</button>' + buttons
        text = _readout(strip, i, tau)
        parts.append(
            f'<section class="strip" id="strip-{k}" aria-label="{_e(heading)}"><h3>{_e(heading)}</h3>'
            f'<p class="detail">{_e(detail)}; delivered steps marked in green.</p>'
            f'<div class="strip-body"><img class="frame big" id="frame-{k}" src="{uris[i]}" alt="{_e(_alt(strip, i))}" '
            f'width="{strip.images.shape[-1]}" height="{strip.images.shape[-2]}">'
            f'<div class="controls"><input type="range" class="slider" id="slider-{k}" data-strip="{k}" min="0" max="{F - 1}" '
            f'step="1" value="{i}" aria-label="{_e(aria)}" aria-valuetext="{_e(text)}">'
            f'<output id="readout-{k}" for="slider-{k}" class="readout {"ok" if float(strip.measurement_mse[i]) <= tau else "bad"}" '
            f'aria-live="polite">{_e(text)}</output>{svg}<div class="jumps">{buttons}</div></div></div></section>')
        data.append({"label": strip.label, "kind": strip.kind, "etas": strip.etas.tolist(), "mse": strip.measurement_mse.tolist(),
                     "frames": uris, "marks": [[j, label] for j, label in strip.marks], "start": i, "xs": xs})
    return "".join(parts), data


# --- the page -----------------------------------------------------------------------------------------

_STYLE = """
:root{--ok:#1a7f37;--bad:#c62828;--ink:#1b1f24;--mute:#57606a;--line:#d0d7de;--bg:#fff;--card:#f6f8fa}
*{box-sizing:border-box}body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);background:var(--bg)}
main{max-width:1200px;margin:0 auto;padding:16px}h1{font-size:1.35rem;margin:.2rem 0}h2{font-size:1.1rem;margin:1.6rem 0 .5rem;border-bottom:1px solid var(--line)}
h3{font-size:1rem;margin:0 0 .2rem}.detail,.note,.cmd{color:var(--mute);font-size:.9rem;margin:.1rem 0 .5rem}.cmd{font-family:ui-monospace,monospace;overflow-wrap:anywhere}
img{image-rendering:pixelated;max-width:100%;height:auto}.tiles,.gallery{display:grid;gap:12px;grid-template-columns:repeat(auto-fill,minmax(150px,1fr))}
figure{margin:0;background:var(--card);border:1px solid var(--line);border-radius:6px;padding:8px}figure img{width:100%}
figcaption{font-size:.85rem}.figs{display:grid;gap:12px;grid-template-columns:repeat(auto-fill,minmax(320px,1fr))}
.figs img{image-rendering:auto}.strips{display:grid;gap:14px;grid-template-columns:repeat(auto-fill,minmax(min(100%,520px),1fr))}
.strip{border:1px solid var(--line);border-radius:6px;padding:10px;background:var(--card)}.strip:focus-within{outline:2px solid #0969da}
.strip-body{display:flex;gap:12px;flex-wrap:wrap}.frame.big{width:192px;flex:0 0 auto}.controls{flex:1 1 240px;min-width:0}
.slider{width:100%}.readout{display:block;font-variant-numeric:tabular-nums;font-size:.9rem;margin:.2rem 0}.readout.ok{color:var(--ok)}.readout.bad{color:var(--bad)}
.chart{width:100%;height:auto;display:block}.chart .plot{fill:#fff;stroke:var(--line)}.chart .curve{fill:none;stroke:#57606a;stroke-width:1.2}
.chart .ok{fill:var(--ok)}.chart .bad{fill:var(--bad)}.chart .tau{stroke:var(--bad);stroke-dasharray:4 3}.chart .mark{stroke:var(--ok);stroke-width:2;opacity:.45}
.chart .cursor{stroke:#0969da;stroke-width:2}.chart .lab{font-size:9px;fill:var(--mute)}
.jump{font:inherit;font-size:.8rem;margin:2px;padding:2px 6px;border:1px solid var(--line);border-radius:4px;background:#fff;cursor:pointer}
meter{width:100%}.ok-t{color:var(--ok)}.bad-t{color:var(--bad)}table{border-collapse:collapse;font-size:.88rem;width:100%}
td,th{border-bottom:1px solid var(--line);padding:3px 6px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
.tables{display:grid;gap:16px;grid-template-columns:repeat(auto-fill,minmax(min(100%,360px),1fr))}.warn{color:#9a6700}
@media (max-width:600px){main{padding:8px}.frame.big{width:100%}.tiles,.gallery{grid-template-columns:repeat(2,1fr)}}
"""

_SCRIPT = """(function () {
  "use strict";
  var node = document.getElementById("hvp-data");
  var data = node ? JSON.parse(node.textContent) : {strips: [], tau: 0};
  var active = data.strips.length ? 0 : null;
  function exp(x) { return x.toExponential(2); }
  function text(s, i) {
    var eta = s.etas[i], mse = s.mse[i], where, verdict, note = null, m;
    where = s.kind === "walk" ? "step " + Math.round(eta) : "\\u03b7 = " + (eta >= 0 ? "+" : "") + eta.toFixed(2);
    verdict = mse <= data.tau ? "\\u2264 \\u03c4 = " + exp(data.tau) + ": a solution" : "> \\u03c4 = " + exp(data.tau) + ": not a solution";
    for (m = 0; m < s.marks.length; m++) { if (s.marks[m][0] === i) { note = " (delivered " + s.marks[m][1] + ")"; } }
    if (note === null && s.kind === "direction" && eta === 0) { note = " (first solution)"; }
    return where + " \\u00b7 MSE " + exp(mse) + " " + verdict + (note || "");
  }
  function show(k, i) {
    var s = data.strips[k], n = s.frames.length;
    i = Math.max(0, Math.min(n - 1, i));
    var slider = document.getElementById("slider-" + k), out = document.getElementById("readout-" + k);
    var img = document.getElementById("frame-" + k), cursor = document.getElementById("cursor-" + k), t = text(s, i);
    img.src = s.frames[i];
    img.alt = "Frame " + (i + 1) + " of " + n + (s.kind === "walk" ? " of " + s.label + "'s path" : " along " + s.label);
    slider.value = String(i);
    slider.setAttribute("aria-valuetext", t);
    out.textContent = t;
    out.className = "readout " + (s.mse[i] <= data.tau ? "ok" : "bad");
    cursor.setAttribute("x1", s.xs[i]);
    cursor.setAttribute("x2", s.xs[i]);
  }
  Array.prototype.forEach.call(document.querySelectorAll("input.slider"), function (slider) {
    var k = Number(slider.getAttribute("data-strip"));
    slider.addEventListener("input", function () { active = k; show(k, Number(slider.value)); });
    slider.addEventListener("focus", function () { active = k; });
  });
  Array.prototype.forEach.call(document.querySelectorAll("button.jump"), function (button) {
    button.addEventListener("click", function () {
      var k = Number(button.getAttribute("data-strip"));
      active = k;
      show(k, Number(button.getAttribute("data-frame")));
    });
  });
  Array.prototype.forEach.call(document.querySelectorAll("section.strip"), function (section, k) {
    section.addEventListener("pointerdown", function () { active = k; });
  });
  // arrow keys move the active slider wherever the focus is (a focused slider moves by itself)
  document.addEventListener("keydown", function (e) {
    var t = e.target, step = {ArrowLeft: -1, ArrowDown: -1, ArrowRight: 1, ArrowUp: 1}[e.key];
    if (active === null || step === undefined || e.altKey || e.ctrlKey || e.metaKey) { return; }
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable)) { return; }
    e.preventDefault();
    show(active, Number(document.getElementById("slider-" + active).value) + step);
  });
  data.strips.forEach(function (s, k) { show(k, s.start); });
}());"""


def _tile(uri: str, caption: str, alt: str) -> str:
    return f'<figure><img src="{uri}" alt="{_e(alt)}"><figcaption>{caption}</figcaption></figure>'


def _solution_card(folder: Path, entry: Mapping[str, Any], tau: float) -> str:
    mse, name = entry.get("measurement_mse"), entry.get("direction", "")
    eta, dist, status = entry.get("eta"), entry.get("perceptual_distance"), entry.get("step_status")
    ok = mse is not None and mse <= tau
    margin = f"margin {100 * (1 - mse / tau):.1f}% of τ" if ok else "over τ: not a solution"
    lines = [f"<b>{_e(name)}</b>" + (f" · η {eta:+.2f}" if isinstance(eta, (int, float)) else "")]
    lines.append(f'<span class="{"ok-t" if ok else "bad-t"}">MSE {_exp(mse)}</span> vs τ {_exp(tau)}')
    lines.append(f'<meter min="0" max="{tau!r}" value="{min(mse, tau)!r}" title="measurement MSE against tau">{_exp(mse)}</meter>')
    lines.append(_e(margin))
    if isinstance(dist, (int, float)):
        lines.append(f"perceptual distance {dist:.4f}")
    if status:
        lines.append(f"step: {_e(status)}")
    alt = f"Solution {name}: measurement MSE {_exp(mse)}" + (f", step {eta:+.2f}" if isinstance(eta, (int, float)) else "")
    return _tile(_file_uri(folder / entry["file"]), "<br>".join(lines), alt)


def _table(rows: Mapping[str, Any], caption: str) -> str:
    body = []
    for key, value in rows.items():
        if isinstance(value, (list, tuple, dict)):
            text = json.dumps(to_jsonable(value))
            text = text if len(text) <= 160 else text[:157] + "..."
            cell = _e(text)
        else:
            cell = _num(value)
        body.append(f"<tr><th scope=\"row\">{_e(key)}</th><td>{cell}</td></tr>")
    return f"<table><caption>{_e(caption)}</caption>{''.join(body)}</table>"


def _page(title: str, body: str, data: dict | None) -> bytes:
    script = _SCRIPT
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    # nothing may be fetched, and only this page's own script runs (a string in the data cannot add one)
    csp = f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    blob = f'<script type="application/json" id="hvp-data">{json_for_script(data)}</script>' if data is not None else ""
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            f'<link rel="icon" href="data:,"><title>{_e(title)}</title><style>{_STYLE}</style></head>'
            f"<body><main>{body}</main>{blob}<script>{script}</script></body></html>\n")
    return page.encode("utf-8")


def write_report_html(folder: Path | str, report: Mapping[str, Any], *, title: str, frames=None, first_file: str | None = "first_solution.png",
                      observation: torch.Tensor | None = None, ground_truth: torch.Tensor | None = None, kind: str = "explore") -> Path:
    """Write ``report.html`` into a run folder, from the files the run wrote there and its report.

    Args:
        folder: The run folder (its temporary folder while it is written): observation.png, ground_truth.png
            (when known), ``first_file``, the solutions' PNGs and the figures are read from it.
        report: The run's report.json content (its ``solutions``, ``tau``, ``settings``, ``timings``, ...).
        title: The page's heading (one line per line of text).
        frames: :class:`~hvp_explore.exploration.frames.Frames` of the sliders, or None (PULSE, or none asked).
        first_file: The first solution's PNG, or None (PULSE has none).
        observation, ground_truth: The observation's display image and the clean image (C, H, W) in [-1, 1], when the
            folder holds no observation.png / ground_truth.png of them.
        kind: ``explore``, ``render`` or ``pulse``: what the page says the run was.

    Returns:
        The path written (atomically).
    """
    folder = Path(folder)
    tau = float(report["tau"])
    solutions = list(report.get("solutions", []))
    parts = [f"<h1>{'<br>'.join(_e(line) for line in title.splitlines())}</h1>"]
    if report.get("command"):
        parts.append(f'<p class="cmd">{_e(report["command"])}</p>')
    feasible = sum(bool(s.get("feasible")) for s in solutions)
    parts.append(f'<p class="note">{len(solutions)} solution(s), {feasible} with measurement MSE ≤ τ = {_exp(tau)} '
                 "(MSE of each 8-bit PNG against the observation, on the [0, 1] scale).</p>")
    for warning in report.get("warnings", []):
        parts.append(f'<p class="warn">warning: {_e(warning)}</p>')
    # the observation and what the run made of it
    tiles = []
    for name, image, caption, alt in (("observation.png", observation, "observation", "The observation"),
                                      ("ground_truth.png", ground_truth, "ground truth", "The ground truth (clean image)")):
        if (folder / name).is_file():
            tiles.append(_tile(_file_uri(folder / name), caption, alt))
        elif image is not None:
            tiles.append(_tile(png_data_uri(image), caption, alt))
    if first_file and (folder / first_file).is_file():
        first_mse = (report.get("first_solution") or {}).get("measurement_mse", report.get("measurement_mse"))
        caption = "first solution" + (f"<br>MSE {_exp(first_mse)}" if isinstance(first_mse, (int, float)) else "")
        tiles.append(_tile(_file_uri(folder / first_file), caption, "The first solution, found by GAN inversion"))
    images = [load_image(folder / s["file"]) for s in solutions if (folder / s["file"]).is_file()]
    if len(images) >= 2:
        from hvp_explore.io.figures import spread_image

        tile, largest = spread_image(images)
        tiles.append(_tile(png_data_uri(tile), f"spread (std over the solutions)<br>max {largest:.3f}, black = identical",
                           "Spread map: per-pixel standard deviation over the solutions"))
    parts.append(f'<h2>Observation and first solution</h2><div class="tiles">{"".join(tiles)}</div>')
    data = None
    if frames is not None and frames.strips:
        strips, strip_data = _strips(frames, tau)
        data = {"tau": tau, "strips": strip_data}
        omitted = f" ({frames.omitted} more direction(s) without a slider)" if frames.omitted else ""
        parts.append("<h2>Move along the directions</h2>"
                     f'<p class="note">Drag a slider, or use the arrow keys (they move the slider used last){_e(omitted)}. '
                     "Each frame is the 8-bit image at that step; the chart draws every frame's measurement MSE against τ "
                     "(dashed), the blue line is the frame shown, green ticks are the delivered solutions.</p>"
                     f'<div class="strips">{strips}</div>')
    if solutions:
        shown = solutions[:GALLERY_MAX]
        more = f" (the first {len(shown)} of {len(solutions)}; all in solutions/ and report.json)" if len(solutions) > len(shown) else ""
        parts.append(f"<h2>Solutions{_e(more)}</h2>"
                     f'<div class="gallery">{"".join(_solution_card(folder, s, tau) for s in shown)}</div>')
    figures = [(name, caption) for name, caption in FIGURES if (folder / name).is_file()]
    if figures:
        parts.append("<h2>Geometry</h2><div class=\"figs\">" + "".join(
            _tile(_file_uri(folder / name), _e(caption), caption) for name, caption in figures) + "</div>")
    tables = []
    if isinstance(report.get("settings"), Mapping):
        tables.append(_table(report["settings"], "settings"))
    if isinstance(report.get("timings"), Mapping):
        tables.append(_table({k: v for k, v in report["timings"].items() if not isinstance(v, Mapping)}, "timings (seconds)"))
    run = {k: report[k] for k in ("generator", "metric", "mode", "method", "runs", "feasibility_rate", "version") if k in report}
    if isinstance(report.get("problem"), Mapping):
        run["problem"] = report["problem"]
    if run:
        tables.append(_table(run, "run"))
    if tables:
        parts.append(f'<h2>Settings and timings</h2><div class="tables">{"".join(tables)}</div>')
    parts.append(f'<p class="note">Written by hvp-explore ({_e(kind)}); one file, nothing fetched.</p>')
    return write_bytes_atomic(folder / REPORT_HTML, _page(title.splitlines()[0] if title else "hvp-explore", "".join(parts), data))


def write_batch_index(out_dir: Path | str, records: Sequence[Mapping[str, Any]]) -> Path:
    """Write a batch's ``index.html``: one row per image (its observation, first solution and first solutions as
    thumbnails, its numbers) linking each run's report.html.

    The thumbnails are the run folders' own PNGs, referenced by relative links rather than inlined: the index of
    ten thousand runs stays small, and it is read beside the folders it links to.

    Args:
        out_dir: The batch's output folder.
        records: The manifest records (:func:`~hvp_explore.io.batch.read_manifests`).
    """
    from urllib.parse import quote

    out_dir = Path(out_dir)
    rows = []
    for record in records:
        name = str(record.get("output") or record.get("input"))
        folder = out_dir / name
        link = quote(name)
        status = record.get("status")
        summary = record.get("summary") or {}
        thumbs = []
        report = None
        if (folder / "report.json").is_file():
            try:
                report = json.loads((folder / "report.json").read_text())
            except ValueError:
                report = None
        files = ["observation.png", "first_solution.png"] + [s["file"] for s in (report or {}).get("solutions", [])[:INDEX_THUMBNAILS]
                                                             if isinstance(s, Mapping) and isinstance(s.get("file"), str)]
        for file in files:
            if (folder / file).is_file():
                thumbs.append(f'<img src="{_e(link)}/{_e(quote(file))}" alt="{_e(name)}: {_e(file)}" width="64" height="64">')
        target = f'<a href="{_e(link)}/{REPORT_HTML}">{_e(name)}</a>' if (folder / REPORT_HTML).is_file() else _e(name)
        numbers = ", ".join(f"{_e(k)} {_num(v)}" for k, v in summary.items())
        message = f'<br><span class="warn">{_e(record.get("message"))}</span>' if record.get("message") else ""
        rows.append(f"<tr><td>{target}<br>{_e(status)}</td><td>{''.join(thumbs)}</td><td>{numbers}{message}</td></tr>")
    body = (f"<h1>hvp-explore batch: {len(records)} image(s)</h1>"
            '<p class="note">One row per image: observation, first solution, then the first solutions; the name opens the '
            "run's report.html.</p>"
            f"<table><thead><tr><th>run</th><th>images</th><th>summary</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, '
            f'initial-scale=1"><meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src \'self\' data: file:; '
            f'style-src \'unsafe-inline\'"><link rel="icon" href="data:,"><title>hvp-explore batch</title><style>{_STYLE}'
            "td img{width:64px;margin:1px}</style></head>"
            f"<body><main>{body}</main></body></html>\n")
    return write_bytes_atomic(out_dir / INDEX_HTML, page.encode("utf-8"))
