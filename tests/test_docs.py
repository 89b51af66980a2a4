"""The documentation holds: every relative link and every repository path it names exists, and its Python snippets
run (imports, configs and trainers constructed; with the tiny offline models in place of Hub models and datasets).
Its numbers and claims agree with their sources: step-time tables and teacher times with the results JSON they cite,
the paper's recipe with its YAML, the DeepMath dataset id with the recipes'; and no page states a test count."""

import json
import re
import statistics
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml


REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PATH_ROOTS = ("scope_trl/", "tests/", "benchmarks/", "examples/", "accelerate_configs/", "docs/", ".ci/", "shared/")
# Hub models named in the snippets, and their offline stand-ins.
STUDENTS = {"Qwen/Qwen3-0.6B", "Qwen/Qwen3-1.7B-Base", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"}
TEACHERS = {"Qwen/Qwen3-8B"}


def page_id(path: Path) -> str:
    return str(path.relative_to(REPO))


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = strip_code_blocks(path.read_text())
    return {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def strip_code_blocks(text: str) -> str:
    return re.sub(r"(?ms)^```.*?^```", "", text)


def test_the_docs_folder_has_every_page():
    names = {path.name for path in PAGES}
    assert {
        "scope.md",
        "dgpo.md",
        "recipes.md",
        "evaluation.md",
        "benchmarks.md",
        "reliability.md",
        "development.md",
        "metrics.md",
        "README.md",
    } <= names


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_relative_links_resolve(page):
    text = strip_code_blocks(page.read_text())
    assert "PLACEHOLDER" not in text
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no heading '{anchor}')")
    assert not broken, broken


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_named_repository_paths_exist(page):
    missing = []
    for span in re.findall(r"`([^`\n]+)`", page.read_text()):
        for token in span.split():
            token = token.split("::")[0].rstrip(".,;:)")
            if not token.startswith(PATH_ROOTS) or re.search(r"[<>*{}$]", token):
                continue
            if token.startswith("shared/"):
                if not SHARED.exists():
                    continue  # the shared folder sits beside the checkout only on the project's machines
                path = SHARED.parent / token
            else:
                path = REPO / token
            if not path.exists():
                missing.append(token)
    assert not missing, missing


SOURCES = sorted(
    path
    for folder in ("scope_trl", "tests", "benchmarks", "examples")
    for path in (REPO / folder).rglob("*")
    if path.suffix in (".py", ".yaml", ".md", ".toml") and "results" not in path.parts
)
# A repository path as code, tests and recipes name them in prose: `docs/scope.md`, scope_trl/weights.py, ...
NOTES = re.compile("shared" + "/docs|_method" + r"\.md|landscape[\w-]*\.md")  # pieces: this file names none
REFERENCE = re.compile(
    r"(?<![\w/.-])((?:docs|scope_trl|tests|benchmarks|examples)/[\w./-]*\w\.(?:md|py|yaml|json|jsonl))"
)


@pytest.mark.parametrize("source", SOURCES, ids=page_id)
def test_code_and_tests_cite_only_what_the_repository_holds(source):
    """A reader of the repository alone can follow every reference: each file a docstring or comment names exists,
    nothing cites the team's notes outside the repository, and a section sign (§) belongs to a paper's section."""
    text = source.read_text()
    missing = [ref for ref in REFERENCE.findall(text) if not (REPO / ref).exists() and "*" not in ref]
    assert not missing, missing
    assert not NOTES.search(text), "the team's notes are not in the repository: say it here, or in docs/"
    for line in text.splitlines():
        if "\u00a7" in line:  # the section sign
            assert "paper" in line.lower(), f"a section sign without its paper: {line.strip()}"
    assert not re.search(r"\b[Ii]ssue \d+\b", text), "an issue of the tracker: say what it asked for instead"


def python_snippets(page: Path) -> list[str]:
    return re.findall(r"(?ms)^```python\n(.*?)^```", page.read_text())


SNIPPET_PAGES = [page for page in PAGES if python_snippets(page)]


@pytest.mark.parametrize("page", SNIPPET_PAGES, ids=page_id)
def test_python_snippets_run(page, toy_paths, toy_dataset, monkeypatch, tmp_path):
    """A page's snippets run in order in one namespace, as a reader would paste them: Hub models become the tiny
    offline student and teacher, datasets the toy dataset, configs run on CPU, and `trainer.train()` is skipped."""
    import datasets

    import scope_trl.data

    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: toy_dataset)
    monkeypatch.setattr(scope_trl.data, "load_math_dataset", lambda *args, **kwargs: toy_dataset)
    monkeypatch.chdir(tmp_path)  # configs name output directories relative to the working directory
    namespace = {
        "dataset": toy_dataset,
        "log_ratio": torch.linspace(-1.0, 1.0, 12).reshape(3, 4),
        "advantages": torch.tensor([[1.0], [-1.0], [0.5]]),
    }
    for snippet in python_snippets(page):
        code = snippet
        for name in re.findall(r'"([\w.-]+/[\w.-]+)"', code):
            if name in STUDENTS:
                code = code.replace(f'"{name}"', repr(toy_paths["student"]))
            elif name in TEACHERS:
                code = code.replace(f'"{name}"', repr(toy_paths["teacher"]))
        code = re.sub(r"\b(DGPOConfig|SCOPEConfig)\(", r'\1(use_cpu=True, bf16=False, report_to="none", ', code)
        code = re.sub(r"(?m)^trainer\.train\(\)$", "", code)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exec(compile(code, f"{page_id(page)} snippet", "exec"), namespace)
    if "trainer" in namespace:
        assert hasattr(namespace["trainer"], "train")


