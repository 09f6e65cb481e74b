"""The run report: a tiny fake run (prepared phantoms, blurred/noisy candidates, real
``evaluate`` output, fake training logs), the report built from it, partial runs, bad
manifests, the ``report`` command, and the HTML rendered in headless Chromium."""

from __future__ import annotations

import html.parser
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg
from scipy import ndimage

from realdeal.cli import main
from realdeal.data.dataset import PrepareConfig, PreparedDataset, prepare_dataset
from realdeal.data.io import Volume
from realdeal.data.labels import region_mask
from realdeal.errors import InputError
from realdeal.metrics import tables as T
from realdeal.metrics.memorization import evaluate_memorization
from realdeal.metrics.noise import NoiseConfig, noise_maps, noise_residual
from realdeal.metrics.phantom import make_phantom
from realdeal.metrics.sharpness import SharpnessConfig
from realdeal.metrics.subjects import find_set
from realdeal.metrics.suite import PairedConfig, UnpairedConfig, evaluate_paired, evaluate_unpaired
from realdeal.report import paper_values as P
from realdeal.report.build import build_report
from realdeal.report.figures import Zoom, cortical_point, training_curves_png, triplanar_png
from realdeal.report.run import load_run

from synthetic import save_nifti

SHAPE = (40, 48, 40)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _blur(x, sigma):
    return np.clip(ndimage.gaussian_filter(x, sigma), -1, 1).astype(np.float32)


def _noisy(x, brain, rng, sd=0.03):
    y = _blur(x, 0.5) + np.where(brain, rng.normal(0, sd, x.shape), 0)
    return np.clip(y, -1, 1).astype(np.float32)


