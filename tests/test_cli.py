"""The command line: exit codes and one-line messages for user mistakes, JSON layer listing, fast --help."""

import json
import subprocess
import sys

import pytest
import torch
from helpers import assert_one_line_error, run


def test_help_is_fast_and_imports_no_torch():
    code = "import sys, reportgen.cli as c; sys.argv=['reportgen','--help']\ntry: c.main()\nexcept SystemExit: pass\nprint('torch' in sys.modules, 'timm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "build" in out and out.strip().endswith("False False")


def test_the_command_line_lets_idle_threads_sleep_soon_unless_told_otherwise():
    import os

    code = "import os, reportgen.cli; print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}

    def seen(**extra):
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**env, **extra}).stdout.split()

    assert seen() == ["10000", "None"]
    assert seen(OMP_WAIT_POLICY="ACTIVE") == ["None", "ACTIVE"]  # the user's policy alone decides
    assert seen(GOMP_SPINCOUNT="5") == ["5", "None"]


def test_python_dash_m_works():
    out = subprocess.run([sys.executable, "-m", "reportgen", "--version"], capture_output=True, text=True, check=True)
    assert "reportgen" in out.stdout


def test_layers_json():
    code, output = run("layers", "--model", "test_resnet", "--json")
    assert code == 0
    rows = json.loads(output)
    assert rows[0]["index"] == 0 and {"module", "channels", "stride", "kind", "out_shape"} <= set(rows[0])
    assert rows[-1]["module"] == "layer4.0" and rows[-1]["stride"] == 32
    sizes = [row["rf"]["size"] for row in rows]
    assert all(isinstance(s, int) for s in sizes) and sizes == sorted(sizes)  # fields grow with depth


def test_layers_table():
    code, output = run("layers", "--model", "test_efficientnet")
    assert code == 0 and output.splitlines()[0].split() == ["index", "module", "kind", "out", "shape", "channels",
                                                            "stride", "receptive", "field"]
    assert " px" in output.splitlines()[1]
    assert "blocks.1.0" in output


@pytest.mark.parametrize("args,needles", [
    (["build", "--model", "resnet5O"], ["unknown model", "resnet50"]),
    (["build", "--model", "test_resnet", "--weights", "none", "--layers", "nope"], ["matches no layer", "layer1.0"]),
    (["build", "--model", "test_resnet", "--weights", "none", "--units", "0"], ["--units", "at least 1"]),
    (["build", "--model", "test_resnet", "--weights", "none", "--units", "0,999"], ["--units 999", "channels 0..31"]),
    (["build", "--model", "test_resnet", "--weights", "missing.pth"], ["no such file"]),
    (["build", "--model", "test_resnet", "--size", "-3"], ["--size"]),
    (["build", "--model", "test_resnet", "--neurons", "some"], ["--neurons", "'all'"]),
    (["build", "--model", "inception_v3", "--weights", "none", "--layers", "-1", "--size", "16"], ["too small", "--size 299"]),
    (["layers", "--model", "no_such_model"], ["unknown model"]),
    (["build", "--model", "test_resnet", "--penalty", "tvv=1"], ["unknown penalty 'tvv'", "tv=256"]),
    (["build", "--model", "test_resnet", "--penalty", "tv=-1"], ["tv=", "at least 0"]),
    (["build", "--model", "test_resnet", "--penalty", "tv"], ["malformed", "name=weight"]),
    (["build", "--model", "test_resnet", "--objective", "max"], ["--objective", "mean"]),
    (["build", "--model", "test_resnet", "--threads", "0"], ["--threads 0", "at least 1"]),
])
def test_user_mistakes_are_one_line_and_exit_2(tmp_path, args, needles):
    code, output = run(*args, *(["--out", str(tmp_path / "o")] if args[0] == "build" else []))
    assert code == 2
    assert_one_line_error(output, *needles)


def test_wrong_shaped_weights_file(tmp_path):
    from reportgen.models import load_model

    state = load_model("test_resnet", "none").module.state_dict()
    state["fc.weight"] = torch.zeros(10, 3)
    torch.save(state, tmp_path / "w.pth")
    code, output = run("build", "--model", "test_resnet", "--weights", str(tmp_path / "w.pth"), "--out", str(tmp_path / "o"))
    assert code == 2
    assert_one_line_error(output, "do not fit", "fc.weight", "(10, 3)")
    torch.save(load_model("test_efficientnet", "none").module.state_dict(), tmp_path / "eff.pth")
    code, output = run("build", "--model", "test_resnet", "--weights", str(tmp_path / "eff.pth"), "--out", str(tmp_path / "o"))
    assert code == 2
    assert_one_line_error(output, "another model")


def test_hub_weights_offline_names_both_alternatives(tmp_path):
    code, output = run("build", "--model", "inception_v3", "--out", str(tmp_path / "o"))
    assert code == 2
    assert_one_line_error(output, "cannot be reached", "--weights PATH", "--weights none")
    assert not (tmp_path / "o").exists()  # nothing is written for a build that cannot start


def test_output_folder_checks(tmp_path):
    afile = tmp_path / "file"
    afile.write_text("x")
    code, output = run("build", "--model", "test_resnet", "--weights", "none", "--out", str(afile))
    assert code == 2
    assert_one_line_error(output, "is a file")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    code, output = run("build", "--model", "test_resnet", "--weights", "none", "--out", str(foreign))
    assert code == 2
    assert_one_line_error(output, "did not create")
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_config_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("colour = 'red'\n")
    code, output = run("build", "--config", str(bad), "--out", str(tmp_path / "o"))
    assert code == 2
    assert_one_line_error(output, "unknown key", "colour")


def test_presets_set_the_render_recipe():
    from reportgen.config import resolve_build_config

    quick, standard = (resolve_build_config({"preset": name, "device": "cpu"}).render for name in ("quick", "standard"))
    assert (quick.size, quick.steps, quick.samples) == (128, 128, 1)  # the CPU preview: one draw a step
    assert (standard.size, standard.steps, standard.samples) == (224, 512, 2)
    assert resolve_build_config({"preset": "standard", "steps": 64, "device": "cpu"}).render.samples == 2


def test_objective_and_penalties_from_flags_and_toml(tmp_path):
    from reportgen.config import resolve_build_config

    flags = resolve_build_config({"objective": "l2norm", "penalty": "tv=0.25, l2=0.01,blur=0"}).render
    assert flags.objective == "l2norm" and flags.penalties == (("l2", 0.01), ("tv", 0.25))  # sorted; weight 0 dropped
    (tmp_path / "c.toml").write_text('[build]\nobjective = "l2norm"\npenalty = {tv = 0.25, l2 = 0.01}\n')
    assert resolve_build_config({}, tmp_path / "c.toml").render == flags
    assert resolve_build_config({}).render.penalties == () and resolve_build_config({}).render.objective == "mean"


def test_site_without_build(tmp_path):
    code, output = run("site", "--out", str(tmp_path))
    assert code == 2
    assert_one_line_error(output, "reportgen build")


def test_render_command_writes_a_png(tmp_path):
    target = tmp_path / "unit.png"
    code, output = run("render", "--model", "test_efficientnet", "--weights", "none", "--layer", "blocks.1.0",
                       "--unit", "2", "--steps", "4", "--size", "32", "--out", str(target))
    assert code == 0, output
    from PIL import Image

    assert Image.open(target).size == (32, 32)
    code, output = run("render", "--model", "test_efficientnet", "--weights", "none", "--layer", "blocks.1.0",
                       "--unit", "999", "--steps", "4", "--out", str(target))
    assert code == 2
    assert_one_line_error(output, "--unit 999")
