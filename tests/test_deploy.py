"""Publishing: `reportgen deploy` pushes the site to a gh-pages branch of a real (local, bare) git
remote; `--workflow` writes a GitHub Actions workflow; outside a git repository, one clear line."""

import subprocess

import pytest
import yaml

from helpers import assert_one_line_error, run
from reportgen.config import resolve_build_config
from reportgen.pipeline import build


def git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


@pytest.fixture()
def repo(tmp_path, monkeypatch):
    work, remote = tmp_path / "work", tmp_path / "remote.git"
    git("init", "-q", str(work), cwd=tmp_path)
    git("init", "-q", "--bare", str(remote), cwd=tmp_path)
    git("remote", "add", "origin", str(remote), cwd=work)
    build(resolve_build_config({"model": ["test_efficientnet"], "weights": "none", "layers": "0", "units": "2",
                                "steps": 2, "size": 32, "out": work / "report"}))
    monkeypatch.chdir(work)
    monkeypatch.setenv("GIT_AUTHOR_NAME", "t")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "t@example.com")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "t")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "t@example.com")
    return work, remote


def test_deploy_pushes_the_site_to_gh_pages_without_history(repo, monkeypatch):
    work, remote = repo
    monkeypatch.setenv("REPORTGEN_SITE_URL", "https://owner.github.io/vision-report/")  # a custom address
    for _ in range(2):
        code, output = run("deploy", "--out", "report")
        assert code == 0, output
    tree = git("ls-tree", "-r", "--name-only", "gh-pages", cwd=remote).split()
    assert "index.html" in tree and ".nojekyll" in tree
    assert "test_efficientnet/bn1/0/index.html" in tree
    assert git("rev-list", "--count", "gh-pages", cwd=remote).strip() == "1"  # no pile of old images
    not_found = git("show", "gh-pages:404.html", cwd=remote)
    assert 'href="/vision-report/assets/' in not_found and 'href="/assets/' not in not_found  # styled under /REPO/


def test_workflow_builds_committed_pages_and_uses_pages_actions(repo):
    work, _ = repo
    code, output = run("deploy", "--out", "report", "--workflow")
    assert code == 0, output
    workflow = yaml.safe_load((work / ".github" / "workflows" / "reportgen-pages.yml").read_text())
    steps = workflow["jobs"]["build"]["steps"]
    assert any("mkdocs build --strict --config-file report/mkdocs.yml" in s.get("run", "") for s in steps)
    build_step = next(s for s in steps if "mkdocs build" in s.get("run", ""))  # built for Pages' own address
    assert build_step["env"]["REPORTGEN_SITE_URL"] == "${{ steps.pages.outputs.base_url }}/"
    assert any(s.get("id") == "pages" and s["uses"].startswith("actions/configure-pages") for s in steps)
    assert any(s.get("uses", "").startswith("actions/upload-pages-artifact") and s["with"]["path"] == "report/site"
               for s in steps)
    assert workflow["jobs"]["deploy"]["steps"][0]["uses"].startswith("actions/deploy-pages")
    assert workflow["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    ignored = (work / "report" / ".gitignore").read_text().split()
    assert ".cache/" in ignored and "site/" in ignored


def test_deploy_outside_git_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, output = run("deploy", "--out", str(tmp_path))
    assert code == 2
    assert_one_line_error(output, "not inside a git repository")


@pytest.mark.parametrize("remote,url", [
    ("git@github.com:Owner/vision-report.git", "https://owner.github.io/vision-report/"),
    ("https://github.com/owner/vision-report", "https://owner.github.io/vision-report/"),
    ("https://token@github.com/owner/vision-report.git\n", "https://owner.github.io/vision-report/"),
    ("ssh://git@github.com/owner/Owner.github.io.git", "https://owner.github.io/"),  # a user site: served at the root
    ("git@gitlab.com:owner/vision-report.git", None),
    ("/tmp/remote.git", None),
])
def test_the_pages_address_comes_from_a_github_remote(remote, url):
    from reportgen.site import pages_url

    assert pages_url(remote) == url