def _write_metrics(folder: Path, n: int, scale: float, bad_line: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"step": 10 * (i + 1), "loss": scale / (i + 1), "lr": 1e-3, "time": 100.0 + i})
        for i in range(n)
    ]
    if bad_line:
        lines.insert(1, "{not json")
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (folder / "config.json").write_text(json.dumps({"config": {"steps": 10 * n}}))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A complete small run folder as ``realdeal demo`` lays it out, with real evaluations."""
    raw = tmp_path_factory.mktemp("raw")
    for i in range(5):
        img, _, lab = make_phantom(SHAPE, noise=0.03, seed=i)
        save_nifti(raw / f"sub-{i:03d}_T1w.nii.gz", (img + 1) * 500)
        save_nifti(raw / f"sub-{i:03d}_dseg.nii.gz", lab.astype(np.int16))
    run = tmp_path_factory.mktemp("run") / "run"
    ds = prepare_dataset(
        str(raw / "*_T1w.nii.gz"),
        run / "data",
        PrepareConfig(shape=SHAPE, window=16, test_fraction=0.4),
        labels="{dir}/{id}_dseg.nii.gz",
    )
    test, train = ds.ids("test"), ds.ids("train")
    assert len(test) == 2
    rng = np.random.default_rng(0)
    for sid in test:
        x = ds.load_image(sid)
        brain = ds.load_mask(sid)
        ds.save_derived("reconstructions", sid, _blur(x.data, 1.2))
        Volume(_noisy(x.data, brain, rng), x.affine).save(
            run / "refined" / "test" / f"{sid}.nii.gz"
        )
    for j, sid in enumerate(train[:2]):
        x = ds.load_image(sid)
        brain = ds.load_mask(sid)
        Volume(_blur(x.data, 1.2), x.affine).save(run / "samples" / "raw" / f"s{j}.nii.gz")
        Volume(_noisy(x.data, brain, rng), x.affine).save(
            run / "samples" / "refined" / f"s{j}.nii.gz"
        )
    evaluate_paired(
        find_set("originals", [ds.image_path(s) for s in test]),
        [
            find_set("reconstruction", run / "data" / "reconstructions"),
            find_set("refined", run / "refined" / "test"),
        ],
        find_set("labels", [ds.label_path(s) for s in test]),
        PairedConfig(
            patch_size_2d=16,
            n_patches_2d=10,
            sharpness=SharpnessConfig(patch_size=16, n_patches=20),
            lpips=False,
            n_bootstrap=50,
        ),
        workers=1,
        out_dir=run / "eval" / "paired",
    )
    evaluate_unpaired(
        find_set("real", run / "data" / "images"),
        [find_set("sample", run / "samples" / "raw"), find_set("refined sample", run / "samples" / "refined")],
        UnpairedConfig(patch_size_2d=16, n_patches_2d=12, features="patchstats", n_bootstrap=5),
        workers=1,
        out_dir=run / "eval" / "unpaired",
    )  # fmt: skip
    # the raw samples are blurred training images: copies, which memorisation must call so
    evaluate_memorization(
        find_set("train", [ds.image_path(s) for s in train]),
        [find_set("sample", run / "samples" / "raw")],
        find_set("held-out", [ds.image_path(s) for s in test]),
        out_dir=run / "eval" / "memorization",
    )
    _write_metrics(run / "models" / "autoencoder", 8, 0.5, bad_line=True)
    _write_metrics(run / "models" / "ldm", 5, 2.0)
    manifest = {
        "format": "realdeal-run",
        "version": 1,
        "preset": "cpu-small",
        "created": "2026-11-25T16:00:00Z",
        "data": "data",
        "models": {
            "autoencoder": "models/autoencoder",
            "ldm": "models/ldm",
            "refiner": "models/refiner",
        },
        "paired": {
            "subjects": test,
            "sets": {"reconstruction": "data/reconstructions", "refined": "refined/test"},
            "eval": "eval/paired",
        },
        "unpaired": {
            "sets": {"sample": "samples/raw", "refined sample": "samples/refined"},
            "real": "data/images",
            "eval": "eval/unpaired",
        },
        "memorization": {
            "eval": "eval/memorization",
            "train": "data/images",
            "generated": {"sample": "samples/raw"},
        },
        "timings": {"cohort": 31.2, "prepare": 6.0, "train autoencoder": 300.1},
        "config": {"preset": "cpu-small", "autoencoder": {"channels": [8, 16]}},
    }
    (run / "run.json").write_text(json.dumps(manifest, indent=2))
    return run


@pytest.fixture(scope="module")
def report(run_dir) -> Path:
    return build_report(run_dir)


def _copy_run(run_dir: Path, dest: Path, **changes) -> Path:
    """A copy of the run (without its report) with top-level manifest entries changed/removed."""
    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("report"))
    m = json.loads((dest / "run.json").read_text())
    for k, v in changes.items():
        if v is None:
            m.pop(k, None)
        else:
            m[k] = v
    (dest / "run.json").write_text(json.dumps(m))
    return dest


class _Images(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs: list[str] = []
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.srcs.append(a["src"])
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]


def _images(html_text: str) -> _Images:
    p = _Images()
    p.feed(html_text)
    return p


def _status(report_html: Path) -> dict[str, str]:
    meta = json.loads((report_html.parent / "report.json").read_text())
    return {s["id"]: s["status"] for s in meta["sections"]}


# --------------------------------------------------------------------------- full report
@pytest.mark.slow
def test_report_files_and_images(report, run_dir):
    out = report.parent
    assert report == run_dir / "report" / "report.html"
    for name in ("report.html", "report.md", "report.json"):
        assert (out / name).is_file()
    text = report.read_text()
    imgs = _images(text)
    # 2 subjects, noise map, sample gallery, 2 samples, closest generated/training pair, curves
    assert len(imgs.srcs) == 2 + 1 + 1 + 2 + 1 + 1
    for src in imgs.srcs:
        assert not src.startswith(("/", "http")), src
        f = out / src
        assert f.read_bytes()[:8] == PNG_MAGIC, src
        assert mpimg.imread(f).shape[0] > 50
    # self-contained: no scripts, no network, nothing but relative PNGs and in-page anchors
    assert "<script" not in text.lower()
    assert all(u.startswith("#") or u.startswith("figures/") for u in imgs.urls), imgs.urls
    md = (out / "report.md").read_text()
    assert sorted(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)) == sorted(imgs.srcs)
    assert "```json" in md and "<details>" in text
    meta = json.loads((out / "report.json").read_text())
    assert sorted(meta["figures"]) == sorted(imgs.srcs)
    assert all(s == "ok" for s in _status(report).values()), meta["sections"]
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".report")]  # no temp folders


def test_tables_hold_our_numbers_and_the_papers(report, run_dir):
    text, md = report.read_text(), (report.parent / "report.md").read_text()
    summary = json.loads((run_dir / "eval" / "paired" / "results.json").read_text())["summary"]
    ours = {(r["set"], r["metric"], r["axis"]): r["mean"] for r in summary}
    for key in (
        ("reconstruction", "hog_brain", "dim0"),
        ("refined", "hog_cerebellum", "dim2"),
        ("refined", "kl_white_matter", ""),
        ("original", "sharpness", ""),
    ):
        assert T.fmt(ours[key]) in text and T.fmt(ours[key]) in md, key
    unpaired = json.loads((run_dir / "eval" / "unpaired" / "results.json").read_text())
    fd = next(r for r in unpaired["summary"] if r["metric"] == "fd_patchstats")
    assert T.fmt(fd["mean"]) in text
    # the paper's HCP values, with the tables they come from
    for v in ("7.602", "2.715", "0.775", "0.3941", "0.0139", "0.0063", "46.62", "0.311", "0.192"):
        assert v in text and v in md, v
    for t in ("Table 1", "Table 2", "Table 3", "suppl. Table 4", "suppl. Table 5"):
        assert t in text, t
    # LPIPS was not computed: dashes and a footnote, no crash
    assert "—¹" in text and "not computed in this run" in text
    assert text.count("patch-statistics") == 1  # the unpaired feature space is flagged once
    comp = json.loads((report.parent / "report.json").read_text())["comparison"]
    key = ("reconstruction", "hog_brain", "dim0")
    hog = next(c for c in comp if (c["set"], c["metric"], c["axis"]) == key)
    assert (hog["paper"], hog["paper_table"], hog["paper_row"]) == (7.602, "Table 1", "Recon.")
    assert hog["ours"] == pytest.approx(ours[key])


def test_report_notes_missing_inputs(report):
    text = report.read_text()
    assert "refiner: no models/refiner/metrics.jsonl" in text
    assert "1 unreadable line(s)" in text
    assert "Package versions (this environment" in text  # run.json has no versions
    assert "5 min 00 s" in text  # the autoencoder's 300.1 s


@pytest.mark.slow
def test_rebuild_replaces_report_and_cli_out(run_dir, report, tmp_path, capsys):
    assert main(["-q", "report", str(run_dir)]) == 0
    assert "report written to" in capsys.readouterr().out
    assert report.is_file()
    other = tmp_path / "elsewhere"
    assert main(["-q", "report", str(run_dir), "--out", str(other)]) == 0
    assert (other / "report.html").is_file() and (other / "figures").is_dir()
    # never replace a folder that is not a report, nor the run folder itself
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    for out in (foreign, run_dir):
        assert main(["-q", "report", str(run_dir), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("realdeal report: error:") and "\n" not in err
    assert (foreign / "keep.txt").is_file()


# --------------------------------------------------------------------------- partial runs
@pytest.mark.slow
def test_memorization_section_names_the_copies(report, run_dir):
    """The fixture's raw samples are blurred training images: both are copies, and the figure
    shows the closest one above the training subject it copies."""
    md = (report.parent / "report.md").read_text()
    section = md.split("## Memorisation")[1].split("\n## ")[0]
    assert "| sample | 2 |" in section and "2 of 2" in section
    assert "2 of 2 volumes of set 'sample' are copies of training subjects" in section
    res = json.loads((run_dir / "eval" / "memorization" / "memorization.json").read_text())
    closest = max(
        (r for r in res["records"] if r["set"] == "sample"), key=lambda r: r["similarity"]
    )
    assert f"({closest['nearest']})" in section and "figures/memorization_closest.png" in section
    # without the entry (runs made before it), the section is skipped, the rest builds
    run = _copy_run(run_dir, run_dir.parent / "no-memorization", memorization=None)
    st = _status(build_report(run))
    assert st["memorization"] == "skipped" and st["unpaired-metrics"] == "ok"


@pytest.mark.slow
def test_partial_run_without_unpaired_and_models(run_dir, tmp_path):
    run = _copy_run(run_dir, tmp_path / "run", unpaired=None, models=None, timings=None)
    out = build_report(run)
    st = _status(out)
    assert st["subjects"] == st["noise"] == st["paired-metrics"] == "ok"
    assert st["samples"] == st["unpaired-metrics"] == st["training"] == st["timings"] == "skipped"
    text = out.read_text()
    assert text.count('class="note">Skipped:') == 4
    for src in _images(text).srcs:
        assert (out.parent / src).is_file()


@pytest.mark.slow
def test_partial_run_without_evaluations_or_data(run_dir, tmp_path):
    run = _copy_run(run_dir, tmp_path / "run")
    shutil.rmtree(run / "eval")
    shutil.rmtree(run / "data" / "images")  # also the originals: dataset images unusable
    (run / "data" / "dataset.json").unlink()
    out = build_report(run)
    st = _status(out)
    assert st["subjects"] == st["noise"] == "skipped"
    assert st["paired-metrics"] == st["unpaired-metrics"] == "skipped"
    assert st["samples"] == st["training"] == st["config"] == "ok"
    text = out.read_text()
    assert "no results.json or summary.csv in eval/paired" in text


def test_minimal_manifest_builds(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"format": "realdeal-run", "version": 1}))
    out = build_report(run)
    st = _status(out)
    assert st["config"] == "ok" and sum(v == "skipped" for v in st.values()) == len(st) - 1
    assert _images(out.read_text()).srcs == []


@pytest.mark.parametrize(
    "content, problem",
    [
        (None, "no run manifest"),
        ("{not json", "unreadable run manifest"),
        (json.dumps({"format": "something-else"}), "not a realdeal run manifest"),
        (json.dumps([1, 2]), "not a realdeal run manifest"),
        (json.dumps({"format": "realdeal-run", "version": 99}), "unsupported"),
        (json.dumps({"format": "realdeal-run", "paired": [1]}), "'paired' must be a JSON object"),
        (json.dumps({"format": "realdeal-run", "data": 3}), "data must be a path"),
    ],
)
def test_bad_manifest_is_one_line_exit_2(tmp_path, capsys, content, problem):
    run = tmp_path / "run"
    run.mkdir()
    if content is not None:
        (run / "run.json").write_text(content)
    with pytest.raises(InputError, match=re.escape(problem)):
        load_run(run)
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("realdeal report: error:") and "\n" not in err and problem in err
    assert not (run / "report").exists()


def test_missing_run_folder_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "run folder not found" in capsys.readouterr().err


# --------------------------------------------------------------------------- pieces
def test_noise_maps_match_the_metric(run_dir):
    """The report's noise maps are the noise-KL metric's residuals on the shown slice."""
    ds = PreparedDataset(run_dir / "data")
    sid = ds.ids("test")[0]
    x = ds.load_image(sid).data
    lab = ds.load_label(sid).data
    cfg = NoiseConfig()
    maps = noise_maps({"original": x}, lab > 0, lab, cfg)
    # what the metric suite computes for this image (realdeal.metrics.suite.paired_subject)
    metric_mask = region_mask(lab, "white_matter") | region_mask(lab, "lateral_ventricles")
    ref = noise_residual(x, metric_mask, cfg)
    wm = region_mask(lab, "white_matter")
    np.testing.assert_array_equal(maps["original"][wm], ref[wm])
    assert (maps["original"][lab == 0] == 0).all() and maps["original"][wm].std() > 0.01


def test_paper_values_and_rows():
    assert P.paper_value("Recon.", "lpips", "dim1") == P.PaperValue(0.073, "0.073", "Table 1")
    v = P.paper_value("RealDeal", "kl_lateral_ventricles")
    assert (v.value, v.table) == (0.0702, "suppl. Table 4")
    assert P.paper_value("RealDeal", "lpips", "dim2").text == "0.030"  # as printed
    assert P.paper_value("Orig.", "density_k20", "dim2").value == 0.927
    assert P.paper_value("Orig.", "lpips", "dim0") is None
    assert P.paper_value(None, "fid", "dim0") is None
    assert P.paper_row("refined sample", "unpaired") == "RealDeal"
    assert P.paper_row("sample", "unpaired") == "Synthetic"
    assert P.paper_row("reconstruction", "paired") == "Recon."
    assert P.paper_row("original", "paired") == "Orig."
    assert P.paper_row("blurred", "paired") is None


def test_triplanar_zoom_adds_an_outlined_inset(tmp_path):
    rng = np.random.default_rng(0)
    a = -np.ones((30, 36, 28), np.float32)
    a[5:25, 6:30, 4:24] = rng.uniform(0, 1, (20, 24, 20))
    plain = mpimg.imread(triplanar_png([a], tmp_path / "p.png"))
    zoom = Zoom(cortical_point(a > -1, (15, 18, 14)), "axial", 3.0)
    zoomed = mpimg.imread(triplanar_png([a, a], tmp_path / "z.png", zoom=zoom))
    assert zoomed.shape[1] > 1.2 * plain.shape[1]  # a fourth column
    orange = (zoomed[..., 0] > 0.9) & (zoomed[..., 1] > 0.55) & (zoomed[..., 2] < 0.2)
    assert orange.sum() > 50  # the box outline and the inset frame


def test_cortical_point_sits_at_the_upper_right_edge():
    m = np.zeros((40, 40, 20), bool)
    m[10:30, 10:30, :] = True
    x, y, z = cortical_point(m, (20, 20, 10), "axial", factor=4.0)
    assert z == 10 and 24 <= x <= 29 and 24 <= y <= 29


def test_training_curves_handle_nonpositive_losses(tmp_path):
    p = training_curves_png(
        {"a": ([1, 2, 3], [1.0, 0.5, 0.2]), "b": ([1, 2], [0.0, -1.0])}, tmp_path / "c.png"
    )
    assert p.read_bytes()[:8] == PNG_MAGIC  # fmt: skip


# --------------------------------------------------------------------------- in a browser
_CHROMIUM = next(
    (
        shutil.which(n)
        for n in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
        if shutil.which(n)
    ),
    None,
)

_PROBE = """
<script>
window.addEventListener("load", function () {
  var out = [];
  document.querySelectorAll("img").forEach(function (im) {
    out.push(im.getAttribute("src") + " " + im.naturalWidth + " " + im.complete);
  });
  var pre = document.createElement("pre");
  pre.id = "probe-result";
  pre.textContent = "IMAGES\\n" + out.join("\\n") + "\\nEND";
  document.body.appendChild(pre);
});
</script>
"""


def _chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            _CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--allow-file-access-from-files",
            f"--user-data-dir={cwd / 'profile'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


@pytest.mark.skipif(
    _CHROMIUM is None, reason="no chromium binary (Debian: apt-get install -y chromium)"
)
def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    out = build_report(run_dir, tmp_path / "report")
    check = out.parent / "check.html"
    check.write_text(out.read_text().replace("</body>", _PROBE + "</body>"))
    dom = _chromium("--virtual-time-budget=10000", "--dump-dom", check.as_uri(), cwd=tmp_path)
    m = re.search(r"IMAGES\n(.*?)\nEND", html.unescape(dom.stdout), re.S)
    assert m, f"no probe output; stderr: {dom.stderr[-2000:]}"
    loaded = [line.split() for line in m.group(1).splitlines()]
    assert [src for src, *_ in loaded] == _images(out.read_text()).srcs
    assert (
        len(loaded) == 8
    )  # 2 subjects, noise map, sample gallery, 2 samples, closest pair, curves
    for src, width, complete in loaded:
        assert int(width) > 0 and complete == "true", (src, width)
    shot = tmp_path / "shot.png"
    _chromium("--window-size=1200,1600", f"--screenshot={shot}", out.as_uri(), cwd=tmp_path)
    img = mpimg.imread(shot)
    assert img.shape[0] >= 1000 and img.shape[1] >= 1000
    assert img[..., :3].std() > 0.05  # text, tables and figures, not a blank page


def test_samples_section_opens_with_the_verdict_and_shows_nearest_training_subjects(report):
    """The memorisation verdict heads the samples section, and each shown sample's figure has
    its nearest training subject beside it (named, with the similarity, in the caption)."""
    md = (report.parent / "report.md").read_text()
    section = md.split("## LDM samples")[1].split("\n## ")[0]
    first = next(line for line in section.splitlines()[1:] if line.strip())
    assert "Memorisation (set 'sample'): 2 of 2 volumes are copies" in first
    assert section.count("its nearest training subject, sub-") >= 1 and "a copy" in section


@pytest.mark.slow
def test_unpaired_section_gives_coverage_against_the_ceiling(run_dir, tmp_path):
    """With ``unpaired.ceiling`` naming a set, each other generated set's coverage k = 10 is
    given as a fraction of the ceiling's, per axis, with its worst axis."""
    run = _copy_run(run_dir, tmp_path / "ceiling")
    m = json.loads((run / "run.json").read_text())
    m["unpaired"]["ceiling"] = "refined sample"
    (run / "run.json").write_text(json.dumps(m))
    md = (build_report(run).parent / "report.md").read_text()
    section = md.split("## Unpaired metrics")[1].split("\n## ")[0]
    assert "**Coverage k = 10 ÷ the ceiling's**" in section
    res = json.loads((run / "eval" / "unpaired" / "results.json").read_text())
    cov = {
        (r["set"], str(r["axis"])): r["mean"]
        for r in res["summary"]
        if r["metric"] == "coverage_k10_patchstats"
    }
    axes = sorted({a for (_, a) in cov})
    ratios = [cov[("sample", a)] / cov[("refined sample", a)] for a in axes]
    table = section.split("**Coverage k = 10 ÷ the ceiling's**")[1]
    row = next(line for line in table.splitlines() if line.startswith("| sample |"))
    assert row.split("|")[3].strip() == f"{ratios[0]:.2f}"
    assert row.split("|")[-2].strip() == f"{min(ratios):.2f}"


@pytest.mark.slow
def test_refined_sections_name_the_refiner_that_made_them(run_dir, report, tmp_path):
    """A run refined by a student says so above its held-out subjects and its samples; a run
    that records no refine sampling says nothing of it."""
    assert "Refined by" not in report.with_suffix(".md").read_text()
    sampling = {"sampler": "distilled", "steps": 2, "eta": 0.0, "spacing": "quadratic"}
    run = _copy_run(run_dir, tmp_path / "run", refiner="models/refiner-student",
                    config={"refine_sampling": sampling})  # fmt: skip
    text = build_report(run).with_suffix(".md").read_text()
    line = "Refined by the refiner's few-step student (models/refiner-student; distilled sampler, 2 steps)."
    assert text.count(line) == 2