# ------------------------------------------------------------------------------------------------------------------
# Numbers and words that must agree with their source
# ------------------------------------------------------------------------------------------------------------------

RESULTS = REPO / "benchmarks" / "results"
RECIPE_DIR = REPO / "examples" / "configs"
STEP_TIME_LINK = re.compile(r"\((?:\.\./)?benchmarks/results/(step_time\w*)\.md\)|\((step_time\w*)\.md\)")

# Row labels of the docs' step-time tables -> the rows of the results JSON they quote (one per `/`-separated value).
STEP_TIME_ROWS = {
    "grpo": ("grpo",),
    "dgpo": ("dgpo",),
    "scope": ("scope",),
    "scope (verifier 50% correct)": ("scope",),
    "scope (50% correct)": ("scope",),
    "scope, teacher in process": ("scope",),
    "scope, routing=false": ("scope_no_routing",),
    "scope routing=false (plain opd)": ("scope_no_routing",),
    "trl distillationtrainer": ("distillation",),
    "scope, verifier 0% correct": ("scope_acc0",),
    "scope, 0% correct": ("scope_acc0",),
    "scope, verifier 100% correct": ("scope_acc100",),
    "scope, 100% correct": ("scope_acc100",),
    "scope, verifier 0% / 100% correct": ("scope_acc0", "scope_acc100"),
    "scope, teacher on the vllm server": ("scope_vllm_teacher",),
}


def _printed(value: float, decimals: int) -> float:
    """A value as the results' Markdown prints it (`benchmarks/step_time.py` formats with f-strings)."""
    return float(f"{value:.{decimals}f}")


def _ms(seconds: float) -> float:
    return _printed(seconds * 1000, 1)


def _own(run: dict) -> float:
    phases = run["phases"]
    return run.get("own", phases["total"] - phases["generation"] - phases["teacher"] - phases["extra_forward"])


