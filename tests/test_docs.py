"""The documentation holds: every relative link and every repository path it names exists, and its Python snippets
run (imports, configs and trainers constructed; with the tiny offline models in place of Hub models and datasets)."""

import re
import warnings
from pathlib import Path

import pytest
import torch


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
    assert {"scope.md", "dgpo.md", "recipes.md", "evaluation.md", "benchmarks.md", "reliability.md",
            "development.md", "metrics.md", "README.md"} <= names  # fmt: skip


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
