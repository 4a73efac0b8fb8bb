"""What ``gradlab bench optim`` reports: the summary at the largest size, the progress
lines, the markdown tables and the GB/s plot, written atomically."""
from __future__ import annotations

import json
import math
import os
import platform

from .cases import FILE_STEM, RESOLUTION_FACTOR, kwargs_text


def _fraction_text(impl):
    if "skipped" in impl:
        return "skipped"
    if impl["above_roofline"]:
        return f"above roofline (x{impl['rate_over_roofline']:.2f})"
    return f"{impl['roofline_fraction']:.2f}"


def _progress_line(record):
    parts = [f"{record['optimizer']:8s} {record['size']:>11,d}",
             f"roofline {record['roofline']['gbps']:6.1f} GB/s"]
    for name, impl in record["implementations"].items():
        if "skipped" not in impl:
            parts.append(f"{name} {fmt_time(impl['median_s'])} {impl['gbps']:.1f} GB/s "
                         f"({_fraction_text(impl)})")
    return " | ".join(parts)


def summary(results):
    """Per optimizer, at its largest size: gradlab against torch's fastest variant."""
    rows = []
    for name in dict.fromkeys(r["optimizer"] for r in results):
        rec = max((r for r in results if r["optimizer"] == name), key=lambda r: r["size"])
        impls = rec["implementations"]
        gl_impl = impls["gradlab"]
        ran = {k: v for k, v in impls.items() if k != "gradlab" and "skipped" not in v}
        fastest = min(ran, key=lambda k: ran[k]["median_s"]) if ran else None
        row = {"optimizer": name, "size": rec["size"], "gradlab_s": gl_impl["median_s"],
               "gradlab_fraction": gl_impl["roofline_fraction"],
               "gradlab_above_roofline": gl_impl["above_roofline"],
               "torch_fastest": fastest, "torch_s": None, "torch_fraction": None,
               "gradlab_over_torch": None}
        if fastest is not None:
            t = ran[fastest]
            row.update(torch_s=t["median_s"], torch_fraction=t["roofline_fraction"],
                       torch_above_roofline=t["above_roofline"],
                       gradlab_over_torch=gl_impl["median_s"] / t["median_s"])
        rows.append(row)
    return rows


def fmt_time(seconds):
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def _frac(value, above):
    if above:
        return "above roofline"
    return "n/a" if value is None else f"{value:.2f}"


def markdown(report):
    cfg, info = report["config"], report["machine"]
    where = info.get("gpu") or info.get("cpu") or platform.machine()
    threads = f", {info['threads']} threads" if "threads" in info else ""
    lines = [f"# gradlab bench optim: {cfg['device']} ({where}{threads}), {cfg['dtype']}, "
             f"{cfg['tensors']} tensors", "",
             f"{report['date']}; gradlab {info['gradlab']}, numpy {info['numpy']}, torch "
             f"{info['torch'] or 'not installed'}, python {info['python']}; "
             f"{info.get('gradlab_tier', info.get('cupy') and 'CuPy ' + info['cupy'])}.", "",
             f"Timing: {cfg['warmup_steps']} warm-up steps, then {cfg['repeats']} timed blocks "
             f"per implementation, interleaved; each block at least {cfg['block_time_s']:g} s "
             f"and {RESOLUTION_FACTOR} timer ticks ({info['timer']}, resolution "
             f"{info['timer_resolution_s'] * 1e9:.0f} ns), batching steps where one is "
             "shorter. Times are medians, with the interquartile range.",
             "Roofline: the best of a copy and an in-place add on buffers of the same total "
             "size, measured in each round beside the steps; the fraction is the median of "
             f"the per-round ratios; above {cfg['flag_above']} it is flagged instead.", ""]
    if report["torch_note"]:
        lines += [f"PyTorch columns: {report['torch_note']}.", ""]
    if info.get("torch_omp_wait_policy"):
        lines += [f"torch's OpenMP wait policy: {info['torch_omp_wait_policy']}; torch uses "
                  f"{info.get('torch_threads', 'its default')} threads.", ""]
    rows = report["summary"]
    if rows:
        size = max(r["size"] for r in rows)
        lines += [f"## At the largest size ({size:,} parameters)", "",
                  "| optimizer | gradlab | fraction | torch fastest | torch | fraction "
                  "| gradlab / torch |", "|---|---|---|---|---|---|---|"]
        for r in rows:
            torch_cells = ["n/a", "n/a", "n/a", "n/a"] if r["torch_fastest"] is None else [
                r["torch_fastest"], fmt_time(r["torch_s"]),
                _frac(r["torch_fraction"], r.get("torch_above_roofline")),
                f"{r['gradlab_over_torch']:.2f}"]
            lines.append(f"| {r['optimizer']} | {fmt_time(r['gradlab_s'])} | "
                         f"{_frac(r['gradlab_fraction'], r['gradlab_above_roofline'])} | "
                         + " | ".join(torch_cells) + " |")
        lines.append("")
    for name in cfg["optimizers"]:
        b = report["bytes_per_param"][name]
        lines += [f"## {name}: {b['bytes']} B per parameter", "",
                  f"Reads {', '.join(b['reads'])}; writes {', '.join(b['writes'])}. Assumes "
                  f"{b['assumes']}. Options: {kwargs_text(b['options'])}.", "",
                  "| parameters | implementation | median | IQR | steps/block | GB/s "
                  "| roofline GB/s | fraction of roofline |",
                  "|---:|---|---:|---|---:|---:|---:|---|"]
        skipped = {}
        for rec in (r for r in report["results"] if r["optimizer"] == name):
            for impl_name, impl in rec["implementations"].items():
                if "skipped" in impl:
                    skipped[impl_name] = impl["skipped"]
                    continue
                lo, hi = impl["iqr_s"]
                lines.append(f"| {rec['size']:,} | {impl_name} | {fmt_time(impl['median_s'])} "
                             f"| {fmt_time(lo)} to {fmt_time(hi)} | {impl['steps_per_block']} "
                             f"| {impl['gbps']:.2f} | {rec['roofline']['gbps']:.2f} "
                             f"| {_fraction_text(impl)} |")
        lines.append("")
        for impl_name, why in skipped.items():
            lines.append(f"- {impl_name} skipped: {why}")
        if skipped:
            lines.append("")
    return "\n".join(lines)