def _step_time_columns(record: dict) -> dict:
    """Each column header the docs use -> (value of a row of the record, decimals printed)."""
    rows = record["rows"]
    grpo = rows["grpo"]["median"]

    def ratio_to_grpo(name):
        return lambda key: rows[key]["median"][name] / grpo[name]

    def phase(*names):  # a sum of phases is the sum of the values the results table prints
        return lambda key: sum(_ms(rows[key]["median"][name]) for name in names) / 1000

    def non_generation(key):
        median = rows[key]["median"]
        return (median["total"] - median["generation"]) / (grpo["total"] - grpo["generation"])

    def peak(key):
        return statistics.median(run["peak_mib"] for run in rows[key]["repeats"])

    def own(key):  # the results' "own (ms)": step less generation, teacher and extra forward, per generation cycle
        return statistics.median(_own(run) for run in rows[key]["repeats"])

    def own_share(key):
        return 100 * (own(key) - own("grpo")) / grpo["total"]

    milliseconds = {
        "generation": phase("generation"),
        "π_old fwd (extra)": phase("extra_forward"),
        "extra π_old forward (ms)": phase("extra_forward"),
        "teacher": phase("teacher"),
        "teacher (ms)": phase("teacher"),
        "teacher ms / step": phase("teacher"),
        "loss fwd + bwd": phase("loss_forward", "loss_backward"),
        "rest": phase("reward", "scoring_rest", "grad_norm", "optimizer", "other"),
        "step": phase("total"),
        "step (ms)": phase("total"),
        "step less generation and teacher (ms)": own,
    }
    ratios = {
        "vs grpo": ratio_to_grpo("total"),
        "step vs grpo": ratio_to_grpo("total"),
        "non-generation vs grpo": non_generation,
        "non-generation part vs grpo": non_generation,
        "peak memory vs grpo": lambda key: peak(key) / peak("grpo"),
    }
    columns = {name: (lambda key, f=f: f(key) * 1000, 1) for name, f in milliseconds.items()}
    columns.update({name: (f, 2) for name, f in ratios.items()})
    columns["own − grpo's (% of grpo step)"] = (own_share, 1)
    return columns


def _number(text: str) -> float:
    match = re.match(r"[+\-−]?\d+(?:\.\d+)?", text.strip())
    assert match, f"no number in {text!r}"
    return float(match.group().replace("−", "-"))


def _tables(text: str):
    """(offset, header cells, body rows) of every Markdown table of a page, cells stripped of backticks."""
    for match in re.finditer(r"(?m)(?:^\|.*\|\n)+", text):
        lines = match.group().splitlines()
        cells = [[cell.strip().replace("`", "") for cell in line.strip("|").split("|")] for line in lines]
        yield match.start(), cells[0], cells[2:]


def _cited_step_time(text: str, offset: int) -> str | None:
    """The step-time results file last linked before `offset` (its stem)."""
    links = [m.group(1) or m.group(2) for m in STEP_TIME_LINK.finditer(text, 0, offset)]
    return links[-1] if links else None


def step_time_tables():
    for page in PAGES:
        text = page.read_text()
        for offset, header, body in _tables(strip_code_blocks(text)):
            stem = _cited_step_time(strip_code_blocks(text), offset)
            if header[0] == "row" and stem and (RESULTS / f"{stem}.json").exists():
                yield pytest.param(page, stem, header, body, id=f"{page_id(page)}-{stem}-{offset}")


@pytest.mark.parametrize(("page", "stem", "header", "body"), list(step_time_tables()))
def test_step_time_tables_quote_their_results_file(page, stem, header, body):
    """Every number of a docs table of step times is the one its cited results JSON gives, as the results' Markdown
    prints it; a cell "a / b" quotes two rows, and a remark in brackets after the number is not checked."""
    record = json.loads((RESULTS / f"{stem}.json").read_text())
    columns = _step_time_columns(record)
    unknown = [name for name in header[1:] if name.lower() not in columns]
    assert not unknown, f"teach this test the column(s) {unknown} of {page_id(page)}"
    wrong = []
    for cells in body:
        label = cells[0].lower()
        assert label in STEP_TIME_ROWS, f"teach this test the row {cells[0]!r} of {page_id(page)}"
        keys = STEP_TIME_ROWS[label]
        for name, cell in zip(header[1:], cells[1:]):
            value, decimals = columns[name.lower()]
            quoted = cell.split(" / ")
            assert len(quoted) == len(keys), (cells[0], name, cell)
            for key, text in zip(keys, quoted):
                expected = _printed(value(key), decimals)
                if abs(_number(text) - expected) > 1e-9:
                    wrong.append(f"{cells[0]} / {name}: {text!r}, results {expected}")
            request = re.search(r"request alone (\d+\.\d)", cell)
            if request:
                expected = _ms(statistics.median(run["teacher_request"] for run in record["rows"][keys[0]]["repeats"]))
                if float(request.group(1)) != expected:
                    wrong.append(f"{cells[0]} / the request alone: {request.group(1)}, results {expected}")
    assert not wrong, wrong


TEACHER_SWEEP = re.compile(
    r"(\d+\.\d)(?:, | / )(\d+\.\d)(?:,? and | / )(\d+\.\d) ms (?:per step )?at 100%?(?:, | / )50%?(?:,? and | / )0% "
    r"incorrect"
)


