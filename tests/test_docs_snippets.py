"""Every fenced code block of README.md and docs/*.md runs, or is at least checked (docs/README.md).

One test per block, named ``page:line``. The runnable blocks of a page run once, in order, in one fresh
process in a temporary folder (``doc_snippets.run_page``); each block's test reads its result from that run.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT, subprocess_env
from doc_snippets import (
    Block,
    bash_commands,
    blocks_json,
    check_bash_parse_only,
    check_cli_arguments,
    check_data_block,
    check_python_parse_only,
    doc_pages,
    extract_blocks,
    prepare_workdir,
    runs,
)

PAGE_TIMEOUT_S = 1800
PAGES = doc_pages(REPO_ROOT)
BLOCKS = [block for page in PAGES for block in extract_blocks(page, REPO_ROOT)[0]]
_page_results: dict[str, dict] = {}


def _page_id(page: Path) -> str:
    return page.relative_to(REPO_ROOT).as_posix()


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_page_markers_and_fences_are_well_formed(page):
    """Every block names its language; every marker precedes a block; parse-only always gives its reason."""
    _, problems = extract_blocks(page, REPO_ROOT)
    assert not problems, "\n".join(problems)


def test_the_readme_is_a_short_front_door():
    lines = (REPO_ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; the limit is 200 (move details into docs/)"


def test_docs_links_point_to_existing_pages_or_say_they_are_pending():
    """Relative links from README.md and docs/ name files of the repository."""
    import re

    missing = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                missing.append(f"{_page_id(page)} -> {target}")
    assert not missing, "links to missing files: " + ", ".join(missing)



@pytest.mark.parametrize("block", [b for b in BLOCKS if b.language != "text"], ids=lambda block: block.id)
def test_block(block, tmp_path_factory):
    if block.parse_only:
        assert block.parse_only.strip(), "parse-only without a reason"
        if block.language == "python":
            check_python_parse_only(block.code)
        elif block.language == "bash":
            check_bash_parse_only(block.code, REPO_ROOT)
        else:
            check_data_block(block, REPO_ROOT)
        return
    if block.language in ("yaml", "json"):
        check_data_block(block, REPO_ROOT)
        if not runs(block, REPO_ROOT):
            return
    results = _run_page_once(block.page, tmp_path_factory)
    result = results.get(block.id)
    if result is None and "_missing_extra" in results:
        pytest.skip(f"{block.id} did not run: {results['_missing_extra']}")
    assert result is not None, f"{block.id} did not run: the page's run stopped before it ({results['_stopped']})"
    if not result["ok"] and _missing_extra(result["error"]):
        results["_missing_extra"] = f"an earlier block of the page needs {_missing_extra(result['error'])}"
        pytest.skip(f"{block.id} needs {_missing_extra(result['error'])}")
    assert result["ok"], f"{block.id} failed:\n{result['error']}"


# Modules of the optional extras (setup.py): a block that needs one skips, with the install hint, where it is missing.
EXTRA_MODULES = {"skimage": "demo", "peft": "peft", "gradio": "web", "deepspeed": "deepspeed"}


def _missing_extra(error: str) -> str | None:
    """``"peft: pip install -e '.[peft]'"`` when the error is the import of a missing optional extra."""
    import importlib.util
    import re

    match = re.search(r"No module named '([\w.]+)'", error)
    module = match.group(1).split(".")[0] if match else None
    if module in EXTRA_MODULES and importlib.util.find_spec(module) is None:
        return f"{module}: pip install -e '.[{EXTRA_MODULES[module]}]'"
    return None


def _run_page_once(page: str, tmp_path_factory) -> dict:
    """Run the page's runnable blocks once (the first of its tests to ask does it) and keep the results."""
    if page in _page_results:
        return _page_results[page]
    blocks = [block for block in BLOCKS if block.page == page and runs(block, REPO_ROOT)]
    workdir = tmp_path_factory.mktemp("docs_" + page.replace("/", "_").replace(".", "_"))
    prepare_workdir(workdir, REPO_ROOT)
    blocks_file, results_file = workdir.parent / f"{workdir.name}.blocks.json", workdir.parent / f"{workdir.name}.results.json"
    blocks_file.write_text(blocks_json(blocks), encoding="utf-8")
    runner = Path(__file__).with_name("doc_snippets.py")
    results = {}
    try:
        process = subprocess.run([sys.executable, str(runner), str(blocks_file), str(results_file)], cwd=workdir,
                                 env=subprocess_env(), capture_output=True, text=True, timeout=PAGE_TIMEOUT_S)
        stopped = f"the runner exited with {process.returncode}: {process.stderr[-2000:]}"
    except subprocess.TimeoutExpired:
        stopped = f"the page's run passed {PAGE_TIMEOUT_S} s"
    if results_file.exists():
        import json

        results = json.loads(results_file.read_text(encoding="utf-8"))
    results["_stopped"] = stopped
    _page_results[page] = results
    return results