STYLES = {"gradlab": dict(color="#d62728", lw=2.4, marker="o"),
          "torch-forloop": dict(color="#1f77b4", lw=1.4, marker="s"),
          "torch-foreach": dict(color="#2ca02c", lw=1.4, marker="^"),
          "torch-fused": dict(color="#9467bd", lw=1.4, marker="D")}


def plot(report, path):
    """GB/s against total size per implementation, one panel per optimizer, the roofline
    dashed; an above-roofline point is ringed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    names = report["config"]["optimizers"]
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    height = 4.0 * rows + 0.5
    fig = Figure(figsize=(5.2 * cols, height))
    FigureCanvasAgg(fig)
    handles = {}
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        recs = [r for r in report["results"] if r["optimizer"] == name]
        x = [r["size"] for r in recs]
        (line,) = ax.plot(x, [r["roofline"]["gbps"] for r in recs], color="black", ls="--",
                          lw=1.6)
        handles["copy roofline (best of copy, add)"] = line
        for impl_name, style in STYLES.items():
            pts = [(r["size"], r["implementations"][impl_name]) for r in recs
                   if "skipped" not in r["implementations"].get(impl_name, {"skipped": 1})]
            if not pts:
                continue
            (line,) = ax.plot([s for s, _ in pts], [m["gbps"] for _, m in pts], ms=4, **style)
            handles[impl_name] = line
            over = [(s, m["gbps"]) for s, m in pts if m["above_roofline"]]
            if over:
                ring = ax.scatter(*zip(*over), s=110, facecolors="none", edgecolors="orange",
                                  linewidths=1.6, zorder=5)
                handles["above roofline (flagged)"] = ring
        b = report["bytes_per_param"][name]["bytes"]
        ax.set_title(f"{name} ({b} B/param)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parameters per step (total)")
        ax.set_ylabel("GB/s (counted bytes / median time)")
        ax.grid(alpha=0.3, which="both")
    cfg, info = report["config"], report["machine"]
    where = info.get("gpu") or info.get("cpu") or ""
    threads = f", {info['threads']} threads" if "threads" in info else ""
    fig.suptitle(f"gradlab bench optim: {cfg['device']} ({where}{threads}), {cfg['dtype']}, "
                 f"{cfg['tensors']} tensors, {report['date']}", fontsize=11)
    fig.legend(list(handles.values()), list(handles), loc="lower center",
               ncol=min(6, len(handles)), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.45 / height, 1, 0.97))
    fig.savefig(path, dpi=110)


def _atomic_write(path, text):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_report(report, directory):
    """Write the JSON, the markdown and (with matplotlib) the PNG; returns (paths, note)."""
    stem = os.path.join(directory, FILE_STEM)
    _atomic_write(stem + ".json", json.dumps(report, indent=1) + "\n")
    _atomic_write(stem + ".md", markdown(report) + "\n")
    paths, note = [stem + ".json", stem + ".md"], None
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        note = ("no plot: matplotlib is not installed (pip install 'gradlab[plot]' or "
                "matplotlib)")
    else:
        plot(report, stem + ".tmp.png")
        os.replace(stem + ".tmp.png", stem + ".png")
        paths.append(stem + ".png")
    return paths, note
