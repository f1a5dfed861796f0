"""The command line's help and tables: defaults in every --help, --version, `list`
wrapped to the terminal with every id and its preset, `list memory`, did-you-mean for
memory names, and the --config fields documented in docs/cli.md."""

from __future__ import annotations

import pytest

from memworld import envs
from memworld.cli import main


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train"], ["(default: 50000)", "(default: memoryppo)", "(default: gru)", "(default: 1;"]),
        (["eval"], ["(default: 20)", "(default: best)"]),
        (["record"], ["(default: 400)", "(default: mp4)", "(default: best)"]),
        (["sweep"], ["(default: runs/sweeps)"]),
    ],
)
def test_help_shows_defaults(argv, expected, capsys):
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps help lines
    for text in expected:
        assert text in out, (text, out)


def test_version_flag(capsys):
    import memworld

    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"memworld {memworld.__version__}"


@pytest.mark.parametrize("width", [80, 140])
def test_list_wraps_to_the_width_without_cutting_words_and_shows_every_id(width, capsys):
    import gymnasium as gym

    main(["list", "--width", str(width)])
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert all(len(line) <= width for line in lines), max(lines, key=len)
    ids = [i for i in gym.registry if i.startswith("memworld/")]
    assert "memworld/DistributionShift-v0" in ids
    for env_id in ids:
        assert env_id in out
    words = set(out.split())
    for info in envs.REGISTERED.values():  # every word of every description, whole
        assert set(info.description.replace("`", "").split()) <= words, info.description
    assert "defaults (= Easy)" in _listed(lines, "memworld/RepeatPrevious-v0")
    assert "Box(18,) float32" in _listed(lines, "memworld/MemorySize-v0")  # the defaults'
    assert "Box(10,) float32" in _listed(lines, "memworld/MemorySizeEasy-v0")


def _listed(lines: list[str], env_id: str) -> str:
    """The text `memworld list` prints for ``env_id``: its row and continuation lines."""
    start = next(n for n, line in enumerate(lines) if line.split()[:1] == [env_id])
    end = next(
        (n for n in range(start + 1, len(lines)) if lines[n].startswith("memworld/")), len(lines)
    )
    return " ".join(lines[start:end])


def test_list_memory_has_a_header_and_plain_text(capsys):
    from memworld import memory

    main(["list", "memory", "--width", "90"])
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["name", "class", "what", "it", "is"]
    assert "`" not in out.split("\n\n")[0] and ":class:" not in out
    for name in memory.names():
        assert f"\n{name} " in out


def test_a_misspelt_memory_gets_did_you_mean(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--memory", "lsmt", "--steps", "8"])
    assert "did you mean 'lstm'?" in capsys.readouterr().err


def test_every_config_field_is_documented_and_the_example_config_loads():
    import dataclasses
    from pathlib import Path

    from memworld.train import TrainConfig

    root = Path(__file__).resolve().parents[1]
    doc = (root / "docs" / "cli.md").read_text()
    example = root / "examples" / "train_config.yaml"
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    for name in fields:
        assert f"| `{name}` |" in doc, name
        assert f"\n{name}:" in "\n" + example.read_text(), name
    config = TrainConfig.from_file(example)
    assert (config.memory, config.steps, config.memory_kwargs) == (
        "slot",
        100_000,
        {"num_slots": 32},
    )