# ---- the checks themselves, on made-up pages: each must catch what it is for ----


def _page(tmp_path, text: str) -> Path:
    (tmp_path / "docs").mkdir(exist_ok=True)
    page = tmp_path / "docs" / "page.md"
    page.write_text(text, encoding="utf-8")
    return page


def test_extraction_reads_language_line_and_markers(tmp_path):
    page = _page(tmp_path, "# T\n\n<!-- snippet: parse-only (needs the Hub) -->\n```python\nimport fourm_hf\n```\n\n"
                           "<!-- snippet: file conf/a.yaml -->\n```yaml\na: 1\n```\n")
    blocks, problems = extract_blocks(page, tmp_path)
    assert problems == []
    assert [(b.id, b.language, b.parse_only, b.file) for b in blocks] == [
        ("docs/page.md:4", "python", "needs the Hub", None), ("docs/page.md:9", "yaml", None, "conf/a.yaml")]
    assert blocks[0].code == "import fourm_hf\n"


@pytest.mark.parametrize("text, message", [
    ("<!-- snippet: parse-only -->\n```python\nx = 1\n```\n", "needs its reason"),
    ("<!-- snippet: parse-only () -->\n```python\nx = 1\n```\n", "needs its reason"),
    ("<!-- snippet: parse-only (why) -->\n\nSome text.\n```python\nx = 1\n```\n", "not directly followed"),
    ("```\nx = 1\n```\n", "language is 'not given'"),
    ("```ruby\nputs 1\n```\n", "language is 'ruby'"),
    ("<!-- snippet: skip (why) -->\n```python\nx = 1\n```\n", "unknown snippet marker"),
    ("<!-- snippet: file a.yaml -->\n```python\nx = 1\n```\n", "precedes a yaml or json block"),
    ("```python\nx = 1\n", "never closed"),
])
def test_extraction_reports_malformed_pages(tmp_path, text, message):
    _, problems = extract_blocks(_page(tmp_path, text), tmp_path)
    assert any(message in problem for problem in problems), problems


def test_bash_commands_join_lines_split_chains_and_drop_comments():
    code = "fourm-hf train --config a.yaml \\\n    training.max_steps=2   # short\nbash x.sh && OMP_NUM_THREADS=1 fourm-hf demo\n"
    assert bash_commands(code) == [["fourm-hf", "train", "--config", "a.yaml", "training.max_steps=2"],
                                   ["bash", "x.sh"], ["OMP_NUM_THREADS=1", "fourm-hf", "demo"]]


def test_cli_arguments_are_parsed_by_the_commands_argparse():
    check_cli_arguments(["demo", "--num-scenes", "2", "--no-progress"])
    check_cli_arguments(["demo", "--help"])
    with pytest.raises(AssertionError, match="--no-such-flag"):
        check_cli_arguments(["demo", "--no-such-flag"])
    with pytest.raises(AssertionError, match="no such command"):
        check_cli_arguments(["no-such-command"])
    with pytest.raises(AssertionError, match="required"):
        check_cli_arguments(["assemble-checkpoint", "--model", "m"])


def test_parse_only_bash_checks_launchers_and_repository_files():
    check_bash_parse_only("torchrun --nproc_per_node 2 -m fourm_hf.cli train --config examples/configs/tiny_scenes.yaml\n"
                          "pip install -e .\nbash scripts/install.sh\n", REPO_ROOT)
    with pytest.raises(AssertionError, match="--bogus"):
        check_bash_parse_only("accelerate launch --num_processes 2 -m fourm_hf.cli train --bogus\n", REPO_ROOT)
    with pytest.raises(AssertionError, match="not a file of the repository"):
        check_bash_parse_only("python benchmarks/no_such_script.py\n", REPO_ROOT)