def test_the_teacher_times_quoted_are_the_results_files():
    """The teacher's time at 100 / 50 / 0% incorrect, wherever the docs quote it, is the sweep of the step-time results
    file last cited before it (`checks.proportional.points` of its JSON)."""
    quoted, wrong = 0, []
    for page in PAGES:
        text = re.sub(r"\s+", " ", strip_code_blocks(page.read_text()))
        for match in TEACHER_SWEEP.finditer(text):
            quoted += 1
            stem = _cited_step_time(text, match.start())
            results = RESULTS / f"{stem}.json"
            assert stem and results.exists(), f"{page_id(page)}: {match.group()!r} cites no step-time results JSON"
            points = json.loads(results.read_text())["checks"]["proportional"]["points"]
            expected = [_ms(seconds) for share, seconds in sorted(points, reverse=True)]
            if [float(value) for value in match.groups()] != expected:
                wrong.append(f"{page_id(page)}: {match.group()!r}, {stem}.json gives {expected}")
    assert quoted >= 3  # README's table aside: cost.md twice and benchmarks.md once
    assert not wrong, wrong


def test_no_page_states_how_many_tests_there_are():
    """A count of the suite's tests goes stale with the next test. A page may quote a run's result in pytest's own
    words ("779 passed in 28 min 2 s"), a measurement of that run, but not "N tests" in the present tense."""
    stated = []
    for page in PAGES:
        text = re.sub(r"\s+", " ", page.read_text())
        stated += [f"{page_id(page)}: {m.group()!r}" for m in re.finditer(r"\b\d[\d,]* (?:tests|test cases)\b", text)]
        stated += [f"{page_id(page)}: {m.group()!r}" for m in re.finditer(r"\b\d[\d,]* passed\b(?! in \d)", text)]
    assert not stated, stated


def _recipe(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _pi_old_case(config: dict) -> str:
    """Which of cost.md's three cases a config falls in: TRL's rule for computing old log-probs
    (`GRPOTrainer._generate_and_score_completions`), then SCOPE's for taking them from the loss forward."""
    from scope_trl import SCOPETrainer

    spg, iterations = config["steps_per_generation"], config.get("num_iterations", 1)
    trl_computes = config["gradient_accumulation_steps"] % (spg * iterations) != 0 or (
        config.get("use_vllm", False) and config.get("vllm_importance_sampling_correction", True)
    )
    if trl_computes:
        return "TRL computed it"
    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True),
        args=SimpleNamespace(steps_per_generation=spg),
        num_iterations=iterations,
        off_policy_mask_threshold=config.get("off_policy_mask_threshold"),
    )
    if SCOPETrainer._old_logps_from_loss_forward(trainer):
        return "One on-policy micro-batch per generation batch"
    return "Several on-policy micro-batches per generation batch"


def test_cost_md_puts_the_papers_recipe_in_the_pi_old_case_it_falls_in():
    """cost.md names the paper's recipe (both settings: `examples/configs/scope_*.yaml`) in the π_old case that the
    recipes' own batch layout selects, and quotes their values of `steps_per_generation` and the like."""
    recipes = [_recipe(path) for path in sorted(RECIPE_DIR.glob("scope_*.yaml"))]
    assert len(recipes) == 2
    assert all(r["steps_per_generation"] == r["gradient_accumulation_steps"] == 128 for r in recipes)  # 1 step/batch
    (case,) = {_pi_old_case(recipe) for recipe in recipes}
    assert case == "Several on-policy micro-batches per generation batch"  # SCOPE pays one no-grad forward
    text = (REPO / "docs" / "cost.md").read_text()
    section = text.split("**Where π_old comes from", 1)[1].split("\n## ", 1)[0]
    bullets = {m.group(1): m.group(2) for m in re.finditer(r"(?ms)^- \*\*(.+?)\*\*(.*?)(?=^- \*\*|\Z)", section)}
    assert case in bullets, sorted(bullets)
    naming = [title for title, body in bullets.items() if "paper" in body]
    assert naming == [case], f"cost.md names the paper's recipe under {naming}, the recipe falls under {case!r}"
    # Every `name=...=value` chain after the mention of the paper quotes the recipe's value of each name.
    quoted = {}
    for chain in re.findall(r"`([\w=]+=\d+)`", bullets[case].split("paper", 1)[1]):
        *names, value = chain.split("=")
        quoted.update(dict.fromkeys(names, int(value)))
    assert "steps_per_generation" in quoted, bullets[case]
    for recipe in recipes:
        assert quoted == {name: recipe[name] for name in quoted}, quoted


