"""Property-based tests: the config loader, name escaping and slugs never let bad input through."""

import re

import markdown
from hypothesis import HealthCheck, given, settings, strategies as st

from reportgen.config import CONFIG_KEYS, BuildConfig, read_config_file, resolve_build_config
from reportgen.errors import ReportgenError
from reportgen.pages import md_escape, slug

values = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True),
                   st.text(max_size=12), st.lists(st.text(max_size=6), max_size=3))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(sorted(CONFIG_KEYS)), values, max_size=6))
def test_config_values_resolve_or_raise_a_domain_error(flags):
    flags.pop("device", None)  # 'auto' would ask torch; device strings are checked when the model loads
    try:
        config = resolve_build_config(flags)
    except ReportgenError:
        return
    assert isinstance(config, BuildConfig)
    assert config.render.size >= 16 and config.render.steps >= 1 and config.models
    assert all(isinstance(m, str) and m for m in config.models)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_config_files_parse_or_raise_a_domain_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("cfg") / "build.toml"
    path.write_text(text, encoding="utf-8")
    try:
        data = read_config_file(path)
    except ReportgenError:
        return
    assert set(data) <= CONFIG_KEYS


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_escaped_names_render_as_plain_text(name):
    html = markdown.markdown(f"# {md_escape(name)}\n\n[{md_escape(name)}](x.md) {md_escape(name)}")
    tags = set(re.findall(r"<\s*([a-zA-Z][a-zA-Z0-9]*)", html))
    assert tags <= {"h1", "p", "a"}, (name, html)
    assert html.count("<a ") == 1 and 'href="x.md"' in html


@given(st.text(max_size=40))
def test_slugs_are_single_safe_path_segments(name):
    s = slug(name)
    assert re.fullmatch(r"[A-Za-z0-9._-]+", s) and not s.startswith(".")