def test_parse_only_python_resolves_fourm_hf_names():
    check_python_parse_only("import fourm_hf\nfrom fourm_hf import FourMModel\nfrom fourm_hf.checkpoints import bundled_checkpoint\n"
                            "m = FourMModel.from_pretrained(bundled_checkpoint())\nfourm_hf.save_grid\nundefined_elsewhere(1)\n")
    with pytest.raises(AssertionError, match="no 'NoSuchModel'"):
        check_python_parse_only("from fourm_hf import NoSuchModel\n")
    with pytest.raises(AssertionError, match="no 'no_such_function'"):
        check_python_parse_only("import fourm_hf\nfourm_hf.pipelines.no_such_function()\n")
    with pytest.raises(AssertionError, match="import fourm_hf.no_such_module"):
        check_python_parse_only("import fourm_hf.no_such_module\n")
    with pytest.raises(AssertionError, match="no keyword 'no_such_option'"):
        check_python_parse_only("from fourm_hf.modeling.generation import build_generation_schedule\n"
                                "build_generation_schedule(None, [], [], no_such_option=1)\n")
    with pytest.raises(SyntaxError):
        check_python_parse_only("def broken(:\n")


def test_data_blocks_parse_and_file_blocks_equal_the_repository_file(tmp_path):
    (tmp_path / "conf.yaml").write_text("a: 1\n", encoding="utf-8")
    check_data_block(Block("p", 1, "yaml", "a: 1\n", file="conf.yaml"), tmp_path)
    check_data_block(Block("p", 1, "yaml", "b: 2\n", file="new.yaml"), tmp_path)  # not in the repository: written
    with pytest.raises(AssertionError, match="differs from the repository's conf.yaml"):
        check_data_block(Block("p", 1, "yaml", "a: 2\n", file="conf.yaml"), tmp_path)
    with pytest.raises(Exception, match="mapping values|could not find|expected"):
        check_data_block(Block("p", 1, "yaml", "a: b: c\n"), tmp_path)
    with pytest.raises(ValueError):
        check_data_block(Block("p", 1, "json", "{not json}\n"), tmp_path)


def test_the_runner_runs_blocks_in_order_writes_files_and_stops_at_a_failure(tmp_path):
    page = _page(tmp_path, "```python\nvalue = 41\n```\n\n<!-- snippet: file cfg/x.yaml -->\n```yaml\nn: 1\n```\n\n"
                           "```bash\npython -c \"import yaml; assert yaml.safe_load(open('cfg/x.yaml')) == {'n': 1}\"\n```\n\n"
                           "```python\nassert value + 1 == 42\nraise KeyError('broken on purpose')\n```\n\n"
                           "```python\nprint('never')\n```\n\n```bash\npip install something\n```\n")
    blocks = [block for block in extract_blocks(page, tmp_path)[0] if runs(block, tmp_path)]
    (tmp_path / "blocks.json").write_text(blocks_json(blocks), encoding="utf-8")
    workdir = tmp_path / "work"
    workdir.mkdir()
    subprocess.run([sys.executable, str(Path(__file__).with_name("doc_snippets.py")), str(tmp_path / "blocks.json"),
                    str(tmp_path / "results.json")], cwd=workdir, env=subprocess_env(), check=True, timeout=300)
    import json

    results = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert [results[block.id]["ok"] for block in blocks[:4]] == [True, True, True, False]
    assert "broken on purpose" in results[blocks[3].id]["error"]
    assert blocks[4].id not in results and blocks[5].id not in results
    assert (workdir / "cfg" / "x.yaml").read_text(encoding="utf-8") == "n: 1\n"


def test_only_a_missing_optional_extra_turns_a_failure_into_a_skip(monkeypatch):
    monkeypatch.setitem(EXTRA_MODULES, "no_such_extra_module", "demo")
    monkeypatch.setitem(EXTRA_MODULES, "json", "demo")
    assert _missing_extra("ModuleNotFoundError: No module named 'no_such_extra_module.sub'") == \
        "no_such_extra_module: pip install -e '.[demo]'"
    assert _missing_extra("ModuleNotFoundError: No module named 'json'") is None  # installed: a real failure
    assert _missing_extra("ModuleNotFoundError: No module named 'no_such_module'") is None  # not an extra
    assert _missing_extra("KeyError: 'no_such_extra_module'") is None