def test_every_deepmath_dataset_id_is_the_recipes():
    """The docs, the README, the examples, the package's docstrings and the recipes load DeepMath-103K from the Hub
    under one id, the recipes'."""
    recipes = {_recipe(path).get("dataset_name") for path in RECIPE_DIR.glob("*.yaml")}
    deepmath = {name for name in recipes if name and name.endswith("/DeepMath-103K")}
    assert deepmath == {"zwhe99/DeepMath-103K"}
    files = [*PAGES, *sorted(RECIPE_DIR.glob("*.yaml")), *sorted((REPO / "examples").glob("*.py"))]
    files += sorted((REPO / "scope_trl").rglob("*.py"))
    other = []
    for path in files:
        other += [
            f"{page_id(path)}: {m}"
            for m in re.findall(r"[\w.-]+/DeepMath-103K", path.read_text())
            if m not in deepmath
        ]
    assert not other, other


def test_metrics_md_says_why_teacher_kl_can_be_negative():
    """A sampled-token KL estimate below 0 looks like a bug: its entry says it is not, and why (the computation on a
    negative batch is pinned in tests/test_scope_trainer.py)."""
    text = (REPO / "docs" / "metrics.md").read_text()
    entry = re.search(r"(?m)^\| `scope/teacher_kl` \|[^|]*\|([^|]*)\|$", text).group(1)
    assert "negative" in entry and "#why-scopeteacher_kl-can-be-negative" in entry, entry
    assert "why-scopeteacher_kl-can-be-negative" in anchors(REPO / "docs" / "metrics.md")
    scope_md = re.sub(r"\s+", " ", (REPO / "docs" / "scope.md").read_text())
    assert "metrics.md#why-scopeteacher_kl-can-be-negative" in scope_md


def _table_rows(path: Path, heading: str) -> list[list[str]]:
    """The cells of the first Markdown table under `heading` in `path`."""
    section = path.read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return [
        [cell.strip() for cell in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("|")
    ]


def _numbers(text: str) -> list[float]:
    return [float(number) for number in re.findall(r"\d+\.\d+|\d+", text)]


def test_the_oracles_the_docs_quote_are_the_tests():
    """docs/dgpo.md's and docs/scope.md's oracle tables are the values the tests assert."""
    from . import test_losses, test_weights

    rows = _table_rows(REPO / "docs" / "dgpo.md", "What the tests check it against")
    assert [float(cell) for cell in rows[0][1:]] == test_losses.RATIOS
    assert [float(cell) for cell in rows[2][1:]] == test_losses.ORACLE_W_POS
    assert [float(cell) for cell in rows[3][1:]] == test_losses.ORACLE_W_NEG

    text = (REPO / "docs" / "scope.md").read_text()
    assert "1.2, 2.6 and 3.8" in text and "4.5, 2.9 and 1.7" in text
    assert (test_weights.STUDENT_PPL, test_weights.TEACHER_PPL) == ([1.2, 2.6, 3.8], [4.5, 2.9, 1.7])
    rows = _table_rows(REPO / "docs" / "scope.md", "What the tests check it against")
    expected = {"sum": ([0.1579, 0.3421, 0.5000], [0.1924, 0.2985, 0.5092])}
    expected["mean"] = ([0.4737, 1.0263, 1.5000], [0.5771, 0.8954, 1.5275])
    for normalization, (student, teacher) in expected.items():
        row = next(row for row in rows if row[0].startswith(f'`"{normalization}"`'))
        assert (_numbers(row[1]), _numbers(row[2])) == (student, teacher)
        correct, incorrect = test_weights.example(normalization=normalization)
        torch.testing.assert_close(correct, torch.tensor(student, dtype=torch.float64), atol=1e-4, rtol=0)
        torch.testing.assert_close(incorrect, torch.tensor(teacher, dtype=torch.float64), atol=1e-4, rtol=0)
