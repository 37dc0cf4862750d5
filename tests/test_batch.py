"""`medgen generate --manifest`: every row's files planned before any model loads (collisions between rows,
earlier output), complete rows skipped on a rerun, failing rows recorded in results.jsonl, and the rows
shared out over processes under torchrun (Gloo on CPU)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch.multiprocessing as mp
from test_pipeline import make_tiny_pipeline, single_thread  # noqa: F401 (autouse fixture)

from medgen.cli.main import main
from medgen.pipelines.text_to_volume import ReportToVolumePipeline

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:.*longer than max_length:UserWarning")


@pytest.fixture(scope="module")
def model_dir(tiny_bert_dir, tmp_path_factory):
    """Tiny text-only pipeline whose defaults are cheap: 8^3 voxels, 2 steps, no guidance branches."""
    pipe = make_tiny_pipeline(tiny_bert_dir)
    pipe.config.update(shape=[8, 8, 8], num_inference_steps=2, guidance={"text": 1.0, "density": 1.0})
    return pipe.save_pretrained(tmp_path_factory.mktemp("batch") / "model")


@pytest.fixture(scope="module")
def layout_model_dir(tiny_layout_model_dir, tiny_bert_dir, tmp_path_factory):
    """Tiny layout-grounded pipeline with a report reader: each row also writes x_labels.nii.gz, x_findings.json."""
    from medgen.reader import ReportReader

    pipe = ReportToVolumePipeline.from_pretrained(tiny_layout_model_dir)
    pipe.reader = ReportReader.from_text_encoder(tiny_bert_dir, window=32).eval()
    pipe.config.update(num_inference_steps=1)
    return pipe.save_pretrained(tmp_path_factory.mktemp("batch_layout") / "model")


def run(argv, capsys) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def write_manifest(path: Path, ids, report="A {i}5 mm solid nodule in the right upper lobe.") -> Path:
    path.write_text("".join(json.dumps({"id": row_id, "report": report.format(i=i)}) + "\n"
                            for i, row_id in enumerate(ids)), encoding="utf-8")
    return path


def results(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "results.jsonl").read_text(encoding="utf-8").splitlines()]


def stamps(out_dir: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every output file: a file written again gets a new inode (renamed into place)."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out_dir.iterdir()
            if p.is_file() and p.name != "results.jsonl"}


def no_model_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(ReportToVolumePipeline, "from_pretrained", classmethod(refuse))


# ----------------------------------------------------------------------------------- planning, before the model


@pytest.mark.parametrize("overwrite", [True, False])
def test_rows_writing_the_same_file_are_refused_before_the_model_loads(layout_model_dir, tmp_path, capsys,
                                                                       overwrite):
    """Ids `a` and `a_labels`: row a's label map is row a_labels' CT. Was: exit 0 with a's label map replaced
    (--overwrite), or a failure after row a was written."""
    manifest = write_manifest(tmp_path / "m.jsonl", ["a", "a_labels"])
    argv = ["generate", "--manifest", manifest, "--out-dir", tmp_path / "out", "--model", layout_model_dir]
    code, _, err = run(argv + ["--overwrite"] * overwrite, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("medgen: error: ") and "'a'" in err and "'a_labels'" in err and "a_labels.nii.gz" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["findings file is a sidecar", "DICOM folder is a CT", "DICOM folder is the log"])
def test_other_collisions_and_reserved_names_are_refused(model_dir, layout_model_dir, tmp_path, capsys, monkeypatch,
                                                         case):
    ids, model, extra = {
        "findings file is a sidecar": (["a", "a_findings"], layout_model_dir, []),  # a_findings.json twice
        "DICOM folder is a CT": (["a", "a.nii.gz"], model_dir, ["--dicom-out", tmp_path / "out"]),
        "DICOM folder is the log": (["results.jsonl"], model_dir, ["--dicom-out", tmp_path / "out"]),
    }[case]
    no_model_loading(monkeypatch)
    manifest = write_manifest(tmp_path / "m.jsonl", ids)
    code, _, err = run(["generate", "--manifest", manifest, "--out-dir", tmp_path / "out", "--model", model, *extra],
                       capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and all(repr(i) in err for i in ids), err
    assert not (tmp_path / "out").exists()


def test_an_output_folder_that_cannot_be_made_is_refused_before_the_model_loads(model_dir, tmp_path, capsys,
                                                                                monkeypatch):
    no_model_loading(monkeypatch)
    (tmp_path / "afile").write_text("x")
    manifest = write_manifest(tmp_path / "m.jsonl", ["a"])
    code, _, err = run(["generate", "--manifest", manifest, "--out-dir", tmp_path / "afile" / "out", "--model",
                        model_dir], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "afile is a file" in err, err


# ----------------------------------------------------------------------------------- resume, overwrite, failures


def test_rerun_skips_complete_rows_and_refuses_partial_or_foreign_ones(model_dir, tmp_path, capsys, monkeypatch):
    manifest = write_manifest(tmp_path / "m.jsonl", ["a", "b", "c"])
    out = tmp_path / "out"
    argv = ["generate", "--manifest", manifest, "--out-dir", out, "--model", model_dir]
    code, stdout, err = run(argv, capsys)
    assert code == 0 and "wrote 3 volume(s)" in stdout, err
    first = stamps(out)
    assert len(first) == 9  # nii.gz, json, png a row

    with monkeypatch.context() as patch:  # nothing left to do: the model is not even loaded
        no_model_loading(patch)
        code, stdout, err = run(argv, capsys)
    assert code == 0 and "wrote 0 volume(s)" in stdout and "skipped 3" in stdout, err
    assert stamps(out) == first
    assert [(r["id"], r["status"]) for r in results(out)][3:] == [("a", "skipped"), ("b", "skipped"), ("c", "skipped")]

    (out / "b.png").unlink()  # partial row: refused, never replaced silently
    code, _, err = run(argv, capsys)
    assert code == 2 and "'b' is incomplete" in err and "b.png" in err and len(err.strip().splitlines()) == 1
    (out / "b.png").write_bytes(b"")

    write_manifest(manifest, ["a", "b", "c"], report="Normal chest CT {i}.")  # the rows changed: not "complete"
    code, _, err = run(argv, capsys)
    assert code == 2 and "a.nii.gz" in err and "'a'" in err and len(err.strip().splitlines()) == 1

    before = stamps(out)
    code, stdout, err = run(argv + ["--overwrite"], capsys)  # --overwrite: every row again
    assert code == 0 and "wrote 3 volume(s)" in stdout, err
    now = stamps(out)
    assert [name for name in before if now[name] == before[name]] == []
    assert json.loads((out / "a.json").read_text())["report"] == "Normal chest CT 0."


def test_a_failing_row_is_recorded_and_the_others_are_written(model_dir, tmp_path, capsys, monkeypatch):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": i, "report": f"Row {i}: a 9 mm nodule in the left lower lobe."})
                                + "\n" for i in ("a", "b", "c")))
    out = tmp_path / "out"
    argv = ["generate", "--manifest", manifest, "--out-dir", out, "--model", model_dir]
    original = ReportToVolumePipeline.__call__

    def out_of_memory_on_b(self, report, **kwargs):
        if report.startswith("Row b"):
            raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")
        return original(self, report, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(ReportToVolumePipeline, "__call__", out_of_memory_on_b)
        code, stdout, err = run(argv, capsys)
    assert code == 1 and "wrote 2 volume(s)" in stdout and "1 row(s) FAILED" in stdout
    assert "medgen: row 'b' failed: RuntimeError: CUDA out of memory. Tried to allocate 2 GiB" in err
    rows = {r["id"]: r for r in results(out)}
    assert {i: r["status"] for i, r in rows.items()} == {"a": "ok", "b": "failed", "c": "ok"}
    assert rows["b"]["error"] == "RuntimeError: CUDA out of memory. Tried to allocate 2 GiB"
    assert rows["a"]["error"] is None and rows["a"]["rank"] == 0 and rows["a"]["seconds"] > 0
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["a.nii.gz", "c.nii.gz"]

    before = stamps(out)
    code, stdout, err = run(argv, capsys)  # the rerun does the failed row only
    assert code == 0 and "wrote 1 volume(s)" in stdout and "skipped 2" in stdout, err
    assert {k: v for k, v in stamps(out).items() if k in before} == before
    assert [(r["id"], r["status"]) for r in results(out)][3:] == [("a", "skipped"), ("c", "skipped"), ("b", "ok")]


# ----------------------------------------------------------------------------------- several processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, argv: list[str], codes: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": "2"})
    Path(codes, f"rank{rank}").write_text(str(main(argv)))


def test_two_ranks_write_every_row_exactly_once(model_dir, tmp_path):
    """Two Gloo ranks (forked: the imports are reused) split 6 rows 3 + 3; each row is written once."""
    manifest = write_manifest(tmp_path / "m.jsonl", [f"r{i}" for i in range(6)])
    out = tmp_path / "out"
    argv = ["generate", "--manifest", str(manifest), "--out-dir", str(out), "--model", str(model_dir)]
    mp.start_processes(_rank, args=(_free_port(), argv, str(tmp_path)), nprocs=2, start_method="fork")

    assert [(tmp_path / f"rank{r}").read_text() for r in (0, 1)] == ["0", "0"]
    records = results(out)
    assert sorted(r["id"] for r in records) == [f"r{i}" for i in range(6)] and {r["status"] for r in records} == {"ok"}
    assert {r["id"]: r["rank"] for r in records} == {f"r{i}": i % 2 for i in range(6)}
    volumes = sorted(out.glob("*.nii.gz"))
    assert [p.name for p in volumes] == [f"r{i}.nii.gz" for i in range(6)]
    assert len({p.stat().st_ino for p in volumes}) == 6 and all(p.stat().st_nlink == 1 for p in volumes)
    assert sorted(p.name for p in out.iterdir()) == sorted(["results.jsonl", *(f"r{i}.{ext}" for i in range(6)
                                                                                for ext in ("nii.gz", "json", "png"))])


def _rank_killed_after_its_first_row(rank: int, port: int, argv: list[str], codes: str) -> None:
    """As `_rank`, but rank 0 is SIGKILLed (no cleanup at all) as it starts its second row."""
    original, calls = ReportToVolumePipeline.__call__, []

    def die_at_second_row(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2 and rank == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, *args, **kwargs)

    ReportToVolumePipeline.__call__ = die_at_second_row  # in this forked rank only
    _rank(rank, port, argv, codes)


def test_torchrun_run_killed_after_a_row_resumes_and_rewrites_nothing(model_dir, tmp_path):
    """The bar: `torchrun --nproc_per_node 2 -m medgen.cli.main generate --manifest M --out-dir D` on 6 rows,
    killed after the first row and rerun, writes the rest and rewrites none. The killed run is forked (as
    above; the launcher then ends rank 1 as torchrun does); the rerun is the torchrun command itself."""
    manifest = write_manifest(tmp_path / "m.jsonl", [f"r{i}" for i in range(6)])
    out = tmp_path / "out"
    args = ["generate", "--manifest", str(manifest), "--out-dir", str(out), "--model", str(model_dir)]
    with pytest.raises((mp.ProcessExitedException, mp.ProcessRaisedException)):  # rank 0 killed (rank 1 may fail first, its peer gone)
        mp.start_processes(_rank_killed_after_its_first_row, args=(_free_port(), args, str(tmp_path)), nprocs=2,
                           start_method="fork")
    done = {r["id"] for r in results(out) if r["status"] == "ok"}
    assert "r0" in done and "r2" not in done and "r4" not in done, results(out)  # rank 0 has r0, r2, r4
    before = stamps(out)

    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    rerun = subprocess.run([*torchrun, "-m", "medgen.cli.main", *args], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    log = (out / "results.jsonl").read_text()
    assert f"wrote {6 - len(done)} volume(s)" in rerun.stdout and f"skipped {len(done)}" in rerun.stdout, log
    assert rerun.stderr.count("row(s) already complete") == 1  # rank 0 speaks for all
    assert {k: v for k, v in stamps(out).items() if k in before} == before, log  # nothing rewritten
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [f"r{i}.nii.gz" for i in range(6)]
    second = results(out)[len(done):]  # the killed run logged its written rows only
    assert sorted(r["id"] for r in second if r["status"] == "ok") == sorted({f"r{i}" for i in range(6)} - done)
    assert sorted(r["id"] for r in second if r["status"] == "skipped") == sorted(done)
    assert {r["rank"] for r in second if r["status"] == "ok"} == {0, 1}  # r2 and r4 at least: one each