def _run_first_block(page, tmp_path) -> dict:
    """Run a page's first block through tests/doc_snippets.py, as the page test does; its result entry."""
    import json

    blocks = extract_blocks(page, tmp_path)[0]
    (tmp_path / "blocks.json").write_text(blocks_json(blocks), encoding="utf-8")
    subprocess.run([sys.executable, str(Path(__file__).with_name("doc_snippets.py")), str(tmp_path / "blocks.json"),
                    str(tmp_path / "results.json")], cwd=tmp_path, env=subprocess_env(), check=True, timeout=300)
    return json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))[blocks[0].id]


def test_a_failing_fourm_hf_command_fails_its_block(tmp_path):
    page = _page(tmp_path, "```bash\nfourm-hf make-scenes --no-such-flag\n```\n")
    result = _run_first_block(page, tmp_path)
    assert not result["ok"] and "fourm-hf make-scenes --no-such-flag exited with 2" in result["error"]


def test_a_run_block_with_other_commands_is_refused(tmp_path):
    page = _page(tmp_path, "```bash\npip install something\n```\n")
    result = _run_first_block(page, tmp_path)
    assert not result["ok"] and "mark the block <!-- snippet: parse-only (reason) -->" in result["error"]


# ---- checks of particular pages that the generic ones do not cover ----


def _bash_block_with(*words: str) -> Block:
    found = [b for b in BLOCKS if b.language == "bash" and all(word in b.code for word in words)]
    assert found, f"no bash block in README.md or docs/ holds {words}"
    return found[0]


def test_released_model_commands_match_their_tokenizers():
    """The released-model walkthrough (parse-only: it needs the real weights): assemble-ml4m reads what
    convert-ml4m writes, and every tokenizer folder it names is one the block downloads and matches a modality."""
    import argparse
    import importlib

    from fourm_hf import cli
    from fourm_hf.ml4m.assembly import modality_from_released_name, parse_tokenizer_argument

    block = _bash_block_with("for tokenizer in ", "convert-ml4m", "assemble-ml4m")
    lines = [line.split("#")[0].strip() for line in block.code.replace("\\\n", " ").splitlines()]
    loop = next(line for line in lines if line.startswith("for tokenizer in "))
    downloaded = {f"4M_tokenizers_{name}" for name in loop[len("for tokenizer in "):].split(";")[0].split()}
    commands = [shlex.split(line) for line in lines if line.startswith("fourm-hf ")]
    assert [command[1] for command in commands] == ["convert-ml4m", "assemble-ml4m"]
    parsed = {}
    for command in commands:
        parser = argparse.ArgumentParser(prog=command[1])
        importlib.import_module(cli.COMMANDS[command[1]][0]).add_arguments(parser)
        parsed[command[1]] = parser.parse_args(command[2:])
    assemble = parsed["assemble-ml4m"]
    assert assemble.model == parsed["convert-ml4m"].output
    modalities = {}
    for argument in assemble.tokenizers:
        modality, folder = parse_tokenizer_argument(argument)
        assert str(folder) in downloaded, f"{folder} is not downloaded by the block's loop {sorted(downloaded)}"
        modalities[modality or modality_from_released_name(folder)] = folder
    assert set(modalities) == {"tok_rgb", "tok_depth", "tok_normal", "tok_semseg", "tok_clip"}
    assert {parse_tokenizer_argument(a)[0] for a in assemble.feature_model} == {"tok_clip"}


def test_the_command_table_lists_every_command():
    """The docs' table of `fourm-hf` commands names each command of the CLI, and no other."""
    import re

    from fourm_hf import cli

    tables = [page for page in PAGES if "| command | what it does |" in page.read_text(encoding="utf-8")]
    assert tables, "no page of the docs has the table of commands ('| command | what it does |')"
    listed = set(re.findall(r"^\| `([a-z][a-z0-9-]*)` \|", tables[0].read_text(encoding="utf-8"), re.MULTILINE))
    assert listed == set(cli.COMMANDS), (f"{_page_id(tables[0])}: missing {sorted(set(cli.COMMANDS) - listed)}, "
                                         f"not commands {sorted(listed - set(cli.COMMANDS))}")
