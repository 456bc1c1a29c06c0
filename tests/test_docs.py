"""The project's own user guide builds with --strict (broken links and missing pages fail)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_project_docs_build_strict(tmp_path):
    from mkdocs.commands.build import build
    from mkdocs.config import load_config

    config = load_config(config_file=str(ROOT / "mkdocs.yml"), strict=True, site_dir=str(tmp_path / "site"))
    build(config)
    assert (tmp_path / "site" / "commands.html").is_file() or (tmp_path / "site" / "commands" / "index.html").is_file()
